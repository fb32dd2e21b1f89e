"""An upstream that is not MCP (404 text/plain to everything, or an HTML page) gets a JSON-RPC
error a client understands ("upstream unavailable", the upstream's status in `data`), is never
billed, counts against health, and the creator hears of it once; valid MCP answers still pass
through unchanged. Real gateway and upstream processes, the real drain."""

from __future__ import annotations

import sys

import httpx
import pytest

from gateway.models import HostedUpstream, UsageEvent
from notifications.models import Notification, NotificationKind
from tests.gateway.conftest import UPSTREAMS, drain, post, rpc, start, start_gateway, stop
from tests.smtp import free_port
from web.reports import upstream_health_get

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def not_mcp():
    """(gateway base URL, {"404": port, "html": port}): upstreams that are not MCP servers and a
    gateway process allowed to reach them."""
    ports = {"404": free_port(), "html": free_port()}
    procs = [
        start(
            [
                sys.executable,
                str(UPSTREAMS / "scripted_upstream.py"),
                "--port",
                str(port),
                "--answer",
                answer,
            ],
            port,
        )
        for answer, port in ports.items()
    ]
    gw_port = free_port()
    allow = ",".join(f"127.0.0.1:{p}" for p in ports.values())
    gw = start_gateway(gw_port, GATEWAY_UPSTREAM_ALLOWLIST=allow)
    yield f"http://127.0.0.1:{gw_port}", ports
    stop(gw)
    for proc in procs:
        stop(proc)


def _hosted(port: int) -> HostedUpstream:
    from tests.gateway.factories import HostedUpstreamFactory

    up = HostedUpstreamFactory(url=f"http://127.0.0.1:{port}/mcp")
    owner = up.listing.owner
    if owner is None:
        from tests.factories import UserFactory

        owner = UserFactory()
        up.listing.owner = owner
        up.listing.save(update_fields=["owner"])
    return up


@pytest.mark.parametrize(("answer", "status"), [("404", 404), ("html", 200)])
def test_a_non_mcp_answer_is_a_json_rpc_error_unbilled_and_unhealthy(
    not_mcp, seed_key, answer, status
):
    base, ports = not_mcp
    up = _hosted(ports[answer])
    name = up.listing.name
    key = seed_key(name)

    init = post(base, name, rpc("initialize", {"protocolVersion": "2025-06-18"}), key)
    assert init.status_code == 502
    assert init.headers["content-type"].startswith("application/json")
    assert init.json() == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32603, "message": "upstream unavailable", "data": {"status": status}},
    }
    for rid in range(2, 6):
        resp = post(base, name, rpc("tools/call", {"name": "ok", "arguments": {}}, rid=rid), key)
        body = resp.json()
        assert body["id"] == rid
        assert body["error"]["message"] == "upstream unavailable"
        assert body["error"]["data"] == {"status": status}
    # A notification has no answer to give: passed through as before.
    note = post(base, name, {"jsonrpc": "2.0", "method": "notifications/initialized"}, key)
    assert note.status_code == status

    drain()
    events = list(UsageEvent.objects.filter(listing_id=up.listing_id))
    assert len(events) == 4
    assert {(e.outcome, e.billable, e.unit_amount) for e in events} == {
        ("upstream_error", False, 0)
    }
    up.refresh_from_db()
    assert up.consecutive_failures == 4
    health = upstream_health_get(listing_id=up.listing_id)
    assert health is not None
    assert health.state == "down"
    assert health.label.startswith("0% of 4 calls")
    (notice,) = Notification.objects.filter(kind=NotificationKind.UPSTREAM_UNHEALTHY)
    assert notice.recipient_id == up.listing.owner_id
    drain()  # nothing new: still one notice
    assert Notification.objects.filter(kind=NotificationKind.UPSTREAM_UNHEALTHY).count() == 1


def test_valid_mcp_errors_still_pass_through(gateway, hosted, seed_key):
    """A JSON-RPC error at HTTP 500, and MCP's 404 for an unknown session, are MCP answers."""
    name = hosted()
    key = seed_key(name)
    resp = post(gateway, name, rpc("tools/call", {"name": "http500", "arguments": {}}), key)
    assert resp.status_code == 500
    assert resp.json()["error"]["message"] == "upstream broke"
    gone = post(gateway, name, rpc("tools/list"), key, {"Mcp-Session-Id": "a" * 32})
    assert gone.status_code in (404, 400)  # the upstream's own answer, not ours
    assert gone.json()["error"]["message"] != "upstream unavailable"
    ok = httpx.post(
        f"{gateway}/mcp/{name}",
        json=rpc("tools/call", {"name": "ok", "arguments": {}}),
        headers={"Authorization": f"Bearer {key}", "Accept": "application/json, text/event-stream"},
        timeout=10,
    )
    assert ok.status_code == 200
    assert ok.json()["result"]["content"][0]["text"] == "fine"

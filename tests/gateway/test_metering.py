"""Which calls are billed, receipts, prices in tools/list, and the ledger drain."""

import json
import time

import httpx
import pytest

from gateway.app import metrics_refusal
from gateway.models import UsageEvent
from gateway.proxy import PRICE_KEY, RECEIPT_KEY
from tests.gateway.conftest import PORT_BASE, SCRIPTED_PORT, drain, post, rpc, start_gateway, stop

pytestmark = pytest.mark.django_db(transaction=True)


def call(gateway, name, key, tool, rid):
    return post(gateway, name, rpc("tools/call", {"name": tool, "arguments": {}}, rid=rid), key)


def sse_messages(text: str) -> list[dict]:
    out = []
    for event in text.replace("\r\n", "\n").split("\n\n"):
        data = [ln[5:].strip() for ln in event.split("\n") if ln.startswith("data:")]
        if data and data[0]:
            out.append(json.loads("\n".join(data)))
    return out


def test_billing_rules_by_outcome(gateway, hosted, seed_key):
    name = hosted()
    key = seed_key(name, unit_amount=7)
    ok = call(gateway, name, key, "ok", 1)
    assert ok.status_code == 200
    receipt = ok.json()["result"]["_meta"][RECEIPT_KEY]
    assert receipt["amount"] == 7
    assert receipt["currency"] == "usd"
    tool_error = call(gateway, name, key, "tool_error", 2)
    assert tool_error.json()["result"]["_meta"][RECEIPT_KEY]["amount"] == 0
    assert "error" in call(gateway, name, key, "rpc_error", 3).json()
    assert call(gateway, name, key, "http500", 4).status_code == 500
    started = time.monotonic()
    slow = call(gateway, name, key, "slow", 5)
    assert slow.status_code == 504
    assert slow.json()["id"] == 5
    assert time.monotonic() - started < 2.5
    streamed = call(gateway, name, key, "sse", 6)
    final = sse_messages(streamed.text)[-1]
    assert final["id"] == 6
    assert final["result"]["_meta"][RECEIPT_KEY]["amount"] == 7
    sse_error = sse_messages(call(gateway, name, key, "sse_error", 7).text)[-1]
    assert sse_error["result"]["_meta"][RECEIPT_KEY]["amount"] == 0
    silent = call(gateway, name, key, "sse_silent", 8)
    assert [m.get("method") for m in sse_messages(silent.text)] == ["notifications/progress"]

    assert drain() == 8
    rows = {e.outcome: e for e in UsageEvent.objects.all()}
    outcomes = {o: (e.billable, e.unit_amount) for o, e in rows.items()}
    assert outcomes.pop("success") == (True, 7)
    assert outcomes == {
        "tool_error": (False, 0),
        "rpc_error": (False, 0),
        "upstream_error": (False, 0),
        "timeout": (False, 0),
        "cancelled": (False, 0),
    }
    assert UsageEvent.objects.filter(billable=True).count() == 2  # ok + sse
    assert str(rows["success"].call_id)[14] == "7"  # UUIDv7
    assert {str(e.call_id) for e in UsageEvent.objects.filter(billable=True)} == {
        ok.json()["result"]["_meta"][RECEIPT_KEY]["call_id"],
        final["result"]["_meta"][RECEIPT_KEY]["call_id"],
    }
    assert drain() == 0  # nothing twice
    from gateway.models import HostedUpstream

    health = HostedUpstream.objects.get(listing__name=name)
    assert health.last_ok_at is not None
    assert health.last_error in ("upstream_error", "timeout")


def test_sse_events_pass_one_by_one(gateway, hosted, seed_key):
    name = hosted()
    key = seed_key(name)
    arrivals = []
    body = rpc("tools/call", {"name": "sse", "arguments": {}, "_meta": {"progressToken": 9}}, 3)
    headers = {
        "Authorization": f"Bearer {key}",
        "Accept": "application/json, text/event-stream",
    }
    with httpx.stream("POST", f"{gateway}/mcp/{name}", json=body, headers=headers) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-accel-buffering"] == "no"
        for chunk in r.iter_raw():
            arrivals.append((time.monotonic(), chunk))
    texts = b"".join(c for _, c in arrivals).decode()
    assert "id: e0" in texts
    assert "id: e9" in texts
    first_progress = next(t for t, c in arrivals if b"notifications/progress" in c)
    result_at = next(t for t, c in arrivals if RECEIPT_KEY.encode() in c)
    assert result_at - first_progress > 0.45  # two 0.3 s gaps: not buffered to the end


def test_tools_list_prices_and_hides_excluded(gateway, hosted, seed_key):
    name = hosted()
    key = seed_key(
        name,
        unit_amount=3,
        tool_prices={
            "headers": {"unit_amount": 11},
            "secret_tool": {"unit_amount": 1, "excluded": True},
        },
    )
    tools = post(gateway, name, rpc("tools/list", {}, 5), key).json()["result"]["tools"]
    prices = {t["name"]: t["_meta"][PRICE_KEY]["unit_amount"] for t in tools}
    assert prices == {"ok": 3, "tool_error": 3, "headers": 11}
    refused = call(gateway, name, key, "secret_tool", 6)
    assert refused.json()["error"]["code"] == -32602
    assert refused.json()["id"] == 6
    assert (
        call(gateway, name, key, "headers", 7).json()["result"]["_meta"][RECEIPT_KEY]["amount"]
        == 11
    )


def test_upstream_sees_our_credentials_not_the_buyers(gateway, hosted, seed_key):
    from gateway.crypto import identity_key, identity_verify

    name = hosted(secret="creator-upstream-secret")
    key = seed_key(name, license_id=4242)
    r = post(
        gateway,
        name,
        rpc("tools/call", {"name": "headers", "arguments": {}}, 1),
        key,
        {"Cookie": "sessionid=abc", "Mcp-Param-City": "Oslo", "Origin": "http://allowed.example"},
    )
    seen = {k.lower(): v for k, v in r.json()["result"]["structuredContent"].items()}
    assert seen["authorization"] == "Bearer creator-upstream-secret"
    assert key not in json.dumps(seen)
    assert "cookie" not in seen
    assert "origin" not in seen
    assert seen["host"] == f"127.0.0.1:{SCRIPTED_PORT}"
    assert seen["accept-encoding"] == "identity"
    assert seen["mcp-param-city"] == "Oslo"
    fields = identity_verify(key=identity_key(name), header=seen["x-toolbooth-identity"])
    assert fields is not None
    assert fields["license"] == "4242"
    assert fields["listing"] == name
    assert (
        identity_verify(key=identity_key(name + "x"), header=seen["x-toolbooth-identity"]) is None
    )


def test_metrics_count_calls_and_rejections(gateway, hosted, seed_key):
    name = hosted()
    key = seed_key(name, rate_limit_per_minute=1)

    def sample(text: str, metric: str, **labels: str) -> float:
        for line in text.splitlines():
            if line.startswith(metric + "{") and all(
                f'{k}="{v}"' in line for k, v in labels.items()
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = httpx.get(f"{gateway}/metrics").text
    assert call(gateway, name, key, "ok", 1).status_code == 200
    assert call(gateway, name, key, "ok", 2).status_code == 429
    after = httpx.get(f"{gateway}/metrics").text
    calls = "toolbooth_gateway_calls_total"
    assert sample(after, calls, listing=name, tool="ok", outcome="success") == 1
    rejected = "toolbooth_gateway_rejected_total"
    assert sample(after, rejected, listing=name, reason="rate_limited") == 1
    assert sample(before, rejected, listing=name, reason="rate_limited") == 0
    latency = "toolbooth_gateway_call_seconds_count"
    assert sample(after, latency, listing=name, tool="ok") == 1
    assert key not in after


def test_metrics_take_the_token_when_one_is_set(gateway):
    port = PORT_BASE + 43
    proc = start_gateway(port, GATEWAY_METRICS_TOKEN="scrape-token-for-tests")
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        assert httpx.get(url).status_code == 401  # loopback is not enough once a token is set
        wrong = httpx.get(url, headers={"Authorization": "Bearer scrape-token-for-test"})
        assert wrong.status_code == 401
        assert "scrape-token" not in wrong.text
        right = httpx.get(url, headers={"Authorization": "bearer scrape-token-for-tests"})
        assert right.status_code == 200
        assert "toolbooth_gateway_calls_total" in right.text
    finally:
        stop(proc)


@pytest.mark.parametrize(
    ("client", "status"),
    [
        (("127.0.0.1", 50000), None),
        (("::1", 50000), None),
        (("192.0.2.2", 50000), 403),
        (("10.0.0.7", 50000), 403),
        (None, 403),  # a Unix socket: a proxy in front may be forwarding anyone
    ],
)
def test_metrics_without_a_token_answer_loopback_peers_only(settings, client, status):
    settings.GATEWAY_METRICS_TOKEN = ""
    refusal = metrics_refusal({"type": "http", "headers": [], "client": client})
    assert (refusal[0] if refusal else None) == status


def test_an_upstream_redirect_is_a_json_rpc_error_not_followed_nor_billed(
    gateway, hosted, seed_key
):
    name = hosted()
    key = seed_key(name)
    r = call(gateway, name, key, "redirect", 1)
    assert r.status_code == 502
    assert "location" not in r.headers
    assert r.json() == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32603, "message": "upstream redirect refused"},
    }
    assert drain() == 1
    event = UsageEvent.objects.get()
    assert (event.outcome, event.billable) == ("rpc_error", False)

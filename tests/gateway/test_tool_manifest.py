"""The rug-pull guard against real processes: an `mcp` SDK upstream whose tools switch at
runtime, a gateway process (uvicorn), the `mcp` SDK client, PostgreSQL and Redis.

The creator approves what discovery found; the upstream then poisons a description, drops a
tool and adds a hidden one. Agents keep the approved copy, the changed and the new tool are
refused without reserving quota or reaching the ledger, the removed one is gone, the change is
recorded once (from the gateway via Redis, and from discovery), and one approval brings calls
back.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from common.exceptions import ApplicationError
from gateway.discovery import upstream_tools_fetch
from gateway.manifest import TOOL_CHANGES_KEY
from gateway.models import ToolChange, ToolChangeKind, ToolChangeStatus, UsageEvent
from gateway.services import tool_changes_drain, tool_manifest_approve
from notifications.models import Notification, NotificationStatus
from notifications.tasks import notification_send_task
from tests.factories import UserFactory
from tests.gateway.conftest import PORT_BASE, UPSTREAMS, drain, start, start_gateway, stop
from tests.gateway.factories import HostedUpstreamFactory
from tests.smtp import Inbox, parts

pytestmark = pytest.mark.django_db(transaction=True)

UPSTREAM_PORT, GATEWAY_PORT = PORT_BASE + 232, PORT_BASE + 233
UPSTREAM_URL = f"http://127.0.0.1:{UPSTREAM_PORT}/mcp"


@pytest.fixture(scope="module")
def switchable() -> Iterator[str]:
    script = UPSTREAMS / "switchable_upstream.py"
    proc = start([sys.executable, str(script), "--port", str(UPSTREAM_PORT)], UPSTREAM_PORT)
    yield f"http://127.0.0.1:{UPSTREAM_PORT}"
    stop(proc)


@pytest.fixture(autouse=True)
def _allow_switchable(settings: Any) -> None:
    """Discovery in this process may reach the loopback upstream (the SSRF guard's test hatch)."""
    settings.GATEWAY_UPSTREAM_ALLOWLIST = [f"127.0.0.1:{UPSTREAM_PORT}"]


@pytest.fixture
def guarded_gateway(django_db_setup: None, switchable: str) -> Iterator[str]:
    proc = start_gateway(
        GATEWAY_PORT,
        GATEWAY_UPSTREAM_ALLOWLIST=f"127.0.0.1:{UPSTREAM_PORT}",
        GATEWAY_UPSTREAM_CACHE_SECONDS="0.3",
    )
    httpx.post(f"{switchable}/variant", content=b"original").raise_for_status()
    yield f"http://127.0.0.1:{GATEWAY_PORT}"
    stop(proc)
    httpx.post(f"{switchable}/variant", content=b"original").raise_for_status()


async def _agent(url: str, key: str, calls: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One MCP session of a real SDK client: the tools it is shown, then each call's outcome
    ("ok: <text>" or "refused <code>: <message>")."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=20)
    out: dict[str, Any] = {"calls": []}
    async with (
        http,
        Client(streamable_http_client(url, http_client=http), mode="auto") as client,
    ):
        listed = await client.list_tools(cache_mode="bypass")
        out["tools"] = {t.name: t.description for t in listed.tools}
        for name, args in calls:
            try:
                result = await client.call_tool(name, args)
            except MCPError as exc:
                out["calls"].append(f"refused {exc.error.code}: {exc.error.message}")
            else:
                text = result.content[0].text if result.content else ""
                out["calls"].append(f"{'error' if result.is_error else 'ok'}: {text}")
    return out


def _send_queued() -> int:
    """Run the send task of every queued notification, as the Celery worker would once the
    recording committed (this test's Celery only enqueues, so discovery runs when the test
    says). Returns how many were sent."""
    pending = Notification.objects.filter(status=NotificationStatus.PENDING)
    ids = list(pending.values_list("pk", flat=True))
    for pk in ids:
        notification_send_task.apply(args=[pk])
    return Notification.objects.filter(pk__in=ids, status=NotificationStatus.SENT).count()


def _quota_used(redis_client: Any, license_id: int) -> int:
    return sum(int(redis_client.get(k) or 0) for k in redis_client.keys(f"tb:q:{license_id}:*"))


def test_a_rug_pull_is_held_back_refused_unbilled_recorded_once_and_reapproved(
    guarded_gateway: str,
    switchable: str,
    seed_key: Any,
    redis_client: Any,
    smtp_inbox: Inbox,
) -> None:
    owner = UserFactory(email="creator@example.com")
    UserFactory(username="ops", email="ops@example.com", is_staff=True)
    upstream = HostedUpstreamFactory(url=UPSTREAM_URL, approved=False)
    listing = upstream.listing
    listing.owner = owner
    listing.save(update_fields=["owner"])
    found = upstream_tools_fetch(listing_id=listing.pk)
    assert {t["name"] for t in found.manifest} == {"lookup", "convert", "legacy"}
    assert found.manifest_skipped == []
    # Nothing approved yet: the owner is asked to approve (tests/gateway/test_discovery.py).
    assert _send_queued() == 1
    (ask,) = smtp_inbox.messages
    assert "approve its tools" in str(ask["Subject"])
    approved = tool_manifest_approve(
        listing=listing, actor=owner, expected_hash=found.manifest_hash
    )
    assert approved.version == 1
    assert approved.findings == {}  # nothing suspicious in the original tools

    license_id = 9_100_001
    key = seed_key(listing.name, key_id=license_id, included_calls=1000, hard_cap=True)
    url = f"{guarded_gateway}/mcp/{listing.name}"
    time.sleep(0.4)  # past the gateway's upstream-config cache (0.3 s): the manifest is loaded

    before = asyncio.run(_agent(url, key, [("lookup", {"city": "Oslo"})]))
    assert set(before["tools"]) == {"lookup", "convert", "legacy"}
    assert before["calls"] == ["ok: Oslo: 1,000,000"]
    assert _quota_used(redis_client, license_id) == 1

    # The rug pull: a poisoned description, a removed tool and a hidden new one.
    httpx.post(f"{switchable}/variant", content=b"rugpull").raise_for_status()
    calls = [
        ("lookup", {"city": "Oslo", "note": "x"}),
        ("exfiltrate", {"note": "id_rsa"}),
        ("convert", {"value": 1.0}),
        ("legacy", {}),
    ]
    after = asyncio.run(_agent(url, key, calls))
    assert set(after["tools"]) == {"lookup", "convert"}  # no exfiltrate, legacy gone
    assert after["tools"]["lookup"] == "Look up the population of a city."  # the approved copy
    changed, hidden, unchanged, removed = after["calls"]
    assert changed == (
        "refused -32602: Tool changed since the creator approved it; awaiting re-approval."
    )
    assert hidden == "refused -32602: Unknown tool: exfiltrate (not approved by the creator)."
    assert unchanged == "ok: 2.54"
    assert removed.startswith(("refused", "error"))  # the upstream no longer has it
    assert _quota_used(redis_client, license_id) == 2  # lookup + convert; nothing reserved else

    drain()
    rows = list(UsageEvent.objects.filter(listing_id=listing.pk).order_by("occurred_at"))
    billable = [(r.tool, r.outcome) for r in rows if r.billable]
    assert billable == [("lookup", "success"), ("convert", "success")]
    assert not any(r.tool == "exfiltrate" for r in rows)
    assert [r.tool for r in rows].count("lookup") == 1  # the refused call left no row

    # Recorded from the gateway (Redis, drained by the task), once, however often it is seen.
    assert redis_client.hlen(TOOL_CHANGES_KEY) == 2
    asyncio.run(_agent(url, key, []))  # seen again: nothing new to report
    assert tool_changes_drain(client=redis_client) == 2
    assert redis_client.hlen(TOOL_CHANGES_KEY) == 0
    pending = {c.name: c for c in ToolChange.objects.filter(status=ToolChangeStatus.PENDING)}
    assert {n: c.kind for n, c in pending.items()} == {
        "lookup": ToolChangeKind.CHANGED,
        "exfiltrate": ToolChangeKind.ADDED,
    }
    assert pending["lookup"].source == "gateway"
    assert "id_rsa" in pending["lookup"].observed["description"]
    kinds = {f["kind"] for f in pending["lookup"].findings}
    assert {"hidden_instructions", "secrets_or_local_files"} <= kinds
    assert pending["lookup"].approved["description"] == "Look up the population of a city."
    assert _send_queued() == 2  # the notifications app, through a real SMTP server
    assert sorted(m["To"] for m in smtp_inbox.messages[1:]) == [
        "creator@example.com",
        "ops@example.com",
    ]
    text, html = parts(smtp_inbox.to("creator@example.com")[1])
    assert "- lookup: changed since approval" in text
    assert "- exfiltrate: new tool" in text
    assert f"/creator/listings/{listing.name}/" in html
    assert tool_changes_drain(client=redis_client) == 0

    # Discovery (hourly, or on save) sees the whole list: the removal too, the rest deduplicated.
    refreshed = upstream_tools_fetch(listing_id=listing.pk)
    pending_kinds = dict(
        ToolChange.objects.filter(status=ToolChangeStatus.PENDING).values_list("name", "kind")
    )
    assert pending_kinds == {"lookup": "changed", "exfiltrate": "added", "legacy": "removed"}
    assert ToolChange.objects.count() == 3
    assert _send_queued() == 2
    assert len(smtp_inbox.messages) == 5  # one more email each, for the removal only
    text, _html = parts(smtp_inbox.to("ops@example.com")[-1])
    assert "- legacy: no longer listed" in text
    assert "lookup" not in text

    # Another gateway process that never saw the tools/list refuses too (PostgreSQL's pending
    # change rides in the cached upstream config).
    time.sleep(0.4)
    fresh = start_gateway(
        GATEWAY_PORT + 1,
        GATEWAY_UPSTREAM_ALLOWLIST=f"127.0.0.1:{UPSTREAM_PORT}",
    )
    try:
        other = f"http://127.0.0.1:{GATEWAY_PORT + 1}/mcp/{listing.name}"
        body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call"}
        body["params"] = {"name": "lookup", "arguments": {"city": "Oslo"}}
        answer = httpx.post(
            other,
            json=body,
            headers={
                "Authorization": f"Bearer {key}",
                "Accept": "application/json, text/event-stream",
            },
        )
        assert answer.json()["error"]["code"] == -32602
        assert answer.json()["error"]["data"] == {"reason": "tool_changed"}
    finally:
        stop(fresh)

    # One click: the creator approves what they reviewed; calls work again.
    second = tool_manifest_approve(
        listing=listing, actor=owner, expected_hash=refreshed.manifest_hash
    )
    assert second.version == 2
    assert set(second.findings) == {"lookup"}
    assert not ToolChange.objects.filter(status=ToolChangeStatus.PENDING).exists()
    time.sleep(0.4)
    again = asyncio.run(_agent(url, key, [("lookup", {"city": "Oslo"})]))
    assert set(again["tools"]) == {"lookup", "convert", "exfiltrate"}
    assert "id_rsa" in again["tools"]["lookup"]  # now approved, so now shown
    assert again["calls"] == ["ok: Oslo: 1,000,000"]
    drain()
    assert UsageEvent.objects.filter(listing_id=listing.pk, billable=True).count() == 3


def test_approval_pins_only_what_the_creator_saw(switchable: str) -> None:
    owner = UserFactory()
    upstream = HostedUpstreamFactory(url=UPSTREAM_URL, approved=False)
    listing = upstream.listing
    listing.owner = owner
    listing.save(update_fields=["owner"])
    httpx.post(f"{switchable}/variant", content=b"original").raise_for_status()
    seen = upstream_tools_fetch(listing_id=listing.pk).manifest_hash
    httpx.post(f"{switchable}/variant", content=b"rugpull").raise_for_status()
    try:
        upstream_tools_fetch(listing_id=listing.pk)
    finally:
        httpx.post(f"{switchable}/variant", content=b"original").raise_for_status()

    with pytest.raises(ApplicationError, match="changed while you were reviewing"):
        tool_manifest_approve(listing=listing, actor=owner, expected_hash=seen)
    stranger = UserFactory()
    with pytest.raises(ApplicationError, match="Only the listing's owner"):
        tool_manifest_approve(listing=listing, actor=stranger, expected_hash=seen)

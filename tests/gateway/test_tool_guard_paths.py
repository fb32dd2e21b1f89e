"""The rug-pull guard on the paths test_tool_manifest.py does not walk, against real processes
(gateway processes under uvicorn, `mcp` SDK upstreams, the SDK client, PostgreSQL, Redis):

- a hosted listing whose creator never approved a manifest: agents see no tools, every
  tools/call is refused with a JSON-RPC error and nothing is reserved or billed, until the
  creator approves what discovery found;
- a tools/list answer replayed on a resumed GET stream (Last-Event-ID) is rewritten to the
  approved manifest exactly like the direct answer;
- a tools list an upstream sends under another request's id (on a tools/call's SSE stream, or
  as the JSON answer to a ping) is rewritten the same way: the client matches answers by id.
"""

from __future__ import annotations

import asyncio
import json
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

from gateway.app import UNAPPROVED_MESSAGE
from gateway.discovery import upstream_tools_fetch
from gateway.manifest import TOOL_CHANGES_KEY
from gateway.models import UsageEvent
from gateway.proxy import PRICE_KEY
from gateway.services import tool_manifest_approve
from tests.factories import ListingFactory, UserFactory
from tests.gateway.conftest import (
    MCP_PORT,
    PORT_BASE,
    UPSTREAMS,
    drain,
    post,
    rpc,
    start,
    start_gateway,
    stop,
)
from tests.gateway.factories import HostedUpstreamFactory, served_tools
from tests.gateway.test_deferred_billing import message, sse_events

pytestmark = pytest.mark.django_db(transaction=True)

REPLAY_UPSTREAM_PORT, REPLAY_GATEWAY_PORT = PORT_BASE + 240, PORT_BASE + 241
PROTOCOL = "2025-11-25"  # the SDK server sends a priming event (an id to resume from)


async def _agent(url: str, key: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """One SDK client session: the tools it is shown, then one call's outcome."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=20)
    async with (
        http,
        Client(streamable_http_client(url, http_client=http), mode="auto") as client,
    ):
        listed = await client.list_tools(cache_mode="bypass")
        out: dict[str, Any] = {"tools": [t.name for t in listed.tools]}
        try:
            result = await client.call_tool(tool, args)
        except MCPError as exc:
            out["call"] = ("refused", exc.error.code, exc.error.message, exc.error.data)
        else:
            out["call"] = ("ok", result.structured_content)
    return out


def _quota_used(redis_client: Any, license_id: int) -> int:
    return sum(int(redis_client.get(k) or 0) for k in redis_client.keys(f"tb:q:{license_id}:*"))


def test_a_listing_never_approved_shows_no_tools_refuses_calls_unbilled_until_approved(
    gateway: str, upstream_processes: None, seed_key: Any, redis_client: Any, settings: Any
) -> None:
    owner = UserFactory()
    url = f"http://127.0.0.1:{MCP_PORT}/mcp"
    upstream = HostedUpstreamFactory(listing=ListingFactory(owner=owner), url=url, approved=False)
    listing = upstream.listing
    license_id = 9_200_001
    key = seed_key(listing.name, key_id=license_id, included_calls=100, hard_cap=True)
    endpoint = f"{gateway}/mcp/{listing.name}"

    before = asyncio.run(_agent(endpoint, key, "add", {"a": 2, "b": 3}))
    assert before["tools"] == []
    assert before["call"] == (
        "refused",
        -32602,
        UNAPPROVED_MESSAGE,
        {"reason": "manifest_unapproved"},
    )
    assert UNAPPROVED_MESSAGE == "This server's tools are awaiting its creator's approval."
    # The same refusal over plain HTTP: a 200 with the JSON-RPC error, the request's id echoed.
    raw = post(gateway, listing.name, rpc("tools/call", {"name": "add"}, rid="r-1"), key)
    assert raw.status_code == 200
    assert raw.json()["id"] == "r-1"
    assert raw.json()["error"]["message"] == UNAPPROVED_MESSAGE
    assert _quota_used(redis_client, license_id) == 0  # nothing reserved
    drain()
    assert not UsageEvent.objects.filter(listing_id=listing.pk).exists()  # nothing billed
    assert redis_client.hlen("tb:toolchg") == 0  # nothing to compare with, nothing reported

    # The creator approves what discovery found (their listing page's one click).
    settings.GATEWAY_UPSTREAM_ALLOWLIST = [f"127.0.0.1:{MCP_PORT}"]
    found = upstream_tools_fetch(listing_id=listing.pk)
    tool_manifest_approve(listing=listing, actor=owner, expected_hash=found.manifest_hash)
    time.sleep(0.6)  # past the gateway's upstream-config cache (0.5 s)

    after = asyncio.run(_agent(endpoint, key, "add", {"a": 2, "b": 3}))
    assert set(after["tools"]) == {t["name"] for t in found.manifest}
    assert after["call"] == ("ok", {"result": 5})
    assert _quota_used(redis_client, license_id) == 1
    drain()
    rows = list(UsageEvent.objects.filter(listing_id=listing.pk))
    assert [(r.tool, r.billable) for r in rows] == [("add", True)]


@pytest.fixture(scope="module")
def replaying(django_db_setup: None, django_db_blocker: object) -> Iterator[str]:
    """mcp_upstream.py --resumable (GET + Last-Event-ID replays a stream's events) and a
    gateway whose allow-list has it; yields the gateway's base URL."""
    cmd = [sys.executable, str(UPSTREAMS / "mcp_upstream.py"), "--resumable"]
    upstream = start([*cmd, "--port", str(REPLAY_UPSTREAM_PORT)], REPLAY_UPSTREAM_PORT)
    try:
        gw = start_gateway(
            REPLAY_GATEWAY_PORT, GATEWAY_UPSTREAM_ALLOWLIST=f"127.0.0.1:{REPLAY_UPSTREAM_PORT}"
        )
    except Exception:
        stop(upstream)
        raise
    yield f"http://127.0.0.1:{REPLAY_GATEWAY_PORT}"
    stop(gw)
    stop(upstream)


def _headers(key: str, sid: str = "", **extra: str) -> dict[str, str]:
    h = {
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {key}",
        "MCP-Protocol-Version": PROTOCOL,
        **extra,
    }
    if sid:
        h["Mcp-Session-Id"] = sid
    return h


def _tools_of(msg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in msg["result"]["tools"]}


def test_a_tools_list_answer_replayed_on_a_resumed_stream_shows_only_the_approved_tools(
    replaying: str, seed_key: Any
) -> None:
    url = f"http://127.0.0.1:{REPLAY_UPSTREAM_PORT}/mcp"
    served = {t["name"]: t for t in served_tools(url)}
    assert {"add", "weather", "fail"} <= set(served)
    # The creator approved `add` only, and in an earlier wording: the upstream now serves a
    # different description and four tools that were never approved.
    approved_add = {**served["add"], "description": "Add two integers (approved wording)."}
    upstream = HostedUpstreamFactory(url=url, approved=[approved_add])
    name = upstream.listing.name
    key = seed_key(name)
    endpoint = f"{replaying}/mcp/{name}"

    init: dict[str, object] = {
        "protocolVersion": PROTOCOL,
        "capabilities": {},
        "clientInfo": {"name": "replay-test", "version": "0"},
    }
    opened = httpx.post(endpoint, json=rpc("initialize", init, rid=0), headers=_headers(key))
    assert opened.status_code == 200, opened.text
    sid = opened.headers["mcp-session-id"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert httpx.post(endpoint, json=note, headers=_headers(key, sid)).status_code == 202

    # The direct answer: only the approved tool, as approved, priced.
    events = list(
        sse_events(
            httpx.post(
                endpoint, json=rpc("tools/list", {}, rid=7), headers=_headers(key, sid)
            ).text.splitlines()
        )
    )
    priming = next(e for e in events if e.get("id") and e.get("data") == "")
    direct = next(m for m in map(message, events) if m is not None and m.get("id") == 7)
    assert _tools_of(direct).keys() == {"add"}
    assert _tools_of(direct)["add"]["description"] == "Add two integers (approved wording)."

    # The client resumes from the priming event: the upstream replays the same answer.
    replayed = None
    timeout = httpx.Timeout(10, read=1.5)
    h = _headers(key, sid, **{"Last-Event-ID": priming["id"], "Accept": "text/event-stream"})
    try:
        with httpx.stream("GET", endpoint, headers=h, timeout=timeout) as r:
            assert r.status_code == 200, r.read()
            for event in sse_events(r.iter_lines()):
                msg = message(event)
                if msg is not None and msg.get("id") == 7:
                    replayed = msg
                    break
    except httpx.ReadTimeout:
        pass
    assert replayed is not None, "the upstream never replayed the tools/list answer"
    tools = _tools_of(replayed)
    assert tools.keys() == {"add"}  # weather, fail, slow, ask_name were never approved
    assert tools["add"]["description"] == "Add two integers (approved wording)."
    assert tools["add"]["_meta"][PRICE_KEY] == direct["result"]["tools"][0]["_meta"][PRICE_KEY]
    assert json.dumps(replayed["result"]) == json.dumps(direct["result"])


def _stray_checks(msg: dict[str, Any], direct: dict[str, Any]) -> None:
    """The stray list reads exactly like the direct tools/list answer for that tool."""
    tools = _tools_of(msg)
    assert "exfiltrate" not in tools  # never approved: dropped
    assert tools["ok"].get("description") is None  # the approved copy, not the poisoned text
    assert "IMPORTANT" not in json.dumps(msg)
    assert tools["ok"] == _tools_of(direct)["ok"]  # same copy, same price in `_meta`


def test_a_tools_list_sent_under_another_requests_id_shows_only_the_approved_tools(
    gateway: str, hosted: Any, seed_key: Any, redis_client: Any
) -> None:
    name = hosted()
    key = seed_key(name)
    direct = post(gateway, name, rpc("tools/list", {}, rid=1), key).json()
    assert PRICE_KEY in _tools_of(direct)["ok"]["_meta"]

    # On a tools/call's SSE stream: the stray list first, then the call's own answer.
    call = rpc("tools/call", {"name": "stray_tools", "arguments": {"stray_id": 7}}, rid=3)
    answer = post(gateway, name, call, key)
    assert answer.status_code == 200, answer.text
    messages = [m for m in map(message, sse_events(answer.text.splitlines())) if m is not None]
    assert [m["id"] for m in messages] == [7, 3]
    _stray_checks(messages[0], direct)
    assert messages[1]["result"]["_meta"]  # the call itself still carries its receipt

    # As the JSON answer to a request that is not metered at all.
    ping = post(gateway, name, rpc("ping", {"stray_id": 8}, rid=4), key)
    assert ping.status_code == 200, ping.text
    assert ping.json()["id"] == 8
    _stray_checks(ping.json(), direct)
    # The guard saw the poisoned `ok` and the new tool: both reported for the creator.
    assert redis_client.hlen(TOOL_CHANGES_KEY) == 2

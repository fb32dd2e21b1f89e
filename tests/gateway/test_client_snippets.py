"""The Claude Desktop snippet we hand out works: its command, arguments and env exactly as the
page shows them start `mcp-remote` (npm, .mcp-peers/), which the `mcp` SDK's stdio client talks
to like Claude Desktop would, through a real gateway process to a real MCP upstream: tools are
listed, a call is answered with its receipt and billed once, and no browser or OAuth flow is
started with a valid key."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client

from billing.services.licenses import api_key_create
from gateway.models import UsageEvent
from gateway.proxy import RECEIPT_KEY
from tests.billing.factories import MeteredLicenseFactory
from tests.gateway.conftest import MCP_PORT, PEERS, PORT_BASE, drain, start_gateway, stop
from tests.gateway.factories import HostedUpstreamFactory, served_tools
from web.clients import client_slug, client_snippets

pytestmark = pytest.mark.django_db(transaction=True)

PORT = PORT_BASE + 62
SITE = f"http://127.0.0.1:{PORT}"
MCP_REMOTE = PEERS / "node_modules/.bin/mcp-remote"


async def _through_bridge(server: dict, home: Path, bin_dir: Path) -> dict:
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",  # our xdg-open first
        "HOME": str(home),  # mcp-remote keeps OAuth state under ~/.mcp-auth
        "npm_config_update_notifier": "false",  # npx asks the registry for nothing
        **server["env"],
    }
    # Run from .mcp-peers so npx finds the pinned mcp-remote there instead of the registry.
    params = StdioServerParameters(
        command=server["command"], args=server["args"], env=env, cwd=str(PEERS)
    )
    with (home / "bridge.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            added = await client.call_tool("add", {"a": 2, "b": 3})
            return {
                "tools": tools,
                "add": added.structured_content,
                "is_error": added.is_error,
                "receipt": (added.meta or {}).get(RECEIPT_KEY),
            }


@pytest.mark.skipif(not MCP_REMOTE.exists(), reason="scripts/install-mcp-peers not run")
@pytest.mark.skipif(shutil.which("npx") is None, reason="npx not installed")
def test_claude_desktop_snippet_runs_through_mcp_remote(upstream_processes, tmp_path, settings):
    url = f"http://127.0.0.1:{MCP_PORT}/mcp"
    up = HostedUpstreamFactory(url=url, approved=served_tools(url))
    name = up.listing.name
    lic = MeteredLicenseFactory(plan_price__plan__listing=up.listing, plan_price__per_call_amount=4)
    _, raw = api_key_create(license=lic)
    settings.SITE_URL = SITE
    snippets = client_snippets(name=name, gateway_url=f"{SITE}/mcp/{name}", key=raw)
    # The connector URL (OAuth, no key) comes first; the key-based Claude Desktop config next.
    assert [s.id for s in snippets][:2] == ["connector", "claude"]
    assert snippets[0].text == f"{SITE}/mcp/{name}"
    claude = snippets[1]
    server = json.loads(claude.text)["mcpServers"][client_slug(name)]
    assert server["command"] == "npx"
    assert server["args"][:2] == ["mcp-remote", f"{SITE}/mcp/{name}"]
    assert "Authorization:${AUTH}" in server["args"]
    assert server["env"] == {"AUTH": f"Bearer {raw}"}

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    opened = tmp_path / "opened"
    opener = bin_dir / "xdg-open"  # a browser launch would leave its URL here
    opener.write_text(f'#!/bin/sh\necho "$@" >> {opened}\n')
    opener.chmod(0o755)
    proc = start_gateway(PORT, SITE_URL=SITE)
    try:
        out = asyncio.run(asyncio.wait_for(_through_bridge(server, tmp_path, bin_dir), 60))
    finally:
        stop(proc)
    assert {"add", "weather", "fail"} <= set(out["tools"])
    assert out["is_error"] is False
    assert out["add"] == {"result": 5}
    assert out["receipt"]["amount"] == 4
    assert not opened.exists(), "mcp-remote tried to open a browser with a valid key"
    assert raw not in (tmp_path / "bridge.log").read_text()
    drain()  # (records other tests left in the stream are drained too)
    event = UsageEvent.objects.get(license_id=lic.pk)  # exactly one: billed once
    assert (event.billable, event.unit_amount, event.tool) == (True, 4, "add")
    assert str(event.call_id) == out["receipt"]["call_id"]

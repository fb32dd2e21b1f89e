"""Ready-to-paste client configuration for a listing's gateway URL and a key.

The key goes in the Authorization header, never in the URL (the gateway refuses query-string
credentials). The raw key is filled in only on the one response that shows it; elsewhere the
snippets carry a placeholder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

KEY_PLACEHOLDER = "<your license key>"


def client_slug(name: str) -> str:
    """A config key for a server name ("io.github.acme/weather" -> "io-github-acme-weather")."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64] or "server"


@dataclass(frozen=True, slots=True)
class ClientSnippet:
    id: str
    title: str
    where: str
    language: str
    text: str


MCP_REMOTE = "mcp-remote"  # the stdio bridge Claude Desktop runs (npm; tested at 0.15.1)
VSCODE_INPUT = "toolbooth-key"


def _loopback(url: str) -> bool:
    return urlsplit(url).hostname in ("localhost", "127.0.0.1", "::1")


def claude_desktop_config(*, slug: str, gateway_url: str, token: str) -> dict[str, Any]:
    """Claude Desktop starts only local (command) servers from its config file, so the gateway
    is reached through the `mcp-remote` bridge. The key travels in `env` and the header value
    names it (`${AUTH}`, which mcp-remote expands): no space after the colon, since some
    launchers split arguments on spaces. mcp-remote refuses plain http except on loopback."""
    args = [MCP_REMOTE, gateway_url, "--header", "Authorization:${AUTH}"]
    if urlsplit(gateway_url).scheme == "http" and not _loopback(gateway_url):
        args.append("--allow-http")
    server = {"command": "npx", "args": args, "env": {"AUTH": f"Bearer {token}"}}
    return {"mcpServers": {slug: server}}


def vscode_config(*, slug: str, name: str, gateway_url: str) -> dict[str, Any]:
    """VS Code prompts for the key (and keeps it in its secret storage) instead of reading it
    from `.vscode/mcp.json`, a file that tends to get committed. One input per server, since
    each listing has its own keys."""
    input_id = f"{VSCODE_INPUT}-{slug}"
    return {
        "inputs": [
            {
                "type": "promptString",
                "id": input_id,
                "description": f"Toolbooth license key for {name}",
                "password": True,
            }
        ],
        "servers": {
            slug: {
                "type": "http",
                "url": gateway_url,
                "headers": {"Authorization": f"Bearer ${{input:{input_id}}}"},
            }
        },
    }


def client_snippets(*, name: str, gateway_url: str, key: str | None = None) -> list[ClientSnippet]:
    """The connector URL (Claude and ChatGPT connect with OAuth: no key), then with a key:
    Claude Desktop (`mcp-remote` bridge), Cursor (`mcpServers` over HTTP), VS Code (prompts for
    the key), and the Python SDK."""
    token = key or KEY_PLACEHOLDER
    header = {"Authorization": f"Bearer {token}"}
    slug = client_slug(name)
    claude = claude_desktop_config(slug=slug, gateway_url=gateway_url, token=token)
    cursor = {"mcpServers": {slug: {"type": "http", "url": gateway_url, "headers": header}}}
    vscode = vscode_config(slug=slug, name=name, gateway_url=gateway_url)
    python = f'''"""Call a server through Toolbooth: python toolbooth_client.py [TOOL] [JSON]"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

URL = {json.dumps(gateway_url)}
KEY = os.environ.get("TOOLBOOTH_KEY", {json.dumps(token)})


async def main() -> None:
    http = httpx2.AsyncClient(headers={{"Authorization": f"Bearer {{KEY}}"}}, timeout=30)
    async with http, Client(streamable_http_client(URL, http_client=http)) as client:
        tools = (await client.list_tools()).tools
        print("tools:", ", ".join(tool.name for tool in tools))
        if len(sys.argv) > 1:
            arguments = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {{}}
            result = await client.call_tool(sys.argv[1], arguments)
            print("isError:", result.is_error)
            for item in result.content:
                print(getattr(item, "text", item))


asyncio.run(main())
'''
    return [
        ClientSnippet(
            id="connector",
            title="Claude or ChatGPT (connector, no key)",
            where=(
                "Claude: Settings > Connectors > Add custom connector. ChatGPT: Settings > "
                "Connectors > Create (developer mode). Paste this URL; you are sent to Toolbooth "
                "to sign in and pick the license the client may use (OAuth). Any client that "
                "supports MCP authorization works the same way, also `npx mcp-remote <url>`."
            ),
            language="text",
            text=gateway_url,
        ),
        ClientSnippet(
            id="claude",
            title="Claude Desktop",
            where=(
                "claude_desktop_config.json (Settings > Developer > Edit Config), then restart "
                "Claude Desktop. It runs local servers only, so mcp-remote (needs Node.js) "
                "bridges to the gateway with your key."
            ),
            language="json",
            text=json.dumps(claude, indent=2),
        ),
        ClientSnippet(
            id="cursor",
            title="Cursor",
            where="~/.cursor/mcp.json (keep keys out of a project's .cursor/mcp.json)",
            language="json",
            text=json.dumps(cursor, indent=2),
        ),
        ClientSnippet(
            id="vscode",
            title="VS Code",
            where=(
                ".vscode/mcp.json in your workspace: VS Code asks for the key when it starts "
                "the server and keeps it in its secret storage, never in the file"
            ),
            language="json",
            text=json.dumps(vscode, indent=2),
        ),
        ClientSnippet(
            id="python",
            title="Python (mcp SDK)",
            where="pip install mcp; save as toolbooth_client.py; run it with a tool and JSON args",
            language="python",
            text=python,
        ),
    ]

"""Ready-to-paste client configuration for a listing's gateway URL and a key.

The key goes in the Authorization header, never in the URL (the gateway refuses query-string
credentials). The raw key is filled in only on the one response that shows it; elsewhere the
snippets carry a placeholder.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

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


def client_snippets(*, name: str, gateway_url: str, key: str | None = None) -> list[ClientSnippet]:
    """Claude Desktop and Cursor (`mcpServers`), VS Code (`servers`), and the Python SDK."""
    token = key or KEY_PLACEHOLDER
    header = {"Authorization": f"Bearer {token}"}
    slug = client_slug(name)
    mcp_servers = {"mcpServers": {slug: {"type": "http", "url": gateway_url, "headers": header}}}
    vscode = {"servers": {slug: {"type": "http", "url": gateway_url, "headers": header}}}
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
            id="claude",
            title="Claude Desktop",
            where="claude_desktop_config.json (Settings > Developer > Edit config)",
            language="json",
            text=json.dumps(mcp_servers, indent=2),
        ),
        ClientSnippet(
            id="cursor",
            title="Cursor",
            where="~/.cursor/mcp.json, or .cursor/mcp.json in a project",
            language="json",
            text=json.dumps(mcp_servers, indent=2),
        ),
        ClientSnippet(
            id="vscode",
            title="VS Code",
            where=".vscode/mcp.json in your workspace",
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

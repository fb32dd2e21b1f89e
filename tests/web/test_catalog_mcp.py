"""/mcp-catalog through the real Python MCP client, over loopback HTTP, against uvicorn running
the catalogue in front of Django (tests/web/catalog_asgi.py), on the pytest database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import httpx2
import pytest
from django.conf import settings
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from marketplace.models import Listing
from tests.factories import ListingFactory, npm_package
from tests.gateway.conftest import ROOT, stop, test_database_url, wait_port
from tests.web.agents_data import LOCAL_ONLY, WEATHER, Shop, build_shop, mirrored_listing

PORT = 18810
BASE = f"http://127.0.0.1:{PORT}"
URL = f"{BASE}/mcp-catalog"
T = TypeVar("T")


@pytest.fixture(scope="module")
def catalog_server(django_db_setup: None, django_db_blocker: Any) -> Iterator[str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SITE_URL": settings.SITE_URL,
        "LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "uvicorn", "tests.web.catalog_asgi:application"]
    cmd += ["--host", "127.0.0.1", "--port", str(PORT), "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        wait_port(PORT, proc)
        yield URL
    finally:
        stop(proc)


@pytest.fixture
def data(transactional_db: None, catalog_server: str) -> Shop:
    shop = build_shop()
    mirrored_listing(
        LOCAL_ONLY, description="Notes kept on disk.", packages=[npm_package("notes-mcp")]
    )
    return shop


def with_client(fn: Callable[[Client], Awaitable[T]], *, mode: str = "auto") -> T:
    async def run() -> T:
        http = httpx2.AsyncClient(timeout=httpx2.Timeout(10))
        async with http, Client(streamable_http_client(URL, http_client=http), mode=mode) as client:
            return await fn(client)

    return asyncio.run(run())


@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_lists_three_read_only_tools_with_output_schemas(data: Shop, mode: str):
    async def go(client: Client) -> Any:
        return (await client.list_tools()).tools

    tools = {tool.name: tool for tool in with_client(go, mode=mode)}

    assert set(tools) == {"search_listings", "get_listing", "how_to_buy"}
    for tool in tools.values():
        assert tool.output_schema is not None
        assert tool.annotations is not None
        assert tool.annotations.read_only_hint is True
    search_props = tools["search_listings"].input_schema["properties"]
    assert set(search_props) == {"query", "transport", "price_model", "limit"}
    assert tools["get_listing"].input_schema["required"] == ["name"]


def test_search_listings_returns_structured_results(data: Shop):
    async def go(client: Client) -> tuple[Any, Any, Any]:
        weather = await client.call_tool("search_listings", {"query": "weather"})
        free = await client.call_tool("search_listings", {"price_model": "free", "limit": 5})
        local = await client.call_tool("search_listings", {"transport": "local"})
        return weather, free, local

    Listing.objects.filter(pk=data.listing.pk).update(
        calls_30d=420, buyers=3, uptime=0.99, rating_avg=4.5, rating_count=2
    )
    weather, free, local = with_client(go)

    assert weather.is_error is False
    found = weather.structured_content
    assert found["query"] == "weather"
    assert found["count"] == 1
    [hit] = found["results"]
    site = settings.SITE_URL
    assert hit == {
        "name": WEATHER,
        "title": "Acme Weather",
        "status": "active",
        "description": "Weather forecasts for any city.",
        "price_models": ["free", "per_call", "subscription"],
        "hosted": True,
        "gateway_url": f"{site}/mcp/{WEATHER}",
        # The cheapest plan (Metered, $0.03 per call, below Pro's $5.00 a month) and use.
        "free_plan": True,
        "price_from": "from $0.03 per call",
        "price_from_amount": 3,
        "currency": "usd",
        "calls_30d": 420,
        "buyers": 3,
        "uptime": 0.99,
        "rating_avg": 4.5,
        "rating_count": 2,
        "page_url": f"{site}/servers/{WEATHER}",
        "markdown_url": f"{site}/servers/{WEATHER}.md",
    }
    assert [r["name"] for r in free.structured_content["results"]] == [WEATHER]
    # Both listings have an npm package; the local-only one has no gateway URL.
    by_name = {r["name"]: r for r in local.structured_content["results"]}
    assert by_name[LOCAL_ONLY]["hosted"] is False
    assert by_name[LOCAL_ONLY]["gateway_url"] is None


def test_search_listings_refuses_unknown_filters_as_tool_errors(data: Shop):
    async def go(client: Client) -> Any:
        return await client.call_tool("search_listings", {"transport": "carrier-pigeon"})

    result = with_client(go)

    assert result.is_error is True


def test_get_listing_has_plans_prices_tools_and_gateway(data: Shop):
    async def go(client: Client) -> Any:
        return await client.call_tool("get_listing", {"name": WEATHER})

    result = with_client(go)

    assert result.is_error is False
    info = result.structured_content
    site = settings.SITE_URL
    assert info["gateway_url"] == f"{site}/mcp/{WEATHER}"
    assert info["description"] == "Weather forecasts for any city."
    assert [v["version"] for v in info["versions"]] == ["1.0.0", "0.9.0"]
    assert info["remotes"][0]["url"] == "https://weather.acme.example/mcp"
    assert info["packages"][0]["identifier"] == "@acme/weather-mcp"
    plans = {p["kind"]: p for p in info["plans"]}
    assert plans["free"]["price"] == "Free, stops at 100 calls a month"
    assert plans["per_call"]["per_call_amount"] == 3
    assert plans["per_call"]["price"] == "$0.03 per call"
    assert plans["per_call"]["buy_url"] == f"{site}/billing/buy/{data.per_call.pk}"
    tools = {t["tool"]: t for t in plans["per_call"]["tool_prices"]}
    assert tools["forecast_hourly"] == {
        "tool": "forecast_hourly",
        "unit_amount": 10,
        "excluded": False,
        "price": "$0.10 per call",
    }
    assert tools["ping"]["price"] == "free"
    assert tools["admin_reset"]["excluded"] is True
    sub = plans["subscription"]
    assert (sub["unit_amount"], sub["included_calls"], sub["overage_amount"]) == (500, 1000, 2)
    assert sub["rate_limit_per_minute"] == 120
    assert sub["price"] == "$5.00 per month, 1,000 calls a month included, then $0.02 per call"


def test_how_to_buy_gives_steps_header_and_client_config(data: Shop):
    async def go(client: Client) -> tuple[Any, Any]:
        hosted = await client.call_tool("how_to_buy", {"name": WEATHER})
        local = await client.call_tool("how_to_buy", {"name": LOCAL_ONLY})
        return hosted, local

    hosted, local = with_client(go)

    site = settings.SITE_URL
    guide = hosted.structured_content
    assert guide["can_buy"] is True
    assert guide["gateway_url"] == f"{site}/mcp/{WEATHER}"
    assert guide["auth_header"] == "Authorization: Bearer <your license key>"
    assert any(f"{site}/billing/buy/{data.free.pk}" in step for step in guide["steps"])
    assert any("shown once" in step for step in guide["steps"])
    assert any("429" in step for step in guide["steps"])
    server = guide["client_config"]["mcpServers"]["io-github-acme-weather"]
    assert server["url"] == f"{site}/mcp/{WEATHER}"
    assert server["headers"] == {"Authorization": "Bearer <your license key>"}
    assert [p["kind"] for p in guide["plans"]] == ["free", "per_call", "subscription"]

    not_hosted = local.structured_content
    assert not_hosted["can_buy"] is False
    assert not_hosted["gateway_url"] is None
    assert not_hosted["client_config"] is None
    assert not_hosted["steps"] == []


@pytest.mark.parametrize("tool", ["get_listing", "how_to_buy"])
def test_unknown_listing_is_a_tool_error(data: Shop, tool: str):
    async def go(client: Client) -> tuple[Any, Any]:
        missing = await client.call_tool(tool, {"name": "io.github.nobody/nothing"})
        # The server keeps serving after the error.
        ok = await client.call_tool(tool, {"name": WEATHER})
        return missing, ok

    missing, ok = with_client(go)

    assert missing.is_error is True
    assert "No listing named 'io.github.nobody/nothing'" in missing.content[0].text
    assert ok.is_error is False


def test_foreign_origin_and_host_are_refused_and_other_paths_reach_django(data: Shop):
    ListingFactory(name="io.github.acme/notes.md", title="Really named .md")
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    with httpx.Client(base_url=BASE, timeout=10) as http:
        evil_origin = http.post(
            "/mcp-catalog", json=body, headers={**headers, "Origin": "http://evil.example"}
        )
        evil_host = http.post(
            "/mcp-catalog", json=body, headers={**headers, "Host": "evil.example"}
        )
        own_origin = http.post(
            "/mcp-catalog", json=body, headers={**headers, "Origin": settings.SITE_URL}
        )
        llms = http.get("/llms.txt")
        # Markdown views under ASGI (URL resolution runs in async context there).
        markdown = http.get(f"/servers/{WEATHER}.md")
        real_md_name = http.get("/servers/io.github.acme/notes.md")

    assert evil_origin.status_code == 403
    assert evil_host.status_code == 400
    assert own_origin.status_code == 200
    assert own_origin.json()["result"]["serverInfo"]["name"] == "toolbooth-catalog"
    assert llms.status_code == 200
    assert llms.text.startswith("# Toolbooth")
    assert markdown.status_code == 200
    assert markdown.headers["content-type"] == "text/markdown; charset=utf-8"
    assert markdown.text.startswith("# Acme Weather\n")
    assert real_md_name.status_code == 200
    assert real_md_name.headers["content-type"].startswith("text/html")


def test_session_manager_starts_on_first_request_and_stops_on_lifespan_shutdown():
    """In-process: Django does no lifespan, so the app starts the SDK's manager itself."""
    from web.catalog_mcp import catalog_asgi_app

    app = catalog_asgi_app()
    list_tools = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-06-18",
    }

    async def request_then_shutdown() -> tuple[int, list[str], Any, list[str]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            response = await http.post("/mcp-catalog", json=list_tools, headers=headers)
        running = app._running
        assert running is not None
        assert running.task is not None
        assert not running.task.done()
        inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[str] = []

        async def receive() -> dict[str, Any]:
            return inbox.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["type"])

        await app({"type": "lifespan"}, receive, send)
        names = [tool["name"] for tool in response.json()["result"]["tools"]]
        return response.status_code, names, running, sent

    status, names, running, sent = asyncio.run(request_then_shutdown())

    assert status == 200
    assert sorted(names) == ["get_listing", "how_to_buy", "search_listings"]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert running.task.done()
    assert app._running is None

    # A later event loop (a new worker loop, or the next test) gets a fresh manager.
    status, names, _running, _sent = asyncio.run(request_then_shutdown())
    assert status == 200
    assert len(names) == 3

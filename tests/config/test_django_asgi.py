"""config/django_asgi.py: Django under ASGI runs its middleware chain in one thread hop.

Counted with asgiref's own `SyncToAsync` calls while a request goes through the handler
in-process (httpx's ASGI transport), next to Django's stock ASGIHandler for comparison.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest
from asgiref import sync
from django.core.handlers.asgi import ASGIHandler

from config.django_asgi import SyncChainASGIHandler


def _serve(handler: ASGIHandler, path: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=handler)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get(path)

    return asyncio.run(go())


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each sync_to_async call made while serving, by the name of what it runs."""
    calls: list[str] = []
    original = sync.SyncToAsync.__call__

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(sync.SyncToAsync, "__call__", counted)
    return calls


def test_the_middleware_chain_runs_in_one_hop(hops: list[str]) -> None:
    stock = _serve(ASGIHandler(), "/robots.txt")
    stock_hops = len(hops)
    hops.clear()

    response = _serve(SyncChainASGIHandler(), "/robots.txt")

    # request_started's receivers, the chain, and closing the response (request_finished).
    assert len(hops) <= 3, hops
    assert stock_hops > 2 * len(hops), f"Django's own handler: {stock_hops} hops"
    assert response.status_code == stock.status_code == 200
    assert response.text == stock.text
    # Every middleware still ran: security headers, our CSP, clickjacking.
    for header in ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options"):
        assert response.headers[header] == stock.headers[header]


def test_the_view_and_request_finished_share_the_request_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Closing the response (request_finished: the database connection goes back to the pool)
    and a streamed body's sync_to_async calls must land on the view's thread and connection;
    the handler keeps Django's one thread per request for all of them."""
    from django.core.signals import request_finished

    from web import seo

    seen: dict[str, int] = {}
    robots_txt = seo.robots_txt

    def recording() -> str:
        seen["view"] = threading.get_ident()
        return robots_txt()

    def finished(**kwargs: Any) -> None:
        seen["finished"] = threading.get_ident()

    monkeypatch.setattr(seo, "robots_txt", recording)
    request_finished.connect(finished)
    try:
        response = _serve(SyncChainASGIHandler(), "/robots.txt")
    finally:
        request_finished.disconnect(finished)

    assert response.status_code == 200
    assert seen["view"] == seen["finished"]
    assert seen["view"] != threading.get_ident()  # not on the event loop's thread

"""Tool discovery (gateway/discovery.py) against real loopback MCP servers: the demo upstream
(the real Python SDK server, in a subprocess) and a scripted Streamable HTTP fake in a thread
(the real wire format, with pagination, hostile text, failures and a record of what it got).
Ports 18700-18709."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from django.test import Client as DjangoClient

from config.celery import app as celery_app
from gateway.crypto import identity_key, identity_verify
from gateway.discovery import (
    DESCRIPTION_MAX,
    GuardedBackend,
    error_text,
    tools_list_fetch,
    upstream_tools_fetch,
)
from gateway.models import HostedUpstream
from gateway.services import hosted_upstream_set
from gateway.ssrf import UnsafeUpstreamError
from gateway.tasks import hosted_upstream_tools_refresh_task, hosted_upstreams_tools_refresh_task
from notifications.models import Notification, NotificationKind
from tests.billing.factories import PlanFactory, PlanPriceFactory
from tests.factories import ListingFactory, UserFactory
from tests.gateway.conftest import start, stop
from tests.gateway.factories import HostedUpstreamFactory

DEMO_PORT, FAKE_PORT = 18701, 18702
DEMO_URL = f"http://127.0.0.1:{DEMO_PORT}/mcp"
FAKE_URL = f"http://127.0.0.1:{FAKE_PORT}/mcp"
HOSTILE = "<script>alert(1)</script> [click](https://evil.example) <img src=x onerror=alert(2)>"


class FakeUpstream:
    """A stateless JSON-answering MCP server whose behaviour the test sets in `mode`."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok | http500 | hang
        self.pages: list[list[dict[str, Any]]] = [[_tool("only")]]
        self.requests: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return web.Response(status=405)
        msg = json.loads(await request.read())
        self.requests.append({"method": msg.get("method"), "headers": dict(request.headers)})
        if self.mode == "http500":
            return web.Response(status=500, text="upstream broke")
        if self.mode == "hang":
            await asyncio.sleep(1.5)
        rid, method = msg.get("id"), msg.get("method")
        if rid is None:
            return web.Response(status=202)
        if method == "initialize":
            result: dict[str, Any] = {
                "protocolVersion": "2025-06-18",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "fake", "version": "1"},
            }
        elif method == "tools/list":
            cursor = (msg.get("params") or {}).get("cursor")
            index = int(cursor) if cursor else 0
            result = {"tools": self.pages[index]}
            if index + 1 < len(self.pages):
                result["nextCursor"] = str(index + 1)
        else:  # e.g. the client's server/discover probe: a legacy server does not know it
            error = {"code": -32601, "message": "Method not found"}
            return web.json_response({"jsonrpc": "2.0", "id": rid, "error": error})
        return web.json_response({"jsonrpc": "2.0", "id": rid, "result": result})


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def serve() -> None:
        application = web.Application()
        application.router.add_route("*", "/mcp", fake.handle)
        runner = web.AppRunner(application)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", FAKE_PORT).start()
        runner_box.append(runner)
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop)
    assert ready.wait(10)
    yield fake
    asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture
def fake(fake_server: FakeUpstream, settings: Any) -> FakeUpstream:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = [f"127.0.0.1:{FAKE_PORT}", f"127.0.0.1:{DEMO_PORT}"]
    fake_server.mode = "ok"
    fake_server.pages = [[_tool("only")]]
    fake_server.requests.clear()
    return fake_server


@pytest.fixture(scope="module")
def demo_upstream() -> Iterator[str]:
    proc = start([sys.executable, "-m", "demo.upstream", "--port", str(DEMO_PORT)], DEMO_PORT)
    yield DEMO_URL
    stop(proc)


@pytest.fixture
def eager() -> Iterator[None]:
    """Celery runs tasks in-process, as in the demo (tests otherwise only enqueue)."""
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = before


def _tool(name: str, description: str = "", **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": description, "inputSchema": {"type": "object"}, **extra}


@pytest.mark.django_db
def test_saving_an_upstream_fetches_its_tools_from_the_real_demo_server(
    demo_upstream: str, fake: FakeUpstream, eager: None, django_capture_on_commit_callbacks: Any
) -> None:
    owner = UserFactory()
    listing = ListingFactory(owner=owner)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        hosted_upstream_set(listing=listing, actor=owner, url=demo_upstream)
    # Discovery after commit, which queues the "approve your tools" mail (nothing approved yet).
    assert len(callbacks) == 2
    kinds = list(Notification.objects.filter(recipient=owner).values_list("kind", flat=True))
    assert kinds == [NotificationKind.TOOLS_AWAITING_APPROVAL]
    upstream = HostedUpstream.objects.get(listing=listing)
    assert [t["name"] for t in upstream.tools] == ["forecast", "add", "fail"]
    assert upstream.tools[0]["description"].startswith("Tomorrow's forecast for a city")
    assert upstream.tools_fetched_at is not None
    assert upstream.tools_error == ""


@pytest.mark.django_db
def test_fetch_pages_through_cursors_cleans_text_and_sends_our_credentials(
    fake: FakeUpstream,
) -> None:
    fake.pages = [
        [_tool("search", "Find\x00 things\u202e  fast"), _tool("x" * 129, "name too long")],
        [_tool("report", "r" * 600, title="Report\nbuilder"), _tool("search", "duplicate")],
        [_tool("ping")],
    ]
    upstream = HostedUpstreamFactory(url=FAKE_URL, secret="creator-s3cret")
    result = upstream_tools_fetch(listing_id=upstream.listing_id)

    assert [t["name"] for t in result.tools] == ["search", "report", "ping"]
    assert result.tools[0]["description"] == "Find things fast"
    assert result.tools[1]["title"] == "Report builder"
    assert len(result.tools[1]["description"]) == DESCRIPTION_MAX
    assert result.tools_error == ""
    lists = [r for r in fake.requests if r["method"] == "tools/list"]
    assert len(lists) == 3
    headers = lists[0]["headers"]
    assert headers["Authorization"] == "Bearer creator-s3cret"
    fields = identity_verify(
        key=identity_key(upstream.listing.name), header=headers["X-Toolbooth-Identity"]
    )
    assert fields is not None
    assert fields["listing"] == upstream.listing.name
    assert fields["license"] == "0"


@pytest.mark.django_db
def test_a_failed_refresh_keeps_the_old_list_and_records_why(fake: FakeUpstream) -> None:
    fake.pages = [[_tool("search", "Find things")]]
    upstream = HostedUpstreamFactory(url=FAKE_URL)
    first = upstream_tools_fetch(listing_id=upstream.listing_id)
    assert [t["name"] for t in first.tools] == ["search"]

    fake.mode = "http500"
    second = upstream_tools_fetch(listing_id=upstream.listing_id)
    assert [t["name"] for t in second.tools] == ["search"]
    assert second.tools_fetched_at == first.tools_fetched_at
    assert second.tools_error
    assert "s3cret" not in second.tools_error

    fake.mode = "ok"
    third = upstream_tools_fetch(listing_id=upstream.listing_id)
    assert third.tools_error == ""
    assert third.tools_fetched_at > first.tools_fetched_at


def test_a_hanging_upstream_times_out(fake: FakeUpstream) -> None:
    fake.mode = "hang"
    with pytest.raises(TimeoutError) as excinfo:
        asyncio.run(tools_list_fetch(url=FAKE_URL, headers={}, timeout=0.5))
    assert error_text(excinfo.value).startswith("Timed out")


@pytest.mark.django_db
def test_an_unsafe_url_is_refused_without_contacting_it(fake: FakeUpstream, settings: Any) -> None:
    upstream = HostedUpstreamFactory(url=FAKE_URL, tools=[{"name": "kept"}])
    settings.GATEWAY_UPSTREAM_ALLOWLIST = []  # as in production: loopback is never an upstream
    result = upstream_tools_fetch(listing_id=upstream.listing_id)
    assert result.tools_error.startswith("Refused")
    assert result.tools == [{"name": "kept"}]
    assert fake.requests == []


def test_the_connect_time_guard_checks_resolved_addresses(
    fake: FakeUpstream, settings: Any
) -> None:
    settings.GATEWAY_UPSTREAM_ALLOWLIST = []
    with pytest.raises(UnsafeUpstreamError):
        asyncio.run(GuardedBackend().connect_tcp("127.0.0.1", FAKE_PORT, timeout=2))
    settings.GATEWAY_UPSTREAM_ALLOWLIST = [f"127.0.0.1:{FAKE_PORT}"]

    async def allowed() -> None:
        stream = await GuardedBackend().connect_tcp("127.0.0.1", FAKE_PORT, timeout=2)
        await stream.aclose()

    asyncio.run(allowed())
    assert fake.requests == []


@pytest.mark.django_db
def test_paused_upstream_is_not_contacted_and_tasks_are_idempotent(
    fake: FakeUpstream, eager: None
) -> None:
    paused = HostedUpstreamFactory(url=FAKE_URL, enabled=False)
    assert upstream_tools_fetch(listing_id=paused.listing_id).tools_fetched_at is None
    assert fake.requests == []

    live = HostedUpstreamFactory(url=FAKE_URL)
    assert hosted_upstreams_tools_refresh_task() == 1  # fans out to the enabled one only
    assert hosted_upstream_tools_refresh_task(live.listing_id) == 1  # twice is harmless
    assert HostedUpstream.objects.get(pk=live.pk).tools == [
        {"name": "only", "title": "", "description": ""}
    ]
    assert hosted_upstream_tools_refresh_task(10**9) == 0  # no such upstream: logged, skipped


@pytest.mark.django_db
def test_discovered_hostile_tools_are_shown_escaped_with_their_prices(
    fake: FakeUpstream, client: DjangoClient
) -> None:
    tools = [_tool("search", HOSTILE), _tool("admin"), _tool("ping", "Health check")]
    fake.pages = [tools]
    # Approved as served: the page lists approved tools only (an approval shows the findings).
    upstream = HostedUpstreamFactory(url=FAKE_URL, approved=tools)
    plan = PlanFactory(listing=upstream.listing, kind="per_call", name="Metered")
    PlanPriceFactory(
        plan=plan,
        per_call_amount=3,
        tool_prices={"ping": {"unit_amount": 0}, "admin": {"unit_amount": 0, "excluded": True}},
    )
    upstream_tools_fetch(listing_id=upstream.listing_id)

    html = client.get(f"/servers/{upstream.listing.name}").content.decode()
    assert "<script>alert(1)" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<code>search</code>" in html
    assert "<code>admin</code>" not in html  # the only plan excludes it: hidden
    assert "$0.03 per call" in html
    assert "Health check" in html

    text = client.get(f"/servers/{upstream.listing.name}.md").content.decode()
    assert "## Tools" in text
    assert "<script>" not in text
    assert "`[click](https://evil.example)`" in text  # a code span: not a link
    assert "- `search`: \\<script\\>alert\\(1\\)\\</script\\>" in text
    assert "  - Metered: $0.03 per call" in text
    assert "- `ping`: Health check\n  - Metered: free" in text


@pytest.mark.django_db(transaction=True)  # mail goes out on commit
def test_tools_never_approved_are_mailed_to_the_owner_once_per_manifest(
    fake: FakeUpstream, eager_celery: None, smtp_inbox: Any
) -> None:
    """A hosted listing whose creator never approved its tools is dark to agents (no tools,
    every call refused): discovery tells the owner, once for each list of tools it finds."""
    from tests.smtp import parts

    owner = UserFactory(email="host@example.com")
    upstream = HostedUpstreamFactory(
        listing=ListingFactory(owner=owner), url=FAKE_URL, approved=False
    )
    fake.pages = [[_tool("search", "Search the docs."), _tool("fetch")]]
    upstream_tools_fetch(listing_id=upstream.listing_id)
    upstream_tools_fetch(listing_id=upstream.listing_id)  # the hourly refresh: same tools
    smtp_inbox.wait_for(1)
    (mail,) = smtp_inbox.messages
    name = upstream.listing.name
    assert mail["To"] == "host@example.com"
    assert str(mail["Subject"]) == f"{name}: approve its tools before agents can use them"
    text, html = parts(mail)
    assert "serves 2 tools that you have not approved yet: search, fetch." in text
    assert "every call is refused (nothing is billed)" in text
    assert f"/creator/listings/{name}/" in html

    fake.pages = [[_tool("search", "Search the docs."), _tool("fetch"), _tool("extra")]]
    upstream_tools_fetch(listing_id=upstream.listing_id)  # a different list: one more mail
    smtp_inbox.wait_for(2)
    assert "serves 3 tools" in parts(smtp_inbox.messages[1])[0]

    # Once approved, discovery mails nothing more of this kind.
    from gateway.services import tool_manifest_approve

    upstream.refresh_from_db()
    tool_manifest_approve(
        listing=upstream.listing, actor=owner, expected_hash=upstream.manifest_hash
    )
    fake.pages = [[_tool("search", "Search the docs.")]]
    upstream_tools_fetch(listing_id=upstream.listing_id)
    kinds = list(Notification.objects.values_list("kind", flat=True))
    assert kinds.count(NotificationKind.TOOLS_AWAITING_APPROVAL) == 2

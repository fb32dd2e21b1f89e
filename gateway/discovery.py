"""Tool discovery: ask a hosted listing's upstream which tools it has, so pages can list them.

The upstream is contacted the way the gateway contacts it: the SSRF guard runs when each
connection is opened (the name is resolved, every address checked, and the checked address is
the one connected to, so a re-resolution cannot swap in a private one), redirects leave the
endpoint's origin never, and the request carries the creator's secret as `Authorization:
Bearer` and our signed identity header (license 0: Toolbooth itself, not a buyer), built by
`gateway.proxy.forward_headers` and `gateway.crypto.identity_sign`. The real `mcp` client
speaks the protocol (either era), pages through `tools/list` (bounded) and the cleaned list is
stored, with the canonical manifest (gateway.manifest: schemas and annotations too, bounded) that
is compared with the creator's approved one; differences become pending `ToolChange`s.
Everything the upstream says is untrusted text: cleaned and capped here, escaped where it is
shown. A failure records a short error and keeps the previous list.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio
import httpcore2
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from common.text import clean_text
from gateway.crypto import identity_key, identity_sign, secret_decrypt
from gateway.health import upstream_check_record
from gateway.manifest import manifest_build, manifest_hash, tool_hashes
from gateway.models import HostedUpstream, ToolChangeSource, ToolManifest
from gateway.notices import tools_awaiting_approval_notify
from gateway.proxy import forward_headers
from gateway.services import tool_changes_record
from gateway.ssrf import UnsafeUpstreamError, check_addresses, check_upstream_url

logger = logging.getLogger(__name__)

# The whole fetch (connect, handshake, every page) must finish within this; a refresh is a
# background job, so a slow upstream only delays its own listing's tool list.
FETCH_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
# Bounds on what one upstream can make us store and show: a listing page lists every tool.
MAX_PAGES = 20
MAX_TOOLS = 200
NAME_MAX = 128
TITLE_MAX = 200
DESCRIPTION_MAX = 500
ERROR_MAX = 200
# The identity header names a license; discovery is Toolbooth itself, not a buyer.
DISCOVERY_LICENSE_ID = 0

T = TypeVar("T")


class GuardedBackend(httpcore2.AsyncNetworkBackend):
    """httpcore2's network backend with the SSRF guard at connect time (the httpx2 twin of
    `gateway.proxy.GuardedResolver`): resolve, check every address, connect to a checked one."""

    def __init__(self) -> None:
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore2.ConnectError(f"cannot resolve the upstream host: {exc}") from exc
        addresses = [str(info[4][0]) for info in infos]
        check_addresses(host, port, addresses)
        return await self._inner.connect_tcp(
            addresses[0],
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        raise UnsafeUpstreamError("Unix sockets are not upstreams.")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx2.AsyncHTTPTransport):
    """httpx2's transport on a connection pool that uses `GuardedBackend` (httpx2 has no public
    hook for the backend, so the pool is rebuilt with the same settings plus ours)."""

    def __init__(self) -> None:
        super().__init__(trust_env=False, retries=0)
        ssl_context = httpx2.create_ssl_context(trust_env=False)
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=4,
            max_keepalive_connections=4,
            network_backend=GuardedBackend(),
        )


def tool_text(name: Any, title: Any, description: Any) -> dict[str, str] | None:
    """A tool's name, title and description as pages show them (cleaned and bounded like all
    upstream text), or None for a name that cannot be shown."""
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX:
        return None  # a truncated name would not be the tool's name any more
    name = clean_text(name, max_length=NAME_MAX)
    if not name:
        return None
    return {
        "name": name,
        "title": clean_text(title, max_length=TITLE_MAX),
        "description": clean_text(description, max_length=DESCRIPTION_MAX),
    }


def _tool_clean(raw: Any) -> dict[str, str] | None:
    return tool_text(
        getattr(raw, "name", None), getattr(raw, "title", None), getattr(raw, "description", None)
    )


async def tools_list_fetch(
    *, url: str, headers: dict[str, str], timeout: float = FETCH_TIMEOUT
) -> list[dict[str, str]]:
    """Every tool the MCP server at `url` lists (cleaned, deduplicated, at most MAX_TOOLS)."""
    tools, _ = await tools_manifest_fetch(url=url, headers=headers, timeout=timeout)
    return tools


async def tools_manifest_fetch(
    *, url: str, headers: dict[str, str], timeout: float = FETCH_TIMEOUT
) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """(cleaned tools for pages, the raw tool entries as the SDK parsed them) of the MCP server
    at `url`, at most MAX_TOOLS each. The raw entries become the canonical manifest
    (gateway.manifest), which must hash like what the gateway sees pass, so they are not cleaned.
    """
    http = httpx2.AsyncClient(
        headers=headers,
        transport=GuardedTransport(),
        timeout=httpx2.Timeout(timeout, connect=CONNECT_TIMEOUT),
        follow_redirects=False,
        trust_env=False,
    )
    tools: list[dict[str, str]] = []
    raws: list[dict[str, Any]] = []
    seen: set[str] = set()
    raw_seen: set[str] = set()
    with anyio.fail_after(timeout):
        async with (
            http,
            Client(streamable_http_client(url, http_client=http), mode="auto") as client,
        ):
            cursor: str | None = None
            cursors: set[str] = set()
            for _ in range(MAX_PAGES):
                page = await client.list_tools(cursor=cursor, cache_mode="bypass")
                for raw in page.tools:
                    raw_name = getattr(raw, "name", None)
                    if isinstance(raw_name, str) and raw_name not in raw_seen:
                        raw_seen.add(raw_name)
                        raws.append(raw.model_dump(by_alias=True, exclude_none=True, mode="json"))
                    tool = _tool_clean(raw)
                    if tool is None or tool["name"] in seen:
                        continue
                    seen.add(tool["name"])
                    tools.append(tool)
                cursor = page.next_cursor
                if not cursor or cursor in cursors or len(tools) >= MAX_TOOLS:
                    break
                cursors.add(cursor)
    return tools[:MAX_TOOLS], raws[:MAX_TOOLS]


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def error_text(exc: BaseException) -> str:
    """A short reason for the creator (never a header value or a secret)."""
    leaf = _leaf(exc)
    cause = leaf.__cause__ or leaf.__context__
    if isinstance(leaf, UnsafeUpstreamError) or isinstance(cause, UnsafeUpstreamError):
        text = str(leaf if isinstance(leaf, UnsafeUpstreamError) else cause)
        return clean_text(f"Refused: {text}", max_length=ERROR_MAX)
    if isinstance(leaf, TimeoutError | httpx2.TimeoutException):
        return f"Timed out after {FETCH_TIMEOUT:g} s."
    if isinstance(leaf, httpx2.HTTPStatusError):
        return f"The upstream answered HTTP {leaf.response.status_code}."
    if isinstance(leaf, httpx2.TransportError | OSError):
        return "Could not connect to the upstream."
    if isinstance(leaf, MCPError):
        return clean_text(f"MCP error: {leaf.error.message}", max_length=ERROR_MAX)
    return clean_text(f"Tool discovery failed ({type(leaf).__name__}).", max_length=ERROR_MAX)


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine from sync code, also when this thread already runs an event loop."""

    async def main() -> T:
        return await factory()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


def upstream_tools_fetch(*, listing_id: int) -> HostedUpstream:
    """Ask the listing's upstream for its tools and store them (or the reason it failed).

    Idempotent; a paused upstream is not contacted. The network call happens outside any
    transaction, and the result is stored only if the URL is still the one we asked, so a
    concurrent `hosted_upstream_set` to a new URL is never overwritten with the old one's tools.
    Raises HostedUpstream.DoesNotExist when the listing has no upstream.
    """
    upstream = HostedUpstream.objects.select_related("listing").get(listing_id=listing_id)
    if not upstream.enabled:
        logger.info("gateway.tools_skip_paused", extra={"listing_id": listing_id})
        return upstream
    url = upstream.url
    listing_name = upstream.listing.name
    identity = identity_sign(
        key=identity_key(listing_name),
        listing_name=listing_name,
        license_id=DISCOVERY_LICENSE_ID,
    )
    headers = forward_headers(
        {}, secret=secret_decrypt(upstream.secret_encrypted), identity=identity
    )
    now = datetime.now(tz=UTC)
    update: dict[str, Any]
    try:
        check_upstream_url(url, resolve=False)  # shape and literal addresses; names at connect
        tools, raws = _run(lambda: tools_manifest_fetch(url=url, headers=headers))
    except Exception as exc:  # any failure is recorded; the previous list stays
        update = {"tools_error": error_text(exc)}
        manifest: list[dict[str, Any]] | None = None
        logger.warning(
            "gateway.tools_fetch_failed",
            extra={"listing_id": listing_id, "error": type(_leaf(exc)).__name__},
        )
    else:
        manifest, skipped = manifest_build(raws)
        update = {
            "tools": tools,
            "tools_fetched_at": now,
            "tools_error": "",
            "manifest": manifest,
            "manifest_hash": manifest_hash(tool_hashes(manifest)),
            "manifest_skipped": skipped,
        }
        logger.info("gateway.tools_fetched", extra={"listing_id": listing_id, "n": len(tools)})
    stored = HostedUpstream.objects.filter(pk=upstream.pk, url=url).update(**update, updated_at=now)
    if stored:  # a failed discovery counts against health like a failed call (gateway.health)
        error = f"Tool discovery: {update['tools_error']}" if manifest is None else ""
        upstream_check_record(listing_id=listing_id, ok=manifest is not None, error=error, at=now)
    if stored and manifest is not None:  # the whole list: differences from the approved one
        tool_changes_record(
            listing_id=listing_id,
            observed=manifest,
            source=ToolChangeSource.DISCOVERY,
            complete=True,
        )
        if manifest and not ToolManifest.objects.filter(listing_id=listing_id).exists():
            tools_awaiting_approval_notify(
                listing_id=listing_id,
                names=[t["name"] for t in manifest],
                manifest_hash=update["manifest_hash"],
            )
    upstream.refresh_from_db()
    return upstream

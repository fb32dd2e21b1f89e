"""The gateway as plain ASGI in front of Django: `/mcp/<listing name>` and `/metrics`.

Why not a Django view: Django's request cycle alone costs 600-750 µs of CPU per request on this
machine, twice the gateway's whole budget (ARCHITECTURE.md, issue 4 section 6). Everything else
(pages, API, admin) is ordinary Django behind this app. The order on a gateway request:

1. method (POST/GET/DELETE), Host in ALLOWED_HOSTS (400), Origin (403), no credentials in the
   query string (400), the listing's upstream (404), `Authorization: Bearer` with a
   well-formed key (401);
2. the body, read once (413 over GATEWAY_MAX_BODY_BYTES) and parsed (400 + JSON-RPC error for
   non-JSON, arrays (batching was removed in 2025-06-18) and non-objects);
3. admission in one Redis round trip (gateway.ratelimit): entitlement, listing, session
   binding, rate limit, quota, spend caps. Every invalid key gets the same 401 and body; a
   tools/call of a tool outside the creator's approved manifest, or changed since, or of a
   listing whose creator never approved one, is admitted as a plain request (nothing
   reserved) and refused -32602 (the rug-pull guard, checked in process memory before
   admission);
4. one upstream request (gateway.proxy), streamed back; a tools/call is matched by id, billed
   only when its result has no `isError: true`, and recorded on the usage queue.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.http.request import split_domain_port, validate_host

from billing.entitlements import Entitlement
from billing.keys import credential_is_well_formed
from billing.keys import key_hash as hash_key
from billing.pricing import advertised_price
from common.clientaddr import client_address, trusted_networks
from gateway import deferred, fastjson, metering, proxy
from gateway.authfail import AuthFailures
from gateway.crypto import identity_sign
from gateway.guidance import Guidance
from gateway.manifest import (
    MAX_TOOL_BYTES,
    PASSTHROUGH_KEYS,
    TOOL_CHANGES_KEY,
    canonical_bytes,
    storable,
    tool_canonical,
)
from gateway.ratelimit import (
    EXCLUDED,
    INVALID,
    KIND_CALL,
    KIND_FREE,
    KIND_REQUEST,
    OK,
    QUOTA,
    RATE_LIMITED,
    REDIS_FAILURES,
    SESSION,
    SPEND_CAP,
    UNAVAILABLE,
    WRONG_LISTING,
    Admission,
    LocalLimiter,
    RedisLimiter,
    StoreUnavailable,
    from_db,
    ledger_counters,
    seconds_to_period_end,
    seconds_to_utc_midnight,
)
from gateway.resp import RespClient
from gateway.selectors import UpstreamConfig, upstream_config_get
from gateway.ssrf import UnsafeUpstreamError, check_upstream_url

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
JSON_CT = (b"content-type", b"application/json")
# Requests that name a task: only the key that created the task may send them.
_TASK_METHODS = frozenset({"tasks/get", "tasks/result", "tasks/cancel"})
_QUERY_CREDENTIALS = {"key", "api_key", "apikey", "token", "access_token", "license", "auth"}
# A tools/call on a listing whose creator never approved a manifest (the rug-pull guard).
UNAPPROVED_MESSAGE = "This server's tools are awaiting its creator's approval."


def _error_body(rpc_id: Any, code: int, message: str, data: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return fastjson.dumps({"jsonrpc": "2.0", "id": rpc_id, "error": error})


async def _respond(
    send: proxy.Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    hdrs = [JSON_CT, (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


def _rate_headers(adm: Admission) -> list[tuple[bytes, bytes]]:
    """draft-ietf-httpapi-ratelimit-headers: the policy and what is left of it."""
    if not adm.rate_limit:
        return []
    name = adm.rate_policy
    return [
        (b"ratelimit-policy", f'"{name}";q={adm.rate_limit};w=60'.encode()),
        (
            b"ratelimit",
            f'"{name}";r={max(adm.rate_remaining, 0)};t={max(adm.rate_reset, 0)}'.encode(),
        ),
    ]


def _has_query_credentials(query: bytes) -> bool:
    text = query.decode("latin-1")
    if "tb_live_" in text or "tb_test_" in text:
        return True
    return any(k.lower() in _QUERY_CREDENTIALS for k, _ in parse_qsl(text, True))


def _session_id_ok(sid: str) -> bool:
    return len(sid) <= 200 and all(0x21 <= ord(c) <= 0x7E for c in sid)


async def _read_body(receive: proxy.Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class BodyTimeout(Exception):
    """The request body did not arrive within GATEWAY_BODY_TIMEOUT."""


class _BodyWatch:
    """Requests whose body is still arriving, and a sweep once a second that cancels the reads
    past `timeout`: a client that sends its headers and then withholds or trickles the body
    would otherwise hold a connection for ever. A dict entry per read, not a timer per request
    (a timer costs ~4 µs of the hot path; an entry ~0.2 µs)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.reading: dict[asyncio.Task[Any], float] = {}
        self.expired: set[asyncio.Task[Any]] = set()
        self.sweeper: asyncio.TimerHandle | None = None

    async def read(self, receive: proxy.Receive, limit: int) -> bytes | None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 (always inside a request task)
        self.reading[task] = time.monotonic() + self.timeout
        if self.sweeper is None:
            self.sweeper = asyncio.get_running_loop().call_later(1.0, self._sweep)
        try:
            return await _read_body(receive, limit)
        except asyncio.CancelledError:
            # The sweep cancels only while the read waits on receive(), so its cancellation
            # always lands here; anything else is a real cancellation and goes on.
            if task not in self.expired:
                raise
            self.expired.discard(task)
            task.uncancel()
            raise BodyTimeout from None
        finally:
            self.reading.pop(task, None)

    def _sweep(self) -> None:
        now = time.monotonic()
        for task, deadline in list(self.reading.items()):
            if deadline <= now:
                del self.reading[task]
                self.expired.add(task)
                task.cancel()
        self.sweeper = (
            asyncio.get_running_loop().call_later(1.0, self._sweep) if self.reading else None
        )


def _load_entitlement_sync(key_hash: str) -> Entitlement | None:
    from billing.selectors import entitlement_get_by_key_hash

    try:
        return entitlement_get_by_key_hash(key_hash=key_hash)
    except (OperationalError, InterfaceError):
        connection.close()  # a dropped connection: reconnect once
        return entitlement_get_by_key_hash(key_hash=key_hash)


def _load_upstream_sync(name: str) -> UpstreamConfig | None:
    try:
        config = upstream_config_get(listing_name=name)
    except (OperationalError, InterfaceError):
        connection.close()
        config = upstream_config_get(listing_name=name)
    if config is not None:
        try:  # literal addresses bypass the resolver's check, so check the URL itself here
            check_upstream_url(config.url, resolve=False)
        except UnsafeUpstreamError:
            logger.warning("gateway.upstream_unsafe", extra={"listing_id": config.listing_id})
            return None
    return config


class _SingleFlight:
    """Concurrent loads of the same key share one query (a cache entry expiring under load
    would otherwise send every in-flight request to PostgreSQL at once)."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    async def run(self, key: str, load: Callable[[], Awaitable[Any]]) -> Any:
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.ensure_future(load())
            self._inflight[key] = fut
            fut.add_done_callback(lambda _: self._inflight.pop(key, None))
        return await asyncio.shield(fut)

    def running(self, key: str) -> bool:
        return key in self._inflight


def _routing_headers_agree(headers: dict[bytes, bytes], method: str, tool: str) -> bool:
    """The 2026-07-28 routing headers, when sent, equal the body (servers must answer 400
    otherwise). We meter from the body, so an upstream that routed by header must never be
    handed a cheap tool in the body and a dear one in the header."""
    sent = headers.get(b"mcp-method")
    if sent is not None and sent.decode("latin-1") != method:
        return False
    if tool:
        name = headers.get(b"mcp-name")
        if name is not None and _header_text(name) != tool:
            return False
    return True


def _header_text(raw: bytes) -> str | None:
    """A header value, with the SDK's `=?base64?...?=` form for non-ASCII decoded."""
    text = raw.decode("latin-1")
    if text.startswith("=?base64?") and text.endswith("?="):
        try:
            return base64.b64decode(text[9:-2], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
    return text


_IDS = (str, int, float)  # JSON-RPC request ids (bool is an int to Python, not to JSON)


class Gateway:
    """Per-process state: the pooled client, the limiter, the caches and the local queue."""

    def __init__(self) -> None:
        s = settings
        self.require_key: bool = s.GATEWAY_REQUIRE_KEY
        self.allowed_origins = frozenset(s.GATEWAY_ALLOWED_ORIGINS)
        self.allowed_hosts: list[str] = list(s.ALLOWED_HOSTS)
        self.hosts_seen: dict[bytes, bool] = {}
        self.max_body: int = s.GATEWAY_MAX_BODY_BYTES
        self.body_watch = _BodyWatch(s.GATEWAY_BODY_TIMEOUT)
        self.read_timeout: float = s.GATEWAY_UPSTREAM_READ_TIMEOUT
        self.idle_timeout: float = s.GATEWAY_STREAM_IDLE_TIMEOUT
        self.upstream_ttl: float = s.GATEWAY_UPSTREAM_CACHE_SECONDS
        self.guidance = Guidance(self.upstream_ttl)  # refusal bodies people can act on
        # read_timeout bounds the wait for the response headers and between body reads; an SSE
        # stream may then stay silent up to idle_timeout (_Call._relay).
        self.http = proxy.UpstreamPool(
            pool_size=s.GATEWAY_UPSTREAM_POOL_SIZE,
            connect_timeout=s.GATEWAY_UPSTREAM_CONNECT_TIMEOUT,
        )
        self.upstreams: dict[str, tuple[float, UpstreamConfig | None]] = {}
        self.identities: dict[tuple[str, int, bytes], tuple[int, str]] = {}
        # The rug-pull guard: the last hash this process saw for an approved tool whose
        # tools/list entry differed from the approved one (absent = it matched), and the
        # changes already reported (listing:approved hash:seen hash).
        self.tool_seen: dict[tuple[int, str], str] = {}
        self.tool_reported: set[str] = set()
        self.background: set[asyncio.Future[Any]] = set()
        self.flights = _SingleFlight()
        self.queue = metering.LocalUsageQueue()
        local = LocalLimiter(
            self._load_entitlement,
            cache_seconds=s.GATEWAY_ENTITLEMENT_CACHE_SECONDS,
            session_ttl=s.GATEWAY_SESSION_TTL_SECONDS,
            counters=ledger_counters,  # the demo seeds its counters from the ledger
            method_rate=s.GATEWAY_METHOD_RATE_PER_MINUTE,
        )
        self.local = local
        self.redis: RedisLimiter | None = None
        if s.REDIS_URL:
            client = RespClient(s.REDIS_URL, timeout=s.GATEWAY_REDIS_TIMEOUT)
            self.redis = RedisLimiter(
                client,
                local,
                self._load_entitlement,
                cache_seconds=s.GATEWAY_ENTITLEMENT_CACHE_SECONDS,
                session_ttl=s.GATEWAY_SESSION_TTL_SECONDS,
                stream=s.GATEWAY_USAGE_STREAM,
                counters=ledger_counters,  # lost quota/spend counters, on a cache miss
                method_rate=s.GATEWAY_METHOD_RATE_PER_MINUTE,
                stale_seconds=s.GATEWAY_STALE_ENTITLEMENT_SECONDS,  # PostgreSQL outages
            )
        self.deferred: deferred.RedisDeferred | deferred.LocalDeferred
        if self.redis is not None:
            self.deferred = deferred.RedisDeferred(
                self.redis.client,
                stream=s.GATEWAY_USAGE_STREAM,
                session_ttl=s.GATEWAY_SESSION_TTL_SECONDS,
            )
        else:
            self.deferred = deferred.LocalDeferred(local.counters, self.queue.put)
        self.trusted_proxies = trusted_networks(s.TRUSTED_PROXIES)
        self.auth_failures = AuthFailures(
            self.redis.client if self.redis is not None else None,
            s.GATEWAY_AUTH_FAILURES_PER_MINUTE,
        )

    def identity(self, up: UpstreamConfig, license_id: int) -> str:
        """The signed identity header; its signature covers whole seconds, so it is signed once
        per second per listing and license, not once per call."""
        t = int(time.time())
        cache_key = (up.listing_name, license_id, up.identity_key)
        hit = self.identities.get(cache_key)
        if hit is not None and hit[0] == t:
            return hit[1]
        header = identity_sign(
            key=up.identity_key, listing_name=up.listing_name, license_id=license_id, ts=t
        )
        if len(self.identities) > 10_000:
            self.identities.clear()
        self.identities[cache_key] = (t, header)
        return header

    async def _load_entitlement(self, key_hash: str) -> Entitlement | None:
        ent: Entitlement | None = await self.flights.run(
            "ent:" + key_hash, lambda: from_db(sync_to_async(_load_entitlement_sync)(key_hash))
        )
        return ent

    def tool_refusal(self, up: UpstreamConfig, tool: str) -> tuple[str, str]:
        """(reason, message) when the approved manifest does not allow a tools/call of `tool`:
        never approved, or changed since (a pending change anywhere, or this process saw its
        tools/list entry differ), or the creator never approved any manifest. ("", "") when it
        may be called. Dict lookups only."""
        approved = up.approved_hashes
        if approved is None:  # nothing approved yet: no tool may run
            return "manifest_unapproved", UNAPPROVED_MESSAGE
        want = approved.get(tool)
        if want is None:
            return "tool_unapproved", f"Unknown tool: {tool[:100]} (not approved by the creator)."
        if tool in up.blocked or self.tool_seen.get((up.listing_id, tool), want) != want:
            text = "Tool changed since the creator approved it; awaiting re-approval."
            return "tool_changed", text
        return "", ""

    def tools_guard(self, up: UpstreamConfig, tools: list[Any]) -> list[dict[str, Any]]:
        """A tools/list answer's tools as the creator approved them: an unchanged tool passes
        (as its approved copy, plus the upstream's unhashed `_meta`, `icons`, `execution`), a
        changed one is replaced by its approved copy, one never approved is dropped. Changes
        are remembered for tools/call and reported off the request (Redis, else a thread).
        A listing whose creator never approved a manifest shows no tools at all (nothing is
        reported: there is nothing to compare with). Every tools/list result that passes the
        gateway comes here: a direct answer (JSON or SSE) and one replayed on a resumed GET
        stream, or one sent under another request's id on any stream (`_Call._prices`)."""
        approved = up.approved_hashes
        if approved is None:
            return []
        kept: list[dict[str, Any]] = []
        names: set[str] = set()
        for entry in tools:
            tool = tool_canonical(entry)
            if tool is None or tool["name"] in names:
                continue  # a second entry of one name is ambiguous: the first one counts
            name = tool["name"]
            names.add(name)
            data = canonical_bytes(tool)
            seen = hashlib.sha256(data).hexdigest()
            want = approved.get(name)
            if seen == want:
                self.tool_seen.pop((up.listing_id, name), None)
                if name in up.blocked:  # back to the approved tool: the pending change can close
                    self._tool_report(up, tool, seen, want, data)
            else:
                self._tool_report(up, tool, seen, want or "", data)
                if want is None:
                    continue
                if len(self.tool_seen) > 100_000:
                    self.tool_seen.clear()
                self.tool_seen[(up.listing_id, name)] = seen
            out = dict(up.approved_tools[name])
            for key in PASSTHROUGH_KEYS:
                if key in entry:
                    out[key] = entry[key]
            kept.append(out)
        return kept

    def _tool_report(
        self, up: UpstreamConfig, tool: dict[str, Any], seen: str, want: str, data: bytes
    ) -> None:
        """Hand a seen change to the recorder once per process: a Redis HSET (drained by
        tool_changes_drain_task), or without Redis (the demo) the service in a thread. Never
        awaited by the request; a failure is retried on the next pass."""
        mark = f"{up.listing_id}:{want}:{seen}"
        if len(data) > MAX_TOOL_BYTES or mark in self.tool_reported or not storable(data):
            return  # cannot be approved: discovery names it instead
        if len(self.tool_reported) > 10_000:
            self.tool_reported.clear()
        self.tool_reported.add(mark)
        coro: Awaitable[Any]
        if self.redis is not None:
            payload = fastjson.dumps(
                {"listing_id": up.listing_id, "tool": tool, "seen_at": time.time()}
            )
            coro = self.redis.client.call("HSET", TOOL_CHANGES_KEY, mark, payload)
        else:
            coro = sync_to_async(_tool_change_record_sync)(up.listing_id, tool)

        def done(fut: asyncio.Future[Any]) -> None:
            self.background.discard(fut)
            if fut.cancelled() or fut.exception() is not None:
                self.tool_reported.discard(mark)
                logger.warning(
                    "gateway.tool_change_report_failed", extra={"listing_id": up.listing_id}
                )

        fut = asyncio.ensure_future(coro)
        self.background.add(fut)
        fut.add_done_callback(done)

    async def close(self) -> None:
        if self.background:
            await asyncio.wait(list(self.background), timeout=1.0)
        if self.redis is not None:
            await self.redis.close()  # deferred records first; failures land in the queue
        await self.queue.flush()
        await self.http.close()

    async def upstream(self, name: str, now: float) -> UpstreamConfig | None:
        hit = self.upstreams.get(name)
        if hit is not None and (hit[0] > now or self.flights.running("up:" + name)):
            # Fresh, or a reload is under way: the others do not queue behind it (during a
            # PostgreSQL outage that reload waits GATEWAY_DB_TIMEOUT).
            return hit[1]
        try:
            config: UpstreamConfig | None = await self.flights.run(
                "up:" + name, lambda: from_db(sync_to_async(_load_upstream_sync)(name))
            )
        except StoreUnavailable:
            if hit is None:
                raise
            # Stale if error: the listing's upstream rarely changes, and a PostgreSQL outage
            # should not stop keys that Redis still knows. Asked again a second after the
            # failed read (not after this request began: it waited GATEWAY_DB_TIMEOUT).
            self.upstreams[name] = (time.time() + 1.0, hit[1])
            return hit[1]
        if len(self.upstreams) > 10_000:
            self.upstreams.clear()
        self.upstreams[name] = (now + self.upstream_ttl, config)
        return config

    async def admit(
        self,
        *,
        key_hash: str,
        name: str,
        kind: str,
        tool: str,
        session_id: str,
        now: float,
        call_id: str,
        may_load: bool = True,
    ) -> Admission:
        limiter: RedisLimiter | LocalLimiter = self.redis if self.redis is not None else self.local
        return await limiter.admit(
            key_hash=key_hash,
            listing_name=name,
            kind=kind,
            tool=tool,
            session_id=session_id,
            now=now,
            call_id=call_id,
            may_load=may_load,
        )

    async def session_bind(self, session_id: str, key_id: int, now: float) -> None:
        if self.redis is not None:
            await self.redis.session_bind(session_id, key_id, now)
        else:
            self.local.session_bind(session_id, key_id, now)

    async def session_forget(self, session_id: str, now: float) -> None:
        if self.redis is not None:
            await self.redis.session_forget(session_id, now)
        else:
            self.local.session_forget(session_id)

    def record(self, record: dict[str, Any], adm: Admission, now: float) -> None:
        """Put a finished call on the durable queue (Redis stream, else in-process)."""
        refund = not record["billable"]
        if self.redis is not None and not adm.local:
            self.redis.record(
                metering.record_json(record),
                call_id=record["call_id"],
                refund=refund,
                reserved=adm.reserved,
                now=now,
                on_failure=lambda: self.queue.put(record),
            )
            return
        if refund:
            self.local.refund(adm.reserved)
        self.queue.put(record)

    # --- the request ------------------------------------------------------------------------

    async def handle(self, scope: Scope, receive: proxy.Receive, send: proxy.Send) -> None:
        started = time.perf_counter()
        now = time.time()
        method: str = scope["method"]
        name: str = scope["path"][5:]
        if method not in ("POST", "GET", "DELETE"):
            body = _error_body(None, -32600, "Method not allowed.")
            return await _respond(send, 405, body, [(b"allow", b"GET, POST, DELETE")])
        headers: dict[bytes, bytes] = dict(scope["headers"])
        if not self._host_ok(headers.get(b"host", b"")):
            return await _respond(send, 400, _error_body(None, -32600, "Host not allowed."))
        origin = headers.get(b"origin")
        if origin is not None and origin.decode("latin-1") not in self.allowed_origins:
            return await _respond(send, 403, _error_body(None, -32600, "Origin not allowed."))
        if scope.get("query_string") and _has_query_credentials(scope["query_string"]):
            body = _error_body(None, -32600, "Send the key in the Authorization header only.")
            return await _respond(send, 400, body)
        try:
            up = await self.upstream(name, now)
        except StoreUnavailable:
            return await self._store_unavailable(send, name, None)
        if up is None:
            return await _respond(send, 404, _error_body(None, -32601, "Unknown MCP server."))
        key_hash = ""
        if self.require_key:
            auth = headers.get(b"authorization", b"")
            raw_key = auth[7:].strip().decode("latin-1") if auth[:7].lower() == b"bearer " else ""
            if not credential_is_well_formed(raw_key):
                return await self._unauthorized(send, name, scope, now)
            key_hash = hash_key(raw_key)

        message: dict[str, Any] | None = None
        body = b""
        rpc_id: Any = None
        kind, tool, rpc_method, task_id = KIND_FREE, "", "", ""
        if method == "POST":
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                return await _respond(send, 413, _error_body(None, -32600, "Body too large."))
            try:
                read = await self.body_watch.read(receive, self.max_body)
            except BodyTimeout:
                return await _respond(send, 408, _error_body(None, -32600, "Body too slow."))
            if read is None:
                return await _respond(send, 413, _error_body(None, -32600, "Body too large."))
            body = read
            try:
                parsed = fastjson.loads(body)
            except ValueError:
                return await _respond(send, 400, _error_body(None, -32700, "Parse error."))
            if isinstance(parsed, list):
                text = "Batch requests are not supported (MCP 2025-06-18 removed batching)."
                return await _respond(send, 400, _error_body(None, -32600, text))
            if not isinstance(parsed, dict):
                return await _respond(send, 400, _error_body(None, -32600, "Invalid request."))
            message = parsed
            rpc_id = message.get("id")
            raw_method = message.get("method")
            if raw_method is not None:
                # A request's id is a string or a number, never null (MCP, JSON-RPC): an upstream
                # that took `"id": null` as a notification's would run the tool unmetered.
                if type(raw_method) is not str or ("id" in message and type(rpc_id) not in _IDS):
                    body_err = _error_body(None, -32600, "Invalid request: a bad method or id.")
                    return await _respond(send, 400, body_err)
                rpc_method = raw_method
                if rpc_id is None and rpc_method == "tools/call":
                    body_err = _error_body(None, -32600, "tools/call is a request: it needs an id.")
                    return await _respond(send, 400, body_err)
            if rpc_method and rpc_id is not None:
                kind = KIND_REQUEST
                if rpc_method == "tools/call":
                    params = message.get("params")
                    raw_tool = params.get("name") if isinstance(params, dict) else None
                    if not isinstance(raw_tool, str) or not raw_tool:
                        body_err = _error_body(rpc_id, -32602, "tools/call needs params.name.")
                        return await _respond(send, 400, body_err)
                    tool, kind = raw_tool, KIND_CALL
                elif rpc_method in _TASK_METHODS:
                    params = message.get("params")
                    raw_task = params.get("taskId") if isinstance(params, dict) else None
                    task_id = raw_task if isinstance(raw_task, str) else ""
            if rpc_method and not _routing_headers_agree(headers, rpc_method, tool):
                text = "Mcp-Method / Mcp-Name headers do not match the body."
                return await _respond(send, 400, _error_body(rpc_id, -32020, text))
        elif method == "GET":
            kind = KIND_REQUEST
        session_id = headers.get(b"mcp-session-id", b"").decode("latin-1")
        if session_id and not _session_id_ok(session_id):
            return await _respond(send, 400, _error_body(rpc_id, -32600, "Bad Mcp-Session-Id."))

        refused, refusal = "", ""
        if kind == KIND_CALL:
            refused, refusal = self.tool_refusal(up, tool)
            if refused:  # authenticated like any request, but nothing is reserved or billed
                kind, tool = KIND_REQUEST, ""
        call_id = str(metering.new_call_id()) if kind == KIND_CALL else ""
        if self.require_key:
            try:
                adm = await self.admit(
                    key_hash=key_hash,
                    name=name,
                    kind=kind,
                    tool=tool,
                    session_id=session_id,
                    now=now,
                    call_id=call_id,
                    # A throttled address's unknown keys are not looked up (gateway.authfail).
                    may_load=not (self.auth_failures.blocked and self._throttled(scope, now)),
                )
            except StoreUnavailable:
                return await self._store_unavailable(send, name, rpc_id)
        else:
            adm = Admission(OK, _anonymous(up))
        if adm.verdict != OK or adm.entitlement is None:
            return await self._refuse(send, name, adm, rpc_id, tool, now, scope)
        if refused:
            metering.rejected_metric(name, refused).inc()
            body = _error_body(rpc_id, -32602, refusal, {"reason": refused})
            return await _respond(send, 200, body)
        ent = adm.entitlement
        pending: dict[str, Any] | None = None
        if rpc_method in _TASK_METHODS and ent.key_id:
            try:
                task = await self.deferred.task(ent.listing_id, task_id)
            except REDIS_FAILURES:
                body_err = _error_body(rpc_id, -32050, "Metering is temporarily unavailable.")
                return await _respond(send, 503, body_err, [(b"retry-after", b"1")])
            if task is None or task[0] != ent.key_id:
                metering.rejected_metric(name, "task").inc()
                return await _respond(send, 404, _error_body(rpc_id, -32001, "Task not found."))
            pending = task[1]
        elif method == "GET" and session_id and ent.key_id:
            pending = await self._pending_calls(session_id)
        metering.requests_metric(name).inc()
        call = _Call(self, up, ent, adm, rpc_id, rpc_method, tool, started, now, call_id)
        call.session_id, call.task_id, call.pending = session_id, task_id, pending
        await call.run(scope, receive, send, method, headers, body, session_id)

    async def _pending_calls(self, session_id: str) -> dict[str, Any]:
        try:
            return await self.deferred.pending_calls(session_id)
        except REDIS_FAILURES:
            logger.warning("gateway.pending_unavailable")
            return {}

    def _host_ok(self, raw: bytes) -> bool:
        """Django's ALLOWED_HOSTS rule (this path bypasses Django): a DNS-rebinding defence."""
        ok = self.hosts_seen.get(raw)
        if ok is None:
            domain, _ = split_domain_port(raw.decode("latin-1"))
            ok = bool(domain) and validate_host(domain, self.allowed_hosts)
            if len(self.hosts_seen) < 1000:
                self.hosts_seen[raw] = ok
        return ok

    async def _store_unavailable(self, send: proxy.Send, name: str, rpc_id: Any) -> None:
        logger.warning("gateway.database_unavailable")
        metering.rejected_metric(name, "unavailable").inc()
        body = _error_body(rpc_id, -32050, "Temporarily unavailable; retry shortly.")
        await _respond(send, 503, body, [(b"retry-after", b"1")])

    def _throttled(self, scope: Scope, now: float) -> int:
        address = client_address(scope, self.trusted_proxies)
        return self.auth_failures.retry_after(address, now)

    async def _unauthorized(self, send: proxy.Send, name: str, scope: Scope, now: float) -> None:
        """401, counted against the client address; 429 once it failed too often
        (gateway.authfail). Only failures pay for the count."""
        address = client_address(scope, self.trusted_proxies)
        retry = self.auth_failures.retry_after(address, now)
        if not retry:
            retry = await self.auth_failures.failed(address, now)
        if retry:
            metering.rejected_metric(name, "auth_throttled").inc()
            body = _error_body(
                None, -32029, "Too many invalid keys from this address.", {"retry_after": retry}
            )
            return await _respond(send, 429, body, [(b"retry-after", str(retry).encode())])
        metering.rejected_metric(name, "auth").inc()
        body = self.guidance.unauthorized(name)
        await _respond(send, 401, body, [(b"www-authenticate", self.guidance.challenge(name))])

    async def _refuse(
        self,
        send: proxy.Send,
        name: str,
        adm: Admission,
        rpc_id: Any,
        tool: str,
        now: float,
        scope: Scope,
    ) -> None:
        v = adm.verdict
        if v in (INVALID, WRONG_LISTING) or adm.entitlement is None:
            return await self._unauthorized(send, name, scope, now)
        ent = adm.entitlement
        if v == SESSION:
            metering.rejected_metric(name, "session").inc()
            return await _respond(send, 404, _error_body(rpc_id, -32001, "Session not found."))
        if v == EXCLUDED:
            metering.rejected_metric(name, "excluded").inc()
            body = await self.guidance.not_on_plan(rpc_id, ent, name, tool)
            return await _respond(send, 200, body)
        if v == UNAVAILABLE:
            metering.rejected_metric(name, "unavailable").inc()
            body = _error_body(rpc_id, -32050, "Metering is temporarily unavailable.")
            return await _respond(send, 503, body, [(b"retry-after", b"1")])
        if v == RATE_LIMITED:
            reason, code, text = "rate_limited", -32029, "Rate limit exceeded."
            headers = _rate_headers(adm)
            action = ""
        elif v == QUOTA:
            reason, code, text = "quota", -32030, "Monthly call quota used up."
            adm.retry_after = seconds_to_period_end(ent.period_start, now)
            headers = []
            action = "See your usage or change plans"
        elif v == SPEND_CAP:
            reason, code = "spend_cap", -32031
            text = f"Spend cap reached for this {adm.cap_window}."
            adm.retry_after = (
                seconds_to_utc_midnight(now)
                if adm.cap_window == "day"
                else seconds_to_period_end(ent.period_start, now)
            )
            headers = []
            action = "See your spending or raise the key's cap"
        else:
            logger.error("gateway.unknown_verdict", extra={"verdict": v})
            return await _respond(send, 500, _error_body(rpc_id, -32603, "Internal error."))
        metering.rejected_metric(name, reason).inc()
        retry = str(max(adm.retry_after, 1)).encode()
        if action:
            body = self.guidance.limit_reached(rpc_id, code, text, ent, int(retry), action)
        else:
            body = _error_body(rpc_id, code, text, {"retry_after": int(retry)})
        await _respond(send, 429, body, [(b"retry-after", retry), *headers])


def _tool_change_record_sync(listing_id: int, tool: dict[str, Any]) -> None:
    """Without Redis (the demo): record a seen tool change directly, in a worker thread."""
    from gateway.services import tool_changes_record

    tool_changes_record(listing_id=listing_id, observed=[tool], source="gateway", complete=False)


def _anonymous(up: UpstreamConfig) -> Entitlement:
    """The caller when GATEWAY_REQUIRE_KEY is off (conformance runs only): free, unmetered."""
    return Entitlement(
        key_id=0,
        license_id=0,
        listing_id=up.listing_id,
        listing_name=up.listing_name,
        plan_id=0,
        plan_kind="free",
        status="active",
        currency="usd",
        rate_limit_per_minute=0,
        included_calls=None,
        hard_cap=False,
        unit_amount=0,
        overage_unit_amount=0,
    )


class _Call:
    """One admitted request on its way to the upstream and back."""

    __slots__ = (
        "adm",
        "call_id",
        "created_task",
        "ent",
        "gw",
        "meter",
        "now",
        "pending",
        "rpc_id",
        "rpc_method",
        "session_id",
        "started",
        "task_id",
        "tool",
        "up",
    )

    def __init__(
        self,
        gw: Gateway,
        up: UpstreamConfig,
        ent: Entitlement,
        adm: Admission,
        rpc_id: Any,
        rpc_method: str,
        tool: str,
        started: float,
        now: float,
        call_id: str,
    ) -> None:
        self.gw, self.up, self.ent, self.adm = gw, up, ent, adm
        self.rpc_id, self.rpc_method, self.tool = rpc_id, rpc_method, tool
        self.started, self.now = started, now
        self.call_id = call_id or None  # tools/call only
        self.session_id, self.task_id = "", ""
        self.pending: dict[str, Any] | None = None  # set by the gateway (tasks, GET streams)
        self.created_task: dict[str, Any] | None = None
        self.meter: proxy.Meter | proxy.ReplayMeter | None = None
        if rpc_method == "tools/call":
            self.meter = proxy.Meter(rpc_id, rpc_method, self._receipt)
        elif rpc_method == "tools/list" and rpc_id is not None:
            self.meter = proxy.Meter(rpc_id, rpc_method, self._prices)
        elif rpc_method == "tasks/list" and rpc_id is not None and ent.key_id:
            self.meter = proxy.Meter(rpc_id, rpc_method, _no_rewrite, self._own_tasks)

    def _receipt(self, message: dict[str, Any]) -> str | None:
        result = message["result"]
        task = result.get("task")
        if isinstance(task, dict) and isinstance(task.get("taskId"), str):
            self.created_task = task  # billed when tasks/result answers (gateway.deferred)
            _put_receipt(result, self.call_id or "", 0, self.ent.currency, None)
            return "task_created"
        billable = result.get("isError") is not True
        amount = self.adm.amount if billable else 0
        quota = self.adm.quota_remaining
        _put_receipt(result, self.call_id or "", amount, self.ent.currency, quota)
        return None

    def _prices(self, message: dict[str, Any]) -> str | None:
        tools = message["result"].get("tools")
        if not isinstance(tools, list):
            return None
        tools = self.gw.tools_guard(self.up, tools)  # only what the creator approved
        kept = []
        for t in tools:
            if not isinstance(t, dict):
                continue
            advert = advertised_price(self.ent, str(t.get("name", "")))
            if advert is None:
                continue  # billing.pricing refuses the call too (excluded or not covered)
            meta = t.get("_meta")
            if not isinstance(meta, dict):
                meta = t["_meta"] = {}
            meta[proxy.PRICE_KEY] = advert.meta()
            kept.append(t)
        message["result"]["tools"] = kept
        return None

    def _deferred_meter(self, method: str) -> None:
        """Meters for answers that arrive after their request: tasks/result (billed on
        arrival), and every GET stream, which may replay the answers of this session's broken
        calls (billed then) and of a broken tools/list (shown only as the creator approved it,
        like a direct answer: `_prices`)."""
        if method == "GET":
            pending = self.pending if self.pending is not None else {}
            self.meter = proxy.ReplayMeter(
                pending, self._settle_replay, self._refresh, tools=self._prices
            )
        elif (
            self.pending is not None
            and self.rpc_method == "tasks/result"
            and self.rpc_id is not None
        ):
            self.meter = proxy.Meter(self.rpc_id, "tasks/result", _no_rewrite, self._settle_task)

    async def _own_tasks(self, message: dict[str, Any]) -> None:
        """tasks/list shows only the tasks this key created (an upstream without sessions
        may list everyone's); if Redis cannot say whose they are, it shows none."""
        result = message.get("result")
        tasks = result.get("tasks") if isinstance(result, dict) else None
        if not isinstance(tasks, list) or not isinstance(result, dict):
            return
        ids = {str(t.get("taskId")): t for t in tasks if isinstance(t, dict)}
        try:
            owners = await self.gw.deferred.task_owners(self.ent.listing_id, list(ids))
        except REDIS_FAILURES:
            logger.warning("gateway.task_owners_unavailable")
            owners = {}
        key_id = self.ent.key_id
        result["tasks"] = [t for tid, t in ids.items() if owners.get(tid) == key_id]

    async def _refresh(self) -> dict[str, Any]:
        if self.pending is None:  # no session or anonymous: no call of its can be pending
            return {}
        return await self.gw._pending_calls(self.session_id)

    async def _settle_task(self, message: dict[str, Any]) -> None:
        template = self.pending
        if template is None:
            return  # settled before: passed on, not billed again
        result = message.get("result")
        await self._settle(message, template, result, "success")

    async def _settle_replay(self, message: dict[str, Any]) -> None:
        meter = self.meter
        if not isinstance(meter, proxy.ReplayMeter):
            return
        template = meter.pending.get(deferred.rpc_id_key(message.get("id")))
        if template is not None:
            await self._settle(message, template, message.get("result"), "replayed")

    async def _settle(
        self, message: dict[str, Any], template: dict[str, Any], result: Any, win: str
    ) -> None:
        if "error" in message or not isinstance(result, dict):
            billable, outcome = False, "rpc_error"
        elif result.get("isError") is True:
            billable, outcome = False, "tool_error"
        else:
            billable, outcome = True, win
        record = deferred.settled_record(template, billable=billable, outcome=outcome)
        store = self.gw.deferred
        try:
            if self.rpc_method == "tasks/result":
                settled = await store.settle_task(self.ent.listing_id, self.task_id, record)
            else:
                settled = await store.settle_call(self.session_id, message.get("id"), record)
        except REDIS_FAILURES:
            logger.warning("gateway.settle_unavailable", extra={"call_id": template["call_id"]})
            return
        if not settled:
            return
        metering.calls_metric(self.up.listing_name, record["tool"][:64], outcome).inc()
        if isinstance(result, dict):
            _put_receipt(result, record["call_id"], record["unit_amount"], self.ent.currency, None)

    async def run(
        self,
        scope: Scope,
        receive: proxy.Receive,
        send: proxy.Send,
        method: str,
        headers: dict[bytes, bytes],
        body: bytes,
        session_id: str,
    ) -> None:
        gw, up = self.gw, self.up
        identity = gw.identity(up, self.ent.license_id)
        out = proxy.forward_headers(headers, secret=up.secret, identity=identity)
        self._deferred_meter(method)
        outcome = "gateway_error"
        try:
            resp = await gw.http.request(
                method,
                up.url,
                headers=out,
                body=body if method == "POST" else b"",
                timeout=gw.read_timeout,
            )
        except proxy.PoolBusy:
            metering.rejected_metric(up.listing_name, "busy").inc()
            body_err = _error_body(self.rpc_id, -32603, "Too many requests in flight upstream.")
            await _respond(send, 503, body_err, [(b"retry-after", b"1")])
            return await self._finish("gateway_error")
        except TimeoutError:
            await _respond(send, 504, _error_body(self.rpc_id, -32603, "Upstream timed out."))
            return await self._finish("timeout")
        except (OSError, UnsafeUpstreamError) as exc:
            logger.warning(
                "gateway.upstream_unreachable",
                extra={"listing_id": up.listing_id, "error": type(exc).__name__},
            )
            await _respond(send, 502, _error_body(self.rpc_id, -32603, "Upstream unavailable."))
            return await self._finish("upstream_error")
        try:
            outcome = await self._relay(resp, receive, send, method, session_id)
        finally:
            resp.release()
        await self._finish(outcome)

    async def _relay(
        self,
        resp: proxy.Response,
        receive: proxy.Receive,
        send: proxy.Send,
        method: str,
        session_id: str,
    ) -> str:
        gw, meter = self.gw, self.meter
        hdrs = proxy.response_headers(resp)
        hdrs += _rate_headers(self.adm)
        new_session = resp.headers.get("mcp-session-id")
        if new_session and not session_id and resp.status < 300 and self.ent.key_id:
            await gw.session_bind(new_session, self.ent.key_id, self.now)
        if method == "DELETE" and session_id and resp.status < 300:
            await gw.session_forget(session_id, self.now)
        ctype = resp.headers.get("content-type", "")
        if 300 <= resp.status < 400:
            # Never followed (it could point anywhere: SSRF), and a bare 3xx means nothing to
            # an MCP client: a JSON-RPC error it can show. Not billed.
            logger.warning(
                "gateway.upstream_redirect",
                extra={"listing_id": self.up.listing_id, "status": resp.status},
            )
            body = _error_body(self.rpc_id, -32603, "upstream redirect refused")
            await _respond(send, 502, body)
            return "rpc_error"
        asks = method == "POST" and self.rpc_id is not None and bool(self.rpc_method)
        if asks and not _mcp_type(ctype) and not (resp.status == 404 and session_id):
            return await self._not_mcp(send, resp.status)
        if resp.status >= 500:
            fail = "upstream_error"
        else:
            fail = "rpc_error" if resp.status >= 300 else "cancelled"
        if ctype.startswith("text/event-stream"):
            hdrs.append((b"x-accel-buffering", b"no"))
            await send({"type": "http.response.start", "status": resp.status, "headers": hdrs})
            disconnected = False

            def on_disconnect() -> None:
                nonlocal disconnected
                disconnected = True
                resp.close()

            watcher = asyncio.get_running_loop().create_task(
                proxy.watch_disconnect(receive, on_disconnect)
            )
            try:
                await proxy.pump_sse(resp.chunks(gw.idle_timeout), send, meter, self._prices)
                result = meter.outcome if meter is not None and meter.matched else fail
            except TimeoutError:
                result = meter.outcome if meter is not None and meter.matched else "timeout"
            except OSError:
                result = "cancelled" if disconnected else "upstream_error"
                if meter is not None and meter.matched:
                    result = meter.outcome
            finally:
                watcher.cancel()
            await send({"type": "http.response.body", "body": b""})
            return result
        try:
            data = await resp.read(gw.read_timeout, proxy.MAX_JSON_RESPONSE)
        except TimeoutError:
            await _respond(send, 504, _error_body(self.rpc_id, -32603, "Upstream timed out."))
            return "timeout"
        except (OSError, proxy.ResponseTooLarge):
            await _respond(send, 502, _error_body(self.rpc_id, -32603, "Upstream unavailable."))
            return "upstream_error"
        if (
            asks
            and resp.status >= 400
            and not (resp.status == 404 and session_id)
            and not _jsonrpc_shaped(data)  # e.g. {"detail": "Not Found"}: not an MCP answer
        ):
            return await self._not_mcp(send, resp.status)
        if resp.status == 200 and ctype.startswith("application/json"):
            rewritten = await proxy.rewrite_json_body(data, meter, self._prices)
            if rewritten is not None:
                data = rewritten
        hdrs.append((b"content-length", str(len(data)).encode()))
        await send({"type": "http.response.start", "status": resp.status, "headers": hdrs})
        await send({"type": "http.response.body", "body": data})
        return meter.outcome if meter is not None and meter.matched else fail

    async def _not_mcp(self, send: proxy.Send, status: int) -> str:
        """A JSON-RPC request answered with something that is not MCP (an HTTP error page, HTML,
        plain text): a JSON-RPC error the client can show, with the upstream's status in `data`.
        Counted as an upstream failure (health) and never billed. A 404 on a request with a
        session id passes through: that is MCP's "session expired, initialize again"."""
        logger.warning(
            "gateway.upstream_not_mcp", extra={"listing_id": self.up.listing_id, "status": status}
        )
        body = _error_body(self.rpc_id, -32603, "upstream unavailable", {"status": status})
        await _respond(send, 502, body)
        return "upstream_error"

    async def _finish(self, outcome: str) -> None:
        if self.call_id is None:
            return
        billable = outcome == "success"
        latency = time.perf_counter() - self.started
        listing = self.up.listing_name
        tool_label = self.tool[:64] if billable else "-"
        metering.calls_metric(listing, tool_label, outcome).inc()
        metering.latency_metric(listing, tool_label).observe(latency)
        record = metering.usage_record(
            call_id=self.call_id,
            ent=self.ent,
            tool=self.tool,
            amount=self.adm.amount,
            billable=billable,
            outcome=outcome,
            latency_ms=int(latency * 1000),
            occurred_at=self.now,
        )
        if self.ent.key_id == 0:  # anonymous (conformance) traffic is not metered
            return
        self.gw.record(record, self.adm, time.time())
        if outcome == "task_created" or (outcome in _UNANSWERED and self.session_id):
            await self._remember(record)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "gateway.call",
                extra={"call_id": self.call_id, "outcome": outcome, "listing": listing},
            )

    async def _remember(self, record: dict[str, Any]) -> None:
        """Keep an unbilled call whose answer may still come (gateway.deferred)."""
        template = {**record, "amount": self.adm.amount, "reserved": self.adm.reserved}
        store = self.gw.deferred
        try:
            if self.created_task is not None:
                await store.remember_task(
                    self.ent.listing_id,
                    self.created_task["taskId"],
                    self.ent.key_id,
                    template,
                    deferred.task_ttl(self.created_task),
                )
            else:
                await store.remember_call(self.session_id, self.rpc_id, template)
        except REDIS_FAILURES:
            logger.warning("gateway.remember_unavailable", extra={"call_id": record["call_id"]})


def _mcp_type(ctype: str) -> bool:
    """An MCP answer to a request is JSON or an SSE stream (Streamable HTTP)."""
    ctype = ctype.lower()
    return ctype.startswith("application/json") or ctype.startswith("text/event-stream")


def _jsonrpc_shaped(data: bytes) -> bool:
    """Whether an error answer's body is a JSON-RPC message (only read on HTTP errors)."""
    try:
        message = fastjson.loads(data)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("jsonrpc") == "2.0"


# A tools/call that ended without its answer: the answer may still arrive on a GET stream.
_UNANSWERED = frozenset({"cancelled", "upstream_error", "timeout"})


def _no_rewrite(message: dict[str, Any]) -> str | None:
    return None


def _put_receipt(
    result: dict[str, Any], call_id: str, amount: int, currency: str, quota: int | None
) -> None:
    meta = result.get("_meta")
    if not isinstance(meta, dict):
        meta = result["_meta"] = {}
    meta[proxy.RECEIPT_KEY] = {
        "call_id": call_id,
        "amount": amount,
        "currency": currency,
        "quota_remaining": quota,
    }


def metrics_refusal(scope: Scope) -> tuple[int, bytes] | None:
    """(status, body) when this caller may not read /metrics, which shows every listing's call
    volume: with GATEWAY_METRICS_TOKEN set it takes that Bearer token, else loopback peers."""
    token = settings.GATEWAY_METRICS_TOKEN
    if token:
        expected = b"bearer " + token.encode()
        for name, value in scope["headers"]:
            if name == b"authorization" and hmac.compare_digest(
                value[:7].lower() + value[7:], expected
            ):
                return None
        return 401, b"/metrics takes the metrics Bearer token.\n"
    client = scope.get("client")
    try:
        if client and ipaddress.ip_address(client[0]).is_loopback:
            return None
    except ValueError:
        pass
    return 403, b"/metrics answers loopback clients only; set GATEWAY_METRICS_TOKEN.\n"


class GatewayApp:
    """ASGI: `/mcp/...` and `/metrics` here, everything else to Django."""

    def __init__(self, django_app: Any) -> None:
        self.django = django_app
        self._gateway: Gateway | None = None

    @property
    def gateway(self) -> Gateway:
        if self._gateway is None:
            self._gateway = Gateway()
        return self._gateway

    async def __call__(self, scope: Scope, receive: proxy.Receive, send: proxy.Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith("/mcp/") and len(path) > 5:
                return await self.gateway.handle(scope, receive, send)
            if path == "/metrics":
                status, body = metrics_refusal(scope) or (200, metering.metrics_payload())
                ctype = (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
                await send({"type": "http.response.start", "status": status, "headers": [ctype]})
                return await send({"type": "http.response.body", "body": body})
        elif kind == "lifespan":
            return await self._lifespan(receive, send)
        await self.django(scope, receive, send)

    async def _lifespan(self, receive: proxy.Receive, send: proxy.Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._gateway is not None:
                    await self._gateway.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

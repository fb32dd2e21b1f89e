"""A small HTTP/1.1 client for upstream MCP servers: pooled keep-alive connections on asyncio
protocols, responses parsed by httptools (the C parser uvicorn uses).

Why not aiohttp: on the gateway's hot path aiohttp's request machinery (request/response
objects, multidicts, payload registry, tracing hooks, a timer per read) was the largest single
cost, about a third of the gateway's Python time per call. A proxy needs far less: one
request written in one `write`, the status and headers, and the body either whole (JSON) or
chunk by chunk (SSE). Everything else stays here, small enough to read in one sitting:

- one pool per process, at most `pool_size` requests in flight per upstream (one slow
  upstream cannot take every other listing's slots), a request that finds its upstream's
  slots all taken waits at most the connect timeout and then raises PoolBusy (no request
  waits unbounded behind long-lived streams), idle connections kept per
  (scheme, host, port) for `keepalive` seconds (4 s: below the 5 s after which uvicorn and
  Node close idle connections), or 1 s less than a `Keep-Alive: timeout=N` the upstream
  announces (undici's rule) or than the idle time after which it was seen closing one, and
  dropped as soon as the peer closes them; a GET or DELETE
  whose reused connection the upstream closed before answering a byte (the two idle timeouts
  crossing) is sent once more on a new connection, a POST is not (it may have run: Go's
  client draws the same line), so every retry is idempotent;
- response heads over 64 KiB, 1xx interim responses and unsolicited second responses are
  handled (refused, skipped, refused);
- DNS answers cached for `dns_ttl` seconds; every connect checks the addresses with the SSRF
  guard and connects to a checked address (no second lookup to rebind);
- timeouts: connect, time to the response headers, then between body chunks (the caller
  raises the last one for SSE streams); redirects are never followed (a 3xx is a response);
- backpressure: reading pauses while more than `_HIGH_WATER` bytes wait for the client.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httptools

from gateway.ssrf import UnsafeUpstreamError, check_addresses

_HIGH_WATER = 256 * 1024
# Methods repeated once when a reused connection was closed before any answer byte (RFC 9110
# 9.2.2 idempotent methods; Go's client draws the same line).
_REPLAYABLE = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
# A connection idle longer than this gets one loop turn before reuse, for a pending close.
_STALE_CHECK_AFTER = 0.5
_MAX_HEAD = 64 * 1024  # status line + headers; httptools itself has no limit
# Retire a connection this long before the idle timeout the upstream announces, so our reuse
# and its close do not cross on the wire.
_KEEPALIVE_MARGIN = 1.0
# An upstream closing an idle connection sooner than this is not taken for its idle timeout.
_LEARN_AFTER = 1.5
_Key = tuple[str, str, int]


class UpstreamClosed(ConnectionError):
    """The upstream closed the connection, or sent something that is not HTTP/1.1."""


class PoolBusy(Exception):
    """Every slot for this upstream stayed taken for the connect timeout."""


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


async def _wait(fut: asyncio.Future[Any], timeout: float) -> Any:
    """`await fut` bounded by `timeout`: one timer handle, no extra task (asyncio.wait_for
    creates one per call)."""
    if fut.done():
        return fut.result()
    handle = asyncio.get_running_loop().call_later(timeout, _expire, fut)
    try:
        return await fut
    finally:
        handle.cancel()


class Response:
    """Status, headers and the body of one upstream response."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_error",
        "_waiter",
        "complete",
        "headers",
        "status",
    )

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.status = 0
        self.headers: dict[str, str] = {}  # lower-case names
        self.complete = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # --- fed by the connection --------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        self.complete = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    # --- read by the gateway ----------------------------------------------------------------

    async def _more(self, timeout: float) -> bool:
        """Wait for a chunk or the end; False at the end."""
        while not self._chunks:
            if self.complete:
                return False
            if self._error is not None:
                raise self._error
            self._waiter = asyncio.get_running_loop().create_future()
            await _wait(self._waiter, timeout)
        return True

    def _take(self) -> bytes:
        data = b"".join(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        self._chunks.clear()
        self._buffered = 0
        self._conn.resume()
        return data

    async def read(self, timeout: float, limit: int) -> bytes:
        """The whole body; ResponseTooLarge over `limit` bytes."""
        parts: list[bytes] = []
        size = 0
        while await self._more(timeout):
            data = self._take()
            size += len(data)
            if size > limit:
                self.close()
                raise ResponseTooLarge
            parts.append(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def chunks(self, idle_timeout: float) -> AsyncIterator[bytes]:
        """Body chunks as they arrive (what is buffered is joined); silence longer than
        `idle_timeout` raises TimeoutError."""
        while await self._more(idle_timeout):
            yield self._take()

    def release(self) -> None:
        """Back to the pool when the response was read to its end, else closed."""
        self._conn.done(self)

    def close(self) -> None:
        """Drop the connection (the client went away, or we stop reading)."""
        self._fail(UpstreamClosed("closed by the gateway"))
        if self._conn.response is self:  # after release() the connection may serve another
            self._conn.abort()
            self._conn.done(self)


class ResponseTooLarge(Exception):
    """A non-streaming upstream body over the caller's limit."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time (no pipelining)."""

    def __init__(self, pool: UpstreamPool, key: _Key) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Response | None = None
        self.headers_ready: asyncio.Future[None] | None = None
        self.closed = False
        self.paused = False
        self.idle_handle: asyncio.TimerHandle | None = None
        self.idle_since = 0.0
        self._until_eof = False
        self._keep_alive = False
        self.head_bytes = 0  # bytes received before the final response's headers completed
        self.head_done = False
        self.received = False  # any byte since the current request was sent

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes while idle: the peer is not speaking HTTP to us
            self.abort()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._error(UpstreamClosed(f"bad HTTP from upstream: {exc}"))
            self.abort()
            return
        if not self.head_done:
            self.head_bytes += len(data)
            if self.head_bytes > _MAX_HEAD:
                self._error(UpstreamClosed("response head too large"))
                self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        by_peer = not self.closed  # our own aborts set `closed` first
        self.closed = True
        if self.pool.forget(self) and by_peer and exc is None:
            self.pool.learn_idle(self.key, time.monotonic() - self.idle_since)
        resp = self.response
        if resp is None or resp.complete:
            return
        if resp.status and self._until_eof and exc is None:
            resp._finish()  # a body delimited by the end of the connection
            return
        self._error(UpstreamClosed("upstream closed the connection"))

    # httptools callbacks
    # (data_received feeds the parser only while a response is set)
    def on_message_begin(self) -> None:
        if self.response is not None and self.response.complete:
            # a second response to one request: not HTTP/1.1 without pipelining
            raise UpstreamClosed("unsolicited response from upstream")

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.response.headers  # type: ignore[union-attr]
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        resp: Response = self.response  # type: ignore[assignment]
        status = self.parser.get_status_code()
        if status < 200:  # 1xx (103 Early Hints, 100 Continue): the final response follows
            resp.headers.clear()
            return
        self.head_done = True
        resp.status = status
        h = resp.headers
        te = h.get("transfer-encoding", "")
        chunked = te.rsplit(",", 1)[-1].strip().lower() == "chunked"
        # RFC 9112 6.3: no length and not chunked -> the body ends with the connection
        self._until_eof = "content-length" not in h and not chunked
        if self.headers_ready is not None and not self.headers_ready.done():
            self.headers_ready.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.response._feed(body)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            return  # the end of an informational response, not of ours
        self._keep_alive = self.parser.should_keep_alive()  # only valid inside the callback
        self.response._finish()  # type: ignore[union-attr]

    def _error(self, exc: BaseException) -> None:
        if self.headers_ready is not None and not self.headers_ready.done():
            self.headers_ready.set_exception(exc)
        if self.response is not None:
            self.response._fail(exc)

    # used by the pool and the response
    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def done(self, resp: Response) -> None:
        if self.response is not resp:
            return
        reusable = resp.complete and not resp._chunks and not self.closed and self._keep_alive
        self.response = None
        self.headers_ready = None
        self._keep_alive = False
        self.head_bytes = 0
        self.head_done = False
        if reusable:
            self.pool.park(self, resp.headers.get("keep-alive"))
        else:
            self.abort()
        self.pool.finished(self.key)


def _keepalive_timeout(value: str) -> float | None:
    """The `timeout=N` of a Keep-Alive header (RFC 2068 19.7.1.1), None when absent or bad."""
    for param in value.split(","):
        name, _, number = param.partition("=")
        if name.strip().lower() == "timeout":
            try:
                return float(number.strip())
            except ValueError:
                return None
    return None


class UpstreamPool:
    """The process's upstream connections."""

    def __init__(
        self,
        *,
        pool_size: int,
        connect_timeout: float,
        keepalive: float = 4.0,
        dns_ttl: float = 10.0,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.dns_ttl = dns_ttl
        self.pool_size = pool_size
        self._slots: dict[_Key, asyncio.Semaphore] = {}
        self._idle: dict[_Key, list[_Connection]] = {}
        self._learned: dict[_Key, float] = {}  # idle timeouts seen (learn_idle)
        self._dns: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._targets: dict[str, tuple[_Key, str, bytes]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        body: bytes = b"",
        timeout: float,
    ) -> Response:
        """Send one request and wait for the response headers (`timeout`). Raises
        TimeoutError, UnsafeUpstreamError, or OSError (UpstreamClosed included)."""
        key, target, host_line = self._target(url)
        head = [method.encode(), b" ", target.encode("latin-1"), b" HTTP/1.1\r\n", host_line]
        for name, value in headers.items():
            if "\n" in value or "\r" in value:
                raise UpstreamClosed(f"header {name} holds a line break")
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        if body or method == "POST":
            head.append(b"Content-Length: %d\r\n" % len(body))
        head += [b"\r\n", body]
        data = b"".join(head)
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = asyncio.Semaphore(self.pool_size)
        await self._acquire(slots)  # released by Response.release() / close()
        conn = await self._reuse_live(key)
        if conn is not None:
            replayable = method in _REPLAYABLE
            resp = await self._send(conn, data, timeout, reused=replayable)
            if resp is not None:
                return resp
            # The upstream closed this idle connection as we reused it (its keep-alive timeout
            # raced ours) and answered nothing: a request that is safe to repeat goes out once
            # more on a new connection. A POST does not: the upstream may have run it.
            await self._acquire(slots)
        try:
            conn = await self._connect(key)
        except BaseException:
            slots.release()
            raise
        resp = await self._send(conn, data, timeout, reused=False)
        if resp is None:  # only a reused connection answers None
            raise UpstreamClosed("upstream closed the connection")
        return resp

    async def _acquire(self, slots: asyncio.Semaphore) -> None:
        if not slots.locked():
            await slots.acquire()  # free: no timer
            return
        try:
            async with asyncio.timeout(self.connect_timeout):
                await slots.acquire()
        except TimeoutError:
            raise PoolBusy("too many requests in flight to this upstream") from None

    async def _send(
        self, conn: _Connection, data: bytes, timeout: float, *, reused: bool
    ) -> Response | None:
        """Write the request on `conn` and wait for the headers; None (slot released) when a
        reused connection was closed before any byte of a response arrived."""
        resp = Response(conn)
        conn.response = resp
        conn.received = False
        conn.headers_ready = ready = asyncio.get_running_loop().create_future()
        conn.transport.write(data)  # type: ignore[union-attr]
        try:
            await _wait(ready, timeout)
        except UpstreamClosed:
            silent = not conn.received
            resp.close()
            if reused and silent:
                return None
            raise
        except BaseException:
            resp.close()
            raise
        return resp

    def _target(self, url: str) -> tuple[_Key, str, bytes]:
        hit = self._targets.get(url)
        if hit is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UnsafeUpstreamError("Only http and https upstreams.")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            default = port == (443 if parts.scheme == "https" else 80)
            netloc = parts.hostname if default else f"{parts.hostname}:{port}"
            if ":" in parts.hostname:  # IPv6 literal
                netloc = f"[{parts.hostname}]" if default else f"[{parts.hostname}]:{port}"
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            hit = ((parts.scheme, parts.hostname, port), target, f"Host: {netloc}\r\n".encode())
            if len(self._targets) > 10_000:
                self._targets.clear()
            self._targets[url] = hit
        return hit

    async def _reuse_live(self, key: _Key) -> _Connection | None:
        """An idle connection, after letting a close that already arrived on one that sat idle
        for a while be read first (one loop turn; connections in steady use skip it)."""
        conn = self._reuse(key)
        while conn is not None and time.monotonic() - conn.idle_since > _STALE_CHECK_AFTER:
            await asyncio.sleep(0)
            if not conn.closed:
                break
            conn = self._reuse(key)
        return conn

    def _reuse(self, key: _Key) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.idle_handle is not None:
                conn.idle_handle.cancel()
                conn.idle_handle = None
            if not conn.closed:
                return conn
        return None

    async def _connect(self, key: _Key) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            addresses = await self._resolve(host, port)
            check_addresses(host, port, addresses)  # every connect, cached answers included
            tls = None
            if scheme == "https":
                if self._ssl is None:
                    self._ssl = ssl.create_default_context()
                tls = self._ssl
            _, conn = await loop.create_connection(
                lambda: _Connection(self, key),
                addresses[0],
                port,
                ssl=tls,
                server_hostname=host if tls is not None else None,
            )
        return conn

    async def _resolve(self, host: str, port: int) -> list[str]:
        now = time.monotonic()
        hit = self._dns.get((host, port))
        if hit is not None and hit[0] > now:
            return hit[1]
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise OSError(f"no address for {host}")
        if len(self._dns) > 10_000:
            self._dns.clear()
        self._dns[(host, port)] = (now + self.dns_ttl, addresses)
        return addresses

    def park(self, conn: _Connection, hint: str | None) -> None:
        """Keep `conn` for the next request; `hint` is the response's Keep-Alive header."""
        keep = self.keepalive
        learned = self._learned.get(conn.key)
        if learned is not None:
            keep = min(keep, learned - _KEEPALIVE_MARGIN)
        announced = _keepalive_timeout(hint) if hint else None
        if announced is not None:
            keep = min(keep, announced - _KEEPALIVE_MARGIN)
            if keep <= 0:
                conn.abort()
                return
        conn.idle_since = time.monotonic()
        idle = self._idle.setdefault(conn.key, [])
        idle.append(conn)
        conn.idle_handle = asyncio.get_running_loop().call_later(keep, conn.abort)

    def forget(self, conn: _Connection) -> bool:
        """Drop `conn` from the idle connections; whether it was one."""
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
            return True
        return False

    def learn_idle(self, key: _Key, idle: float) -> None:
        """The upstream closed a connection that sat idle `idle` seconds: from now on keep its
        idle connections 1 s less than that. Closes sooner than _LEARN_AFTER look like restarts,
        not idle timeouts, and teach nothing."""
        if _LEARN_AFTER <= idle < self.keepalive:
            self._learned[key] = min(self._learned.get(key, idle), idle)

    def finished(self, key: _Key) -> None:
        self._slots[key].release()

    async def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()

"""The one module that talks to creators' upstream MCP servers.

The connections themselves are `gateway.http1` (one pool per process, timeouts, no redirects,
the SSRF guard on every connect). Requests carry only the MCP headers the transport needs,
plus the creator's own upstream secret and our signed identity header; never the buyer's key,
cookies or Origin.

Responses stream back unchanged (bytes, status, SSE events one by one) except the single
JSON-RPC message that answers a metered request: a tools/call result gets its receipt in
`result._meta`, a tools/list result gets prices and loses the tools the plan excludes. A tools
list sent under any other request's id, on any stream, is rewritten the same way (an upstream
must not reach agents with unapproved tools by answering on the wrong stream). Only those
messages are re-encoded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway import fastjson
from gateway.deferred import rpc_id_key
from gateway.http1 import PoolBusy, Response, ResponseTooLarge, UpstreamPool
from gateway.ssrf import UnsafeUpstreamError

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

# Request headers forwarded to the upstream (lower-case); Mcp-Param-* by prefix.
PASS_REQUEST = (
    "content-type",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "mcp-method",
    "mcp-name",
)
# Response headers returned to the client.
PASS_RESPONSE = ("content-type", "mcp-session-id", "cache-control", "retry-after")
RECEIPT_KEY = "dev.toolbooth/receipt"
PRICE_KEY = "dev.toolbooth/price"
MAX_JSON_RESPONSE = 32 * 1024 * 1024


Settle = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class Meter:
    """What we look for in the response: the answer to request `rpc_id` of `method`.

    `rewrite` edits a result in place and may name a different outcome (a tools/call that
    created a task); `settle`, when set, runs after a match, before the message is passed on
    (gateway.deferred: an answer billed on arrival)."""

    rpc_id: Any
    method: str  # "tools/call", "tools/list" or "tasks/result"
    rewrite: Callable[[dict[str, Any]], str | None]
    settle: Settle | None = None
    outcome: str = ""  # set once the answer was seen
    matched: bool = field(default=False)

    def inspect(self, message: Any) -> bool:
        """True when `message` answers our request (and was rewritten in place)."""
        if self.matched or not isinstance(message, dict):
            return False
        mid = message.get("id")
        if type(mid) is not type(self.rpc_id) or mid != self.rpc_id:
            return False
        if "error" in message:
            self.outcome = "rpc_error"
        elif isinstance(message.get("result"), dict):
            self.outcome = "tool_error" if message["result"].get("isError") is True else "success"
            self.outcome = self.rewrite(message) or self.outcome
        else:
            return False
        self.matched = True
        return True


class ReplayMeter:
    """A GET stream's meter: answers to any of the session's pending calls (gateway.deferred)
    may pass on it, each settled by `settle`; `refresh` re-reads the pending set when an answer
    we do not know passes (the POST that broke may have been remembered just after we began).
    `tools`, when set, rewrites in place any other answer that carries a tools/list result (a
    `tools` array): a resumed stream may replay a tools/list answer, which must reach the
    client exactly as a direct one would (the rug-pull guard)."""

    __slots__ = ("_refreshed", "matched", "outcome", "pending", "refresh", "settle", "tools")

    def __init__(
        self,
        pending: dict[str, Any],
        settle: Settle,
        refresh: Callable[[], Awaitable[dict[str, Any]]],
        tools: Callable[[dict[str, Any]], str | None] | None = None,
    ) -> None:
        self.pending = pending
        self.settle: Settle | None = settle
        self.refresh = refresh
        self.tools = tools
        self.matched = False  # never: a stream may carry several answers
        self.outcome = ""
        self._refreshed: set[str] = set()

    async def find(self, message: Any) -> bool:
        if not isinstance(message, dict) or "method" in message:
            return False
        if "result" not in message and "error" not in message:
            return False
        key = rpc_id_key(message.get("id"))
        if key not in self.pending and key not in self._refreshed:
            self._refreshed.add(key)
            self.pending = await self.refresh()
        if key in self.pending:
            return True
        result = message.get("result")
        if (
            self.tools is not None
            and isinstance(result, dict)
            and isinstance(result.get("tools"), list)
        ):
            self.tools(message)  # not a pending call: `settle` finds nothing to bill
            return True
        return False


async def _matches(meter: Meter | ReplayMeter, message: Any) -> bool:
    if isinstance(meter, ReplayMeter):
        found = await meter.find(message)
    else:
        found = meter.inspect(message)
    if found and meter.settle is not None:
        await meter.settle(message)
    return found


def forward_headers(headers: dict[bytes, bytes], *, secret: str, identity: str) -> dict[str, str]:
    out = {"Accept-Encoding": "identity", "X-Toolbooth-Identity": identity}
    for name in PASS_REQUEST:
        value = headers.get(name.encode())
        if value is not None:
            out[name] = value.decode("latin-1")
    for raw_name, raw_value in headers.items():
        if raw_name.startswith(b"mcp-param-"):
            out[raw_name.decode("latin-1")] = raw_value.decode("latin-1")
    if secret:
        out["Authorization"] = f"Bearer {secret}"
    return out


def response_headers(resp: Response) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for name in PASS_RESPONSE:
        value = resp.headers.get(name)
        if value is not None:
            out.append((name.encode(), value.encode("latin-1")))
    return out


# A tools/list result that answers some other request: the hook that rewrites it (`_Call._prices`).
Stray = Callable[[dict[str, Any]], Any]


def _may_carry_tools(data: bytes) -> bool:
    """Cheap pre-check before parsing a message we are not looking for: the key `tools`, or an
    escape that could spell it (JSON allows `\\u0074ools`)."""
    return b"tools" in data or b"\\u" in data


def _guard_stray(message: Any, stray: Stray) -> bool:
    """Rewrite in place any tools/list-shaped answer in `message` (an upstream may send a tools
    list under another request's id, on another request's stream: the client matches answers
    by id, so it must reach the client only as the creator approved it). True if one was."""
    if isinstance(message, list):  # a batch (2025-03-26)
        found = [_guard_stray(m, stray) for m in message]  # every one, not just the first
        return any(found)
    if not isinstance(message, dict) or "method" in message:
        return False
    result = message.get("result")
    if isinstance(result, dict) and isinstance(result.get("tools"), list):
        stray(message)
        return True
    return False


async def rewrite_json_body(
    body: bytes, meter: Meter | ReplayMeter | None, stray: Stray | None = None
) -> bytes | None:
    """The body with our answer (or a stray tools list) rewritten, or None when it has neither."""
    if meter is None and (stray is None or not _may_carry_tools(body)):
        return None
    try:
        message = fastjson.loads(body)
    except ValueError:
        return None
    if meter is not None and await _matches(meter, message):
        return fastjson.dumps(message)
    if stray is not None and _guard_stray(message, stray):
        return fastjson.dumps(message)
    return None


def _find_event_end(buf: bytes | bytearray, start: int) -> tuple[int, int]:
    """(end of event, length of separator) of the first complete SSE event, or (-1, 0)."""
    lf = buf.find(b"\n\n", start)
    crlf = buf.find(b"\r\n\r\n", start)
    if crlf != -1 and (lf == -1 or crlf < lf):
        return crlf, 4
    if lf != -1:
        return lf, 2
    return -1, 0


def _sse_message(event: bytes) -> tuple[list[bytes], bytes, Any] | None:
    """(lines, newline, parsed data) of an SSE event whose data is JSON, else None."""
    newline = b"\r\n" if b"\r\n" in event else b"\n"
    lines = event.split(newline)
    data = [ln[5:].removeprefix(b" ") for ln in lines if ln.startswith(b"data:")]
    if not data or not data[0].startswith((b"{", b"[")):
        return None
    try:
        return lines, newline, fastjson.loads(b"\n".join(data))
    except ValueError:
        return None


def _sse_encode(lines: list[bytes], newline: bytes, message: Any) -> bytes:
    kept = [ln for ln in lines if not ln.startswith(b"data:")]
    return newline.join([*kept, b"data: " + fastjson.dumps(message)])


async def rewrite_sse_event(
    event: bytes, meter: Meter | ReplayMeter | None, stray: Stray | None = None
) -> bytes | None:
    """The event with our answer (or a stray tools list) rewritten, or None when it has
    neither."""
    looking = meter is not None and not meter.matched
    if not looking and (stray is None or not _may_carry_tools(event)):
        return None
    parsed = _sse_message(event)
    if parsed is None:
        return None
    lines, newline, message = parsed
    if looking and meter is not None and await _matches(meter, message):
        return _sse_encode(lines, newline, message)
    if stray is not None and _guard_stray(message, stray):
        return _sse_encode(lines, newline, message)
    return None


async def pump_sse(
    chunks: AsyncIterator[bytes],
    send: Send,
    meter: Meter | ReplayMeter | None,
    stray: Stray | None = None,
) -> None:
    """Forward SSE events one by one as they arrive; rewrite our answer when it passes, and
    any tools list answering another request (`stray`). With neither left to look for, the
    rest passes through untouched."""
    buf = bytearray()
    async for chunk in chunks:
        if stray is None and (meter is None or meter.matched):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            continue
        buf += chunk
        start = 0
        out = bytearray()
        while True:
            end, sep = _find_event_end(buf, start)
            if end == -1:
                break
            event = bytes(buf[start:end])
            rewritten = await rewrite_sse_event(event, meter, stray)
            out += rewritten if rewritten is not None else event
            out += buf[end : end + sep]
            start = end + sep
        del buf[:start]
        if stray is None and meter is not None and meter.matched and buf:
            out += buf  # the rest passes through untouched
            buf.clear()
        if out:
            await send({"type": "http.response.body", "body": bytes(out), "more_body": True})
    if buf:
        await send({"type": "http.response.body", "body": bytes(buf), "more_body": True})


async def watch_disconnect(receive: Receive, on_disconnect: Callable[[], None]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            on_disconnect()
            return


__all__ = [
    "MAX_JSON_RESPONSE",
    "PRICE_KEY",
    "RECEIPT_KEY",
    "Meter",
    "PoolBusy",
    "ReplayMeter",
    "Response",
    "ResponseTooLarge",
    "Stray",
    "UnsafeUpstreamError",
    "UpstreamPool",
    "forward_headers",
    "pump_sse",
    "response_headers",
    "rewrite_json_body",
    "watch_disconnect",
]

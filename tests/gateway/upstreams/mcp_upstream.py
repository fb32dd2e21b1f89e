"""Tiny MCP upstream for gateway tests (mcp>=2,<3; v2 renamed FastMCP to MCPServer).

python mcp_upstream.py --port 18002 [--stateless] [--json] [--allow-host gw.local:8000]
                       [--resumable]
Serves Streamable HTTP at http://127.0.0.1:PORT/mcp
--resumable: SSE event ids from an in-memory EventStore; clients of 2025-11-25+ get a priming
event first, and GET + Last-Event-ID replays the rest of a broken stream (then follows it live).
"""

import argparse
import itertools
from collections import deque

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import JSONRPCMessage
from pydantic import BaseModel

app = MCPServer("gateway-test-upstream", version="0.1.0")


class Weather(BaseModel):
    city: str
    celsius: float


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers (structured result {"result": a+b})."""
    return a + b


@app.tool()
def weather(city: str) -> Weather:
    """Structured output with an outputSchema."""
    return Weather(city=city, celsius=21.5)


@app.tool()
def fail(reason: str = "boom") -> str:
    """Always fails: result has isError=true (a tool execution error, not a JSON-RPC error)."""
    raise ToolError(f"failed on purpose: {reason}")


@app.tool()
async def slow(steps: int = 3, ctx: Context | None = None) -> str:
    """Sends notifications/progress (when the request had a progressToken), then answers."""
    for i in range(steps):
        await anyio.sleep(0.2)
        if ctx is not None:
            await ctx.report_progress(i + 1, steps, f"step {i + 1}/{steps}")
    return f"done after {steps} steps"


class Answer(BaseModel):
    name: str


@app.tool()
async def ask_name(ctx: Context) -> str:
    """Server-to-client elicitation/create request in the middle of a tools/call."""
    res = await ctx.elicit("What is your name?", Answer)
    return (
        f"hello {res.data.name}"
        if res.action == "accept" and res.data
        else f"elicitation {res.action}"
    )


class MemoryEventStore(EventStore):
    """Events of every session in one bounded list; ids are a global counter."""

    def __init__(self, max_events: int = 10_000) -> None:
        self._events: deque[tuple[EventId, StreamId, JSONRPCMessage | None]] = deque(
            maxlen=max_events
        )
        self._ids = itertools.count(1)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event_id = str(next(self._ids))
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        events = list(self._events)
        start = next((i for i, e in enumerate(events) if e[0] == last_event_id), None)
        if start is None:
            return None
        stream_id = events[start][1]
        for event_id, sid, message in events[start + 1 :]:
            if sid == stream_id and message is not None:  # None = a priming event
                await send_callback(EventMessage(message, event_id))
        return stream_id


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18002)
    p.add_argument("--stateless", action="store_true", help="no Mcp-Session-Id, no GET stream")
    p.add_argument("--json", action="store_true", help="application/json responses instead of SSE")
    p.add_argument(
        "--allow-host", action="append", default=[], help="extra Host header value to accept"
    )
    p.add_argument(
        "--resumable", action="store_true", help="event ids + GET Last-Event-ID replay (SSE mode)"
    )
    a = p.parse_args()
    sec = None
    if a.allow_host:  # default for 127.0.0.1 only accepts Host 127.0.0.1:*, localhost:*, [::1]:*
        sec = TransportSecuritySettings(
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*", *a.allow_host],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
        )
    app.run(
        "streamable-http",
        host=a.host,
        port=a.port,
        stateless_http=a.stateless,
        json_response=a.json,
        transport_security=sec,
        event_store=MemoryEventStore() if a.resumable else None,
    )

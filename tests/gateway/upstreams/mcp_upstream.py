"""Tiny MCP upstream for gateway tests (mcp>=2,<3; v2 renamed FastMCP to MCPServer).

python mcp_upstream.py --port 18002 [--stateless] [--json] [--allow-host gw.local:8000]
Serves Streamable HTTP at http://127.0.0.1:PORT/mcp
"""

import argparse

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
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


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18002)
    p.add_argument("--stateless", action="store_true", help="no Mcp-Session-Id, no GET stream")
    p.add_argument("--json", action="store_true", help="application/json responses instead of SSE")
    p.add_argument(
        "--allow-host", action="append", default=[], help="extra Host header value to accept"
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
    )

"""The demo's hosted MCP server: a small, deterministic upstream the gateway fronts in the demo.

Run on its own: `python -m demo.upstream --port 18080` (Streamable HTTP at /mcp).
"""

import argparse
import hashlib

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

app = MCPServer("toolbooth-demo-weather", version="1.0.0")


class Forecast(BaseModel):
    city: str
    celsius: float
    summary: str


_SUMMARIES = ["clear", "partly cloudy", "overcast", "light rain", "windy", "snow showers"]


@app.tool()
def forecast(city: str) -> Forecast:
    """Tomorrow's forecast for a city (deterministic demo data)."""
    if not city.strip():
        raise ToolError("city must not be empty")
    digest = hashlib.sha256(city.strip().lower().encode()).digest()
    return Forecast(
        city=city.strip(),
        celsius=round(-5 + digest[0] / 255 * 35, 1),
        summary=_SUMMARIES[digest[1] % len(_SUMMARIES)],
    )


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@app.tool()
def fail(reason: str = "boom") -> str:
    """Always fails with isError=true, so the demo can show an unbilled call."""
    raise ToolError(f"failed on purpose: {reason}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18080)
    args = parser.parse_args()
    app.run("streamable-http", host=args.host, port=args.port)


if __name__ == "__main__":
    main()

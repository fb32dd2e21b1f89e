"""The creator's "Test connection": initialize and tools/list against their upstream, the way
discovery and the gateway reach it (SSRF guard at connect, our signed identity, their secret),
and the exact reason when it is not MCP: the HTTP status, the content type and a short excerpt
of the body, cleaned (upstream text is untrusted). The outcome counts towards health."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx2

from common.text import clean_text
from gateway.crypto import identity_key, identity_sign, secret_decrypt
from gateway.discovery import (
    CONNECT_TIMEOUT,
    DISCOVERY_LICENSE_ID,
    FETCH_TIMEOUT,
    GuardedTransport,
    _run,
    error_text,
    tools_list_fetch,
)
from gateway.health import upstream_check_record
from gateway.models import HostedUpstream
from gateway.proxy import forward_headers
from gateway.ssrf import check_upstream_url

EXCERPT_MAX = 300
PROTOCOL_VERSION = "2025-06-18"


@dataclass(frozen=True, slots=True)
class ConnectionReport:
    ok: bool
    step: str  # "initialize" | "tools/list"
    message: str
    status: int | None = None
    content_type: str = ""
    excerpt: str = ""
    tools: list[str] = field(default_factory=list)


def _initialize_body() -> bytes:
    return json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "toolbooth-connection-test", "version": "1"},
            },
        }
    ).encode()


async def _initialize(url: str, headers: dict[str, str]) -> ConnectionReport:
    """One initialize POST; anything but a JSON-RPC result (as JSON or SSE) is a failure."""
    async with httpx2.AsyncClient(
        transport=GuardedTransport(),
        timeout=httpx2.Timeout(FETCH_TIMEOUT, connect=CONNECT_TIMEOUT),
        follow_redirects=False,
        trust_env=False,
    ) as http:
        resp = await http.post(
            url,
            content=_initialize_body(),
            headers={
                **headers,
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
            },
        )
        body = await resp.aread()
    ctype = clean_text(resp.headers.get("content-type", ""), max_length=100)
    excerpt = clean_text(body[:2000].decode("utf-8", "replace"), max_length=EXCERPT_MAX)

    def fail(why: str) -> ConnectionReport:
        return ConnectionReport(
            ok=False,
            step="initialize",
            message=why,
            status=resp.status_code,
            content_type=ctype,
            excerpt=excerpt,
        )

    if resp.status_code >= 300:
        return fail(f"The upstream answered HTTP {resp.status_code} to initialize.")
    lowered = ctype.lower()
    if not (lowered.startswith("application/json") or lowered.startswith("text/event-stream")):
        return fail(f"The upstream answered with {ctype or 'no content type'}, not JSON or SSE.")
    if b'"result"' not in body:
        return fail("The answer to initialize is not a JSON-RPC result.")
    return ConnectionReport(
        ok=True, step="initialize", message="", status=resp.status_code, content_type=ctype
    )


def upstream_connection_test(*, listing_id: int) -> ConnectionReport:
    """Test the listing's upstream now and record the outcome in its health fields."""
    upstream = HostedUpstream.objects.select_related("listing").get(listing_id=listing_id)
    name = upstream.listing.name
    identity = identity_sign(
        key=identity_key(name), listing_name=name, license_id=DISCOVERY_LICENSE_ID
    )
    headers = forward_headers(
        {}, secret=secret_decrypt(upstream.secret_encrypted), identity=identity
    )
    url = upstream.url
    step = "initialize"
    try:
        check_upstream_url(url, resolve=False)
        report = _run(lambda: _initialize(url, headers))
        if report.ok:
            step = "tools/list"
            tools = _run(lambda: tools_list_fetch(url=url, headers=headers))
            report = ConnectionReport(
                ok=True,
                step="tools/list",
                message=f"Connected: initialize and tools/list answered ({len(tools)} tools).",
                status=report.status,
                content_type=report.content_type,
                tools=[t["name"] for t in tools[:20]],
            )
    except Exception as exc:  # any failure (refused by the SSRF guard too) is shown, not raised
        report = ConnectionReport(ok=False, step=step, message=error_text(exc))
    upstream_check_record(
        listing_id=listing_id,
        ok=report.ok,
        error="" if report.ok else f"Test connection: {report.message}",
        at=datetime.now(tz=UTC),
    )
    return report

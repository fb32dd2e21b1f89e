"""Factories for the gateway's rows."""

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import factory
from django.test import override_settings
from factory.django import DjangoModelFactory

from gateway.crypto import secret_encrypt
from gateway.manifest import manifest_build, manifest_hash, tool_hashes
from gateway.metering import new_call_id, usage_record
from gateway.models import HostedUpstream, ToolManifest
from tests.factories import ListingFactory

# Every tool the scripted upstream (upstreams/scripted_upstream.py) acts on, in the form its
# tools/list gives the four it lists (the others are called by name only): the manifest a
# creator of that server would have approved.
SCRIPTED_TOOL_NAMES = (
    "ok",
    "tool_error",
    "secret_tool",
    "headers",
    "rpc_error",
    "http500",
    "slow",
    "sse",
    "sse_error",
    "sse_silent",
    "redirect",
    "stray_tools",
)
SCRIPTED_TOOLS = [{"name": n, "inputSchema": {"type": "object"}} for n in SCRIPTED_TOOL_NAMES]


def served_tools(url: str) -> list[dict[str, Any]]:
    """The canonical tools the MCP server at `url` lists now, found by real discovery
    (gateway.discovery, the SDK client) as the creator's page shows them before approval.
    The server must be running; its loopback address is allowed for this one fetch."""
    from gateway.discovery import tools_manifest_fetch

    with override_settings(GATEWAY_UPSTREAM_ALLOWLIST=[urlsplit(url).netloc]):
        _, raws = asyncio.run(tools_manifest_fetch(url=url, headers={}))
    tools, skipped = manifest_build(raws)
    assert not skipped, f"{url} serves tools that cannot be approved: {skipped}"
    return tools


def manifest_approved(*, listing: Any, tools: list[dict[str, Any]]) -> ToolManifest:
    """A newest approved manifest of `tools` (canonical) for `listing`, as
    gateway.services.tool_manifest_approve pins it (hashes from gateway.manifest)."""
    canonical, skipped = manifest_build(tools)
    assert not skipped, skipped
    hashes = tool_hashes(canonical)
    current = ToolManifest.objects.filter(listing=listing).order_by("-version").first()
    return ToolManifest.objects.create(
        listing=listing,
        version=(current.version + 1) if current is not None else 1,
        manifest_hash=manifest_hash(hashes),
        tools=canonical,
        tool_hashes=hashes,
        approved_at=datetime.now(tz=UTC),
    )


class HostedUpstreamFactory(DjangoModelFactory):
    """A hosted upstream whose creator approved its tools (the gateway refuses every call of a
    listing without an approved manifest). `approved=` a list of tools approves those,
    `approved=False` leaves the listing unapproved; by default the scripted upstream's tools."""

    class Meta:
        model = HostedUpstream
        skip_postgeneration_save = True

    class Params:
        secret = ""

    listing = factory.SubFactory(ListingFactory)
    url = "http://127.0.0.1:18510/mcp"
    secret_encrypted = factory.LazyAttribute(lambda o: secret_encrypt(o.secret))

    @factory.post_generation
    def approved(obj: HostedUpstream, create: bool, extracted: Any, **kwargs: Any) -> None:
        if not create or extracted is False:
            return
        tools = SCRIPTED_TOOLS if extracted is None or extracted is True else extracted
        manifest_approved(listing=obj.listing, tools=tools)


def finished_call(
    *, customer: str, meter: str, at: float, amount: int, billable: bool = True
) -> dict[str, Any]:
    """A finished call as the usage stream carries it (gateway.metering.usage_record's shape)."""
    return usage_record(
        call_id=str(new_call_id()),
        ent=SimpleNamespace(
            key_id=1,
            license_id=1,
            listing_id=1,
            plan_id=1,
            currency="usd",
            stripe_customer_id=customer,
            meter_event_name=meter,
        ),
        tool="ok",
        amount=amount,
        billable=billable,
        outcome="success" if billable else "tool_error",
        latency_ms=2,
        occurred_at=at,
    )

"""Gateway reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, Q, Sum

from gateway.crypto import identity_key, secret_decrypt
from gateway.models import (
    HostedUpstream,
    ToolChange,
    ToolChangeStatus,
    ToolManifest,
    UsageEvent,
)


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """What the proxy needs for one listing (cached per process, GATEWAY_UPSTREAM_CACHE_SECONDS)."""

    listing_id: int
    listing_name: str
    url: str
    secret: str  # decrypted creator credential ("" = none)
    identity_key: bytes
    # The rug-pull guard (gateway.manifest): the approved tool hashes and copies, None when the
    # creator never approved a manifest (then nothing is compared); `blocked` names the tools
    # with a pending change, refused on tools/call in every process.
    approved_hashes: dict[str, str] | None = None
    approved_tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    blocked: frozenset[str] = frozenset()


def tool_manifest_current(*, listing_id: int) -> ToolManifest | None:
    """The approved manifest in force: the newest version."""
    return ToolManifest.objects.filter(listing_id=listing_id).order_by("-version").first()


def tool_changes_pending(*, listing_id: int) -> list[ToolChange]:
    return list(
        ToolChange.objects.filter(listing_id=listing_id, status=ToolChangeStatus.PENDING).order_by(
            "name"
        )
    )


def upstream_config_get(*, listing_name: str) -> UpstreamConfig | None:
    """The enabled upstream of a listing, or None. One query (join to the listing), plus two
    for the approved manifest and the pending changes (a cache miss, every
    GATEWAY_UPSTREAM_CACHE_SECONDS per listing and process)."""
    row = (
        HostedUpstream.objects.select_related("listing")
        .filter(listing__name=listing_name, enabled=True)
        .only("url", "secret_encrypted", "listing__id", "listing__name")
        .first()
    )
    if row is None:
        return None
    listing_id = row.listing.pk
    approved = (
        ToolManifest.objects.filter(listing_id=listing_id)
        .order_by("-version")
        .values_list("tools", "tool_hashes")
        .first()
    )
    hashes: dict[str, str] | None = None
    tools: dict[str, dict[str, Any]] = {}
    blocked: frozenset[str] = frozenset()
    if approved is not None:
        tools = {t["name"]: t for t in approved[0] if isinstance(t, dict) and "name" in t}
        hashes = {str(k): str(v) for k, v in approved[1].items() if k in tools}
        blocked = frozenset(
            ToolChange.objects.filter(
                listing_id=listing_id, status=ToolChangeStatus.PENDING
            ).values_list("name", flat=True)
        )
    return UpstreamConfig(
        listing_id=listing_id,
        listing_name=row.listing.name,
        url=row.url,
        secret=secret_decrypt(row.secret_encrypted),
        identity_key=identity_key(row.listing.name),
        approved_hashes=hashes,
        approved_tools=tools,
        blocked=blocked,
    )


@dataclass(frozen=True, slots=True)
class UsageCounters:
    """What the Redis quota and spend counters should hold, as far as the ledger knows."""

    calls: int  # billable calls of the license in the quota month
    spent_today: int  # minor units the key spent since the UTC day start
    spent_month: int  # minor units the key spent in the quota month


def usage_counters_for(
    *, license_id: int, key_id: int, period_start: datetime, day_start: datetime
) -> UsageCounters:
    """Re-derive lost counters from the ledger (gateway.ratelimit, on an entitlement cache miss).

    One aggregate query on the (license_id, occurred_at) index. A key belongs to one license,
    so the key's sums are a filter inside the license's rows. The day can start before the
    quota month (a period that began today), hence the lower bound is the earlier of the two.
    """
    since = min(period_start, day_start)
    row = UsageEvent.objects.filter(
        license_id=license_id, billable=True, occurred_at__gte=since
    ).aggregate(
        calls=Count("id", filter=Q(occurred_at__gte=period_start)),
        spent_today=Sum("unit_amount", filter=Q(key_id=key_id, occurred_at__gte=day_start)),
        spent_month=Sum("unit_amount", filter=Q(key_id=key_id, occurred_at__gte=period_start)),
    )
    return UsageCounters(
        calls=row["calls"] or 0,
        spent_today=row["spent_today"] or 0,
        spent_month=row["spent_month"] or 0,
    )


@dataclass(frozen=True, slots=True)
class FieldDiff:
    field: str
    old: str  # shown text (gateway.toolscan.visible_text; schemas as indented JSON)
    new: str


@dataclass(frozen=True, slots=True)
class ToolReview:
    name: str
    status: str  # "unchanged", "added", "changed", "removed" (against the approved manifest)
    fields: list[FieldDiff]
    findings: list[dict[str, str]]
    description: str  # shown text of what the upstream serves (or the approved copy if removed)


@dataclass(frozen=True, slots=True)
class ManifestReview:
    """What the creator reviews before approving: the discovered tools against the approved
    manifest, field by field, with the scanner's findings; `manifest_hash` goes back with the
    approval so exactly this is pinned."""

    manifest_hash: str
    approved_version: int | None
    approved_at: datetime | None
    tools: list[ToolReview]
    skipped: list[str]
    pending: list[ToolChange]

    @property
    def needs_approval(self) -> bool:
        return bool(self.manifest_hash) and (
            self.approved_version is None or any(t.status != "unchanged" for t in self.tools)
        )

    @property
    def unapproved_notice(self) -> str:
        """What the creator must do while no manifest was ever approved ("" once one was):
        until then the gateway shows agents no tools and refuses every call."""
        if self.approved_version is not None:
            return ""
        if not self.tools:
            return (
                "Agents see no tools from this server and every call is refused until Toolbooth "
                "has discovered its tools and you approve them under “Tools agents see”."
            )
        return (
            "Agents see none of this server's tools and every call is refused until you approve "
            "them: review them under “Tools agents see” and approve (saving a price approves "
            "them too)."
        )

    @property
    def warnings(self) -> int:
        return sum(len(t.findings) for t in self.tools)


_REVIEW_FIELDS = ("title", "description", "inputSchema", "outputSchema", "annotations")


def _shown(value: Any) -> str:
    from gateway.toolscan import visible_text

    if value is None:
        return ""
    if isinstance(value, str):
        return visible_text(value)
    import json

    return visible_text(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def tool_manifest_review(*, listing_id: int) -> ManifestReview | None:
    """The review of a hosted listing's discovered tools, or None without an upstream."""
    from gateway.manifest import tool_hash
    from gateway.toolscan import tool_scan

    upstream = (
        HostedUpstream.objects.filter(listing_id=listing_id)
        .only("manifest", "manifest_hash", "manifest_skipped")
        .first()
    )
    if upstream is None:
        return None
    current = tool_manifest_current(listing_id=listing_id)
    approved: dict[str, dict[str, Any]] = (
        {t["name"]: t for t in current.tools} if current is not None else {}
    )
    hashes: dict[str, str] = current.tool_hashes if current is not None else {}
    rows: list[ToolReview] = []
    seen: set[str] = set()
    for tool in upstream.manifest:
        name = tool["name"]
        seen.add(name)
        old = approved.get(name)
        if current is None or old is None:
            status = "added"
        elif tool_hash(tool) != hashes.get(name):
            status = "changed"
        else:
            status = "unchanged"
        fields = [
            FieldDiff(f, _shown((old or {}).get(f)), _shown(tool.get(f)))
            for f in _REVIEW_FIELDS
            if status == "changed" and (old or {}).get(f) != tool.get(f)
        ]
        findings = [f.as_dict() for f in tool_scan(tool)]
        rows.append(ToolReview(name, status, fields, findings, _shown(tool.get("description"))))
    for name, old in approved.items():
        if name not in seen:
            rows.append(ToolReview(name, "removed", [], [], _shown(old.get("description"))))
    order = {"changed": 0, "added": 1, "removed": 2, "unchanged": 3}
    if current is not None:
        rows.sort(key=lambda r: (order[r.status], r.name))
    return ManifestReview(
        manifest_hash=upstream.manifest_hash,
        approved_version=current.version if current is not None else None,
        approved_at=current.approved_at if current is not None else None,
        tools=rows,
        skipped=list(upstream.manifest_skipped),
        pending=tool_changes_pending(listing_id=listing_id),
    )

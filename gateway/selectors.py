"""Gateway reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Q, Sum

from gateway.crypto import identity_key, secret_decrypt
from gateway.models import HostedUpstream, UsageEvent


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """What the proxy needs for one listing (cached per process, GATEWAY_UPSTREAM_CACHE_SECONDS)."""

    listing_id: int
    listing_name: str
    url: str
    secret: str  # decrypted creator credential ("" = none)
    identity_key: bytes


def upstream_config_get(*, listing_name: str) -> UpstreamConfig | None:
    """The enabled upstream of a listing, or None. One query (join to the listing)."""
    row = (
        HostedUpstream.objects.select_related("listing")
        .filter(listing__name=listing_name, enabled=True)
        .only("url", "secret_encrypted", "listing__id", "listing__name")
        .first()
    )
    if row is None:
        return None
    return UpstreamConfig(
        listing_id=row.listing.pk,
        listing_name=row.listing.name,
        url=row.url,
        secret=secret_decrypt(row.secret_encrypted),
        identity_key=identity_key(row.listing.name),
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

"""Popularity and trust of every listing, aggregated from facts we hold, off the hot path.

`listing_stats_refresh_all` runs from beat (`listing_stats_refresh_task`, hourly) and from
`manage.py listing_stats_refresh`; it writes `Listing.calls_30d`, `buyers`, `uptime`,
`health_state`, `rating_avg` and `rating_count` through `marketplace.services.listing_stats_set`,
which search ranking and the pages read. A constant number of grouped queries plus two per
hosted listing (the health selector), never a query per call.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Avg, Count
from django.utils import timezone

from billing.models import License
from gateway.models import HostedUpstream, UsageEvent, UsageOutcome
from marketplace.services import ListingStats, listing_stats_set
from web.models import Review
from web.reports import upstream_health_get

POPULARITY_DAYS = 30
# Calls whose answer reached the caller (billable or not: a free plan's calls count too). Tool
# errors, refusals and upstream failures are not use anyone got value from.
ANSWERED_OUTCOMES = (UsageOutcome.SUCCESS, UsageOutcome.REPLAYED)


def listing_stats_compute(*, now: datetime | None = None) -> dict[int, ListingStats]:
    """The figures of every listing that has any: calls in 30 days, buyers, health, ratings.

    Uptime is the share of calls answered in the health selector's own window
    (`web.reports.upstream_health_get`, 24 h), so the badge and the number never disagree; a
    hosted listing nobody called has its health state but no uptime.
    """
    now = now or timezone.now()
    calls = dict(
        UsageEvent.objects.filter(
            occurred_at__gte=now - timedelta(days=POPULARITY_DAYS),
            outcome__in=ANSWERED_OUTCOMES,
        )
        .values_list("listing_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    buyers = dict(
        License.objects.values_list("listing_id")
        .annotate(n=Count("buyer_id", distinct=True))
        .order_by()
    )
    ratings = {
        row["listing_id"]: (row["avg"], row["n"])
        for row in Review.objects.values("listing_id")
        .annotate(avg=Avg("rating"), n=Count("id"))
        .order_by()
    }
    health = {}
    for listing_id in HostedUpstream.objects.values_list("listing_id", flat=True):
        figure = upstream_health_get(listing_id=listing_id, now=now)
        if figure is not None:
            uptime = (figure.calls - figure.failures) / figure.calls if figure.calls else None
            health[listing_id] = (uptime, figure.state)
    stats: dict[int, ListingStats] = {}
    for listing_id in {*calls, *buyers, *ratings, *health}:
        uptime, state = health.get(listing_id, (None, ""))
        rating_avg, rating_count = ratings.get(listing_id, (None, 0))
        stats[listing_id] = ListingStats(
            calls_30d=calls.get(listing_id, 0),
            buyers=buyers.get(listing_id, 0),
            uptime=uptime,
            health_state=state,
            rating_avg=round(rating_avg, 2) if rating_avg is not None else None,
            rating_count=rating_count,
        )
    return stats


def listing_stats_refresh_all(*, now: datetime | None = None) -> int:
    """Compute and store every listing's figures; listings that lost theirs go back to zero.
    Running it twice is harmless. Returns the number of listings written."""
    now = now or timezone.now()
    return listing_stats_set(stats=listing_stats_compute(now=now), at=now)

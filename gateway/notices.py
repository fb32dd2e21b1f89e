"""Emails the usage drain decides on, after each batch is in the ledger (never on the hot path):
80 % of a license's monthly calls used, and an upstream that started failing.

Runs after the batch's transaction committed and never fails the drain: a notice that could
not be queued now is found again by the next batch of that license or upstream (the
notification's unique key keeps it to one email).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.db.models import Count, Q

from billing.services.notices import licenses_quota_periods, quota_event_key, quota_usage_notify
from gateway.health import upstreams_unhealthy_notify
from gateway.models import UsageEvent, UsageOutcome
from notifications.models import Notification, NotificationKind

if TYPE_CHECKING:
    from datetime import datetime

logger = logging.getLogger(__name__)

_FAILURES = (UsageOutcome.UPSTREAM_ERROR, UsageOutcome.TIMEOUT)


def usage_batch_notify(rows: list[UsageEvent]) -> None:
    """The notices one written batch may trigger; errors are logged, not raised."""
    try:
        quota_notify(license_ids={r.license_id for r in rows if r.billable})
        failing = {r.listing_id for r in rows if r.outcome in _FAILURES}
        if failing:
            upstreams_unhealthy_notify(listing_ids=failing)
    except Exception:
        logger.exception("gateway.usage_notices_failed")


def quota_notify(*, license_ids: set[int]) -> int:
    """Licenses in this batch that reached 80 % of their monthly quota, from the ledger's counts
    since each one's period start; licenses already told this period are not counted again.
    Three queries at most (periods, notices sent, one grouped count)."""
    if not license_ids:
        return 0
    periods = licenses_quota_periods(license_ids=license_ids)
    if not periods:
        return 0
    keys = {lid: quota_event_key(license_id=lid, period_start=s) for lid, s in periods.items()}
    told = set(
        Notification.objects.filter(
            kind=NotificationKind.QUOTA_80, event_key__in=list(keys.values())
        ).values_list("event_key", flat=True)
    )
    todo: dict[int, datetime] = {lid: periods[lid] for lid, key in keys.items() if key not in told}
    if not todo:
        return 0
    since = Q()
    for lid, start in todo.items():
        since |= Q(license_id=lid, occurred_at__gte=start)
    counts = {
        row["license_id"]: row["n"]
        for row in UsageEvent.objects.filter(since, billable=True)
        .values("license_id")
        .annotate(n=Count("id"))
    }
    return quota_usage_notify(
        used_by_license={lid: n for lid, n in counts.items() if lid in todo},
        period_starts=todo,
    )

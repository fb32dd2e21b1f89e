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


def tool_manifest_changed_notify(
    *, listing_id: int, changes: list[tuple[str, str]], event_key: str
) -> int:
    """For the rug-pull guard: tell the listing's owner and active staff that the upstream's
    tools differ from the approved manifest. `changes` is [(tool name, kind in words)];
    `event_key` names the detection (e.g. the first new ToolChange id), so a repeated call
    sends nothing. Not optional: a changed tool may be an attack on buyers' agents."""
    from django.conf import settings
    from django.urls import reverse

    from common.text import clean_text
    from marketplace.models import Listing
    from notifications.services import notification_queue, notification_recipients_staff

    listing = Listing.objects.filter(pk=listing_id).only("name", "owner_id").first()
    if listing is None:
        return 0
    page = settings.SITE_URL + reverse("ui:creator-listing", kwargs={"name": listing.name})
    context = {
        "listing_name": listing.name,
        "changes": [
            {"name": clean_text(name, max_length=100), "kind": kind} for name, kind in changes[:50]
        ],
        "action_url": page,
        "action_label": "Review the tools",
    }
    recipients = {*notification_recipients_staff()}
    if listing.owner_id is not None:
        recipients.add(listing.owner_id)
    queued = 0
    for user_id in sorted(recipients):
        row = notification_queue(
            recipient_id=user_id,
            kind=NotificationKind.TOOL_MANIFEST_CHANGED,
            event_key=f"tools:{listing_id}:{event_key}",
            context=context,
        )
        queued += row is not None
    return queued


def tools_awaiting_approval_notify(*, listing_id: int, names: list[str], manifest_hash: str) -> int:
    """Tell the owner that discovery found tools they have not approved while none ever were:
    agents see no tools and every call is refused until they do (e.g. a listing hosted before
    the rug-pull guard existed). Once per discovered manifest (`manifest_hash`). Not optional:
    the listing is unusable until then."""
    from django.conf import settings
    from django.urls import reverse

    from common.text import clean_text
    from marketplace.models import Listing
    from notifications.services import notification_queue

    listing = Listing.objects.filter(pk=listing_id).only("name", "owner_id").first()
    if listing is None or listing.owner_id is None or not names:
        return 0
    page = settings.SITE_URL + reverse("ui:creator-listing", kwargs={"name": listing.name})
    shown = [clean_text(n, max_length=100) for n in names[:10]]
    row = notification_queue(
        recipient_id=listing.owner_id,
        kind=NotificationKind.TOOLS_AWAITING_APPROVAL,
        event_key=f"unapproved:{listing_id}:{manifest_hash}",
        context={
            "listing_name": listing.name,
            "count": len(names),
            "names": shown,
            "more": len(names) - len(shown),
            "action_url": page,
            "action_label": "Review and approve the tools",
        },
    )
    return int(row is not None)

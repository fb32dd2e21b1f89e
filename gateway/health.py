"""Upstream health off the hot path: discovery checks count like calls, and the creator hears
once when their upstream starts failing.

The drain (`gateway.services._upstream_health_update`) keeps `HostedUpstream`'s health fields
from call outcomes; tool discovery and the creator's "Test connection" record theirs here. An
answer that is not MCP (HTTP errors, HTML, timeouts, refused connections) is a failure.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db.models import F
from django.urls import reverse

from gateway.models import HostedUpstream
from notifications.models import NotificationKind
from notifications.services import notification_queue

logger = logging.getLogger(__name__)

# Failures in a row (calls or checks) after which an upstream is shown as failing and its
# creator is emailed: one stray timeout is not an outage, three in a row with nothing
# answered in between is.
UNHEALTHY_AFTER = 3
ERROR_MAX = 200

# What the drain stores in `last_error` (a call's outcome), in words for people.
OUTCOME_TEXT = {
    "upstream_error": "The upstream did not give an MCP answer (HTTP error, not JSON/SSE, "
    "or the connection failed).",
    "timeout": "The upstream timed out.",
}


def error_text(last_error: str) -> str:
    return OUTCOME_TEXT.get(last_error, last_error)


def upstream_check_record(*, listing_id: int, ok: bool, error: str, at: datetime) -> None:
    """Count one discovery or test-connection outcome in the upstream's health fields, like a
    call: success resets the failures in a row, a failure adds one (with its reason)."""
    update: dict[str, Any]
    if ok:
        update = {"last_ok_at": at, "consecutive_failures": 0}
    else:
        update = {
            "last_error_at": at,
            "last_error": error[:ERROR_MAX],
            "consecutive_failures": F("consecutive_failures") + 1,
        }
    HostedUpstream.objects.filter(listing_id=listing_id).update(**update)
    if not ok:
        upstreams_unhealthy_notify(listing_ids=[listing_id])


def upstreams_unhealthy_notify(*, listing_ids: Iterable[int]) -> int:
    """Email the owner of each of these upstreams that is failing now, once per failure
    streak (the streak is named by the last success before it, so a recovery and a new
    outage are a new email). Returns the notifications queued."""
    rows = (
        HostedUpstream.objects.filter(
            listing_id__in=list(listing_ids),
            enabled=True,
            consecutive_failures__gte=UNHEALTHY_AFTER,
            listing__owner__isnull=False,
        )
        .select_related("listing")
        .only(
            "listing__name",
            "listing__owner_id",
            "last_ok_at",
            "last_error",
            "last_error_at",
            "consecutive_failures",
        )
    )
    queued = 0
    for up in rows:
        streak = up.last_ok_at.isoformat() if up.last_ok_at else "never"
        owner_id = up.listing.owner_id
        assert owner_id is not None  # noqa: S101 - filtered above
        created = notification_queue(
            recipient_id=owner_id,
            kind=NotificationKind.UPSTREAM_UNHEALTHY,
            event_key=f"upstream:{up.listing_id}:after:{streak}",
            context={
                "listing_name": up.listing.name,
                "failures": up.consecutive_failures,
                "error": error_text(up.last_error),
                "since": up.last_error_at.strftime("%Y-%m-%d %H:%M UTC")
                if up.last_error_at
                else "",
                "action_url": _site_url(
                    reverse("ui:creator-listing", kwargs={"name": up.listing.name})
                ),
                "action_label": "Open your listing",
            },
        )
        queued += created is not None
    return queued


def _site_url(path: str) -> str:
    from django.conf import settings

    return settings.SITE_URL + path

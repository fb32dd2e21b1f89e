"""Gateway writes: hosting config for a listing, the usage ledger, meter reports."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F

from common.exceptions import ApplicationError
from common.services import model_update
from gateway.crypto import secret_encrypt
from gateway.models import HostedUpstream, MeterReconciliation, UsageEvent, UsageOutcome
from gateway.ssrf import UnsafeUpstreamError, check_upstream_url

logger = logging.getLogger(__name__)

# Stripe accepts meter events up to 35 days old; report well inside that.
REPORT_BATCH = 500


def hosted_upstream_set(
    *, listing: Any, actor: Any, url: str, secret: str | None = None, enabled: bool = True
) -> HostedUpstream:
    """Create or update the upstream a listing is served from.

    Only the listing's owner or staff may; the URL must pass the SSRF guard (the same check
    runs again at every connect, against DNS rebinding). `secret=None` keeps the stored one.
    Idempotent: saving the same values changes nothing.
    """
    is_owner = listing.owner_id is not None and actor.pk == listing.owner_id
    if not (getattr(actor, "is_staff", False) or is_owner):
        raise ApplicationError("Only the listing's owner can set its upstream.", status_code=403)
    url = url.strip()
    try:
        check_upstream_url(url)
    except UnsafeUpstreamError as exc:
        raise ApplicationError(str(exc), extra={"fields": {"url": [str(exc)]}}) from exc
    data: dict[str, Any] = {"url": url, "enabled": enabled}
    if secret is not None:
        data["secret_encrypted"] = secret_encrypt(secret)
    upstream = HostedUpstream.objects.filter(listing=listing).first()
    if upstream is None:
        upstream = HostedUpstream(listing=listing, **data)
        upstream.full_clean()
        upstream.save()
    else:
        upstream, _ = model_update(instance=upstream, fields=list(data), data=data)
    logger.info("gateway.upstream_set", extra={"listing_id": listing.pk})
    if enabled:  # ask the (possibly new) upstream for its tools once this save is visible
        listing_id = listing.pk
        transaction.on_commit(lambda: _tools_refresh_enqueue(listing_id=listing_id))
    return upstream


def _tools_refresh_enqueue(*, listing_id: int) -> None:
    from gateway.tasks import hosted_upstream_tools_refresh_task

    try:
        hosted_upstream_tools_refresh_task.delay(listing_id)
    except Exception as exc:  # a broker outage must not fail the save; the daily refresh retries
        logger.warning(
            "gateway.tools_enqueue_failed",
            extra={"listing_id": listing_id, "error": type(exc).__name__},
        )


def usage_events_write(*, records: Iterable[dict[str, Any]]) -> int:
    """Insert finished calls into the ledger; returns how many were new.

    Idempotent on call_id (unique; conflicts ignored), so a re-delivered batch after a worker
    death is harmless. Also moves the keys' last_used_at forward (billing's batched update).
    One transaction so the caller may acknowledge the batch only after both are committed.
    """
    rows: list[UsageEvent] = []
    last_used: dict[int, datetime] = {}
    for r in records:
        occurred = datetime.fromtimestamp(float(r["occurred_at"]), tz=UTC)
        rows.append(
            UsageEvent(
                call_id=uuid.UUID(r["call_id"]),
                key_id=r["key_id"],
                license_id=r["license_id"],
                listing_id=r["listing_id"],
                plan_id=r["plan_id"],
                tool=r["tool"],
                unit_amount=r["unit_amount"],
                currency=r["currency"],
                billable=r["billable"],
                outcome=r["outcome"],
                latency_ms=r["latency_ms"],
                occurred_at=occurred,
                stripe_customer_id=r.get("stripe_customer_id") or "",
                meter_event_name=r.get("meter_event_name") or "",
            )
        )
        if r["key_id"] > 0 and occurred > last_used.get(r["key_id"], occurred - timedelta(1)):
            last_used[r["key_id"]] = occurred
    if not rows:
        return 0
    ids = [row.call_id for row in rows]
    with transaction.atomic():  # ledger rows, last_used and upstream health move together
        before = UsageEvent.objects.filter(call_id__in=ids).count()
        UsageEvent.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
        _keys_mark_used(last_used)
        _upstream_health_update(rows)
    return len(set(ids)) - before


_UPSTREAM_FAILURES = {UsageOutcome.UPSTREAM_ERROR, UsageOutcome.TIMEOUT}


def _upstream_health_update(rows: list[UsageEvent]) -> None:
    """Health fields from the calls' outcomes, off the hot path: the last success and failure,
    and failures since the last success. A repeated batch can count a failure twice in
    `consecutive_failures` (a health hint, not billing)."""
    by_listing: dict[int, list[UsageEvent]] = {}
    for row in sorted(rows, key=lambda r: r.occurred_at):
        by_listing.setdefault(row.listing_id, []).append(row)
    for listing_id, events in by_listing.items():
        ok = [e.occurred_at for e in events if e.outcome not in _UPSTREAM_FAILURES]
        failed = [e for e in events if e.outcome in _UPSTREAM_FAILURES]
        trailing = sum(1 for e in failed if not ok or e.occurred_at > ok[-1])
        update: dict[str, Any] = {}
        if ok:
            update["last_ok_at"] = ok[-1]
            update["consecutive_failures"] = trailing
        else:
            update["consecutive_failures"] = F("consecutive_failures") + trailing
        if failed:
            update["last_error_at"] = failed[-1].occurred_at
            update["last_error"] = failed[-1].outcome
        HostedUpstream.objects.filter(listing_id=listing_id).update(**update)


def _keys_mark_used(last_used: dict[int, datetime]) -> None:
    try:
        from billing.services.licenses import keys_mark_used
    except ImportError:  # billing without keys (should not happen once billing has landed)
        return
    keys_mark_used(last_used=last_used)


def usage_report(*, limit: int = REPORT_BATCH) -> int:
    """Send unreported billable calls to Stripe Billing Meters; returns how many were sent.

    Identifier = call_id, so Stripe deduplicates a resend after a crash between Stripe's answer
    and our `meter_reported_at` update; we set the flag only after Stripe accepted the event,
    so nothing is skipped. Value = the call's price in minor units (billing's meter prices one
    minor unit per unit). Call from one task at a time (the Celery task holds a Redis lock).
    """
    from billing.stripe_client import get_client

    client = get_client()
    events = list(
        UsageEvent.objects.filter(billable=True, meter_reported_at__isnull=True, unit_amount__gt=0)
        .exclude(stripe_customer_id="")
        .exclude(meter_event_name="")
        .order_by("occurred_at")[:limit]
    )
    sent = 0
    for event in events:
        try:
            client.v1.billing.meter_events.create(
                {
                    "event_name": event.meter_event_name,
                    "identifier": str(event.call_id),
                    "timestamp": int(event.occurred_at.timestamp()),
                    "payload": {
                        "stripe_customer_id": event.stripe_customer_id,
                        "value": str(event.unit_amount),
                    },
                }
            )
        except Exception as exc:
            if not _is_duplicate_identifier(exc):
                logger.warning(
                    "gateway.meter_report_failed",
                    extra={"call_id": str(event.call_id), "error": type(exc).__name__},
                )
                break
        UsageEvent.objects.filter(pk=event.pk, meter_reported_at__isnull=True).update(
            meter_reported_at=datetime.now(tz=UTC)
        )
        sent += 1
    return sent


def _is_duplicate_identifier(exc: Exception) -> bool:
    """Stripe refuses a reused meter event identifier: it already counted this call."""
    code = getattr(exc, "code", None) or ""
    message = str(getattr(exc, "user_message", "") or exc)
    return "identifier" in message.lower() and (
        "already" in message.lower() or code in {"resource_already_exists", "idempotency_error"}
    )


def usage_reconcile(
    *, meter_id: str, meter_event_name: str, stripe_customer_id: str, start: datetime, end: datetime
) -> MeterReconciliation:
    """Compare what we reported for one customer and meter in [start, end) with Stripe's event
    summaries; stores the comparison (append-only) and logs a mismatch."""
    from django.db.models import Sum

    from billing.stripe_client import get_client

    ours = (
        UsageEvent.objects.filter(
            meter_event_name=meter_event_name,
            stripe_customer_id=stripe_customer_id,
            meter_reported_at__isnull=False,
            occurred_at__gte=start,
            occurred_at__lt=end,
        ).aggregate(total=Sum("unit_amount"))["total"]
        or 0
    )
    summaries = get_client().v1.billing.meters.event_summaries.list(
        meter_id,
        {
            "customer": stripe_customer_id,
            "start_time": int(start.timestamp()),
            "end_time": int(end.timestamp()),
        },
    )
    theirs = int(sum(float(s.aggregated_value) for s in summaries.auto_paging_iter()))
    rec = MeterReconciliation.objects.create(
        stripe_customer_id=stripe_customer_id,
        meter_event_name=meter_event_name,
        window_start=start,
        window_end=end,
        ours=ours,
        stripe=theirs,
        matches=ours == theirs,
    )
    if not rec.matches:
        logger.warning(
            "gateway.meter_mismatch",
            extra={"reconciliation_id": rec.pk, "ours": ours, "stripe": theirs},
        )
    return rec

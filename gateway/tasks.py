"""Celery tasks: drain the usage stream into the ledger, report it to Stripe, reconcile."""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from redis.exceptions import LockError

from gateway import usage

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, time_limit=300, soft_time_limit=240)  # type: ignore[untyped-decorator]
def usage_drain_task() -> int:
    """Move finished calls from the Redis stream into the ledger (idempotent: unique call id,
    XACK after commit; re-claims what a killed worker left pending)."""
    if not settings.REDIS_URL:
        return 0
    moved = usage.usage_drain(client=usage.redis_client(), consumer=usage.consumer_name())
    if moved:
        logger.info("gateway.usage_drained", extra={"n": moved})
    return moved


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100)  # type: ignore[untyped-decorator]
def inflight_sweep_task() -> int:
    """Calls left in flight by a dead gateway process become unbilled ledger rows."""
    if not settings.REDIS_URL:
        return 0
    swept = usage.inflight_sweep(client=usage.redis_client(), now=time.time())
    if swept:
        logger.warning("gateway.inflight_swept", extra={"n": swept})
    return swept


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100)  # type: ignore[untyped-decorator]
def usage_report_task() -> int:
    """Seal finished minutes and send their meter events to Stripe, under a short lease renewed
    between chunks (GATEWAY_REPORT_LEASE_SECONDS), so a killed worker holds reporting up for
    at most that long. Two reporters overlapping (a chunk outlived the lease) are harmless:
    identifiers are stored before sending and a report is marked sent once."""
    from gateway.services import usage_report

    if not settings.REDIS_URL:
        return usage_report().sent
    lock = usage.redis_client().lock(
        "tb:lock:usage_report", timeout=settings.GATEWAY_REPORT_LEASE_SECONDS, blocking=False
    )
    if not lock.acquire():
        return 0

    def keep_alive() -> bool:
        try:
            return bool(lock.reacquire())
        except LockError:
            return False

    try:
        run = usage_report(keep_alive=keep_alive)
    finally:
        with contextlib.suppress(LockError):
            lock.release()
    if run.sent or run.parked or run.retrying:
        logger.info(
            "gateway.usage_reported",
            extra={
                "sealed": run.sealed,
                "sent": run.sent,
                "parked": run.parked,
                "retrying": run.retrying,
                "stopped": run.stopped,
            },
        )
    return run.sent


@shared_task(acks_late=True, time_limit=600)  # type: ignore[untyped-decorator]
def usage_reconcile_task(hours: int = 24) -> int:
    """Compare yesterday's reported totals per customer and meter with Stripe's summaries."""
    from gateway.services import usage_reconcile

    end = datetime.now(tz=UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=hours)
    checked = 0
    for row in usage.reported_pairs(start=start, end=end):
        meter_id: Any = row["meter_id"]
        if not meter_id:
            continue
        usage_reconcile(
            meter_id=meter_id,
            meter_event_name=row["meter_event_name"],
            stripe_customer_id=row["stripe_customer_id"],
            start=start,
            end=end,
        )
        checked += 1
    return checked


@shared_task(acks_late=True, time_limit=60, soft_time_limit=45)  # type: ignore[untyped-decorator]
def hosted_upstream_tools_refresh_task(listing_id: int) -> int:
    """Re-read one hosted listing's tools from its upstream; returns how many it lists.
    Idempotent (the stored list is replaced); a listing without an upstream is skipped."""
    from gateway.discovery import upstream_tools_fetch
    from gateway.models import HostedUpstream

    try:
        upstream = upstream_tools_fetch(listing_id=listing_id)
    except HostedUpstream.DoesNotExist:
        logger.info("gateway.tools_no_upstream", extra={"listing_id": listing_id})
        return 0
    return len(upstream.tools)


@shared_task(acks_late=True, time_limit=300)  # type: ignore[untyped-decorator]
def hosted_upstreams_tools_refresh_task() -> int:
    """Fan out one refresh task per enabled upstream (each bounded by its own time limit)."""
    from gateway.models import HostedUpstream

    listing_ids = list(
        HostedUpstream.objects.filter(enabled=True)
        .order_by("listing_id")
        .values_list("listing_id", flat=True)
    )
    for listing_id in listing_ids:
        hosted_upstream_tools_refresh_task.delay(listing_id)
    return len(listing_ids)


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100)  # type: ignore[untyped-decorator]
def tool_changes_drain_task() -> int:
    """Record the tool changes gateway processes saw in passing tools/list answers (the Redis
    hash they write instead of PostgreSQL); idempotent (one pending change per tool)."""
    from gateway.services import tool_changes_drain

    if not settings.REDIS_URL:
        return 0  # without Redis the gateway records them itself, off the request
    return tool_changes_drain(client=usage.redis_client())

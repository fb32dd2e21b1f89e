"""Celery tasks: thin wrappers that load ids, call one service and decide retries."""

import logging
from datetime import date, timedelta

from celery import shared_task
from django.utils import timezone

from billing.models import PlanPrice, StripeEvent
from billing.services.events import stripe_event_process, stripe_events_catch_up
from billing.services.licenses import licenses_expire_due
from billing.services.notices import api_keys_expiring_notify, price_increase_notify
from billing.services.plans import plan_prices_apply_due, plan_stripe_sync
from billing.services.statements import creator_statements_reconcile_all
from billing.services.subscription_changes import creator_subscription_items_tidy
from billing.services.subscriptions import creator_subscription_price_update

logger = logging.getLogger(__name__)

# Stripe retries webhooks for days; our own retries only cover short outages (Stripe or DB)
# and an event that won the race with our own write (4 s, 8 s, ... about 2 minutes in all).
EVENT_MAX_RETRIES = 5
# A catch-up run lists at most CATCH_UP_MAX_EVENTS_PER_RUN events; it never needs this long.
CATCH_UP_TIME_LIMIT_SECONDS = 10 * 60


@shared_task(bind=True, max_retries=EVENT_MAX_RETRIES, acks_late=True)  # type: ignore[untyped-decorator]
def stripe_event_process_task(self, event_pk: int) -> None:  # type: ignore[no-untyped-def]
    """Process one stored event (from a webhook or the catch-up). Harmless to run twice
    (processed events are skipped); a failure, an unmatched checkout included, retries."""
    if not StripeEvent.objects.filter(pk=event_pk).exists():
        logger.warning("billing.stripe_event_missing", extra={"event_pk": event_pk})
        return
    try:
        stripe_event_process(event_pk=event_pk)
    except Exception as exc:
        if self.request.is_eager:
            # Eager mode (demo, tests): the row already holds the error; re-drive later.
            return
        raise self.retry(exc=exc, countdown=min(600, 2 ** (self.request.retries + 2))) from exc


@shared_task(soft_time_limit=CATCH_UP_TIME_LIMIT_SECONDS)  # type: ignore[untyped-decorator]
def stripe_events_catch_up_task() -> int:
    """Beat: store and process the events Stripe could not deliver (`GET /v1/events`).
    Running it twice stores nothing the second time."""
    result = stripe_events_catch_up()
    return result.stored


@shared_task(bind=True, max_retries=5, acks_late=True)  # type: ignore[untyped-decorator]
def plan_stripe_sync_task(self, plan_id: int) -> None:  # type: ignore[no-untyped-def]
    """Create a plan's Stripe objects. Retry-safe: every create has a deterministic key."""
    try:
        plan_stripe_sync(plan_id=plan_id)
    except Exception as exc:
        if self.request.is_eager:
            logger.warning("billing.plan_stripe_sync_failed", extra={"plan_id": plan_id})
            return
        raise self.retry(exc=exc, countdown=min(600, 2 ** (self.request.retries + 2))) from exc


@shared_task(bind=True, max_retries=5, acks_late=True)  # type: ignore[untyped-decorator]
def creator_subscription_price_update_task(self, creator_subscription_id: int) -> None:  # type: ignore[no-untyped-def]
    """Switch one subscription's monthly Stripe price item to its licenses' price version.
    Retry-safe: the Stripe call carries a key derived from (subscription, price version), and
    the beat job `plan_prices_apply_due_task` queues any switch still missing."""
    try:
        creator_subscription_price_update(creator_subscription_id=creator_subscription_id)
    except Exception as exc:
        if self.request.is_eager:
            logger.warning(
                "billing.subscription_price_update_failed",
                extra={"creator_subscription_id": creator_subscription_id},
            )
            return
        raise self.retry(exc=exc, countdown=min(600, 2 ** (self.request.retries + 2))) from exc


@shared_task(bind=True, max_retries=5, acks_late=True)  # type: ignore[untyped-decorator]
def creator_subscription_items_tidy_task(self, creator_subscription_id: int) -> None:  # type: ignore[no-untyped-def]
    """Keep a subscription's overage meter items on its licenses' plans (after a plan moved).
    Retry-safe: the call's key covers the subscription, its latest license history and the
    change, and a run with nothing to change sends nothing."""
    try:
        creator_subscription_items_tidy(creator_subscription_id=creator_subscription_id)
    except Exception as exc:
        if self.request.is_eager:
            logger.warning(
                "billing.subscription_items_tidy_failed",
                extra={"creator_subscription_id": creator_subscription_id},
            )
            return
        raise self.retry(exc=exc, countdown=min(600, 2 ** (self.request.retries + 2))) from exc


@shared_task  # type: ignore[untyped-decorator]
def plan_prices_apply_due_task() -> int:
    return plan_prices_apply_due()


@shared_task  # type: ignore[untyped-decorator]
def licenses_expire_due_task() -> int:
    return licenses_expire_due()


@shared_task(bind=True, max_retries=5, acks_late=True)  # type: ignore[untyped-decorator]
def plan_price_increase_notify_task(self, price_id: int) -> int:  # type: ignore[no-untyped-def]
    """Tell the buyers on older versions of a plan about a price increase and its date.
    Running it twice emails nobody twice (one notification per buyer and version)."""
    if not PlanPrice.objects.filter(pk=price_id).exists():
        logger.warning("billing.plan_price_missing", extra={"price_id": price_id})
        return 0
    return int(price_increase_notify(price_id=price_id))


@shared_task  # type: ignore[untyped-decorator]
def api_keys_expiring_notify_task() -> int:
    """Beat: one email per key that stops working within the next days."""
    return int(api_keys_expiring_notify())


@shared_task(acks_late=True, time_limit=30 * 60)  # type: ignore[untyped-decorator]
def creator_statements_reconcile_task(month: str = "") -> int:
    """Beat, early each month: compare every creator's statement for `month` (YYYY-MM; default
    last month) with Stripe (appends comparisons; mismatches are logged). Returns how many did
    not match."""
    if month:
        year, number = (int(part) for part in month.split("-"))
        first_of = date(year, number, 1)
    else:
        first_of = (timezone.now().date().replace(day=1) - timedelta(days=1)).replace(day=1)
    mismatches = 0
    for creator, row in creator_statements_reconcile_all(month=first_of):
        if not row.matches:
            mismatches += 1
            logger.warning(
                "billing.statement_mismatch",
                extra={"creator_id": creator.pk, "currency": row.currency, "month": str(first_of)},
            )
    return mismatches

"""Stripe events: store once under their unique id, then process through the handler table with
attempts and errors recorded on the row.

Events reach us two ways, webhooks and the catch-up listing of `GET /v1/events`; both go through
`stripe_event_receive`, so an event is stored once and processed once whichever way came first.
Processing first checks the event is ours (our key's mode, a connected account we know).
"""

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from stripe.params import EventListParams

from billing import stripe_client
from billing.lock_objects import stripe_event_lock
from billing.models import ConnectAccount, StripeEvent, StripeEventStatus

logger = logging.getLogger(__name__)

MAX_ERROR_LENGTH = 2000

# Catch-up: `GET /v1/events` reaches back 30 days; each run re-lists the last hour before the
# newest event we hold, because events are not stored in `created` order (a delivery retried
# by Stripe lands after younger ones).
CATCH_UP_MAX_AGE: Final = timedelta(days=30)
CATCH_UP_SAFETY_MARGIN: Final = timedelta(hours=1)
CATCH_UP_PAGE_SIZE: Final = 100
# Enough for a day-long outage of a busy shop; the next run carries on where this one stopped.
CATCH_UP_MAX_EVENTS_PER_RUN: Final = 10_000
# Stripe filters on at most 20 types per request.
STRIPE_MAX_TYPES_PER_LIST: Final = 20


class EventNotReady(Exception):
    """The event refers to a row our own write has not committed yet (it won the race with
    us). Processing fails retryably: the row stays `failed`, the task retries with backoff."""


def stripe_key_livemode() -> bool:
    """The mode our secret key talks to: live keys are `sk_live_`/`rk_live_`, the rest test."""
    key: str = settings.STRIPE_SECRET_KEY
    return key.startswith(("sk_live_", "rk_live_"))


def stripe_event_receive(*, payload: bytes) -> tuple[StripeEvent, bool]:
    """Store a verified event and queue its processing on commit; returns (row, created).

    The one entry for webhooks and the catch-up. A stored event is queued again while it is
    still `received` or `failed` (a redelivery is a free retry), never once processed.
    """
    from billing.tasks import stripe_event_process_task  # tasks import this module

    with transaction.atomic():
        row, created = stripe_event_store(payload=payload)
        if created or row.status in (StripeEventStatus.RECEIVED, StripeEventStatus.FAILED):
            pk = row.pk
            transaction.on_commit(lambda: stripe_event_process_task.delay(pk))
    return row, created


def stripe_event_store(*, payload: bytes) -> tuple[StripeEvent, bool]:
    """Store a verified event; returns (row, created). A duplicate delivery returns the stored
    row and False. The unique `stripe_event_id` settles concurrent deliveries: the loser's
    IntegrityError means "already stored"."""
    data: dict[str, Any] = json.loads(payload)
    event_id = str(data["id"])
    existing = StripeEvent.objects.filter(stripe_event_id=event_id).first()
    if existing is not None:
        return existing, False
    row = StripeEvent(
        stripe_event_id=event_id,
        type=str(data.get("type") or "")[:100],
        account=str(data.get("account") or "")[:255],
        livemode=bool(data.get("livemode")),
        stripe_created=int(data.get("created") or 0),
        payload=data,
    )
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError:
        return StripeEvent.objects.get(stripe_event_id=event_id), False
    logger.info("billing.stripe_event_stored", extra={"event": event_id, "type": row.type})
    return row, True


def stripe_event_process(*, event_pk: int) -> StripeEvent:
    """Run the handler for one stored event, at most once successfully.

    Holds the event row lock for the whole handler, so concurrent workers (a duplicate enqueue,
    a re-drive) serialise and the second sees `processed`. Handlers are themselves idempotent,
    so a crash after the handler's own commits but before this row is marked is also safe to
    re-run. A failing handler's error and attempt count are kept and the error re-raised so the
    task can retry; the handler's partial writes roll back with its savepoint.
    """
    from billing.handlers import HANDLERS

    with transaction.atomic():
        event = stripe_event_lock(pk=event_pk)
        if event.status in (StripeEventStatus.PROCESSED, StripeEventStatus.IGNORED):
            return event
        event.attempts += 1
        not_ours = _not_ours(event)
        if not_ours:
            event.status = StripeEventStatus.IGNORED
            event.processed_at = timezone.now()
            event.last_error = not_ours
            event.save(update_fields=["status", "attempts", "processed_at", "last_error"])
            logger.warning(
                "billing.stripe_event_not_ours",
                extra={"event": event.stripe_event_id, "type": event.type, "reason": not_ours},
            )
            return event
        handler = HANDLERS.get(event.type)
        if handler is None:
            event.status = StripeEventStatus.IGNORED
            event.processed_at = timezone.now()
            event.save(update_fields=["status", "attempts", "processed_at"])
            logger.info("billing.stripe_event_ignored", extra={"event": event.stripe_event_id})
            return event
        try:
            with transaction.atomic():
                handler(event)
        except Exception as exc:
            event.status = StripeEventStatus.FAILED
            event.last_error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]
            event.save(update_fields=["status", "attempts", "last_error"])
            logger.warning(
                "billing.stripe_event_failed",
                extra={"event": event.stripe_event_id, "attempts": event.attempts},
            )
            failed = exc
        else:
            event.status = StripeEventStatus.PROCESSED
            event.processed_at = timezone.now()
            event.last_error = ""
            event.save(update_fields=["status", "attempts", "processed_at", "last_error"])
            logger.info("billing.stripe_event_processed", extra={"event": event.stripe_event_id})
            return event
    raise failed


def _not_ours(event: StripeEvent) -> str:
    """Why this event must not change anything here, or "" when it is ours.

    A live event on a test deployment (or the reverse) is someone else's money: one signing
    secret shared by two endpoints must not let a live purchase grant a test license. A Connect
    event names the connected account it happened on; one we never created is not ours.
    """
    ours = stripe_key_livemode()
    if event.livemode != ours:
        mode = {True: "live", False: "test"}
        return f"livemode mismatch: a {mode[event.livemode]} event, our key is {mode[ours]}"
    known = ConnectAccount.objects.filter(stripe_account_id=event.account)
    if event.account and not known.exists():
        return f"Connect event for an account we do not know: {event.account}"
    return ""


@dataclass(frozen=True)
class CatchUpResult:
    listed: int
    stored: int
    truncated: bool


def stripe_events_catch_up(*, now: datetime | None = None) -> CatchUpResult:
    """Fetch the events Stripe could not deliver and receive them like webhooks.

    Two listings of `GET /v1/events`, only of the types we handle: everything created since
    the newest event we hold (minus a safety margin), which covers an endpoint that is down
    now; and everything Stripe still reports as undelivered (`delivery_success=false`) over the
    last 30 days, which covers a gap older than the newest event (an endpoint that was down
    longer than Stripe retries, then came back). Events we hold are skipped by their unique id,
    so a second run stores and processes nothing.
    """
    from billing.handlers import HANDLERS

    now = now or timezone.now()
    oldest = int((now - CATCH_UP_MAX_AGE).timestamp())
    newest = StripeEvent.objects.filter(livemode=stripe_key_livemode(), account="").aggregate(
        newest=Max("stripe_created")
    )["newest"]
    since = oldest
    if newest:
        since = max(oldest, int(newest) - int(CATCH_UP_SAFETY_MARGIN.total_seconds()))
    types = sorted(HANDLERS)
    queries: list[EventListParams] = []
    for start in range(0, len(types), STRIPE_MAX_TYPES_PER_LIST):
        chunk = types[start : start + STRIPE_MAX_TYPES_PER_LIST]
        limit = CATCH_UP_PAGE_SIZE
        queries.append({"types": chunk, "created": {"gte": since}, "limit": limit})
        queries.append(
            {"types": chunk, "created": {"gte": oldest}, "delivery_success": False, "limit": limit}
        )
    client = stripe_client.get_client()
    listed = stored = 0
    seen: set[str] = set()
    for query in queries:
        page = client.v1.events.list(query)
        for event in page.auto_paging_iter():
            if listed >= CATCH_UP_MAX_EVENTS_PER_RUN:
                logger.warning("billing.stripe_events_catch_up_truncated", extra={"listed": listed})
                return CatchUpResult(listed=listed, stored=stored, truncated=True)
            if event.id in seen:
                continue
            seen.add(event.id)
            listed += 1
            if StripeEvent.objects.filter(stripe_event_id=event.id).exists():
                continue  # held already: the cheap skip; the unique id settles races
            payload = json.dumps(event.to_dict(for_json=True)).encode()
            _, created = stripe_event_receive(payload=payload)
            stored += created
    if stored:
        logger.warning("billing.stripe_events_caught_up", extra={"stored": stored})
    return CatchUpResult(listed=listed, stored=stored, truncated=False)

"""Stripe webhook events: store once under their unique id, then process through the handler
table with attempts and errors recorded on the row."""

import json
import logging
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.lock_objects import stripe_event_lock
from billing.models import StripeEvent, StripeEventStatus

logger = logging.getLogger(__name__)

MAX_ERROR_LENGTH = 2000


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

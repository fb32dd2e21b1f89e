"""Queue and send notifications: once per event and recipient, after commit, through Celery.

`notification_queue` is what other apps call when something happened. It writes the row
(unique per recipient, kind and event) in the caller's transaction and hands the send to
Celery on commit, so a rolled-back event sends nothing and a repeated one (duplicate webhook,
retried task, second drain) finds the row and sends nothing. `notification_send` claims the row
(pending -> sending, one UPDATE) before it talks to the mail server, so two workers that run
the task at once send it once. A worker killed between the mail server's answer and the
"sent" mark leaves the row `sending`: it is not sent again (at most once: a missing mail is
better than a second receipt), and the admin lists it.
"""

from __future__ import annotations

import logging
import smtplib
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.db.models import F
from django.template import Context, Engine, Template
from django.template.loader import get_template
from django.utils import timezone

from notifications.kinds import kind_spec
from notifications.models import (
    Notification,
    NotificationKind,
    NotificationOptOut,
    NotificationStatus,
)

logger = logging.getLogger(__name__)

SUBJECT_MAX = 150


class NotificationSendFailed(Exception):
    """The mail server could not take the message now; the task retries."""


def notification_queue(
    *, recipient_id: int, kind: str, event_key: str, context: dict[str, Any]
) -> Notification | None:
    """Record that `recipient_id` should hear about this event, and send it after commit.

    Returns the new row, or None when this (recipient, kind, event) was queued before. A kind
    the person turned off (only optional kinds can be) is recorded as skipped and not sent.
    `context` must be plain JSON values and must never carry key material.
    """
    spec = kind_spec(kind)
    opted_out = (
        spec.optional
        and NotificationOptOut.objects.filter(user_id=recipient_id, kind=kind).exists()
    )
    row = Notification(
        recipient_id=recipient_id,
        kind=kind,
        event_key=event_key[:200],
        context=context,
        status=NotificationStatus.SKIPPED if opted_out else NotificationStatus.PENDING,
    )
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction goes on
            row.save()
    except IntegrityError:
        return None
    if not opted_out:
        pk = row.pk
        transaction.on_commit(lambda: _enqueue(pk))
    logger.info(
        "notifications.queued",
        extra={"notification_id": row.pk, "kind": kind, "skipped": opted_out},
    )
    return row


def _enqueue(notification_id: int) -> None:
    from notifications.tasks import notification_send_task

    try:
        notification_send_task.delay(notification_id)
    except Exception as exc:  # a broker outage must not fail the caller; the sweep resends
        logger.warning(
            "notifications.enqueue_failed",
            extra={"notification_id": notification_id, "error": type(exc).__name__},
        )


def _render(row: Notification, email: str) -> EmailMultiAlternatives:
    spec = kind_spec(row.kind)
    user = row.recipient
    context = {
        **row.context,
        "name": user.get_username(),
        "kind_label": NotificationKind(row.kind).label,
        "site_url": settings.SITE_URL,
        "preferences_url": settings.SITE_URL + "/me/notifications/",
        "optional": spec.optional,
        "body_template": f"notifications/email/{row.kind}.txt",
    }
    plain = Context(context, autoescape=False)  # text parts are not HTML: nothing to escape
    subject = " ".join(Template(spec.subject).render(plain).split())[:SUBJECT_MAX]
    text = Engine.get_default().get_template("notifications/email/base.txt").render(plain)
    html = get_template("notifications/email/base.html").render(context)
    message = EmailMultiAlternatives(
        subject=subject, body=text, from_email=settings.DEFAULT_FROM_EMAIL, to=[email]
    )
    message.attach_alternative(html, "text/html")
    # One stable Message-ID per notification: a mail client shows a resent copy once.
    host = urlsplit(settings.SITE_URL).hostname or "toolbooth.local"
    message.extra_headers["Message-ID"] = f"<notification-{row.pk}@{host}>"
    return message


def notification_send(*, notification_id: int) -> str:
    """Send one queued notification; returns its status afterwards.

    Claims the row first (pending -> sending in one UPDATE): only one caller sends it. A mail
    server that refuses or cannot be reached puts it back to pending and raises
    NotificationSendFailed for the task to retry.
    """
    claimed = Notification.objects.filter(
        pk=notification_id, status=NotificationStatus.PENDING
    ).update(
        status=NotificationStatus.SENDING, attempts=F("attempts") + 1, updated_at=timezone.now()
    )
    row = Notification.objects.select_related("recipient").filter(pk=notification_id).first()
    if row is None:
        logger.info("notifications.missing", extra={"notification_id": notification_id})
        return "missing"
    if not claimed:
        return row.status
    email = (row.recipient.email or "").strip()
    if not email or not row.recipient.is_active:
        row.status, row.last_error = NotificationStatus.SKIPPED, "no address"
        row.save(update_fields=["status", "last_error", "updated_at"])
        return row.status
    try:
        _render(row, email).send(fail_silently=False)
    except (smtplib.SMTPException, OSError) as exc:
        row.status = NotificationStatus.PENDING
        row.last_error = f"{type(exc).__name__}: {exc}"[:300]
        row.save(update_fields=["status", "last_error", "updated_at"])
        logger.warning(
            "notifications.send_failed",
            extra={"notification_id": row.pk, "error": type(exc).__name__},
        )
        raise NotificationSendFailed(row.last_error) from exc
    row.status, row.sent_at, row.last_error = NotificationStatus.SENT, timezone.now(), ""
    row.save(update_fields=["status", "sent_at", "last_error", "updated_at"])
    logger.info("notifications.sent", extra={"notification_id": row.pk, "kind": row.kind})
    return row.status


def notification_give_up(*, notification_id: int) -> None:
    """Retries are over: mark a still-pending row failed (shown in the admin)."""
    Notification.objects.filter(pk=notification_id, status=NotificationStatus.PENDING).update(
        status=NotificationStatus.FAILED, updated_at=timezone.now()
    )


def notifications_resend_stuck(*, older_than_seconds: int = 15 * 60) -> int:
    """Re-enqueue pending rows whose task was lost (a broker outage at commit time). Only
    `pending` rows: a row handed to the mail server (`sending`) is never sent again."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    ids = list(
        Notification.objects.filter(
            status=NotificationStatus.PENDING, updated_at__lt=cutoff, attempts__lt=10
        ).values_list("pk", flat=True)[:500]
    )
    for pk in ids:
        _enqueue(pk)
    return len(ids)


def notification_preferences_set(*, user: Any, enabled_kinds: set[str]) -> list[str]:
    """Turn optional kinds on (in `enabled_kinds`) or off (the rest); returns the kinds now off.
    Kinds that are not optional cannot be turned off and are ignored."""
    from notifications.kinds import optional_kinds

    optional = set(optional_kinds())
    off = sorted(optional - enabled_kinds)
    with transaction.atomic():
        NotificationOptOut.objects.filter(user=user).exclude(kind__in=off).delete()
        have = set(NotificationOptOut.objects.filter(user=user).values_list("kind", flat=True))
        NotificationOptOut.objects.bulk_create(
            [NotificationOptOut(user=user, kind=k) for k in off if k not in have],
            ignore_conflicts=True,
        )
    return off


def notification_recipients_staff() -> list[int]:
    """Active staff with an address (admins hear of tool manifest changes too)."""
    return list(
        get_user_model()
        .objects.filter(is_staff=True, is_active=True)
        .exclude(email="")
        .values_list("pk", flat=True)[:50]
    )

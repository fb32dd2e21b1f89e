"""Celery tasks for notifications: thin, idempotent (a sent row is never sent again)."""

import logging

from celery import shared_task

from notifications.services import (
    NotificationSendFailed,
    notification_give_up,
    notification_send,
    notifications_resend_stuck,
)

logger = logging.getLogger(__name__)

# A mail server that is down for a while: 30 s, 1, 2, 4, 8, 16 min, then the row is failed.
SEND_MAX_RETRIES = 6


@shared_task(bind=True, max_retries=SEND_MAX_RETRIES, acks_late=True)  # type: ignore[untyped-decorator]
def notification_send_task(self, notification_id: int) -> str:  # type: ignore[no-untyped-def]
    """Send one notification. Running it twice sends once (the row is claimed first)."""
    try:
        return notification_send(notification_id=notification_id)
    except NotificationSendFailed as exc:
        if self.request.is_eager or self.request.retries >= SEND_MAX_RETRIES:
            notification_give_up(notification_id=notification_id)
            return "failed"
        raise self.retry(exc=exc, countdown=30 * 2**self.request.retries) from exc


@shared_task  # type: ignore[untyped-decorator]
def notifications_resend_stuck_task() -> int:
    """Beat: re-enqueue notifications whose task never ran (a broker outage at commit)."""
    return notifications_resend_stuck()

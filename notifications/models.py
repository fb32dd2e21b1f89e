"""Emails we send people, one row per event, recipient and kind, and what people turned off.

The row is written before anything is sent and its unique (recipient, kind, event_key) is what
makes a notification go out once: a duplicate webhook, a retried task or a second drain finds
the row and sends nothing. Only `notifications.services` changes these rows.
"""

from django.conf import settings
from django.db import models

from common.models import TimeStampedModel


class NotificationKind(models.TextChoices):
    # Buyers
    RECEIPT = "receipt", "Purchase receipt"
    KEY_CREATED = "key_created", "Key created"
    KEY_ROTATED = "key_rotated", "Key rotated"
    KEY_EXPIRING = "key_expiring", "Key expiring soon"
    PRICE_INCREASE = "price_increase", "Price increase ahead"
    PAYMENT_FAILED = "payment_failed", "Payment failed"
    SUBSCRIPTION_ENDING = "subscription_ending", "Subscription ending"
    SUBSCRIPTION_ENDED = "subscription_ended", "Subscription ended"
    QUOTA_80 = "quota_80", "80% of the monthly quota used"
    # Creators
    NEW_SALE = "new_sale", "New sale"
    PAYOUTS_ATTENTION = "payouts_attention", "Payouts need attention"
    UPSTREAM_UNHEALTHY = "upstream_unhealthy", "Upstream unhealthy"
    TOOL_MANIFEST_CHANGED = "tool_manifest_changed", "Tool manifest changed"
    TOOLS_AWAITING_APPROVAL = "tools_awaiting_approval", "Tools awaiting approval"
    DISPUTE_OPENED = "dispute_opened", "Dispute opened"


class NotificationStatus(models.TextChoices):
    PENDING = "pending", "Waiting to be sent"
    SENDING = "sending", "Handed to the mail server"
    SENT = "sent", "Sent"
    SKIPPED = "skipped", "Not sent (turned off, or no address)"
    FAILED = "failed", "Failed after retries"


class Notification(TimeStampedModel):
    """One email about one event to one person. `context` is what the templates render (plain
    JSON values, written when the event happened; never key material)."""

    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    kind = models.CharField(max_length=32, choices=NotificationKind.choices)
    event_key = models.CharField(max_length=200)
    context = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=8, choices=NotificationStatus.choices, default=NotificationStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["recipient", "kind", "event_key"], name="notification_once_per_event"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} to {self.recipient_id} ({self.status})"


class NotificationOptOut(models.Model):
    """A kind of optional email this person turned off (no row: they get it)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_opt_outs"
    )
    kind = models.CharField(max_length=32, choices=NotificationKind.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "kind"], name="notification_opt_out_once")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} turned off {self.kind}"

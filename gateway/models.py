"""Hosting config for listings served through the gateway, and the usage ledger.

The ledger lives here rather than in billing because only the gateway's usage queue writes it
and billing sits below the gateway in the import order. It is append-only: a row is written
once per call id (unique) and only `meter_reported_at` changes afterwards.
"""

from django.db import models

from common.models import TimeStampedModel


class HostedUpstream(TimeStampedModel):
    listing = models.OneToOneField(
        "marketplace.Listing", on_delete=models.CASCADE, related_name="hosted_upstream"
    )
    url = models.URLField(max_length=500)
    # Fernet token (gateway.crypto); the creator's credential for their own upstream.
    secret_encrypted = models.TextField(blank=True, default="")
    enabled = models.BooleanField(default=True)
    last_ok_at = models.DateTimeField(null=True, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=200, blank=True, default="")
    consecutive_failures = models.PositiveIntegerField(default=0)
    # What the upstream's tools/list said (gateway.discovery): [{name, title, description}],
    # cleaned and capped. Upstream text is untrusted data; a failed refresh keeps the old list.
    tools = models.JSONField(default=list, blank=True)
    tools_fetched_at = models.DateTimeField(null=True, blank=True)
    tools_error = models.CharField(max_length=200, blank=True, default="")

    def __str__(self) -> str:
        return f"upstream of listing {self.listing_id}"


class UsageOutcome(models.TextChoices):
    SUCCESS = "success", "Result (billable)"
    REPLAYED = "replayed", "Result on a resumed stream (billable)"
    TASK_CREATED = "task_created", "Task created (billed on tasks/result)"
    TOOL_ERROR = "tool_error", "Result with isError"
    RPC_ERROR = "rpc_error", "JSON-RPC error"
    UPSTREAM_ERROR = "upstream_error", "Upstream HTTP error"
    TIMEOUT = "timeout", "Timed out"
    CANCELLED = "cancelled", "Cancelled or no response"
    GATEWAY_ERROR = "gateway_error", "Gateway error"
    GATEWAY_LOST = "gateway_lost", "Gateway process died mid-call"


class UsageEvent(models.Model):
    """One finished tools/call. Ids are plain integers: history outlives keys and plans."""

    call_id = models.UUIDField(unique=True)
    key_id = models.BigIntegerField(db_index=True)
    license_id = models.BigIntegerField(db_index=True)
    listing_id = models.BigIntegerField(db_index=True)
    plan_id = models.BigIntegerField()
    tool = models.CharField(max_length=200)
    unit_amount = models.PositiveIntegerField()  # minor units charged; 0 when not billable
    currency = models.CharField(max_length=3)
    billable = models.BooleanField()
    outcome = models.CharField(max_length=16, choices=UsageOutcome.choices)
    latency_ms = models.PositiveIntegerField()
    occurred_at = models.DateTimeField()
    stripe_customer_id = models.CharField(max_length=255, blank=True, default="")
    meter_event_name = models.CharField(max_length=100, blank=True, default="")
    meter_reported_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["occurred_at"],
                name="usage_unreported",
                condition=models.Q(
                    billable=True, unit_amount__gt=0, meter_reported_at__isnull=True
                ),
            ),
            models.Index(fields=["license_id", "occurred_at"], name="usage_license_time"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(billable=True) | models.Q(unit_amount=0),
                name="usage_unbillable_is_free",
            ),
        ]

    def __str__(self) -> str:
        return str(self.call_id)


class MeterReconciliation(models.Model):
    """One comparison of our reported totals with Stripe's meter event summaries."""

    stripe_customer_id = models.CharField(max_length=255)
    meter_event_name = models.CharField(max_length=100)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    ours = models.BigIntegerField()
    stripe = models.BigIntegerField()
    matches = models.BooleanField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.meter_event_name} {self.stripe_customer_id} {self.window_start}"

"""Hosting config for listings served through the gateway, and the usage ledger.

The ledger lives here rather than in billing because only the gateway's usage queue writes it
and billing sits below the gateway in the import order. It is append-only: a row is written
once per call id (unique) and never changes afterwards. Billable calls reach Stripe in
`MeterReport`s, one per customer, meter and minute (plus a correction for calls that arrive
after their minute was sealed), so the report's cost grows with customers x time, not calls.
"""

from django.conf import settings
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
    # The same list in canonical form (gateway.manifest: names, descriptions, schemas,
    # annotations as the upstream sent them, bounded), what the creator approves and what is
    # compared with the approved manifest; tools too large to approve are named in
    # `manifest_skipped`. Raw upstream text: never rendered unescaped.
    manifest = models.JSONField(default=list, blank=True)
    manifest_hash = models.CharField(max_length=64, blank=True, default="")
    manifest_skipped = models.JSONField(default=list, blank=True)

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


class MeterReportStatus(models.TextChoices):
    OPEN = "open", "Open (collecting the minute's calls)"
    PENDING = "pending", "Sealed, waiting to be sent"
    SENT = "sent", "Accepted by Stripe"
    PARKED = "parked", "Parked (Stripe refuses it for good)"


class MeterReport(models.Model):
    """The billable calls of one customer on one meter in one minute: one Stripe meter event.

    The drain attaches each new billable call to the window's open report in the transaction
    that writes the call; the reporter seals windows a grace period after they end, sums them,
    and sends one event whose `identifier` is stored before it is sent (a resend after a crash
    is deduplicated by Stripe). A call that reaches the ledger after its window was sealed opens
    a new report for the same window: a correction event with its own identifier.
    """

    stripe_customer_id = models.CharField(max_length=255)
    meter_event_name = models.CharField(max_length=100)
    window_start = models.DateTimeField()
    identifier = models.CharField(max_length=100, unique=True)
    status = models.CharField(
        max_length=8, choices=MeterReportStatus.choices, default=MeterReportStatus.OPEN
    )
    value = models.BigIntegerField(default=0)  # minor units; summed when sealed
    calls = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    sealed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    parked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["stripe_customer_id", "meter_event_name", "window_start"],
                condition=models.Q(status="open"),
                name="meter_report_one_open",
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at", "window_start"],
                name="meter_report_due",
                condition=models.Q(status="pending"),
            ),
            models.Index(
                fields=["window_start"],
                name="meter_report_open",
                condition=models.Q(status="open"),
            ),
            models.Index(
                fields=["meter_event_name", "stripe_customer_id", "window_start"],
                name="meter_report_pair",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.identifier} ({self.status})"


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
    # Calls reported one event each before MeterReport existed (migration 0004); kept for them.
    meter_reported_at = models.DateTimeField(null=True, blank=True)
    meter_report = models.ForeignKey(
        MeterReport, null=True, blank=True, on_delete=models.PROTECT, related_name="usage"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
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


class ToolManifest(models.Model):
    """One approved version of a hosted listing's tools (the rug-pull guard's pin).

    Append-only: each approval adds a version; the newest is the one in force. `tools` is the
    approved copy the gateway serves in place of a changed tool; `tool_hashes` is what each
    passing tools/list entry is compared with (gateway.manifest); `findings` is what the tool
    scanner said when it was approved (gateway.toolscan).
    """

    listing = models.ForeignKey(
        "marketplace.Listing", on_delete=models.CASCADE, related_name="tool_manifests"
    )
    version = models.PositiveIntegerField()
    manifest_hash = models.CharField(max_length=64)
    tools = models.JSONField(default=list)
    tool_hashes = models.JSONField(default=dict)
    findings = models.JSONField(default=dict, blank=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["listing", "version"], name="tool_manifest_version"),
        ]

    def __str__(self) -> str:
        return f"tools of listing {self.listing_id} v{self.version}"


class ToolChangeKind(models.TextChoices):
    ADDED = "added", "New tool"
    CHANGED = "changed", "Changed since approval"
    REMOVED = "removed", "No longer listed"


class ToolChangeStatus(models.TextChoices):
    PENDING = "pending", "Awaiting re-approval"
    APPROVED = "approved", "Approved"
    REVERTED = "reverted", "Upstream went back to the approved tool"


class ToolChangeSource(models.TextChoices):
    DISCOVERY = "discovery", "Tool discovery"
    GATEWAY = "gateway", "Seen passing the gateway"


class ToolChange(models.Model):
    """A difference between what the upstream serves and the approved manifest, for one tool.

    At most one pending change per listing and tool (a partial unique index): a tool that changes
    again while pending updates its row (`observed`, `observed_hash`, `last_seen_at`), so an
    upstream that varies its text cannot flood the table or the inboxes; the creator and
    admins are told once, when the row is created.
    """

    listing = models.ForeignKey(
        "marketplace.Listing", on_delete=models.CASCADE, related_name="tool_changes"
    )
    manifest = models.ForeignKey(ToolManifest, on_delete=models.CASCADE, related_name="changes")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=8, choices=ToolChangeKind.choices)
    status = models.CharField(
        max_length=8, choices=ToolChangeStatus.choices, default=ToolChangeStatus.PENDING
    )
    source = models.CharField(max_length=10, choices=ToolChangeSource.choices)
    approved = models.JSONField(null=True, blank=True)  # the approved copy (None: added)
    observed = models.JSONField(null=True, blank=True)  # what the upstream serves (None: removed)
    observed_hash = models.CharField(max_length=64, blank=True, default="")
    findings = models.JSONField(default=list, blank=True)  # gateway.toolscan on `observed`
    detected_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["listing", "name"],
                condition=models.Q(status="pending"),
                name="tool_change_one_pending",
            ),
        ]
        indexes = [
            models.Index(
                fields=["detected_at"],
                name="tool_change_pending",
                condition=models.Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} tool {self.name[:40]} of listing {self.listing_id}"

"""The mirror: one row per (name, version) exactly as the registry serves it, plus sync runs.

Names are case-sensitive (`io.github.Foo/x` and `io.github.foo/x` are different servers); the
columns use the database's default, case-sensitive comparison.
"""

from typing import Any

from django.db import models

from common.models import TimeStampedModel


class VersionStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    DEPRECATED = "deprecated", "Deprecated"
    DELETED = "deleted", "Deleted"
    # Not a registry status: the row vanished upstream (hard erase or data reset) and a full
    # reconcile noticed. Kept, never silently dropped.
    GONE = "gone", "Gone upstream"


class ServerVersion(TimeStampedModel):
    """One published version of one server, mirrored verbatim (raw) plus indexed columns."""

    name = models.CharField(max_length=200, db_index=True)
    version = models.CharField(max_length=255)
    status = models.CharField(
        max_length=16, choices=VersionStatus.choices, default=VersionStatus.ACTIVE
    )
    # The upstream status string when it is not one we know (kept so nothing is lost).
    upstream_status = models.CharField(max_length=32, blank=True, default="")
    status_message = models.CharField(max_length=500, blank=True, default="")
    status_changed_at = models.DateTimeField(null=True, blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    upstream_updated_at = models.DateTimeField(null=True, blank=True, db_index=True)
    is_latest = models.BooleanField(default=False)
    # The whole response item ({"server": …, "_meta": …}) with unknown fields kept.
    raw = models.JSONField()
    # sha256 of the canonical raw JSON: an unchanged re-sync writes nothing.
    content_hash = models.CharField(max_length=64)
    gone_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="registry_version_unique"),
        ]
        indexes = [models.Index(fields=["name", "is_latest"], name="registry_version_latest")]
        ordering = ["name", "version"]

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def server(self) -> dict[str, Any]:
        server = self.raw.get("server") if isinstance(self.raw, dict) else None
        return server if isinstance(server, dict) else {}


class SyncKind(models.TextChoices):
    FULL = "full", "Full walk + reconcile"
    INCREMENTAL = "incremental", "Incremental (updated_since)"
    SNAPSHOT = "snapshot", "Offline snapshot"


class SyncStatus(models.TextChoices):
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class SyncRun(models.Model):
    """One sync, recorded whatever its outcome (the admin shows these)."""

    kind = models.CharField(max_length=16, choices=SyncKind.choices)
    status = models.CharField(max_length=16, choices=SyncStatus.choices, default=SyncStatus.RUNNING)
    source_url = models.CharField(max_length=500)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    pages = models.PositiveIntegerField(default=0)
    requests = models.PositiveIntegerField(default=0)
    seen = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    unchanged = models.PositiveIntegerField(default=0)
    quarantined = models.PositiveIntegerField(default=0)
    latest_flips = models.PositiveIntegerField(default=0)
    gone = models.PositiveIntegerField(default=0)
    # Rows a full reconcile did not mark gone because too many vanished at once (an alert).
    held = models.PositiveIntegerField(default=0)
    watermark_before = models.DateTimeField(null=True, blank=True)
    watermark_after = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["source_url", "kind", "status", "-started_at"])]

    def __str__(self) -> str:
        return f"{self.kind} sync #{self.pk} ({self.status})"


class SyncCursor(models.Model):
    """Per registry URL: the watermark, advanced only when a walk completes."""

    source_url = models.CharField(max_length=500, unique=True)
    watermark = models.DateTimeField(null=True, blank=True)
    last_full_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.source_url} @ {self.watermark}"


class QuarantinedItem(models.Model):
    """An item the registry served that we could not mirror; its page still synced."""

    run = models.ForeignKey(SyncRun, on_delete=models.CASCADE, related_name="quarantined_items")
    created_at = models.DateTimeField(auto_now_add=True)
    page_cursor = models.CharField(max_length=500, blank=True, default="")
    position = models.PositiveIntegerField()
    reason = models.CharField(max_length=500)
    # The item as text: it may not be an object at all (null, a string).
    raw_text = models.TextField()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"run {self.run_id} item {self.position}: {self.reason}"


class AlertKind(models.TextChoices):
    PAID_LISTING_VANISHED = "paid_listing_vanished", "Paid listing vanished upstream"
    PAID_LISTING_DELETED = "paid_listing_deleted", "Paid listing deleted upstream"
    CURSOR_LOOP = "cursor_loop", "Cursor loop"
    # A full reconcile that would have unlisted a large share of the catalogue at once (an empty
    # or truncated answer); nothing was unlisted until an admin applies it.
    MASS_UNLIST_HELD = "mass_unlist_held", "Mass unlisting held"


class SyncAlert(models.Model):
    """Something a person must look at; raised instead of silently changing what buyers pay for."""

    kind = models.CharField(max_length=32, choices=AlertKind.choices)
    name = models.CharField(max_length=200, blank=True, default="")
    message = models.TextField()
    run = models.ForeignKey(SyncRun, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    # MASS_UNLIST_HELD: the ServerVersion ids the reconcile would have marked gone.
    held_version_ids = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind}: {self.name}"

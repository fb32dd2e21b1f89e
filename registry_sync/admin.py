"""Admin for the mirror: runs and their counters, quarantine, alerts, and the mirrored rows.

Everything here is read-only except resolving alerts and applying a held mass unlisting: the
mirror is written only by the sync and these two services.
Registry text is shown as escaped text (never rendered as HTML).
"""

import json

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from common.admin import ReadOnlyAdmin
from registry_sync.models import (
    AlertKind,
    QuarantinedItem,
    ServerVersion,
    SyncAlert,
    SyncCursor,
    SyncRun,
)
from registry_sync.services import sync_alert_apply_held_unlisting, sync_alert_resolve


class QuarantinedInline(admin.TabularInline):  # type: ignore[type-arg]
    model = QuarantinedItem
    fields = ("position", "page_cursor", "reason")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True


@admin.register(SyncRun)
class SyncRunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "kind",
        "status",
        "started_at",
        "finished_at",
        "pages",
        "requests",
        "created",
        "updated",
        "unchanged",
        "quarantined",
        "gone",
        "latest_flips",
    )
    list_filter = ("kind", "status", "source_url")
    date_hierarchy = "started_at"
    readonly_fields = [f.name for f in SyncRun._meta.fields]
    inlines = [QuarantinedInline]


@admin.register(SyncCursor)
class SyncCursorAdmin(ReadOnlyAdmin):
    list_display = ("source_url", "watermark", "last_full_at")
    readonly_fields = ("source_url", "watermark", "last_full_at")


@admin.register(QuarantinedItem)
class QuarantinedItemAdmin(ReadOnlyAdmin):
    list_display = ("id", "run", "position", "reason", "created_at")
    list_filter = ("run__kind",)
    search_fields = ("reason",)
    readonly_fields = ("run", "page_cursor", "position", "reason", "raw_text", "created_at")


@admin.register(SyncAlert)
class SyncAlertAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "name", "created_at", "resolved_at")
    list_filter = ("kind", ("resolved_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "message")
    readonly_fields = (
        "kind",
        "name",
        "message",
        "run",
        "created_at",
        "resolved_at",
        "held_versions",
    )
    exclude = ("held_version_ids",)
    actions = ["resolve", "apply_held_unlisting"]

    def has_resolve_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("registry_sync.change_syncalert"))

    @admin.action(description="Mark selected alerts as resolved", permissions=["resolve"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[SyncAlert]) -> None:
        count = 0
        for alert in queryset.filter(resolved_at__isnull=True):
            sync_alert_resolve(alert=alert)
            count += 1
        self.message_user(request, f"{count} alert(s) resolved.", messages.SUCCESS)

    @admin.action(
        description="Apply the held unlisting (the registry really removed them)",
        permissions=["resolve"],
    )
    def apply_held_unlisting(self, request: HttpRequest, queryset: QuerySet[SyncAlert]) -> None:
        alerts = queryset.filter(kind=AlertKind.MASS_UNLIST_HELD, resolved_at__isnull=True)
        marked = sum(sync_alert_apply_held_unlisting(alert=alert) for alert in alerts)
        self.message_user(request, f"{marked} version(s) marked gone.", messages.SUCCESS)

    @admin.display(description="held versions")
    def held_versions(self, obj: SyncAlert) -> int:
        return len(obj.held_version_ids or [])


@admin.register(ServerVersion)
class ServerVersionAdmin(ReadOnlyAdmin):
    list_display = ("name", "version", "status", "is_latest", "published_at", "upstream_updated_at")
    list_filter = ("status", "is_latest")
    search_fields = ("name",)
    ordering = ("name", "version")
    exclude = ("raw",)
    readonly_fields = (
        "name",
        "version",
        "status",
        "upstream_status",
        "status_message",
        "status_changed_at",
        "published_at",
        "upstream_updated_at",
        "is_latest",
        "gone_at",
        "content_hash",
        "created_at",
        "updated_at",
        "raw_json",
    )

    @admin.display(description="raw JSON")
    def raw_json(self, obj: ServerVersion) -> str:
        text = json.dumps(obj.raw, indent=2, ensure_ascii=False)
        return format_html("<pre>{}</pre>", text)  # escaped by format_html

"""Admin for the gateway's money records: meter reports are read-only; parked ones (Stripe
refused them for good) are listed for a person to act on and can be sent again. Tool manifests
(the rug-pull guard): approved versions and the pending changes with the scanner's findings,
read-only (the creator approves on their listing page)."""

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from common.admin import ReadOnlyAdmin
from gateway.models import MeterReport, ToolChange, ToolManifest
from gateway.services import meter_reports_unpark


@admin.register(MeterReport)
class MeterReportAdmin(ReadOnlyAdmin):
    list_display = [
        "identifier",
        "stripe_customer_id",
        "meter_event_name",
        "window_start",
        "value",
        "calls",
        "status",
        "attempts",
        "last_error",
    ]
    list_filter = ["status", "meter_event_name"]
    search_fields = ["identifier", "stripe_customer_id"]
    date_hierarchy = "window_start"
    actions = ["unpark"]

    def has_unpark_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("gateway.change_meterreport"))

    @admin.action(
        description="Send selected parked reports again (after fixing the customer or meter)",
        permissions=["unpark"],
    )
    def unpark(self, request: HttpRequest, queryset: QuerySet[MeterReport]) -> None:
        count = meter_reports_unpark(ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"{count} report(s) queued to send again.", messages.SUCCESS)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=True, sort_keys=True)[:20_000]


@admin.register(ToolChange)
class ToolChangeAdmin(ReadOnlyAdmin):
    """Pending tool changes first: what an upstream serves that its creator has not approved."""

    list_display = [
        "listing",
        "name",
        "kind",
        "status",
        "warnings",
        "source",
        "detected_at",
        "last_seen_at",
    ]
    list_filter = ["status", "kind", "source"]
    search_fields = ["listing__name", "name"]
    list_select_related = ["listing"]
    date_hierarchy = "detected_at"
    ordering = ["status", "-detected_at"]
    fields = (
        "listing",
        "name",
        "kind",
        "status",
        "source",
        "detected_at",
        "last_seen_at",
        "resolved_at",
        "resolved_by",
        "findings_text",
        "approved_text",
        "observed_text",
    )
    readonly_fields = fields

    @admin.display(description="Scanner warnings")
    def warnings(self, obj: ToolChange) -> int:
        return len(obj.findings or [])

    @admin.display(description="Findings (gateway.toolscan)")
    def findings_text(self, obj: ToolChange) -> str:
        return format_html("<pre>{}</pre>", _pretty(obj.findings))

    @admin.display(description="Approved copy")
    def approved_text(self, obj: ToolChange) -> str:
        return format_html("<pre>{}</pre>", _pretty(obj.approved))

    @admin.display(description="What the upstream serves")
    def observed_text(self, obj: ToolChange) -> str:
        return format_html("<pre>{}</pre>", _pretty(obj.observed))


@admin.register(ToolManifest)
class ToolManifestAdmin(ReadOnlyAdmin):
    list_display = ["listing", "version", "tool_count", "warnings", "approved_by", "approved_at"]
    search_fields = ["listing__name", "manifest_hash"]
    list_select_related = ["listing", "approved_by"]
    fields = ("listing", "version", "manifest_hash", "approved_by", "approved_at", "findings_text")
    readonly_fields = fields

    @admin.display(description="Tools")
    def tool_count(self, obj: ToolManifest) -> int:
        return len(obj.tools or [])

    @admin.display(description="Tools with scanner warnings")
    def warnings(self, obj: ToolManifest) -> int:
        return len(obj.findings or {})

    @admin.display(description="Findings (gateway.toolscan)")
    def findings_text(self, obj: ToolManifest) -> str:
        return format_html("<pre>{}</pre>", _pretty(obj.findings))

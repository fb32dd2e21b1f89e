"""Admin for the gateway's money records: meter reports are read-only; parked ones (Stripe
refused them for good) are listed for a person to act on and can be sent again."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from common.admin import ReadOnlyAdmin
from gateway.models import MeterReport
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

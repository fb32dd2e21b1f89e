"""Admin for billing. Keys show their display prefix only; history and money rows are
read-only; events can be re-driven."""

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from billing import models
from billing.services.events import stripe_event_process
from billing.services.licenses import api_key_revoke
from common.admin import ReadOnlyAdmin


@admin.register(models.Creator)
class CreatorAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["handle", "user", "created_at"]
    search_fields = ["handle", "user__email"]
    raw_id_fields = ["user"]


@admin.register(models.ConnectAccount)
class ConnectAccountAdmin(ReadOnlyAdmin):
    list_display = ["stripe_account_id", "creator", "charges_enabled", "payouts_enabled"]


@admin.register(models.ListingClaim)
class ListingClaimAdmin(ReadOnlyAdmin):
    list_display = ["registry_name", "creator", "status", "expires_at", "verified_at"]
    list_filter = ["status"]
    exclude = ["token"]


class PlanPriceInline(admin.TabularInline):  # type: ignore[type-arg]
    model = models.PlanPrice
    extra = 0
    can_delete = False
    readonly_fields = [f.name for f in models.PlanPrice._meta.fields]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(models.Plan)
class PlanAdmin(ReadOnlyAdmin):
    list_display = ["name", "listing", "kind", "active", "rate_limit_per_minute"]
    list_filter = ["kind", "active"]
    inlines = [PlanPriceInline]


@admin.register(models.CheckoutOrder)
class CheckoutOrderAdmin(ReadOnlyAdmin):
    list_display = ["pk", "buyer", "plan", "mode", "status", "amount", "currency", "created_at"]
    list_filter = ["status", "mode"]


@admin.register(models.CreatorSubscription)
class CreatorSubscriptionAdmin(ReadOnlyAdmin):
    list_display = ["stripe_subscription_id", "buyer", "creator", "status", "current_period_end"]


@admin.register(models.StripeCustomer)
class StripeCustomerAdmin(ReadOnlyAdmin):
    list_display = ["stripe_customer_id", "user"]


class LicenseEventInline(admin.TabularInline):  # type: ignore[type-arg]
    model = models.LicenseEvent
    extra = 0
    can_delete = False
    readonly_fields = ["from_status", "to_status", "reason", "stripe_event_id", "created_at"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(models.License)
class LicenseAdmin(ReadOnlyAdmin):
    list_display = ["pk", "buyer", "listing", "plan", "status", "source", "created_at"]
    list_filter = ["status", "source"]
    search_fields = ["buyer__email", "listing__name"]
    inlines = [LicenseEventInline]


_KEY_FIELDS = (
    "display_prefix",
    "name",
    "license",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
    "daily_spend_cap",
    "monthly_spend_cap",
)


@admin.register(models.ApiKey)
class ApiKeyAdmin(ReadOnlyAdmin):
    list_display = ["display_prefix", "name", "license", "created_at", "expires_at", "revoked_at"]
    # Never the hash: a hash plus the pepper is enough to test guesses offline.
    fields = _KEY_FIELDS
    readonly_fields = _KEY_FIELDS
    actions = ["revoke"]

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[models.ApiKey]) -> None:
        for pk in queryset.values_list("pk", flat=True):
            api_key_revoke(key_id=pk)
        messages.success(request, "Keys revoked.")


@admin.register(models.Sale)
class SaleAdmin(ReadOnlyAdmin):
    list_display = [
        "kind",
        "creator",
        "gross_amount",
        "platform_fee_amount",
        "net_amount",
        "currency",
        "created_at",
    ]
    list_filter = ["kind"]


@admin.register(models.Dispute)
class DisputeAdmin(ReadOnlyAdmin):
    list_display = [
        "stripe_dispute_id",
        "creator",
        "status",
        "amount",
        "held",
        "exposure",
        "stripe_transfer_reversal_id",
        "reversal_error",
        "created_at",
    ]
    list_filter = ["status"]


@admin.register(models.StatementReconciliation)
class StatementReconciliationAdmin(ReadOnlyAdmin):
    """Mismatches are what a person has to look at (filter matches = No)."""

    list_display = ["creator", "month", "currency", "matches", "ours", "stripe", "created_at"]
    list_filter = ["matches", "month"]


@admin.register(models.StripeEvent)
class StripeEventAdmin(ReadOnlyAdmin):
    list_display = ["stripe_event_id", "type", "status", "attempts", "received_at"]
    list_filter = ["status", "type"]
    search_fields = ["stripe_event_id"]
    actions = ["redrive"]

    @admin.action(description="Process the selected events again")
    def redrive(self, request: HttpRequest, queryset: QuerySet[models.StripeEvent]) -> None:
        failed = 0
        for pk in queryset.values_list("pk", flat=True):
            try:
                stripe_event_process(event_pk=pk)
            except Exception:
                failed += 1
        messages.info(request, f"Re-driven; {failed} failed again (see last_error).")

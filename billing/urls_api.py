"""Billing REST API (mounted at /api/v1/)."""

from django.urls import path

from billing import apis

urlpatterns = [
    path("me/licenses", apis.LicenseListApi.as_view(), name="billing-license-list"),
    path(
        "me/licenses/<int:license_id>",
        apis.LicenseDetailApi.as_view(),
        name="billing-license-detail",
    ),
    path(
        "me/licenses/<int:license_id>/keys",
        apis.ApiKeyListCreateApi.as_view(),
        name="billing-key-list",
    ),
    path(
        "me/licenses/<int:license_id>/keys/<int:key_id>/rotate",
        apis.ApiKeyRotateApi.as_view(),
        name="billing-key-rotate",
    ),
    path(
        "me/licenses/<int:license_id>/keys/<int:key_id>/revoke",
        apis.ApiKeyRevokeApi.as_view(),
        name="billing-key-revoke",
    ),
    path("billing/creator", apis.CreatorBecomeApi.as_view(), name="billing-creator-become"),
    path(
        "billing/creator/onboard", apis.CreatorOnboardApi.as_view(), name="billing-creator-onboard"
    ),
    path(
        "billing/creator/statements",
        apis.CreatorStatementListApi.as_view(),
        name="billing-creator-statements",
    ),
    path("billing/claims", apis.ListingClaimStartApi.as_view(), name="billing-claim-start"),
    path("billing/plans", apis.PlanCreateApi.as_view(), name="billing-plan-create"),
    path(
        "billing/plans/<int:plan_id>/prices",
        apis.PlanPriceChangeApi.as_view(),
        name="billing-plan-price",
    ),
    path("billing/checkout", apis.CheckoutStartApi.as_view(), name="billing-checkout-start"),
]

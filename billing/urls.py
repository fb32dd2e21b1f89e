"""Billing pages and the Stripe webhook (mounted at /billing/)."""

from django.urls import path

from billing import views, webhooks

app_name = "billing"

urlpatterns = [
    path("webhooks/stripe", webhooks.stripe_webhook_view, name="stripe-webhook"),
    path("creator/", views.creator_home_view, name="creator-home"),
    path("creator/onboard", views.creator_onboard_view, name="creator-onboard"),
    path("creator/claim", views.creator_claim_view, name="creator-claim"),
    path("creator/plans", views.creator_plans_view, name="creator-plans"),
    path("buy/<int:plan_id>", views.buy_view, name="buy"),
    path("checkout/success", views.checkout_success_view, name="checkout-success"),
    path("licenses/", views.licenses_view, name="licenses"),
]

"""Billing's HTTP surface (mounted at /billing/): the Stripe webhook, the buy page and the
checkout success page. The old creator and licenses pages moved to `web` (`ui:`); their
GET addresses redirect there permanently."""

from django.urls import path
from django.views.generic import RedirectView

from billing import views, webhooks

app_name = "billing"

urlpatterns = [
    path("webhooks/stripe", webhooks.stripe_webhook_view, name="stripe-webhook"),
    path("buy/<int:plan_id>", views.buy_view, name="buy"),
    path("checkout/success", views.checkout_success_view, name="checkout-success"),
    path("creator/", RedirectView.as_view(pattern_name="ui:creator", permanent=True)),
    path(
        "creator/claim",
        RedirectView.as_view(pattern_name="ui:creator-claim", permanent=True, query_string=True),
    ),
    path("licenses/", RedirectView.as_view(pattern_name="ui:licenses", permanent=True)),
]

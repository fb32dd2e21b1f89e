"""`path("_fake_stripe/", include("billing.fake_stripe.urls"))` mounts the fake in the site."""

from django.urls import path

from billing.fake_stripe.views import fake_stripe_view

app_name = "fake_stripe"
urlpatterns = [
    path("", fake_stripe_view, name="root"),
    path("<path:path>", fake_stripe_view, name="any"),
]

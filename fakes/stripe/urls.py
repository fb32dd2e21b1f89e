"""`path("_fake_stripe/", include("fakes.stripe.urls"))` mounts the fake in the site."""

from django.urls import path

from fakes.stripe.views import fake_stripe_view

app_name = "fake_stripe"
urlpatterns = [
    path("", fake_stripe_view, name="root"),
    path("<path:path>", fake_stripe_view, name="any"),
]

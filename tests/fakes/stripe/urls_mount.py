"""A URLconf that mounts only the fake, as the demo site would under /_fake_stripe/."""

from django.urls import include, path

urlpatterns = [path("_fake_stripe/", include("fakes.stripe.urls"))]

"""Settings of the people pages (web/)."""

from urllib.parse import urlsplit

from config.settings.stripe import STRIPE_API_BASE

# Buying and Connect onboarding POST a form to our site, which redirects to Stripe's hosted
# page; browsers check CSP form-action against that redirect too, so the policy lists them.
# With a local fake Stripe (tests, the demo) its origin serves those pages.
STRIPE_HOSTED_ORIGINS = ["https://checkout.stripe.com", "https://connect.stripe.com"]
if STRIPE_API_BASE:
    _parts = urlsplit(STRIPE_API_BASE)
    STRIPE_HOSTED_ORIGINS.append(f"{_parts.scheme}://{_parts.netloc}")

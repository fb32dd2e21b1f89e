"""Settings of the people pages (web/)."""

from urllib.parse import urlsplit

from config.env import env_float, env_int
from config.settings.stripe import STRIPE_API_BASE

# Buying and Connect onboarding POST a form to our site, which redirects to Stripe's hosted
# page; browsers check CSP form-action against that redirect too, so the policy lists them.
# With a local fake Stripe (tests, the demo) its origin serves those pages.
STRIPE_HOSTED_ORIGINS = ["https://checkout.stripe.com", "https://connect.stripe.com"]
if STRIPE_API_BASE:
    _parts = urlsplit(STRIPE_API_BASE)
    STRIPE_HOSTED_ORIGINS.append(f"{_parts.scheme}://{_parts.netloc}")

# /mcp-catalog is public and keyless. Its GET (a server-to-client SSE stream) ends after this
# many seconds (clients reconnect), and one client address may hold this many at once per
# process (429 past it; the address as common.clientaddr reads it). 0 = no limit.
CATALOG_STREAM_MAX_SECONDS = max(env_float("CATALOG_STREAM_MAX_SECONDS", 300.0), 0.0)
CATALOG_STREAMS_PER_ADDRESS = max(env_int("CATALOG_STREAMS_PER_ADDRESS", 4), 0)

# Search results' "from $x", hosted and free-plan badges: marketplace asks this function (it
# imports neither billing nor the gateway). Empty: results show no offer.
MARKETPLACE_OFFER_SUMMARY_PROVIDER = "web.selectors.listing_offer_summaries"

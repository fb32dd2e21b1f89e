"""Stripe settings. With STRIPE_API_BASE set, the client talks to the in-project fake Stripe."""

from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_int, env_list, env_required, env_str

STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY", "sk_test_toolbooth_local")
STRIPE_API_BASE = env_str("STRIPE_API_BASE", "").rstrip("/")
STRIPE_WEBHOOK_SECRETS = env_list("STRIPE_WEBHOOK_SECRETS", ["whsec_toolbooth_local"])
STRIPE_TIMEOUT_SECONDS = env_int("STRIPE_TIMEOUT_SECONDS", 20)
# Our cut of every sale, in basis points (1500 = 15 %), recorded on each sale.
PLATFORM_FEE_BPS = env_int("PLATFORM_FEE_BPS", 1500)
PRICE_INCREASE_NOTICE_DAYS = env_int("PRICE_INCREASE_NOTICE_DAYS", 14)
DEFAULT_CURRENCY = env_str("DEFAULT_CURRENCY", "usd")

if STRIPE_API_BASE and not STRIPE_SECRET_KEY.startswith("sk_test_"):
    raise ImproperlyConfigured("STRIPE_API_BASE points at a fake Stripe: use an sk_test_ key")

# HMAC pepper for license key hashes. Changing it invalidates every key, so it has no default
# outside DEBUG (config.env.env_required).
LICENSE_KEY_PEPPER = env_required(
    "LICENSE_KEY_PEPPER",
    debug=env_bool("DEBUG", default=False),
    local_default="insecure-local-only-key-pepper",
)
# Keys minted here are tb_live_ only when talking to real Stripe in live mode.
LICENSE_KEYS_LIVE = STRIPE_SECRET_KEY.startswith("sk_live_")

# Billing policy knobs (issue 3).
# A claim token stays valid this long; the creator must publish a version carrying it before.
BILLING_CLAIM_TOKEN_TTL_DAYS = env_int("BILLING_CLAIM_TOKEN_TTL_DAYS", 30)
# Rotating a key keeps the old one working this long so deployments can switch over.
BILLING_KEY_ROTATION_OVERLAP_HOURS = env_int("BILLING_KEY_ROTATION_OVERLAP_HOURS", 24)
BILLING_MAX_KEYS_PER_LICENSE = env_int("BILLING_MAX_KEYS_PER_LICENSE", 20)
# A past_due subscription keeps tool access this long while Stripe retries the payment.
BILLING_PAST_DUE_GRACE_DAYS = env_int("BILLING_PAST_DUE_GRACE_DAYS", 3)
# Prefix of Billing Meter event names, so several environments can share one Stripe account.
STRIPE_METER_EVENT_PREFIX = env_str("STRIPE_METER_EVENT_PREFIX", "toolbooth")
# Connect Express accounts are created in this country unless the creator says otherwise.
STRIPE_CONNECT_DEFAULT_COUNTRY = env_str("STRIPE_CONNECT_DEFAULT_COUNTRY", "US")

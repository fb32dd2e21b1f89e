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

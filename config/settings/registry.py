"""Registry mirror settings."""

from config.env import env_float, env_int, env_str

REGISTRY_URL = env_str("REGISTRY_URL", "https://registry.modelcontextprotocol.io").rstrip("/")
# The registry allows 180 requests a minute per IP; we stay well under it by default.
REGISTRY_MAX_REQUESTS_PER_MINUTE = env_int("REGISTRY_MAX_REQUESTS_PER_MINUTE", 120)
REGISTRY_TIMEOUT_SECONDS = env_float("REGISTRY_TIMEOUT_SECONDS", 20.0)
REGISTRY_MAX_RETRIES = env_int("REGISTRY_MAX_RETRIES", 6)
# Incremental syncs re-read this far behind the watermark (clock skew, late commits upstream).
REGISTRY_WATERMARK_MARGIN_SECONDS = env_int("REGISTRY_WATERMARK_MARGIN_SECONDS", 300)
# A full reconcile (marks vanished rows gone) runs when the last one is older than this.
REGISTRY_FULL_RECONCILE_HOURS = env_int("REGISTRY_FULL_RECONCILE_HOURS", 24)
# Called with the list of names a sync changed, so higher apps refresh what they derive from
# the mirror without registry_sync importing them (imports flow upward only).
REGISTRY_NAMES_CHANGED_HOOKS: list[str] = ["marketplace.services.listings_refresh_from_registry"]
# Returns the subset of names that people pay for; their disappearance raises an alert.
REGISTRY_PROTECTED_NAMES_PROVIDER = env_str(
    "REGISTRY_PROTECTED_NAMES_PROVIDER", "marketplace.selectors.listing_names_with_buyers"
)

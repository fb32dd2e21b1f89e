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
REGISTRY_NAMES_CHANGED_HOOKS: list[str] = [
    "marketplace.services.listings_refresh_from_registry",
    # After the catalogue refresh: verifies creators' claim tokens and transfers ownership.
    "billing.services.claims.claims_verify_from_registry",
]
# Returns the subset of names that people pay for; their disappearance raises an alert.
REGISTRY_PROTECTED_NAMES_PROVIDER = env_str(
    "REGISTRY_PROTECTED_NAMES_PROVIDER", "billing.selectors.listing_names_with_buyers"
)
# Retry backoff: full jitter over base * 2**attempt, capped (the ingress sends no Retry-After).
REGISTRY_BACKOFF_BASE_SECONDS = env_float("REGISTRY_BACKOFF_BASE_SECONDS", 1.0)
REGISTRY_BACKOFF_MAX_SECONDS = env_float("REGISTRY_BACKOFF_MAX_SECONDS", 60.0)
# The offline snapshot (`sync_registry --snapshot`, the demo); empty = the bundled file.
REGISTRY_SNAPSHOT_PATH = env_str("REGISTRY_SNAPSHOT_PATH", "")
# An incremental sync re-reads /versions of each name it touched (isLatest flips are not in the
# updated_since pages); above this many names a plain listing walk is cheaper. 0 = automatic
# (the number of 100-row pages the mirror would take, at least 50).
REGISTRY_REFETCH_MAX_NAMES = env_int("REGISTRY_REFETCH_MAX_NAMES", 0)
# A full reconcile that would unlist more than this many listings AND more than this share of
# the listed catalogue at once (an empty or truncated answer) unlists nothing: it raises a
# MASS_UNLIST_HELD alert, and an admin applies it (admin action). Paid listings are never
# unlisted by a reconcile anyway.
REGISTRY_MASS_UNLIST_MIN_LISTINGS = env_int("REGISTRY_MASS_UNLIST_MIN_LISTINGS", 20)
REGISTRY_MASS_UNLIST_MAX_SHARE = env_float("REGISTRY_MASS_UNLIST_MAX_SHARE", 0.10)
# Raw registry JSON is kept, but bounded: strings longer than this are cut (with a marker) and
# an item still larger than REGISTRY_MAX_ITEM_BYTES after that is quarantined.
REGISTRY_MAX_RAW_STRING_CHARS = env_int("REGISTRY_MAX_RAW_STRING_CHARS", 8192)
REGISTRY_MAX_ITEM_BYTES = env_int("REGISTRY_MAX_ITEM_BYTES", 128 * 1024)

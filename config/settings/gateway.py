"""Metered gateway settings (see gateway/README.md for what each limit protects)."""

from config.env import env_bool, env_float, env_int, env_list, env_required, env_str

_DEBUG = env_bool("DEBUG", default=False)

GATEWAY_UPSTREAM_CONNECT_TIMEOUT = env_float("GATEWAY_UPSTREAM_CONNECT_TIMEOUT", 5.0)
# Time to the upstream's response headers (and to a JSON body).
GATEWAY_UPSTREAM_READ_TIMEOUT = env_float("GATEWAY_UPSTREAM_READ_TIMEOUT", 60.0)
# Longest silence on an SSE stream before we drop it (a cancelled TS call never answers).
GATEWAY_STREAM_IDLE_TIMEOUT = env_float("GATEWAY_STREAM_IDLE_TIMEOUT", 300.0)
# Every Redis command on the hot path; the failure policy depends on this staying small.
GATEWAY_REDIS_TIMEOUT = min(env_float("GATEWAY_REDIS_TIMEOUT", 0.1), 0.1)
GATEWAY_ALLOWED_ORIGINS = env_list("GATEWAY_ALLOWED_ORIGINS", [])
# Loopback upstreams are refused (SSRF) unless listed here; tests and the demo list theirs.
# `manage.py check --deploy` warns while this is set (gateway.checks).
GATEWAY_UPSTREAM_ALLOWLIST = env_list("GATEWAY_UPSTREAM_ALLOWLIST", [])
GATEWAY_IDENTITY_SECRET = env_required(
    "GATEWAY_IDENTITY_SECRET", debug=_DEBUG, local_default="insecure-local-only-identity-secret"
)
# Fernet keys for creators' upstream secrets: the first encrypts, all decrypt (rotation).
GATEWAY_UPSTREAM_SECRET_KEY = env_required(
    "GATEWAY_UPSTREAM_SECRET_KEY", debug=_DEBUG, local_default="insecure-local-only-upstream-key"
)
# A cache miss's PostgreSQL read (key, upstream, lost counters) gets this long, then 503.
GATEWAY_DB_TIMEOUT = max(env_float("GATEWAY_DB_TIMEOUT", 3.0), 0.1)
# How long a key's entitlement is cached (Redis and each process): a revoked key stops
# working within it. At least 1: Redis refuses a 0 s expiry, and the cache is the hot path.
GATEWAY_ENTITLEMENT_CACHE_SECONDS = max(env_int("GATEWAY_ENTITLEMENT_CACHE_SECONDS", 5), 1)
# While PostgreSQL cannot answer, a key it confirmed at most this long ago keeps working from
# its last entitlement (a stale copy in Redis); then it fails closed with 503. Revocations made
# before the outage hold; none can be made during it. At most the cache TTL turns it off.
GATEWAY_STALE_ENTITLEMENT_SECONDS = max(env_int("GATEWAY_STALE_ENTITLEMENT_SECONDS", 300), 0)
# Listing -> upstream config is cached in each process this long (a disabled upstream stops
# receiving traffic within it).
GATEWAY_UPSTREAM_CACHE_SECONDS = env_float("GATEWAY_UPSTREAM_CACHE_SECONDS", 5.0)
GATEWAY_MAX_BODY_BYTES = env_int("GATEWAY_MAX_BODY_BYTES", 4 * 1024 * 1024)
# A request body must have arrived whole this long after the headers (to the second), else 408.
GATEWAY_BODY_TIMEOUT = max(env_float("GATEWAY_BODY_TIMEOUT", 30.0), 1.0)
GATEWAY_SESSION_TTL_SECONDS = max(env_int("GATEWAY_SESSION_TTL_SECONDS", 24 * 3600), 60)
# Per key: requests that are not tool calls (initialize, tools/list, pings, notifications,
# streams) a minute. A plan's "N calls a minute" counts tool calls only, per license; this
# separate, generous bucket only stops floods. 0 = no limit.
GATEWAY_METHOD_RATE_PER_MINUTE = max(env_int("GATEWAY_METHOD_RATE_PER_MINUTE", 600), 0)
# Invalid-key answers (401) a client address may get a minute; past it 429 + Retry-After and
# its made-up keys are not looked up in PostgreSQL (gateway.authfail). 0 = no limit.
GATEWAY_AUTH_FAILURES_PER_MINUTE = max(env_int("GATEWAY_AUTH_FAILURES_PER_MINUTE", 30), 0)
# Requests (streams included) in flight to one upstream per process; past it a request waits
# at most the connect timeout, then gets 503 + Retry-After.
GATEWAY_UPSTREAM_POOL_SIZE = max(env_int("GATEWAY_UPSTREAM_POOL_SIZE", 200), 1)
# Off only for the MCP conformance suite, which cannot send headers: every request then runs
# as an anonymous free caller of the listing. Never in production (check --deploy errors).
GATEWAY_REQUIRE_KEY = env_bool("GATEWAY_REQUIRE_KEY", default=True)
GATEWAY_USAGE_STREAM = env_str("GATEWAY_USAGE_STREAM", "tb:usage")
# Usage a consumer read but never acknowledged (worker killed) is re-claimed after this.
GATEWAY_USAGE_CLAIM_IDLE_MS = env_int("GATEWAY_USAGE_CLAIM_IDLE_MS", 60_000)
# The usage reporter's lease, renewed between chunks of meter events: a worker killed
# mid-report holds reporting up for at most this long.
GATEWAY_REPORT_LEASE_SECONDS = max(env_int("GATEWAY_REPORT_LEASE_SECONDS", 30), 2)
# `/metrics` shows every listing's call volume: with a token, scrapers send it as a Bearer
# token; without one, only loopback clients are served (check --deploy warns).
GATEWAY_METRICS_TOKEN = env_str("GATEWAY_METRICS_TOKEN", "")

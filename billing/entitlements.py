"""The contract between billing and the gateway: what one license key may do, as plain data.

The gateway caches this (keyed by the key's HMAC hash) in Redis and never reads PostgreSQL on a
warm hot path; billing builds it from its rows and deletes the cache entry when they change.
Only JSON-safe fields, so the cached form is `json.dumps(asdict(e))`.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ToolPrice:
    """A tool's own per-call price (past the included calls; billing.pricing resolves it to 0
    on plans that cannot charge per call); `excluded` hides the tool entirely."""

    unit_amount: int  # minor units per call; 0 = free tool
    excluded: bool = False


@dataclass(frozen=True, slots=True)
class Entitlement:
    key_id: int
    license_id: int
    listing_id: int
    listing_name: str
    plan_id: int
    plan_kind: str  # "free" | "one_time" | "subscription" | "per_call"
    status: str  # license status; only "active" may call (past_due gets a grace policy in billing)
    currency: str
    rate_limit_per_minute: int
    # Calls included per quota month, all keys of the license together (None = no quota): they
    # cost 0. hard_cap True = refuse calls past them; False = charge them (billing.pricing).
    included_calls: int | None
    hard_cap: bool
    # What a call to a tool without its own entry costs past the included calls, resolved by
    # billing.pricing.plan_terms (per-call price, overage price, or 0 where nothing is metered).
    unit_amount: int
    overage_unit_amount: int  # the plan's overage price as stored (display only)
    tool_prices: dict[str, ToolPrice] = field(default_factory=dict)
    # Per-key spend caps in minor units (None = no cap).
    daily_spend_cap: int | None = None
    monthly_spend_cap: int | None = None
    # Stripe ids the usage drain reports against (None when nothing is metered).
    stripe_customer_id: str | None = None
    meter_event_name: str | None = None
    # Unix seconds; the key stops working after this (rotation overlap or expiry).
    expires_at: float | None = None
    period_start: float = 0.0  # start of the current quota month, unix seconds
    # False: a tool without an entry in `tool_prices` is refused (the price version lists the
    # tools it covers, so a tool the upstream added later is never billed at a default).
    other_tools: bool = True

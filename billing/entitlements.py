"""The contract between billing and the gateway: what one license key may do, as plain data.

The gateway caches this (keyed by the key's HMAC hash) in Redis and never reads PostgreSQL on a
warm hot path; billing builds it from its rows and deletes the cache entry when they change.
Only JSON-safe fields, so the cached form is `json.dumps(asdict(e))`.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ToolPrice:
    """Per-tool override of the plan's per-call price; `excluded` hides the tool entirely."""

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
    # Calls included per billing month (None = unlimited); hard_cap True = refuse past it,
    # False = allow and bill overage at `overage_unit_amount`.
    included_calls: int | None
    hard_cap: bool
    unit_amount: int  # per-call price in minor units (per_call plans; overage for subscriptions)
    overage_unit_amount: int
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

    def tool_unit_amount(self, tool: str) -> int | None:
        """Price of one call to `tool`, or None when the plan excludes it (one predicate for
        tools/list and tools/call)."""
        override = self.tool_prices.get(tool)
        if override is not None:
            return None if override.excluded else override.unit_amount
        return self.unit_amount

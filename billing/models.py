"""Billing state: creators and their Connect accounts, plans and versioned prices, checkout orders,
subscriptions, sales, licenses with append-only history, API keys and raw Stripe events.

Statuses are TextChoices that only `billing.services` change. Money is integer minor units plus
an ISO currency. Stripe ids are unique where Stripe guarantees uniqueness, so a replayed webhook
or a retried task cannot create a second row.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from common.models import TimeStampedModel


class Creator(TimeStampedModel):
    """A user who sells. `namespace` is the Toolbooth-owned server-name prefix for listings the
    creator publishes before they exist in the official registry."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="creator"
    )
    handle = models.SlugField(max_length=50, unique=True)
    display_name = models.CharField(max_length=100, blank=True, default="")

    def __str__(self) -> str:
        return self.handle

    @property
    def namespace(self) -> str:
        return f"dev.toolbooth.{self.handle}"


class ConnectAccount(TimeStampedModel):
    """The creator's Stripe Connect Express account, mirrored from `account.updated` re-reads."""

    creator = models.OneToOneField(Creator, on_delete=models.CASCADE, related_name="connect")
    stripe_account_id = models.CharField(max_length=255, unique=True)
    charges_enabled = models.BooleanField(default=False)
    payouts_enabled = models.BooleanField(default=False)
    details_submitted = models.BooleanField(default=False)

    def __str__(self) -> str:
        return self.stripe_account_id

    @property
    def is_payable(self) -> bool:
        return self.charges_enabled and self.payouts_enabled and self.details_submitted


class ClaimStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    VERIFIED = "verified", "Verified"
    EXPIRED = "expired", "Expired"
    CANCELLED = "cancelled", "Cancelled"


class ListingClaim(TimeStampedModel):
    """A creator's claim on a registry name, proven by publishing `token` in server.json `_meta`.

    `registry_name` is the name whose mirrored versions are checked; it equals `listing.name`
    for a mirrored listing, and differs when a creator-published listing (under the creator's
    namespace) is being linked to the name it was later published under in the registry.
    The token is public by design (it is published), so it is stored in clear.
    """

    listing = models.ForeignKey(
        "marketplace.Listing", on_delete=models.CASCADE, related_name="claims"
    )
    registry_name = models.CharField(max_length=200, db_index=True)
    creator = models.ForeignKey(Creator, on_delete=models.CASCADE, related_name="claims")
    token = models.CharField(max_length=64, unique=True)
    status = models.CharField(
        max_length=16, choices=ClaimStatus.choices, default=ClaimStatus.PENDING
    )
    expires_at = models.DateTimeField()
    verified_at = models.DateTimeField(null=True, blank=True)
    verified_version = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["registry_name", "creator"],
                condition=Q(status="pending"),
                name="billing_claim_one_pending",
            )
        ]

    def __str__(self) -> str:
        return f"claim {self.registry_name} by {self.creator_id} ({self.status})"


class PlanKind(models.TextChoices):
    FREE = "free", "Free"
    ONE_TIME = "one_time", "One-time license"
    SUBSCRIPTION = "subscription", "Subscription"
    PER_CALL = "per_call", "Pay per call"


# The highest per-minute rate limit a creator may set (the API and the plan form share it).
RATE_LIMIT_MAX_PER_MINUTE = 100_000


class Plan(TimeStampedModel):
    """One way to buy access to a listing. Prices live in versioned `PlanPrice` rows.

    Metered plans (per_call, and subscriptions that bill overage) have one Billing Meter each:
    the meter sums `value` = the call's price in minor units, and the metered Stripe price costs
    one minor unit per unit, so per-tool prices and price versions need no new Stripe price.
    """

    listing = models.ForeignKey(
        "marketplace.Listing", on_delete=models.CASCADE, related_name="plans"
    )
    kind = models.CharField(max_length=16, choices=PlanKind.choices)
    name = models.CharField(max_length=100)
    currency = models.CharField(max_length=3, default="usd")
    rate_limit_per_minute = models.PositiveIntegerField(default=60)
    # Calls included per month (None = unlimited). hard_cap refuses calls past it; otherwise
    # subscriptions bill the overage.
    included_calls = models.PositiveIntegerField(null=True, blank=True)
    hard_cap = models.BooleanField(default=False)
    active = models.BooleanField(default=True)
    stripe_product_id = models.CharField(max_length=255, blank=True, default="")
    stripe_meter_id = models.CharField(max_length=255, blank=True, default="")
    meter_event_name = models.CharField(max_length=100, blank=True, default="")
    stripe_metered_price_id = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ["listing_id", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(rate_limit_per_minute__gte=1), name="billing_plan_rate_limit_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    @property
    def is_metered(self) -> bool:
        return self.kind == PlanKind.PER_CALL or (
            self.kind == PlanKind.SUBSCRIPTION and not self.hard_cap
        )


class PlanPrice(models.Model):
    """One version of a plan's prices. New buyers get the newest version at once; existing
    licenses move to it at `effective_at` (now for decreases, after the notice period for
    increases). Rows are never edited after creation except to record Stripe ids."""

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="prices")
    version = models.PositiveIntegerField()
    # One-time license price, or the subscription's monthly price.
    unit_amount = models.PositiveIntegerField(default=0)
    # Per-call price (per_call plans) and overage per call past included_calls (subscriptions).
    per_call_amount = models.PositiveIntegerField(default=0)
    overage_amount = models.PositiveIntegerField(default=0)
    # {"tool": {"unit_amount": 5, "excluded": false}}: per-tool overrides of per_call_amount.
    tool_prices = models.JSONField(default=dict, blank=True)
    # The tools this version covers (the upstream's discovered tools when the creator saved it,
    # plus the priced ones): a tool outside it is refused, never billed at the default.
    # None = saved before any tool was known: the default covers every tool (billing.pricing).
    tools = models.JSONField(null=True, blank=True, default=None)
    created_at = models.DateTimeField(auto_now_add=True)
    effective_at = models.DateTimeField()
    stripe_price_id = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ["plan_id", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "version"], name="billing_planprice_version")
        ]

    def __str__(self) -> str:
        return f"plan {self.plan_id} v{self.version}"


class StripeCustomer(TimeStampedModel):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="stripe_customer"
    )
    stripe_customer_id = models.CharField(max_length=255, unique=True)

    def __str__(self) -> str:
        return self.stripe_customer_id


class OrderStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    COMPLETED = "completed", "Completed"
    EXPIRED = "expired", "Expired"
    FAILED = "failed", "Payment failed"


class CheckoutOrder(TimeStampedModel):
    """A buyer's pending purchase; the Checkout Session is created from it with an idempotency
    key derived from its pk, and fulfilment locks it so one order yields one license."""

    buyer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="checkout_orders"
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="orders")
    plan_price = models.ForeignKey(PlanPrice, on_delete=models.PROTECT, related_name="orders")
    creator = models.ForeignKey(Creator, on_delete=models.PROTECT, related_name="orders")
    mode = models.CharField(max_length=16)  # "payment" | "subscription"
    status = models.CharField(
        max_length=16, choices=OrderStatus.choices, default=OrderStatus.PENDING
    )
    amount = models.PositiveIntegerField(default=0)
    currency = models.CharField(max_length=3)
    platform_fee_bps = models.PositiveIntegerField()
    stripe_session_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    checkout_url = models.URLField(max_length=2000, blank=True, default="")
    stripe_payment_intent_id = models.CharField(max_length=255, blank=True, default="")
    completed_at = models.DateTimeField(null=True, blank=True)
    # The success page mints the first key once and shows it once; only this marker is kept.
    first_key = models.ForeignKey(
        "ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["buyer", "plan"],
                condition=Q(status="pending"),
                name="billing_one_pending_order_per_plan",
            )
        ]

    def __str__(self) -> str:
        return f"order {self.pk} ({self.status})"


class CreatorSubscription(TimeStampedModel):
    """The one Stripe subscription between a buyer and a creator (destination is the creator's
    account), mirrored from re-reads of the subscription object."""

    buyer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="creator_subscriptions"
    )
    creator = models.ForeignKey(Creator, on_delete=models.PROTECT, related_name="subscriptions")
    stripe_subscription_id = models.CharField(max_length=255, unique=True)
    stripe_customer_id = models.CharField(max_length=255)
    status = models.CharField(max_length=32)  # Stripe's subscription status, verbatim
    cancel_at_period_end = models.BooleanField(default=False)
    current_period_start = models.DateTimeField(null=True, blank=True)
    current_period_end = models.DateTimeField(null=True, blank=True)
    platform_fee_bps = models.PositiveIntegerField()
    # {price_id: subscription_item_id}
    items = models.JSONField(default=dict, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["buyer", "creator"],
                condition=~Q(status__in=["canceled", "incomplete_expired"]),
                name="billing_one_live_subscription_per_creator",
            )
        ]

    def __str__(self) -> str:
        return self.stripe_subscription_id


class SubscriptionChangeKind(models.TextChoices):
    CANCEL_AT_PERIOD_END = "cancel_at_period_end", "Cancel at period end"
    RESUME = "resume", "Resume"
    CANCEL_NOW = "cancel_now", "Cancel now"
    UPGRADE = "upgrade", "Upgrade now"
    DOWNGRADE = "downgrade", "Downgrade at period end"
    ADD_PLAN = "add_plan", "Add a plan"
    REMOVE_PLAN = "remove_plan", "Remove a plan now"


class SubscriptionChangeStatus(models.TextChoices):
    REQUESTED = "requested", "Requested"  # written, Stripe not (yet) answered
    SENT = "sent", "Accepted by Stripe"  # waiting for its effect to show in a re-read
    APPLIED = "applied", "Applied"
    FAILED = "failed", "Refused by Stripe"


class SubscriptionChange(models.Model):
    """One change a buyer asked of their Stripe subscription (one row per request).

    Its pk and parameters make the request's idempotency key, so a retry of this request
    replays Stripe's answer while a later, identical-looking request (cancel, resume, cancel
    again) is a new one. Licenses change only in `subscription_sync` (re-reads and webhooks):
    this row tells it which license a change was for, and when a downgrade is due
    (`effective_at`, the period end). Only `billing.services.subscription_changes` and
    `subscription_sync` change it.
    """

    creator_subscription = models.ForeignKey(
        CreatorSubscription, on_delete=models.PROTECT, related_name="changes"
    )
    license = models.ForeignKey(
        "License", null=True, blank=True, on_delete=models.PROTECT, related_name="changes"
    )
    kind = models.CharField(max_length=24, choices=SubscriptionChangeKind.choices)
    from_plan = models.ForeignKey(
        Plan, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    to_plan = models.ForeignKey(
        Plan, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    params = models.JSONField(default=dict, blank=True)  # what was sent to Stripe
    status = models.CharField(
        max_length=16,
        choices=SubscriptionChangeStatus.choices,
        default=SubscriptionChangeStatus.REQUESTED,
    )
    effective_at = models.DateTimeField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["license"],
                condition=Q(kind="downgrade", status="sent"),
                name="billing_one_pending_downgrade_per_license",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} on {self.creator_subscription_id} ({self.status})"


class LicenseStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    PAST_DUE = "past_due", "Past due"
    SUSPENDED = "suspended", "Suspended"
    REVOKED = "revoked", "Revoked"
    EXPIRED = "expired", "Expired"


LIVE_LICENSE_STATUSES = (LicenseStatus.ACTIVE, LicenseStatus.PAST_DUE, LicenseStatus.SUSPENDED)
TERMINAL_LICENSE_STATUSES = (LicenseStatus.REVOKED, LicenseStatus.EXPIRED)


class LicenseSource(models.TextChoices):
    PURCHASE = "purchase", "One-time purchase"
    SUBSCRIPTION = "subscription", "Subscription"
    FREE = "free", "Free plan"
    GRANT = "grant", "Complimentary grant"


class License(TimeStampedModel):
    """A buyer's entitlement to one listing under one plan. At most one live license per
    (buyer, plan), enforced by a partial unique constraint so concurrent fulfilment cannot make
    two; at most one license per order."""

    buyer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="licenses"
    )
    listing = models.ForeignKey(
        "marketplace.Listing", on_delete=models.PROTECT, related_name="licenses"
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="licenses")
    # The price version that applies to this license now (advanced when a new one is due).
    plan_price = models.ForeignKey(PlanPrice, on_delete=models.PROTECT, related_name="licenses")
    status = models.CharField(
        max_length=16, choices=LicenseStatus.choices, default=LicenseStatus.ACTIVE
    )
    status_changed_at = models.DateTimeField()
    source = models.CharField(max_length=16, choices=LicenseSource.choices)
    order = models.OneToOneField(
        CheckoutOrder, null=True, blank=True, on_delete=models.PROTECT, related_name="license"
    )
    creator_subscription = models.ForeignKey(
        CreatorSubscription,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="licenses",
    )
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["buyer", "plan"],
                condition=Q(status__in=["active", "past_due", "suspended"]),
                name="billing_one_live_license_per_plan",
            )
        ]

    def __str__(self) -> str:
        return f"license {self.pk} ({self.status})"


class LicenseEvent(models.Model):
    """Append-only history of a license's status: services only ever insert rows."""

    license = models.ForeignKey(License, on_delete=models.PROTECT, related_name="events")
    from_status = models.CharField(max_length=16, blank=True, default="")
    to_status = models.CharField(max_length=16)
    reason = models.CharField(max_length=200)
    stripe_event_id = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["license_id", "pk"]

    def __str__(self) -> str:
        return f"license {self.license_id}: {self.from_status or '-'} -> {self.to_status}"


class ApiKeyKind(models.TextChoices):
    KEY = "key", "License key"
    # An OAuth connection (oauth.Connection): a client the buyer connected through the consent
    # page. Its own secret is never issued; it calls with short-lived AccessTokens that stand
    # for it, so caps, last use, usage and revocation work exactly as for a key.
    OAUTH = "oauth", "Connected client"


class ApiKey(models.Model):
    """A license key, stored only as HMAC-SHA256 under the server pepper plus a display prefix."""

    license = models.ForeignKey(License, on_delete=models.CASCADE, related_name="keys")
    kind = models.CharField(max_length=8, choices=ApiKeyKind.choices, default=ApiKeyKind.KEY)
    name = models.CharField(max_length=100, blank=True, default="")
    key_hash = models.CharField(max_length=64, unique=True)
    display_prefix = models.CharField(max_length=20)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    daily_spend_cap = models.PositiveIntegerField(null=True, blank=True)
    monthly_spend_cap = models.PositiveIntegerField(null=True, blank=True)
    rotated_from = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="rotated_to"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.display_prefix}… (license {self.license_id})"


class AccessToken(models.Model):
    """An OAuth access token: a short-lived credential standing for an `ApiKey` of kind oauth.

    Stored as the same HMAC as keys (`billing.keys.key_hash`), so the gateway looks it up, caches
    and invalidates it under its hash like a key. The raw token is handed to the client once.
    """

    key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="access_tokens")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"access token for key {self.key_id}"


class PersonalToken(models.Model):
    """A person's API token for `/api/v1/me/...` (scripts and agents), stored like license keys:
    HMAC-SHA256 under the server pepper plus a display prefix; the raw token is shown once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="personal_tokens"
    )
    name = models.CharField(max_length=100, blank=True, default="")
    token_hash = models.CharField(max_length=64, unique=True)
    display_prefix = models.CharField(max_length=20)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.display_prefix}… (user {self.user_id})"


class SaleKind(models.TextChoices):
    ONE_TIME = "one_time", "One-time license"
    INVOICE = "invoice", "Subscription invoice"
    REFUND = "refund", "Refund"
    DISPUTE = "dispute", "Dispute lost"


class Sale(models.Model):
    """Append-only money ledger; creator statements are rebuilt from these rows. `source_ref` is
    the Stripe object that caused the row, unique so a replayed event records nothing twice.
    Refunds are rows with negative amounts."""

    kind = models.CharField(max_length=16, choices=SaleKind.choices)
    source_ref = models.CharField(max_length=255, unique=True)
    creator = models.ForeignKey(Creator, on_delete=models.PROTECT, related_name="sales")
    buyer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    listing = models.ForeignKey("marketplace.Listing", on_delete=models.PROTECT, related_name="+")
    license = models.ForeignKey(
        License, null=True, blank=True, on_delete=models.PROTECT, related_name="sales"
    )
    order = models.ForeignKey(
        CheckoutOrder, null=True, blank=True, on_delete=models.PROTECT, related_name="sales"
    )
    gross_amount = models.IntegerField()
    platform_fee_bps = models.PositiveIntegerField()
    platform_fee_amount = models.IntegerField()
    net_amount = models.IntegerField()
    currency = models.CharField(max_length=3)
    stripe_payment_intent_id = models.CharField(max_length=255, blank=True, default="")
    stripe_invoice_id = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(net_amount=models.F("gross_amount") - models.F("platform_fee_amount")),
                name="billing_sale_net_is_gross_minus_fee",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.gross_amount} {self.currency}"


class DisputeStatus(models.TextChoices):
    OPEN = "open", "Open"
    WON = "won", "Won"
    LOST = "lost", "Lost"


class Dispute(TimeStampedModel):
    """A buyer's chargeback on one of our payments, while the card network decides.

    With destination charges the platform carries the dispute at Stripe (`exposure`: the
    disputed amount and Stripe's dispute fee, less what came back or was recovered), while the
    creator's share of the disputed amount (`held`) is held in their earnings. Closing it
    releases the hold; a lost dispute also adds a DISPUTE row to the sales ledger and records
    whether we took the creator's share back by reversing their transfer.
    Only `billing.services.disputes` changes it.
    """

    stripe_dispute_id = models.CharField(max_length=255, unique=True)
    sale = models.ForeignKey(Sale, on_delete=models.PROTECT, related_name="disputes")
    # The license the payment paid for (suspended while open); for a subscription's first
    # invoice the sale itself may predate the license.
    license = models.ForeignKey(
        License, null=True, blank=True, on_delete=models.PROTECT, related_name="disputes"
    )
    creator = models.ForeignKey(Creator, on_delete=models.PROTECT, related_name="disputes")
    status = models.CharField(
        max_length=8, choices=DisputeStatus.choices, default=DisputeStatus.OPEN
    )
    reason = models.CharField(max_length=64, blank=True, default="")
    amount = models.PositiveIntegerField()  # disputed, minor units
    currency = models.CharField(max_length=3)
    held = models.PositiveIntegerField()  # the creator's share while open; 0 once closed
    exposure = models.IntegerField()  # the platform's at Stripe (amount + fee - recovered)
    stripe_transfer_reversal_id = models.CharField(max_length=255, blank=True, default="")
    reversal_error = models.CharField(max_length=500, blank=True, default="")
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.stripe_dispute_id} {self.status}"


class StatementReconciliation(models.Model):
    """One comparison of a creator's monthly statement with what Stripe holds for their
    account (append-only: each run adds rows). `ours` and `stripe` hold gross, platform_fees,
    taken_back (refunds + lost disputes) and net, in minor units."""

    creator = models.ForeignKey(
        Creator, on_delete=models.PROTECT, related_name="statement_reconciliations"
    )
    month = models.DateField()  # the first day of the month (UTC)
    currency = models.CharField(max_length=3)
    ours = models.JSONField()
    stripe = models.JSONField()
    matches = models.BooleanField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.creator_id} {self.month:%Y-%m} {self.currency} {self.matches}"


class StripeEventStatus(models.TextChoices):
    RECEIVED = "received", "Received"
    PROCESSED = "processed", "Processed"
    FAILED = "failed", "Failed"
    IGNORED = "ignored", "Ignored (no handler)"


class StripeEvent(models.Model):
    """A verified webhook, stored raw under its unique id before any processing."""

    stripe_event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100, db_index=True)
    account = models.CharField(max_length=255, blank=True, default="")
    livemode = models.BooleanField(default=False)
    stripe_created = models.BigIntegerField(default=0)
    payload = models.JSONField()
    status = models.CharField(
        max_length=16, choices=StripeEventStatus.choices, default=StripeEventStatus.RECEIVED
    )
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]
        indexes = [models.Index(fields=["status", "received_at"], name="billing_event_status")]

    def __str__(self) -> str:
        return f"{self.stripe_event_id} {self.type} ({self.status})"

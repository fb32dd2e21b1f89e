"""Billing reads. `entitlement_get_by_key_hash` is on the gateway's cache-miss path: one query."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import stripe
from django.conf import settings
from django.db.models import Count, QuerySet, Sum
from django.utils import timezone

from billing import stripe_client
from billing.entitlements import Entitlement
from billing.models import (
    LIVE_LICENSE_STATUSES,
    AccessToken,
    ApiKey,
    ApiKeyKind,
    CheckoutOrder,
    Creator,
    CreatorSubscription,
    Dispute,
    DisputeStatus,
    License,
    LicenseStatus,
    PersonalToken,
    Plan,
    PlanPrice,
    Sale,
    SaleKind,
)
from billing.pricing import StartingPrice, plan_terms, starting_price
from common.exceptions import NotFoundError

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)


def _month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def license_is_usable(*, license: License, now: datetime | None = None) -> bool:
    """Active, or past_due within the grace period while Stripe retries the payment."""
    now = now or timezone.now()
    if license.expires_at is not None and license.expires_at <= now:
        return False
    if license.status == LicenseStatus.ACTIVE:
        return True
    if license.status == LicenseStatus.PAST_DUE:
        grace = timedelta(days=settings.BILLING_PAST_DUE_GRACE_DAYS)
        return license.status_changed_at + grace > now
    return False


def entitlement_get_by_key_hash(*, key_hash: str) -> Entitlement | None:
    """What the key may do, or None for an unknown, revoked or expired key, or a license that
    may not call (anything but active, or past_due past its grace period).

    One query (select_related over key → license → plan, price version, subscription, listing).
    `status` is the access status the gateway enforces: "active" also for a past_due license
    still inside its grace period (the true license status is in the license API).

    An OAuth access token (`AccessToken`, hashed the same way) is found by a second query when
    no key matches: it stands for its connection's key and expires with the token.
    """
    key = (
        ApiKey.objects.select_related(*_ENTITLEMENT_RELATED)
        .filter(key_hash=key_hash, revoked_at__isnull=True)
        .first()
    )
    token_expiry: datetime | None = None
    if key is None:
        token = (
            AccessToken.objects.select_related(*("key__" + r for r in _ENTITLEMENT_RELATED))
            .filter(token_hash=key_hash, key__revoked_at__isnull=True)
            .first()
        )
        if token is None:
            return None
        key, token_expiry = token.key, token.expires_at
    now = timezone.now()
    expiries = [d for d in (key.expires_at, key.license.expires_at, token_expiry) if d is not None]
    if key.expires_at is not None and key.expires_at <= now:
        return None
    if token_expiry is not None and token_expiry <= now:
        return None
    lic = key.license
    if not license_is_usable(license=lic, now=now):
        return None
    plan, price, sub = lic.plan, lic.plan_price, lic.creator_subscription
    period_start = (
        sub.current_period_start if sub and sub.current_period_start else _month_start(now)
    )
    metered = plan.is_metered and sub is not None and bool(plan.meter_event_name)
    return replace(
        plan_entitlement_terms(plan=plan, price=price, collectible=metered),
        key_id=key.pk,
        license_id=lic.pk,
        listing_id=lic.listing_id,
        listing_name=lic.listing.name,
        daily_spend_cap=key.daily_spend_cap,
        monthly_spend_cap=key.monthly_spend_cap,
        stripe_customer_id=sub.stripe_customer_id if metered and sub else None,
        meter_event_name=plan.meter_event_name if metered else None,
        expires_at=min(expiries).timestamp() if expiries else None,
        period_start=period_start.astimezone(UTC).timestamp(),
    )


def access_token_key_id(*, token_hash: str) -> int | None:
    """The key an OAuth access token stands for (revocation finds its connection by it)."""
    return (
        AccessToken.objects.filter(token_hash=token_hash).values_list("key_id", flat=True).first()
    )


_ENTITLEMENT_RELATED = (
    "license__plan",
    "license__plan_price",
    "license__listing",
    "license__creator_subscription",
)


def plan_entitlement_terms(
    *, plan: Plan, price: PlanPrice, collectible: bool = True
) -> Entitlement:
    """What a key on this plan at this price version may do, before any key, license or
    customer is known: the prices resolved by `billing.pricing.plan_terms`, which the gateway
    enforces and the pages display. `collectible=False`: the license has no Stripe customer and
    meter to bill (a grant), so its calls cost 0 rather than a charge nothing collects."""
    default, tool_prices, hard_cap, other_tools = plan_terms(
        kind=plan.kind,
        hard_cap=plan.hard_cap,
        included_calls=plan.included_calls,
        per_call_amount=price.per_call_amount,
        overage_amount=price.overage_amount,
        tool_prices=price.tool_prices,
        tools=price.tools,
        collectible=collectible,
    )
    return Entitlement(
        key_id=0,
        license_id=0,
        listing_id=plan.listing_id,
        listing_name="",
        plan_id=plan.pk,
        plan_kind=plan.kind,
        status=LicenseStatus.ACTIVE.value,
        currency=plan.currency,
        rate_limit_per_minute=plan.rate_limit_per_minute,
        included_calls=plan.included_calls,
        hard_cap=hard_cap,
        unit_amount=default,
        overage_unit_amount=price.overage_amount,
        tool_prices=tool_prices,
        other_tools=other_tools,
    )


def listing_names_with_buyers(*, names: list[str]) -> set[str]:
    """Names (of the given ones) with any non-revoked license: their vanishing upstream needs a
    person, not a silent change (registry_sync's protected-names provider)."""
    return set(
        License.objects.filter(listing__name__in=names)
        .exclude(status=LicenseStatus.REVOKED)
        .values_list("listing__name", flat=True)
        .distinct()
    )


def plan_price_latest(*, plan: Plan) -> PlanPrice:
    """The newest price version: what a new buyer pays."""
    price = PlanPrice.objects.filter(plan=plan).order_by("-version").first()
    if price is None:
        raise NotFoundError("This plan has no price.")
    return price


def listing_starting_prices(*, listing_ids: list[int]) -> dict[int, StartingPrice]:
    """Each listing's cheapest active plan at its newest price version (what a new buyer pays,
    as `plan_price_latest`), and whether it has a free plan; one query for any number (price
    versions are few per plan; the newest of each is kept here, as SQLite has no DISTINCT ON)."""
    if not listing_ids:
        return {}
    rows = (
        PlanPrice.objects.filter(plan__listing_id__in=listing_ids, plan__active=True)
        .order_by("plan_id", "-version")
        .values_list(
            "plan_id",
            "plan__listing_id",
            "plan__kind",
            "plan__currency",
            "unit_amount",
            "per_call_amount",
        )
    )
    seen: set[int] = set()
    by_listing: dict[int, list[tuple[str, str, int, int]]] = {}
    for plan_id, listing_id, kind, currency, unit_amount, per_call_amount in rows:
        if plan_id in seen:
            continue  # an older price version
        seen.add(plan_id)
        by_listing.setdefault(listing_id, []).append((kind, currency, unit_amount, per_call_amount))
    prices = {listing_id: starting_price(plans) for listing_id, plans in by_listing.items()}
    return {listing_id: price for listing_id, price in prices.items() if price is not None}


def plans_for_listing(*, listing_id: int, active_only: bool = True) -> QuerySet[Plan]:
    qs = Plan.objects.filter(listing_id=listing_id)
    if active_only:
        qs = qs.filter(active=True)
    return qs.order_by("pk")


MAX_PLAN_TERMS = 20  # a listing has a handful of plans; the cap bounds a hostile one


def plan_terms_list_for_listing(*, listing_id: int) -> list[tuple[str, Entitlement]]:
    """Each active plan's name and terms at its newest price version (what a new buyer gets),
    for the gateway's "not on your plan" answer: `billing.pricing.advertised_price` over these
    says which plans offer a tool. Two queries; the gateway caches the answer per listing."""
    plans = list(plans_for_listing(listing_id=listing_id)[:MAX_PLAN_TERMS])
    latest: dict[int, PlanPrice] = {}
    for price in PlanPrice.objects.filter(plan__in=plans).order_by("plan_id", "version"):
        latest[price.plan_id] = price
    return [
        (plan.name, plan_entitlement_terms(plan=plan, price=latest[plan.pk]))
        for plan in plans
        if plan.pk in latest
    ]


def creator_get_for_user(*, user: User) -> Creator | None:
    return Creator.objects.select_related("connect").filter(user_id=user.pk).first()


def license_list_for_buyer(*, buyer: User) -> QuerySet[License]:
    return License.objects.filter(buyer_id=buyer.pk).select_related("plan", "listing", "plan_price")


def license_get_for_buyer(*, buyer: User, license_id: int) -> License:
    """The buyer's own license; someone else's is indistinguishable from a missing one (404)."""
    lic = license_list_for_buyer(buyer=buyer).filter(pk=license_id).first()
    if lic is None:
        raise NotFoundError("Not found.")
    return lic


def api_key_list_for_license(*, license: License) -> QuerySet[ApiKey]:
    """The license keys a buyer manages (connected OAuth clients are listed by `oauth`)."""
    return ApiKey.objects.filter(license=license, kind=ApiKeyKind.KEY).order_by("-created_at")


def api_key_get_for_buyer(*, buyer: User, license_id: int, key_id: int) -> ApiKey:
    key = (
        ApiKey.objects.filter(
            pk=key_id, license_id=license_id, license__buyer_id=buyer.pk, kind=ApiKeyKind.KEY
        )
        .select_related("license")
        .first()
    )
    if key is None:
        raise NotFoundError("Not found.")
    return key


def checkout_order_get_for_buyer(*, buyer: User, session_id: str) -> CheckoutOrder:
    order = (
        CheckoutOrder.objects.filter(stripe_session_id=session_id, buyer_id=buyer.pk)
        .select_related("plan__listing")
        .first()
    )
    if order is None:
        raise NotFoundError("Not found.")
    return order


def license_live_for(*, buyer: User, plan: Plan) -> License | None:
    return License.objects.filter(
        buyer_id=buyer.pk, plan=plan, status__in=LIVE_LICENSE_STATUSES
    ).first()


# --- creator statements --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreatorStatement:
    """One creator's month in one currency, summed from the append-only sales ledger.

    `net` = gross - platform_fees - refunds - disputes: what the month's rows leave the creator,
    and what Stripe moved to their account (transfers less reversals less our application
    fees, net of fee refunds). `held` is their share of the disputes opened that month that
    are still open: shown, not yet deducted (a lost dispute becomes a `disputes` amount).
    """

    month: date
    currency: str
    sales: int  # one-time sales and paid subscription invoices
    gross: int
    platform_fees: int  # on the sales, less the fees returned with refunds and lost disputes
    refunds: int  # refunded to buyers (a positive amount taken off)
    disputes: int  # lost disputes (a positive amount taken off)
    net: int
    held: int


def month_bounds(month: date) -> tuple[datetime, datetime]:
    """[first instant of the month, first instant of the next), UTC."""
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    end = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def creator_statement_list(*, creator_id: int, month: date) -> list[CreatorStatement]:
    """The creator's statement for `month` (UTC), one per currency; two queries."""
    start, end = month_bounds(month)
    rows = (
        Sale.objects.filter(creator_id=creator_id, created_at__gte=start, created_at__lt=end)
        .values("currency", "kind")
        .annotate(
            n=Count("id"),
            gross=Sum("gross_amount"),
            fee=Sum("platform_fee_amount"),
            net=Sum("net_amount"),
        )
    )
    held_rows = (
        Dispute.objects.filter(
            creator_id=creator_id,
            status=DisputeStatus.OPEN,
            created_at__gte=start,
            created_at__lt=end,
        )
        .values("currency")
        .annotate(held=Sum("held"))
    )
    held = {r["currency"]: int(r["held"] or 0) for r in held_rows}
    totals: dict[str, dict[str, int]] = {}
    for row in rows:
        t = totals.setdefault(row["currency"], dict.fromkeys(("sales", "gross", "fee", "net"), 0))
        t.setdefault(str(row["kind"]), 0)
        t[str(row["kind"])] -= int(row["gross"] or 0)
        if row["kind"] in (SaleKind.ONE_TIME, SaleKind.INVOICE):
            t["sales"] += int(row["n"])
            t["gross"] += int(row["gross"] or 0)
        t["fee"] += int(row["fee"] or 0)
        t["net"] += int(row["net"] or 0)
    return [
        CreatorStatement(
            month=date(month.year, month.month, 1),
            currency=currency,
            sales=t["sales"],
            gross=t["gross"],
            platform_fees=t["fee"],
            refunds=t.get(SaleKind.REFUND, 0),
            disputes=t.get(SaleKind.DISPUTE, 0),
            net=t["net"],
            held=held.pop(currency, 0),
        )
        for currency, t in sorted(totals.items())
    ] + [
        CreatorStatement(date(month.year, month.month, 1), c, 0, 0, 0, 0, 0, 0, h)
        for c, h in sorted(held.items())
    ]


def personal_token_list(*, user: User, limit: int = 100) -> list[PersonalToken]:
    """A person's API tokens, newest first (revoked ones too: the page shows them as such)."""
    return list(PersonalToken.objects.filter(user_id=user.pk).order_by("-created_at")[:limit])


# --- subscription estimates ----------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceEstimate:
    """Stripe's preview of a subscription's next invoice, in minor units."""

    amount_due: int  # what Stripe will charge (after any credit balance)
    total: int
    currency: str
    period_end: datetime | None  # when it is charged (the renewal date)
    ending: bool  # the subscription ends then: only usage is left to bill
    lines: tuple[tuple[str, int], ...]


def subscription_next_invoice_get(
    *, creator_subscription: CreatorSubscription
) -> InvoiceEstimate | None:
    """What Stripe will charge next for this subscription (`POST /v1/invoices/create_preview`:
    the renewal, usage so far, pending prorations, less credit), so the number a buyer sees is
    Stripe's own. None when nothing will be billed (ended) or Stripe cannot answer now (the
    page says so instead of failing). One Stripe call, with the client's timeouts."""
    if creator_subscription.status in ("canceled", "incomplete_expired"):
        return None
    try:
        inv = (
            stripe_client.get_client()
            .v1.invoices.create_preview(
                params={"subscription": creator_subscription.stripe_subscription_id}
            )
            .to_dict()
        )
    except stripe.StripeError:
        logger.warning(
            "billing.invoice_preview_unavailable",
            extra={"creator_subscription_id": creator_subscription.pk},
        )
        return None
    when = inv.get("next_payment_attempt") or None
    return InvoiceEstimate(
        amount_due=int(inv["amount_due"]),
        total=int(inv["total"]),
        currency=str(inv["currency"]),
        period_end=datetime.fromtimestamp(int(when), tz=UTC) if when else None,
        ending=creator_subscription.cancel_at_period_end,
        lines=tuple(
            (str(line.get("description") or ""), int(line["amount"]))
            for line in (inv.get("lines") or {}).get("data") or []
        ),
    )

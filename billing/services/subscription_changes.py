"""Changes a subscriber makes to their subscription: cancel at the period end, resume, cancel
now, switch plans (upgrade now, downgrade at the period end), add a plan from the same creator,
and Stripe's customer portal for cards and invoices.

Every change is one Stripe call with an idempotency key derived from its `SubscriptionChange`
row and its parameters, followed by a re-read of the subscription (`subscription_sync`, the
path the `customer.subscription.*` webhooks take): our licenses change only from what Stripe
then holds, never from the request itself.

The refund rule (also on the license page and in the README): cancelling now ends access at
once with no refund for the rest of the paid period (`prorate=false`); usage so far is billed
at once (`invoice_now=true`). An upgrade is charged at once for the rest of the period, less the
unused part of the old plan (`always_invoice`), the amount Stripe's preview showed the buyer first
(`subscription_switch_preview`, same update, same `proration_date`); a downgrade takes effect at
the period end, so nothing is credited (`proration_behavior=none`: the lower price is billed from
the renewal).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import stripe
from django.db.models import Max
from django.utils import timezone

from billing import stripe_client
from billing.models import (
    LIVE_LICENSE_STATUSES,
    CreatorSubscription,
    License,
    LicenseEvent,
    Plan,
    PlanKind,
    PlanPrice,
    StripeCustomer,
    SubscriptionChange,
    SubscriptionChangeKind,
    SubscriptionChangeStatus,
)
from billing.selectors import license_live_for, plan_price_latest
from billing.services.plans import ENDED_SUBSCRIPTION_STATUSES, plan_stripe_sync
from billing.services.subscriptions import RECURRING_KINDS, plan_anchor_prices, subscription_sync
from common.exceptions import ApplicationError, NotFoundError

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

# A request Stripe never answered is retried with its own row (and key) for this long; Stripe
# keeps idempotency keys for 24 hours.
CHANGE_REUSE = timedelta(hours=23)


def _subscription_license(*, buyer: User, license_id: int) -> tuple[License, CreatorSubscription]:
    """The buyer's live subscription license and its subscription, re-read from Stripe first so
    a change is built from Stripe's current items."""
    lic = (
        License.objects.select_related("plan", "plan_price", "creator_subscription")
        .filter(pk=license_id, buyer_id=buyer.pk)
        .first()
    )
    if lic is None:
        raise NotFoundError("Not found.")
    row = lic.creator_subscription
    if row is None:
        raise ApplicationError("This license is not part of a subscription.")
    if lic.status not in LIVE_LICENSE_STATUSES or row.status in ENDED_SUBSCRIPTION_STATUSES:
        raise ApplicationError("This subscription has ended.")
    subscription_sync(stripe_subscription_id=row.stripe_subscription_id)
    row.refresh_from_db()
    lic.refresh_from_db()
    if lic.status not in LIVE_LICENSE_STATUSES or row.status in ENDED_SUBSCRIPTION_STATUSES:
        raise ApplicationError("This subscription has ended.")
    return lic, row


def _change_open(
    *,
    row: CreatorSubscription,
    kind: str,
    params: dict[str, Any],
    license: License | None = None,
    to_plan: Plan | None = None,
    effective_at: Any = None,
) -> SubscriptionChange:
    """This request's row: the same request still unanswered by Stripe (a retry after an
    outage) reuses its row and so its idempotency key; anything else is a new row."""
    existing = (
        SubscriptionChange.objects.filter(
            creator_subscription=row,
            license=license,
            kind=kind,
            to_plan=to_plan,
            status=SubscriptionChangeStatus.REQUESTED,
            created_at__gte=timezone.now() - CHANGE_REUSE,
        )
        .order_by("-pk")
        .first()
    )
    if existing is not None and existing.params == params:
        return existing
    return SubscriptionChange.objects.create(
        creator_subscription=row,
        license=license,
        kind=kind,
        from_plan=license.plan if license else None,
        to_plan=to_plan,
        params=params,
        effective_at=effective_at,
    )


def _send(change: SubscriptionChange, *, delete: bool = False) -> None:
    """One Stripe call for the change, keyed by (change pk, parameters). Stripe refusing it
    (a card declined, an invalid change) marks it failed with Stripe's message; Stripe not
    answering leaves it requested for the retry (`PaymentsUnavailable` from the caller)."""
    row = change.creator_subscription
    key = stripe_client.idempotency_key("sub-change", change.pk, params=change.params)
    subs = stripe_client.get_client().v1.subscriptions
    try:
        if delete:
            subs.cancel(
                row.stripe_subscription_id,
                params=change.params,
                options={"idempotency_key": key},
            )
        else:
            subs.update(
                row.stripe_subscription_id,
                params=change.params,
                options={"idempotency_key": key},
            )
    except (stripe.InvalidRequestError, stripe.CardError, stripe.IdempotencyError) as exc:
        message = str(getattr(exc, "user_message", "") or exc)[:500]
        change.status = SubscriptionChangeStatus.FAILED
        change.error = message
        change.save(update_fields=["status", "error"])
        logger.warning(
            "billing.subscription_change_refused",
            extra={"change_id": change.pk, "kind": change.kind},
        )
        raise ApplicationError(f"Stripe refused the change: {message}") from exc
    change.status = SubscriptionChangeStatus.SENT
    change.save(update_fields=["status"])
    logger.info(
        "billing.subscription_change_sent", extra={"change_id": change.pk, "kind": change.kind}
    )


def _finish(row: CreatorSubscription) -> CreatorSubscription:
    """Re-read the subscription (our state follows Stripe's answer) and return our row."""
    subscription_sync(stripe_subscription_id=row.stripe_subscription_id)
    row.refresh_from_db()
    return row


@stripe_client.unavailable_as_error()
def subscription_cancel_at_period_end(*, buyer: User, license_id: int) -> CreatorSubscription:
    """Stop renewing: every plan on this subscription (one per creator) keeps working until the
    period end, then ends (`customer.subscription.deleted`). Idempotent: already set is a no-op."""
    lic, row = _subscription_license(buyer=buyer, license_id=license_id)
    if row.cancel_at_period_end:
        return row
    params = {"cancel_at_period_end": True}
    change = _change_open(
        row=row, kind=SubscriptionChangeKind.CANCEL_AT_PERIOD_END, params=params, license=lic
    )
    _send(change)
    return _finish(row)


@stripe_client.unavailable_as_error()
def subscription_resume(*, buyer: User, license_id: int) -> CreatorSubscription:
    """Take back a cancellation at the period end before the period ends (renews again).
    Idempotent: a subscription that is not ending is left alone."""
    lic, row = _subscription_license(buyer=buyer, license_id=license_id)
    if not row.cancel_at_period_end:
        return row
    params = {"cancel_at_period_end": False}
    change = _change_open(row=row, kind=SubscriptionChangeKind.RESUME, params=params, license=lic)
    _send(change)
    return _finish(row)


def _items_of(row: CreatorSubscription, plan: Plan) -> tuple[str | None, str | None]:
    """(licensed item id, metered item id) of `plan` on the subscription, from the last re-read."""
    anchors = plan_anchor_prices(plan) if plan.kind == PlanKind.SUBSCRIPTION else set()
    licensed = next((si for price, si in row.items.items() if price in anchors), None)
    metered = row.items.get(plan.stripe_metered_price_id) if plan.stripe_metered_price_id else None
    return licensed, metered


@stripe_client.unavailable_as_error()
def subscription_cancel_now(*, buyer: User, license_id: int) -> CreatorSubscription:
    """End this plan at once, with no refund for the rest of the period. The only plan on the
    subscription: the subscription is cancelled (`DELETE`, usage so far invoiced now). One of
    several: its items are removed (its usage so far is billed on the next invoice) and the
    other plans go on. The license ends when the re-read shows it."""
    lic, row = _subscription_license(buyer=buyer, license_id=license_id)
    others = row.licenses.filter(status__in=LIVE_LICENSE_STATUSES).exclude(pk=lic.pk).exists()
    if not others:
        params: dict[str, Any] = {"invoice_now": True, "prorate": False}
        change = _change_open(
            row=row, kind=SubscriptionChangeKind.CANCEL_NOW, params=params, license=lic
        )
        _send(change, delete=True)
        return _finish(row)
    licensed, metered = _items_of(row, lic.plan)
    items = [{"id": si, "deleted": True} for si in (licensed, metered) if si]
    params = {"items": items, "proration_behavior": "none"}
    change = _change_open(
        row=row, kind=SubscriptionChangeKind.REMOVE_PLAN, params=params, license=lic
    )
    _send(change)
    return _finish(row)


def monthly_amount(plan: Plan, price: PlanPrice) -> int:
    """The fixed monthly price that decides upgrade (now) or downgrade (at the period end)."""
    return price.unit_amount if plan.kind == PlanKind.SUBSCRIPTION else 0


def switch_options(*, license: License) -> list[tuple[Plan, PlanPrice, bool]]:
    """Plans this subscription license can switch to: other active recurring plans of its
    listing in its currency that the buyer does not hold, each with its newest price and
    whether it is an upgrade."""
    held = set(
        License.objects.filter(
            buyer_id=license.buyer_id, status__in=LIVE_LICENSE_STATUSES
        ).values_list("plan_id", flat=True)
    )
    current = monthly_amount(license.plan, license.plan_price)
    out = []
    for plan in Plan.objects.filter(
        listing_id=license.listing_id,
        active=True,
        kind__in=RECURRING_KINDS,
        currency=license.plan.currency,
    ).order_by("pk"):
        if plan.pk in held:
            continue
        price = PlanPrice.objects.filter(plan=plan).order_by("-version").first()
        if price is not None:
            out.append((plan, price, monthly_amount(plan, price) > current))
    return out


@dataclass(frozen=True)
class _Switch:
    """A plan switch worked out from the subscription Stripe holds now (not yet sent)."""

    license: License
    row: CreatorSubscription
    target: Plan
    price: PlanPrice
    upgrade: bool
    items: list[dict[str, Any]]

    def params(self, *, proration_date: int | None = None) -> dict[str, Any]:
        """The `subscriptions.update` parameters; an upgrade previewed at `proration_date` is
        sent with that same date, so Stripe's charge is the previewed one."""
        params: dict[str, Any] = {
            "items": self.items,
            "proration_behavior": "always_invoice" if self.upgrade else "none",
        }
        if self.upgrade and proration_date is not None:
            params["proration_date"] = proration_date
        return params


def _switch_plan(*, buyer: User, license_id: int, plan_id: int) -> _Switch:
    """Check a switch is allowed and build its item changes from Stripe's current items."""
    lic, row = _subscription_license(buyer=buyer, license_id=license_id)
    target = Plan.objects.filter(
        pk=plan_id, listing_id=lic.listing_id, active=True, kind__in=RECURRING_KINDS
    ).first()
    if target is None or target.currency != lic.plan.currency:
        raise NotFoundError("This plan is not available.")
    if target.pk == lic.plan_id:
        raise ApplicationError("You are already on this plan.")
    if license_live_for(buyer=buyer, plan=target) is not None:
        raise ApplicationError("You already have a license for that plan.")
    if row.cancel_at_period_end:
        raise ApplicationError(
            "Your subscription ends at the period end; resume it before switching plans."
        )
    if SubscriptionChange.objects.filter(
        license=lic, kind=SubscriptionChangeKind.DOWNGRADE, status=SubscriptionChangeStatus.SENT
    ).exists():
        raise ApplicationError("A plan switch is already scheduled for the period end.")
    price = plan_price_latest(plan=target)
    if not target.stripe_product_id or (
        (target.kind == PlanKind.SUBSCRIPTION and not price.stripe_price_id)
        or (target.is_metered and not target.stripe_metered_price_id)
    ):
        target = plan_stripe_sync(plan_id=target.pk)
        price.refresh_from_db()
    upgrade = monthly_amount(target, price) > monthly_amount(lic.plan, lic.plan_price)
    licensed, metered = _items_of(row, lic.plan)
    items: list[dict[str, Any]] = []
    if target.kind == PlanKind.SUBSCRIPTION:
        if licensed:
            items.append({"id": licensed, "price": price.stripe_price_id})
        else:
            items.append({"price": price.stripe_price_id, "quantity": 1})
    elif licensed:
        items.append({"id": licensed, "deleted": True})
    if upgrade:
        # Overage meters follow the plan at once; a downgrade's wait for `items_tidy`.
        new_metered = target.stripe_metered_price_id if target.is_metered else ""
        if metered and row.items.get(new_metered) != metered:
            items.append({"id": metered, "deleted": True})
        if new_metered and new_metered not in row.items:
            items.append({"price": new_metered})
    return _Switch(license=lic, row=row, target=target, price=price, upgrade=upgrade, items=items)


def _quote_digest(params: dict[str, Any]) -> str:
    """A short fingerprint of the update a preview priced: confirming a different update (a
    new price of the plan, other items on the subscription) is refused as stale."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# How long a preview's proration date may be used by the switch it priced.
QUOTE_MAX_AGE = timedelta(minutes=15)


class SwitchQuoteStale(ApplicationError):
    """The previewed switch is no longer the one that would be sent (the plan's price or the
    subscription changed, the preview is too old): show a fresh preview instead."""

    def __init__(self, message: str = "The price shown is out of date.") -> None:
        super().__init__(message, extra={"code": "quote_stale"})


@dataclass(frozen=True)
class SwitchQuote:
    """What a plan switch costs, from Stripe's own preview of that exact update (amounts in
    minor units of `currency`). An upgrade charges `amount_due` now: `charge` for the rest of
    the period on the new plan less `credit` for the unused time of the old one, plus `usage`
    (calls so far on an overage meter that goes away), less `balance_applied` from the
    customer's credit balance. A downgrade charges nothing now and moves at `effective_at`.
    Confirm with `subscription_plan_switch(..., proration_date=, quote_digest=)`."""

    license: License
    from_plan: Plan
    to_plan: Plan
    to_price: PlanPrice
    upgrade: bool
    currency: str
    effective_at: datetime | None
    renews_at: datetime | None
    proration_date: int | None
    amount_due: int
    credit: int
    charge: int
    usage: int
    balance_applied: int
    digest: str


@stripe_client.unavailable_as_error()
def subscription_switch_preview(*, buyer: User, license_id: int, plan_id: int) -> SwitchQuote:
    """Price a plan switch before it happens. An upgrade is previewed with Stripe's
    `POST /v1/invoices/create_preview` (`subscription_details[items]`, `always_invoice` and a
    `proration_date` of now), the same update `subscription_plan_switch` then sends with that
    same date, so the charge equals the preview. A downgrade charges nothing now. Changes
    nothing at Stripe but the plan's Stripe catalogue objects (made if missing)."""
    sw = _switch_plan(buyer=buyer, license_id=license_id, plan_id=plan_id)
    lic, row = sw.license, sw.row
    at: int | None = None
    amount_due = credit = charge = usage = balance_applied = 0
    if sw.upgrade:
        at = int(time.time())
        params: Any = {
            "subscription": row.stripe_subscription_id,
            "subscription_details": sw.params(proration_date=at),
        }
        try:
            inv = stripe_client.get_client().v1.invoices.create_preview(params=params).to_dict()
        except stripe.InvalidRequestError as exc:
            message = str(getattr(exc, "user_message", "") or exc)[:500]
            raise ApplicationError(f"Stripe cannot price this switch: {message}") from exc
        for line in (inv.get("lines") or {}).get("data") or []:
            amount = int(line["amount"])
            parent = (line.get("parent") or {}).get("subscription_item_details") or {}
            if not parent.get("proration"):
                usage += amount
            elif amount < 0:
                credit -= amount
            else:
                charge += amount
        amount_due = int(inv["amount_due"])
        balance_applied = max(int(inv["total"]) - amount_due, 0)
    return SwitchQuote(
        license=lic,
        from_plan=lic.plan,
        to_plan=sw.target,
        to_price=sw.price,
        upgrade=sw.upgrade,
        currency=lic.plan.currency,
        effective_at=(
            datetime.fromtimestamp(at, tz=UTC) if at is not None else row.current_period_end
        ),
        renews_at=row.current_period_end,
        proration_date=at,
        amount_due=amount_due,
        credit=credit,
        charge=charge,
        usage=usage,
        balance_applied=balance_applied,
        digest=_quote_digest(sw.params(proration_date=at)),
    )


@stripe_client.unavailable_as_error()
def subscription_plan_switch(
    *,
    buyer: User,
    license_id: int,
    plan_id: int,
    proration_date: int | None = None,
    quote_digest: str = "",
) -> SubscriptionChange:
    """Move this license to another plan of the same listing, keeping its keys.

    Upgrade (a higher monthly price): now, charged at once for the rest of the period less the
    old plan's unused part (`always_invoice`), prorated at `proration_date` when a preview
    priced it (`subscription_switch_preview`; `quote_digest` then must match the update
    built now, else `SwitchQuoteStale`). Downgrade: the lower price is put on the
    subscription now without proration, so the renewal bills it, and the license moves at the
    period end (`effective_at`); until then the paid-for plan keeps working. Either way the
    license moves in `subscription_sync` once Stripe shows the change.
    """
    sw = _switch_plan(buyer=buyer, license_id=license_id, plan_id=plan_id)
    lic, row, target, upgrade, items = sw.license, sw.row, sw.target, sw.upgrade, sw.items
    if proration_date is not None and upgrade:
        now = timezone.now()
        when = datetime.fromtimestamp(proration_date, tz=UTC)
        if when > now or when < now - QUOTE_MAX_AGE:
            raise SwitchQuoteStale("The price shown is too old.")
        if row.current_period_start and when < row.current_period_start:
            raise SwitchQuoteStale("A new billing period has started since the price was shown.")
    params = sw.params(proration_date=proration_date)
    if quote_digest and quote_digest != _quote_digest(params):
        raise SwitchQuoteStale("The plan's price or your subscription changed.")
    kind = SubscriptionChangeKind.UPGRADE if upgrade else SubscriptionChangeKind.DOWNGRADE
    change = _change_open(
        row=row,
        kind=kind,
        params=params,
        license=lic,
        to_plan=target,
        effective_at=None if upgrade else row.current_period_end,
    )
    if items:
        _send(change)
    else:  # nothing to change at Stripe before the period end (metered plans of equal price)
        change.status = SubscriptionChangeStatus.SENT
        change.save(update_fields=["status"])
    _finish(row)
    change.refresh_from_db()
    return change


@stripe_client.unavailable_as_error()
def subscription_plan_add(
    *, buyer: User, plan: Plan, price: PlanPrice, row: CreatorSubscription
) -> License:
    """A second (third, ...) plan from the same creator joins the buyer's one subscription
    with them, charged at once for the rest of the period (`always_invoice`); it gets its own
    license when the re-read shows its items. Call with the plan's Stripe objects made."""
    subscription_sync(stripe_subscription_id=row.stripe_subscription_id)
    row.refresh_from_db()
    if row.cancel_at_period_end:
        raise ApplicationError(
            "Your subscription with this creator ends at the period end; resume it on your "
            "license page before adding a plan.",
            extra={"code": "subscription_ending"},
        )
    items: list[dict[str, Any]] = []
    if plan.kind == PlanKind.SUBSCRIPTION:
        items.append({"price": price.stripe_price_id, "quantity": 1})
    if plan.is_metered and plan.stripe_metered_price_id not in row.items:
        items.append({"price": plan.stripe_metered_price_id})
    params = {"items": items, "proration_behavior": "always_invoice"}
    change = _change_open(
        row=row, kind=SubscriptionChangeKind.ADD_PLAN, params=params, to_plan=plan
    )
    _send(change)
    _finish(row)
    lic = license_live_for(buyer=buyer, plan=plan)
    if lic is None:
        raise ApplicationError(
            "Stripe accepted the plan but it is not on your subscription yet; reload in a moment."
        )
    return lic


def creator_subscription_items_tidy(*, creator_subscription_id: int) -> int:
    """Keep the overage meter items in step with the licenses' plans: add the metered price of
    each live license's plan, remove metered prices of our plans no live license is on (their
    usage so far is billed on the next invoice). Runs after a license changed plan (a due
    downgrade, a portal switch). Returns the number of items changed.

    No lock over the network; idempotent: nothing to change sends nothing, and the key covers
    the subscription, the latest license history row and the parameters, so a retry replays."""
    row = CreatorSubscription.objects.get(pk=creator_subscription_id)
    if row.status in ENDED_SUBSCRIPTION_STATUSES:
        return 0
    row = _finish(row)
    wanted = {
        plan.stripe_metered_price_id
        for plan in Plan.objects.filter(
            licenses__creator_subscription=row, licenses__status__in=LIVE_LICENSE_STATUSES
        )
        if plan.is_metered and plan.stripe_metered_price_id
    }
    ours = set(
        Plan.objects.filter(stripe_metered_price_id__in=list(row.items)).values_list(
            "stripe_metered_price_id", flat=True
        )
    )
    stale = sorted(row.items[p] for p in ours - wanted)
    missing = sorted(wanted - set(row.items))
    if not stale and not missing:
        return 0
    if len(stale) >= len(row.items) and not missing:
        return 0  # Stripe keeps at least one item; cancelling is the buyer's decision
    items = [{"id": si, "deleted": True} for si in stale] + [{"price": p} for p in missing]
    params = {"items": items, "proration_behavior": "none"}
    last = LicenseEvent.objects.filter(license__creator_subscription=row).aggregate(m=Max("pk"))
    key = stripe_client.idempotency_key("sub-tidy", row.pk, last["m"] or 0, params=params)
    stripe_client.get_client().v1.subscriptions.update(
        row.stripe_subscription_id,
        params=params,  # type: ignore[arg-type]
        options={"idempotency_key": key},
    )
    logger.info(
        "billing.subscription_items_tidied",
        extra={"creator_subscription_id": row.pk, "removed": len(stale), "added": len(missing)},
    )
    _finish(row)
    return len(items)


# Portal sessions are short-lived; a retry within the same minute reuses the same session.
PORTAL_KEY_WINDOW_SECONDS = 60


@stripe_client.unavailable_as_error()
def billing_portal_session_create(*, buyer: User, return_url: str) -> str:
    """Stripe's customer portal for cards, invoices, cancelling and switching among the plans
    of the listings the buyer subscribes to. Returns the portal URL. Its changes come back as
    `customer.subscription.*` webhooks like ours."""
    customer = StripeCustomer.objects.filter(user_id=buyer.pk).first()
    if customer is None:
        raise ApplicationError("You have no billing account yet: buy a plan first.")
    listing_ids = set(
        License.objects.filter(
            buyer_id=buyer.pk,
            status__in=LIVE_LICENSE_STATUSES,
            creator_subscription__isnull=False,
        ).values_list("listing_id", flat=True)
    )
    products = []
    for plan in Plan.objects.filter(
        listing_id__in=listing_ids, active=True, kind=PlanKind.SUBSCRIPTION
    ).order_by("pk"):
        price = PlanPrice.objects.filter(plan=plan).order_by("-version").first()
        if plan.stripe_product_id and price is not None and price.stripe_price_id:
            products.append({"product": plan.stripe_product_id, "prices": [price.stripe_price_id]})
    features: dict[str, Any] = {
        "invoice_history": {"enabled": True},
        "payment_method_update": {"enabled": True},
        "subscription_cancel": {"enabled": True, "mode": "at_period_end"},
    }
    if len(products) >= 2:
        features["subscription_update"] = {
            "enabled": True,
            "default_allowed_updates": ["price"],
            "proration_behavior": "always_invoice",
            "products": products,
        }
    conf_params = {"features": features}
    client = stripe_client.get_client()
    conf = client.v1.billing_portal.configurations.create(
        params=conf_params,  # type: ignore[arg-type]
        options={
            "idempotency_key": stripe_client.idempotency_key(
                "portal-conf", buyer.pk, params=conf_params
            )
        },
    )
    params = {
        "customer": customer.stripe_customer_id,
        "return_url": return_url,
        "configuration": conf["id"],
    }
    window = int(time.time()) // PORTAL_KEY_WINDOW_SECONDS
    session = client.v1.billing_portal.sessions.create(
        params=params,  # type: ignore[arg-type]
        options={
            "idempotency_key": stripe_client.idempotency_key(
                "portal", buyer.pk, window, params=params
            )
        },
    )
    return str(session["url"])

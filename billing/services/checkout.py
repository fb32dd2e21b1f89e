"""Checkout: start a Stripe Checkout Session for a plan, and fulfil it (from the webhook or the
success page, whichever comes first; both are safe to run twice and concurrently)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing import stripe_client
from billing.lock_objects import checkout_order_lock, checkout_order_lock_by_session
from billing.models import (
    CheckoutOrder,
    ConnectAccount,
    Creator,
    CreatorSubscription,
    License,
    LicenseSource,
    OrderStatus,
    Plan,
    PlanKind,
    PlanPrice,
    Sale,
    SaleKind,
    StripeCustomer,
)
from billing.selectors import license_live_for, plan_price_latest
from billing.services.licenses import USABLE_FOR_NEW_KEYS, api_key_create, license_issue
from billing.services.notices import purchase_notify
from billing.services.plans import plan_stripe_sync
from common.exceptions import ApplicationError, NotFoundError

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

LIVE_SUBSCRIPTION_STATUSES = ("active", "trialing", "past_due", "unpaid", "incomplete", "paused")


def _obj_id(value: Any) -> str:
    if isinstance(value, str):
        return value
    return str(value.get("id") or "") if isinstance(value, dict) else ""


def fee_amount(*, gross: int, bps: int) -> int:
    """Our cut of a sale in minor units (half-up rounding)."""
    return (gross * bps + 5000) // 10000


def stripe_customer_ensure(*, user: User) -> str:
    """The buyer's platform Customer id, created once (key derived from the user id, so a retry
    or a concurrent request gets the same customer; the unique row settles the race)."""
    row = StripeCustomer.objects.filter(user_id=user.pk).first()
    if row is not None:
        return row.stripe_customer_id
    customer = stripe_client.get_client().v1.customers.create(
        params={"email": getattr(user, "email", "") or "", "metadata": {"user_id": str(user.pk)}},
        options={"idempotency_key": stripe_client.idempotency_key("customer", user.pk)},
    )
    try:
        with transaction.atomic():
            StripeCustomer.objects.create(user_id=user.pk, stripe_customer_id=customer["id"])
    except IntegrityError:
        pass
    return StripeCustomer.objects.get(user_id=user.pk).stripe_customer_id


def _seller(plan: Plan) -> tuple[Creator, ConnectAccount]:
    """The payable creator behind a plan, or a clear refusal (before any Stripe call)."""
    owner_id = plan.listing.owner_id
    if owner_id is None:
        raise ApplicationError("This listing is not for sale.")
    creator = Creator.objects.select_related("connect").filter(user_id=owner_id).first()
    if creator is None:
        raise ApplicationError("This listing is not for sale.")
    account = getattr(creator, "connect", None)
    if account is None or not account.is_payable:
        raise ApplicationError(
            "The creator has not finished setting up payouts yet, so this plan cannot be bought.",
            extra={"code": "creator_not_payable"},
        )
    return creator, account


@stripe_client.unavailable_as_error()
def checkout_start(
    *, buyer: User, plan: Plan, success_url: str, cancel_url: str
) -> tuple[str | None, License | None]:
    """Begin buying `plan`. Returns (checkout url, None) for paid plans, or (None, license) for
    a free plan, which is granted at once, and for a subscription plan from a creator the buyer
    already subscribes to, which joins that subscription (charged now for the rest of the
    period with the card on file).

    Refuses without any Stripe call when the creator is not payable or the buyer already holds
    a live license. The order row is written first; the session is created with a key derived
    from the order id, so a retried request cannot open two sessions for one order.
    `success_url` should contain `{CHECKOUT_SESSION_ID}`. Stripe unreachable:
    `PaymentsUnavailable` (503); an order written before it stays pending without a session,
    and the retry reuses it (and its idempotency key).
    """
    plan = Plan.objects.select_related("listing").get(pk=plan.pk)
    if not plan.active:
        raise NotFoundError("This plan is not available.")
    if license_live_for(buyer=buyer, plan=plan) is not None:
        raise ApplicationError("You already have a license for this plan.")
    price = plan_price_latest(plan=plan)
    if plan.kind == PlanKind.FREE:
        lic = license_issue(
            buyer=buyer, plan=plan, plan_price=price, source=LicenseSource.FREE, reason="free plan"
        )
        return None, lic
    creator, account = _seller(plan)
    mode = "payment" if plan.kind == PlanKind.ONE_TIME else "subscription"
    # One Stripe subscription per buyer and creator (its transfer destination is the creator's
    # account): a further plan from the same creator is added to it, not bought in Checkout.
    live_row = (
        CreatorSubscription.objects.filter(
            buyer_id=buyer.pk, creator=creator, status__in=LIVE_SUBSCRIPTION_STATUSES
        ).first()
        if mode == "subscription"
        else None
    )
    needs_sync = (
        not plan.stripe_product_id
        or (plan.is_metered and not plan.stripe_metered_price_id)
        or (plan.kind in (PlanKind.ONE_TIME, PlanKind.SUBSCRIPTION) and not price.stripe_price_id)
    )
    if needs_sync:
        plan = plan_stripe_sync(plan_id=plan.pk)
        price.refresh_from_db()
    if live_row is not None:
        # Imported here: subscription_changes builds on subscriptions, which builds on us.
        from billing.services.subscription_changes import subscription_plan_add

        return None, subscription_plan_add(buyer=buyer, plan=plan, price=price, row=live_row)
    customer_id = stripe_customer_ensure(user=buyer)
    order = _pending_order(buyer=buyer, plan=plan, price=price, creator=creator, mode=mode)
    if order.checkout_url:
        return order.checkout_url, None  # a second click reuses the open session
    price, bps = order.plan_price, order.platform_fee_bps
    metadata = {
        "order_id": str(order.pk),
        "plan_id": str(plan.pk),
        "buyer_id": str(buyer.pk),
        "creator_id": str(creator.pk),
    }
    params: dict[str, Any] = {
        "mode": mode,
        "customer": customer_id,
        "client_reference_id": str(order.pk),
        "success_url": success_url,
        "cancel_url": cancel_url,
        "metadata": metadata,
    }
    if mode == "payment":
        params["line_items"] = [{"price": price.stripe_price_id, "quantity": 1}]
        params["payment_intent_data"] = {
            "application_fee_amount": fee_amount(gross=price.unit_amount, bps=bps),
            "transfer_data": {"destination": account.stripe_account_id},
            "metadata": metadata,
        }
    else:
        items: list[dict[str, Any]] = []
        if plan.kind == PlanKind.SUBSCRIPTION:
            items.append({"price": price.stripe_price_id, "quantity": 1})
        if plan.is_metered:
            items.append({"price": plan.stripe_metered_price_id})  # metered: no quantity
        params["line_items"] = items
        params["subscription_data"] = {
            "application_fee_percent": bps / 100,
            "transfer_data": {"destination": account.stripe_account_id},
            "metadata": metadata,
        }
    session = stripe_client.get_client().v1.checkout.sessions.create(
        params=params,  # type: ignore[arg-type]
        options={"idempotency_key": stripe_client.idempotency_key("checkout", order.pk)},
    )
    order.stripe_session_id = session["id"]
    order.checkout_url = session["url"] or ""
    order.save(update_fields=["stripe_session_id", "checkout_url", "updated_at"])
    logger.info("billing.checkout_started", extra={"order_id": order.pk, "plan_id": plan.pk})
    return order.checkout_url, None


# Stripe keeps idempotency keys (and open sessions) for 24 h; a pending order older than this
# is retired and a new one made, so its key is never replayed past Stripe's memory.
PENDING_ORDER_REUSE = timedelta(hours=23)


def _pending_order(
    *, buyer: User, plan: Plan, price: PlanPrice, creator: Creator, mode: str
) -> CheckoutOrder:
    """The buyer's one pending order for this plan (a partial unique constraint), reused so a
    double click or a retry opens one session, with the same idempotency key."""
    now = timezone.now()
    existing = CheckoutOrder.objects.filter(
        buyer_id=buyer.pk, plan=plan, status=OrderStatus.PENDING
    ).first()
    if existing is not None:
        if existing.created_at > now - PENDING_ORDER_REUSE:
            return existing
        checkout_order_retire(order_id=existing.pk)
    try:
        with transaction.atomic():
            return CheckoutOrder.objects.create(
                buyer=buyer,
                plan=plan,
                plan_price=price,
                creator=creator,
                mode=mode,
                amount=price.unit_amount
                if plan.kind in (PlanKind.ONE_TIME, PlanKind.SUBSCRIPTION)
                else 0,
                currency=plan.currency,
                platform_fee_bps=settings.PLATFORM_FEE_BPS,
            )
    except IntegrityError:  # a concurrent request made it first
        return CheckoutOrder.objects.get(buyer_id=buyer.pk, plan=plan, status=OrderStatus.PENDING)


def checkout_order_retire(*, order_id: int) -> None:
    """Expire a stale pending order (its session is past Stripe's 24 h). Holds the order lock;
    only a pending order changes."""
    with transaction.atomic():
        order = checkout_order_lock(pk=order_id)
        if order.status == OrderStatus.PENDING:
            order.status = OrderStatus.EXPIRED
            order.save(update_fields=["status", "updated_at"])


def checkout_fulfil(*, session_id: str, stripe_event_id: str = "") -> License | None:
    """Grant what a completed Checkout Session paid for. Returns the license, or None while the
    session is not (yet) paid.

    Re-reads the session from Stripe (never trusts the caller's copy), then holds the order row
    lock: the first caller creates the license (and, for payment mode, the sale), later or
    concurrent callers find `order.license` and return it. The one-license-per-order and
    one-live-license-per-plan constraints back this up.
    """
    session = stripe_client.get_client().v1.checkout.sessions.retrieve(session_id).to_dict()
    if session["status"] != "complete" or session["payment_status"] not in (
        "paid",
        "no_payment_required",
    ):
        logger.info("billing.checkout_not_paid_yet", extra={"session": session_id})
        return None
    with transaction.atomic():
        order = checkout_order_lock_by_session(stripe_session_id=session_id)
        if order is None:
            logger.warning("billing.checkout_unknown_session", extra={"session": session_id})
            return None
        existing = License.objects.filter(order=order).first()
        if existing is not None:
            return existing
        sub_row = None
        if order.mode == "subscription":
            sub_id = _obj_id(session.get("subscription"))
            customer_id = _obj_id(session.get("customer"))
            if not sub_id or not customer_id:
                raise ApplicationError("A completed subscription session without a subscription.")
            sub_row = _creator_subscription_link(
                order=order, stripe_subscription_id=sub_id, stripe_customer_id=customer_id
            )
        lic = license_issue(
            buyer=order.buyer,
            plan=order.plan,
            plan_price=order.plan_price,
            source=LicenseSource.PURCHASE
            if order.mode == "payment"
            else LicenseSource.SUBSCRIPTION,
            reason="checkout completed",
            order=order,
            creator_subscription=sub_row,
            stripe_event_id=stripe_event_id,
        )
        if order.mode == "payment":
            order.stripe_payment_intent_id = _obj_id(session.get("payment_intent"))
            gross = int(session.get("amount_total") or order.amount)
            fee = fee_amount(gross=gross, bps=order.platform_fee_bps)
            Sale.objects.create(
                kind=SaleKind.ONE_TIME,
                source_ref=f"checkout:{session_id}",
                creator=order.creator,
                buyer=order.buyer,
                listing_id=order.plan.listing_id,
                license=lic,
                order=order,
                gross_amount=gross,
                platform_fee_bps=order.platform_fee_bps,
                platform_fee_amount=fee,
                net_amount=gross - fee,
                currency=order.currency,
                stripe_payment_intent_id=order.stripe_payment_intent_id,
            )
        order.status = OrderStatus.COMPLETED
        order.completed_at = timezone.now()
        order.save(
            update_fields=["status", "completed_at", "stripe_payment_intent_id", "updated_at"]
        )
        purchase_notify(order=order, license=lic)  # receipt and new sale, sent after commit
    logger.info("billing.checkout_fulfilled", extra={"order_id": order.pk, "license_id": lic.pk})
    return lic


def _creator_subscription_link(
    *, order: CheckoutOrder, stripe_subscription_id: str, stripe_customer_id: str
) -> CreatorSubscription:
    """The subscription row for this checkout, created if `customer.subscription.*` has not
    already made it. Call while holding the order lock."""
    row = CreatorSubscription.objects.filter(stripe_subscription_id=stripe_subscription_id).first()
    if row is not None:
        return row
    row = CreatorSubscription(
        buyer=order.buyer,
        creator=order.creator,
        stripe_subscription_id=stripe_subscription_id,
        stripe_customer_id=stripe_customer_id,
        status="active",
        platform_fee_bps=order.platform_fee_bps,
    )
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError:
        row = CreatorSubscription.objects.get(stripe_subscription_id=stripe_subscription_id)
    return row


def checkout_order_close(*, session_id: str, status: str) -> CheckoutOrder | None:
    """Mark a pending order expired or failed (session expired, async payment failed).
    Holds the order lock; a completed order is never reopened or closed."""
    with transaction.atomic():
        order = checkout_order_lock_by_session(stripe_session_id=session_id)
        if order is None or order.status != OrderStatus.PENDING:
            return order
        order.status = status
        order.save(update_fields=["status", "updated_at"])
    return order


def checkout_success_key_reveal(
    *, buyer: User, session_id: str
) -> tuple[License | None, str | None]:
    """Success page: fulfil if needed, then mint the license's first key on the buyer's first
    visit and return it raw exactly once; later visits get (license, None).

    Holds the order lock while minting so two tabs cannot both get a key.
    """
    order = CheckoutOrder.objects.filter(stripe_session_id=session_id, buyer_id=buyer.pk).first()
    if order is None:
        raise NotFoundError("Not found.")
    lic = checkout_fulfil(session_id=session_id)
    if lic is None:
        return None, None
    with transaction.atomic():
        locked = checkout_order_lock(pk=order.pk)
        if locked.first_key_id is not None:
            return lic, None
        lic.refresh_from_db()
        if lic.status not in USABLE_FOR_NEW_KEYS:
            return lic, None
        key, raw = api_key_create(license=lic, name="first key")
        locked.first_key = key
        locked.save(update_fields=["first_key", "updated_at"])
    return lic, raw

"""Subscriptions and invoices: mirror Stripe's subscription state onto our licenses, record
subscription revenue, and react to refunds and disputes."""

import logging
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from billing import stripe_client
from billing.lock_objects import creator_subscription_lock, licenses_lock
from billing.models import (
    LIVE_LICENSE_STATUSES,
    CheckoutOrder,
    CreatorSubscription,
    Dispute,
    DisputeStatus,
    License,
    LicenseEvent,
    LicenseSource,
    LicenseStatus,
    Plan,
    PlanKind,
    PlanPrice,
    Sale,
    SaleKind,
    SubscriptionChangeKind,
    SubscriptionChangeStatus,
)
from billing.selectors import plan_price_latest
from billing.services.checkout import fee_amount
from billing.services.licenses import (
    invalidate_licenses_on_commit,
    license_issue,
    license_set_status,
)
from billing.services.plans import ENDED_SUBSCRIPTION_STATUSES, plan_stripe_sync

logger = logging.getLogger(__name__)

# Stripe subscription status -> license status. Missing statuses (incomplete) change nothing.
SUBSCRIPTION_TO_LICENSE = {
    "active": LicenseStatus.ACTIVE,
    "trialing": LicenseStatus.ACTIVE,
    "past_due": LicenseStatus.PAST_DUE,
    "unpaid": LicenseStatus.SUSPENDED,
    "paused": LicenseStatus.SUSPENDED,
    "canceled": LicenseStatus.EXPIRED,
    "incomplete_expired": LicenseStatus.EXPIRED,
}


def _ts(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), tz=UTC) if value else None


def obj_id(value: Any) -> str:
    """An expandable field's id, whether Stripe sent the id or the expanded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return str(value.get("id") or "")
    return ""


def subscription_sync(
    *, stripe_subscription_id: str, stripe_event_id: str = ""
) -> CreatorSubscription | None:
    """Re-read the subscription from Stripe and mirror it onto our row and its licenses.

    Order-proof: whatever order `customer.subscription.*` / `invoice.*` events arrive in, each
    one stores Stripe's current state, so the last processed event leaves the right state.
    Holds the subscription row lock, then its licenses' locks (pk order). Idempotent: an
    unchanged status writes no history.
    """
    sub = (
        stripe_client.get_client()
        .v1.subscriptions.retrieve(stripe_subscription_id, params={"expand": ["items.data.price"]})
        .to_dict()
    )
    status = str(sub["status"])
    items = list((sub.get("items") or {}).get("data") or [])
    period_start = _ts(items[0]["current_period_start"]) if items else None
    period_end = _ts(items[0]["current_period_end"]) if items else None
    item_map = {obj_id(it["price"]): str(it["id"]) for it in items}
    with transaction.atomic():
        row = creator_subscription_lock(stripe_subscription_id=stripe_subscription_id)
        if row is None:
            row = _row_from_metadata(sub=sub, status=status)
            if row is None:
                logger.info("billing.subscription_unknown", extra={"sub": stripe_subscription_id})
                return None
        changed_period = row.current_period_start != period_start
        row.status = status
        row.cancel_at_period_end = bool(sub["cancel_at_period_end"])
        row.current_period_start = period_start
        row.current_period_end = period_end
        row.items = item_map
        row.save()
        if status not in ENDED_SUBSCRIPTION_STATUSES:
            plans_moved = _licenses_follow_items(row=row, stripe_event_id=stripe_event_id)
            if plans_moved:
                transaction.on_commit(lambda: _items_tidy_later(row.pk))
        else:
            row.changes.filter(status=SubscriptionChangeStatus.SENT).update(
                status=SubscriptionChangeStatus.APPLIED, applied_at=timezone.now()
            )
        target = SUBSCRIPTION_TO_LICENSE.get(status)
        license_ids = list(row.licenses.values_list("pk", flat=True))
        disputed = set(
            Dispute.objects.filter(
                license_id__in=license_ids, status=DisputeStatus.OPEN
            ).values_list("license_id", flat=True)
        )
        for lic in licenses_lock(pks=license_ids):
            if target == LicenseStatus.ACTIVE and lic.pk in disputed:
                continue  # suspended until its dispute closes (billing.services.earnings)
            if target is not None:
                license_set_status(
                    license=lic,
                    to_status=target,
                    reason=f"subscription {status}",
                    stripe_event_id=stripe_event_id,
                )
        if changed_period:
            invalidate_licenses_on_commit(license_ids=license_ids)  # quota month moved
    return row


RECURRING_KINDS = (PlanKind.SUBSCRIPTION, PlanKind.PER_CALL)


def plan_anchor_prices(plan: Plan) -> set[str]:
    """The Stripe prices whose presence on a subscription means "this plan is on it": any
    version of a subscription plan's monthly price, or a pay-per-call plan's metered price.
    (A subscription's overage meter item is bookkeeping that `items_tidy` keeps in step.)"""
    if plan.kind == PlanKind.SUBSCRIPTION:
        return set(
            PlanPrice.objects.filter(plan=plan)
            .exclude(stripe_price_id="")
            .values_list("stripe_price_id", flat=True)
        )
    return {plan.stripe_metered_price_id} if plan.stripe_metered_price_id else set()


def _license_plan_set(
    *, license: License, plan: Plan, prices: set[str], reason: str, stripe_event_id: str
) -> None:
    """Move a live license to another plan of its listing, keeping its keys and history; the
    price version is the one on the subscription (else the newest). Call while holding the
    license lock; appends a history row and clears the keys' cache."""
    price = (
        PlanPrice.objects.filter(plan=plan, stripe_price_id__in=prices).order_by("-version").first()
        or PlanPrice.objects.filter(plan=plan).order_by("-version").first()
    )
    if price is None:
        raise ValueError(f"plan {plan.pk} has no price")
    old_name = license.plan.name
    license.plan = plan
    license.plan_price = price
    license.save(update_fields=["plan", "plan_price", "updated_at"])
    LicenseEvent.objects.create(
        license=license,
        from_status=license.status,
        to_status=license.status,
        reason=f"plan {old_name} -> {plan.name}: {reason}"[:200],
        stripe_event_id=stripe_event_id,
    )
    invalidate_licenses_on_commit(license_ids=[license.pk])
    logger.info(
        "billing.license_plan_switched",
        extra={"license_id": license.pk, "plan_id": plan.pk, "reason": reason},
    )


def _licenses_follow_items(*, row: CreatorSubscription, stripe_event_id: str) -> bool:
    """Make the row's licenses match the items Stripe holds (just re-read into `row.items`).

    Requested changes (`SubscriptionChange` rows Stripe accepted) apply once their effect is
    visible: an upgrade when the new plan's price is on the subscription, a downgrade when the
    period it waited for has started, an added plan gets its license, a removed plan's license
    ends. A plan that left the subscription without our request (the customer portal) moves
    its license to the one plan of the same listing that arrived instead, or ends it.
    Call inside a transaction holding the row lock. Returns whether a license changed plan
    (the overage meter items then need `items_tidy`). Idempotent: applied changes are skipped
    and a license already on its plan is left alone.
    """
    prices = set(row.items)
    now = timezone.now()
    moved = False
    handled: set[int] = set()
    pending = list(
        row.changes.filter(status=SubscriptionChangeStatus.SENT)
        .select_related("to_plan")
        .order_by("pk")
    )
    for change in pending:
        lic = licenses_lock(pks=[change.license_id])[0] if change.license_id else None
        done = True
        if lic is not None:
            handled.add(lic.pk)
        kind = change.kind
        if kind == SubscriptionChangeKind.UPGRADE and lic is not None and change.to_plan:
            done = bool(plan_anchor_prices(change.to_plan) & prices)
            if done and lic.plan_id != change.to_plan_id and lic.status in LIVE_LICENSE_STATUSES:
                _license_plan_set(
                    license=lic,
                    plan=change.to_plan,
                    prices=prices,
                    reason="upgraded",
                    stripe_event_id=stripe_event_id,
                )
                moved = True
        elif kind == SubscriptionChangeKind.DOWNGRADE and lic is not None and change.to_plan:
            due = change.effective_at
            done = bool(row.current_period_start and due and row.current_period_start >= due)
            if done and lic.status in LIVE_LICENSE_STATUSES:
                _license_plan_set(
                    license=lic,
                    plan=change.to_plan,
                    prices=prices,
                    reason="downgraded at the period end",
                    stripe_event_id=stripe_event_id,
                )
                moved = True
        elif kind == SubscriptionChangeKind.REMOVE_PLAN and lic is not None:
            done = not (plan_anchor_prices(lic.plan) & prices)
            if done:
                license_set_status(
                    license=lic,
                    to_status=LicenseStatus.EXPIRED,
                    reason="plan removed from the subscription (cancelled now)",
                    stripe_event_id=stripe_event_id,
                )
        elif kind == SubscriptionChangeKind.ADD_PLAN and change.to_plan:
            done = bool(plan_anchor_prices(change.to_plan) & prices)
            held = License.objects.filter(
                buyer_id=row.buyer_id, plan=change.to_plan, status__in=LIVE_LICENSE_STATUSES
            ).exists()
            if done and not held:
                new = license_issue(
                    buyer=row.buyer,
                    plan=change.to_plan,
                    plan_price=plan_price_latest(plan=change.to_plan),
                    source=LicenseSource.SUBSCRIPTION,
                    reason="plan added to the subscription",
                    creator_subscription=row,
                    stripe_event_id=stripe_event_id,
                )
                handled.add(new.pk)
                moved = True
        if done:
            change.status = SubscriptionChangeStatus.APPLIED
            change.applied_at = now
            change.save(update_fields=["status", "applied_at"])
    others = [
        lic
        for lic in licenses_lock(
            pks=list(
                row.licenses.filter(status__in=LIVE_LICENSE_STATUSES).values_list("pk", flat=True)
            )
        )
        if lic.pk not in handled
    ]
    for lic in others:
        if plan_anchor_prices(lic.plan) & prices:
            continue
        held_plans = set(
            License.objects.filter(
                buyer_id=row.buyer_id, status__in=LIVE_LICENSE_STATUSES
            ).values_list("plan_id", flat=True)
        )
        arrived = [
            plan
            for plan in Plan.objects.filter(listing_id=lic.listing_id, kind__in=RECURRING_KINDS)
            if plan.pk not in held_plans and plan_anchor_prices(plan) & prices
        ]
        if len(arrived) == 1:
            _license_plan_set(
                license=lic,
                plan=arrived[0],
                prices=prices,
                reason="switched in the customer portal",
                stripe_event_id=stripe_event_id,
            )
            moved = True
        else:
            license_set_status(
                license=lic,
                to_status=LicenseStatus.EXPIRED,
                reason="plan no longer on the subscription",
                stripe_event_id=stripe_event_id,
            )
    return moved


def _items_tidy_later(creator_subscription_id: int) -> None:
    from billing.tasks import creator_subscription_items_tidy_task  # tasks import services

    creator_subscription_items_tidy_task.delay(creator_subscription_id)


def creator_subscription_price_update(*, creator_subscription_id: int) -> int:
    """Switch the subscription's monthly licensed Stripe item to the price version its licenses
    are on (after an increase's notice period, or at once for a decrease). Returns the number
    of items switched at Stripe.

    Invariant: a live license's subscription bills the monthly amount of `license.plan_price`
    from the next period on (`proration_behavior=none`: the current period stays paid as is).
    No lock is held over the network: the row is read, Stripe is called, then the subscription
    is re-read (`subscription_sync`, under its row lock) to mirror the new items, the same path
    the `customer.subscription.updated` webhook takes.
    Idempotent: an item already on a price with the target amount is skipped, and each call
    carries the key ("sub-price", subscription pk, price pk), so a retry after a dropped
    response replays Stripe's first answer instead of applying the change twice.
    """
    row = CreatorSubscription.objects.get(pk=creator_subscription_id)
    if row.status in ENDED_SUBSCRIPTION_STATUSES:
        return 0
    licenses = (
        License.objects.filter(
            creator_subscription=row,
            status__in=LIVE_LICENSE_STATUSES,
            plan__kind=PlanKind.SUBSCRIPTION,
        )
        .select_related("plan_price")
        .order_by("pk")
    )
    client = stripe_client.get_client()
    switched = 0
    for lic in licenses:
        target = lic.plan_price
        if not target.stripe_price_id:
            plan_stripe_sync(plan_id=lic.plan_id)
            target.refresh_from_db()
        versions = {
            p.stripe_price_id: p
            for p in PlanPrice.objects.filter(plan_id=lic.plan_id).exclude(stripe_price_id="")
        }
        for price_id, item_id in sorted(row.items.items()):
            held = versions.get(price_id)
            if held is None or held.pk == target.pk or held.unit_amount == target.unit_amount:
                continue
            client.v1.subscriptions.update(
                row.stripe_subscription_id,
                params={
                    "items": [{"id": item_id, "price": target.stripe_price_id}],
                    "proration_behavior": "none",
                },
                options={
                    "idempotency_key": stripe_client.idempotency_key("sub-price", row.pk, target.pk)
                },
            )
            switched += 1
            logger.info(
                "billing.subscription_price_switched",
                extra={
                    "creator_subscription_id": row.pk,
                    "license_id": lic.pk,
                    "from_price_id": held.pk,
                    "to_price_id": target.pk,
                },
            )
    if switched:
        subscription_sync(stripe_subscription_id=row.stripe_subscription_id)
    return switched


def _row_from_metadata(*, sub: dict[str, Any], status: str) -> CreatorSubscription | None:
    """`customer.subscription.created` can arrive before `checkout.session.completed`: build the
    row from the metadata we put on the subscription at checkout. Call inside a transaction."""
    meta = sub.get("metadata") or {}
    order_id = meta.get("order_id")
    order = CheckoutOrder.objects.filter(pk=order_id).first() if order_id else None
    if order is None:
        return None
    row = CreatorSubscription(
        buyer_id=order.buyer_id,
        creator_id=order.creator_id,
        stripe_subscription_id=str(sub["id"]),
        stripe_customer_id=obj_id(sub.get("customer")),
        status=status,
        platform_fee_bps=order.platform_fee_bps,
    )
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError:
        return creator_subscription_lock(stripe_subscription_id=str(sub["id"]))
    return creator_subscription_lock(stripe_subscription_id=str(sub["id"]))


def invoice_subscription_id(invoice: dict[str, Any]) -> str | None:
    """This API version has no `invoice.subscription`; it is under parent.subscription_details."""
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    return obj_id(details.get("subscription")) or None


def invoice_paid_record(*, invoice: dict[str, Any], stripe_event_id: str = "") -> Sale | None:
    """Record a paid subscription invoice as a sale (fee at the subscription's recorded rate),
    then re-sync the subscription. Idempotent: the sale's source_ref is the invoice id (unique).
    """
    sub_id = invoice_subscription_id(invoice)
    if not sub_id:
        return None
    sale = None
    row = CreatorSubscription.objects.filter(stripe_subscription_id=sub_id).first()
    if row is None:
        subscription_sync(stripe_subscription_id=sub_id, stripe_event_id=stripe_event_id)
        row = CreatorSubscription.objects.filter(stripe_subscription_id=sub_id).first()
    gross = int(invoice.get("amount_paid") or 0)
    if row is not None and gross > 0:
        lic = row.licenses.order_by("pk").first()
        fee = fee_amount(gross=gross, bps=row.platform_fee_bps)
        try:
            with transaction.atomic():
                sale = Sale.objects.create(
                    kind=SaleKind.INVOICE,
                    source_ref=f"invoice:{invoice['id']}",
                    creator=row.creator,
                    buyer=row.buyer,
                    listing_id=lic.listing_id if lic else _listing_id_from(invoice),
                    license=lic,
                    gross_amount=gross,
                    platform_fee_bps=row.platform_fee_bps,
                    platform_fee_amount=fee,
                    net_amount=gross - fee,
                    currency=str(invoice["currency"]),
                    stripe_invoice_id=str(invoice["id"]),
                )
        except IntegrityError:
            sale = Sale.objects.get(source_ref=f"invoice:{invoice['id']}")
    subscription_sync(stripe_subscription_id=sub_id, stripe_event_id=stripe_event_id)
    return sale


def _listing_id_from(invoice: dict[str, Any]) -> int:
    """The first invoice can be paid before checkout completes (no license yet): find the
    listing through the plan id we put in the subscription's metadata at checkout."""
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    plan_id = str((details.get("metadata") or {}).get("plan_id") or "")
    if not plan_id.isdigit():
        raise ValueError("invoice.paid for a subscription without our plan id")
    listing_id = Plan.objects.filter(pk=plan_id).values_list("listing_id", flat=True).first()
    if listing_id is None:
        raise ValueError("invoice.paid for a subscription whose plan is unknown")
    return int(listing_id)

"""Row locks for billing, always taken in one order (by kind, then pk) so that two services that
lock the same rows cannot deadlock. Call inside `transaction.atomic()`.

Order when several are needed: CheckoutOrder -> CreatorSubscription -> Sale -> Dispute ->
License -> ApiKey.
"""

from django.db.models import QuerySet

from billing.models import (
    ApiKey,
    CheckoutOrder,
    ConnectAccount,
    CreatorSubscription,
    Dispute,
    License,
    ListingClaim,
    Plan,
    Sale,
    StripeEvent,
)


def stripe_event_lock(*, pk: int) -> StripeEvent:
    return StripeEvent.objects.select_for_update().get(pk=pk)


def checkout_order_lock_by_session(*, stripe_session_id: str) -> CheckoutOrder | None:
    return (
        CheckoutOrder.objects.select_for_update()
        .filter(stripe_session_id=stripe_session_id)
        .first()
    )


def checkout_order_lock(*, pk: int) -> CheckoutOrder:
    return CheckoutOrder.objects.select_for_update().get(pk=pk)


def creator_subscription_lock(*, stripe_subscription_id: str) -> CreatorSubscription | None:
    return (
        CreatorSubscription.objects.select_for_update()
        .filter(stripe_subscription_id=stripe_subscription_id)
        .first()
    )


def licenses_lock(*, pks: list[int]) -> list[License]:
    """Lock many licenses in pk order (the same order everywhere avoids deadlocks)."""
    qs: QuerySet[License] = License.objects.select_for_update().filter(pk__in=pks).order_by("pk")
    return list(qs)


def license_lock(*, pk: int) -> License:
    return License.objects.select_for_update().get(pk=pk)


def api_key_lock(*, pk: int) -> ApiKey:
    return ApiKey.objects.select_for_update().get(pk=pk)


def connect_account_lock(*, stripe_account_id: str) -> ConnectAccount | None:
    return (
        ConnectAccount.objects.select_for_update()
        .filter(stripe_account_id=stripe_account_id)
        .first()
    )


def plan_lock(*, pk: int) -> Plan:
    return Plan.objects.select_for_update().get(pk=pk)


def claims_lock_pending(*, registry_names: list[str]) -> list[ListingClaim]:
    return list(
        ListingClaim.objects.select_for_update()
        .filter(registry_name__in=registry_names, status="pending")
        .order_by("pk")
    )


def sale_lock(*, pk: int) -> Sale:
    """The original sale's row: refunds of one payment are recorded one at a time."""
    return Sale.objects.select_for_update().get(pk=pk)


def dispute_lock(*, stripe_dispute_id: str) -> Dispute | None:
    return Dispute.objects.select_for_update().filter(stripe_dispute_id=stripe_dispute_id).first()

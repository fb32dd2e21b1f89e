"""Stripe event type -> handler. Every handler is idempotent and, where order matters, re-reads
the object from Stripe instead of trusting the event's snapshot (delivery is at-least-once and
unordered). Handlers run inside `stripe_event_process`, which holds the event row's lock.
"""

import logging
from collections.abc import Callable
from typing import Any

from billing.models import CheckoutOrder, OrderStatus, StripeEvent
from billing.services.checkout import checkout_fulfil, checkout_order_close
from billing.services.creators import connect_account_sync
from billing.services.earnings import charge_refunded, dispute_closed, dispute_created
from billing.services.events import EventNotReady
from billing.services.notices import (
    dispute_opened_notify,
    payment_failed_notify,
    subscription_change_notify,
)
from billing.services.subscriptions import (
    invoice_paid_record,
    invoice_subscription_id,
    obj_id,
    subscription_sync,
)

logger = logging.getLogger(__name__)


def _object(event: StripeEvent) -> dict[str, Any]:
    obj = event.payload.get("data", {}).get("object", {})
    return obj if isinstance(obj, dict) else {}


def handle_checkout_completed(event: StripeEvent) -> None:
    """Fulfil the order (re-reads the session; the order lock makes it once-only). A delayed
    payment method completes unpaid: `async_payment_succeeded` fulfils it later.

    Stripe can send the event before our own write of the session id has committed; with no
    order for the session yet, the event is retried later instead of being marked done.
    """
    session_id = str(_object(event)["id"])
    if not CheckoutOrder.objects.filter(stripe_session_id=session_id).exists():
        raise EventNotReady(f"no checkout order for session {session_id} yet")
    checkout_fulfil(session_id=session_id, stripe_event_id=event.stripe_event_id)


def handle_checkout_expired(event: StripeEvent) -> None:
    """Drop the pending order (a completed order is never touched)."""
    checkout_order_close(session_id=str(_object(event)["id"]), status=OrderStatus.EXPIRED)


def handle_checkout_async_failed(event: StripeEvent) -> None:
    checkout_order_close(session_id=str(_object(event)["id"]), status=OrderStatus.FAILED)


def handle_subscription_changed(event: StripeEvent) -> None:
    """created / updated / deleted all mean "re-read the subscription and mirror it"; the buyer
    hears once when it is set to end, and once when it ended."""
    row = subscription_sync(
        stripe_subscription_id=str(_object(event)["id"]), stripe_event_id=event.stripe_event_id
    )
    subscription_change_notify(row=row)


def handle_invoice_paid(event: StripeEvent) -> None:
    """Record the revenue (once per invoice id) and re-sync the subscription."""
    invoice_paid_record(invoice=_object(event), stripe_event_id=event.stripe_event_id)


def handle_invoice_payment_failed(event: StripeEvent) -> None:
    """Dunning: the subscription's status (past_due, later unpaid) drives the license."""
    invoice = _object(event)
    sub_id = invoice_subscription_id(invoice)
    if sub_id:
        row = subscription_sync(
            stripe_subscription_id=sub_id, stripe_event_id=event.stripe_event_id
        )
        payment_failed_notify(invoice=invoice, row=row)


def handle_account_updated(event: StripeEvent) -> None:
    """Re-read the connected account; store its charges/payouts flags."""
    account_id = event.account or obj_id(_object(event))
    connect_account_sync(stripe_account_id=account_id)


def handle_charge_refunded(event: StripeEvent) -> None:
    charge_refunded(charge=_object(event), stripe_event_id=event.stripe_event_id)


def handle_dispute_created(event: StripeEvent) -> None:
    row = dispute_created(dispute=_object(event), stripe_event_id=event.stripe_event_id)
    dispute_opened_notify(dispute=row)


def handle_dispute_closed(event: StripeEvent) -> None:
    """Won releases the hold; lost deducts it and reverses the creator's transfer."""
    dispute_closed(dispute=_object(event), stripe_event_id=event.stripe_event_id)


HANDLERS: dict[str, Callable[[StripeEvent], None]] = {
    "checkout.session.completed": handle_checkout_completed,
    "checkout.session.async_payment_succeeded": handle_checkout_completed,
    "checkout.session.async_payment_failed": handle_checkout_async_failed,
    "checkout.session.expired": handle_checkout_expired,
    "customer.subscription.created": handle_subscription_changed,
    "customer.subscription.updated": handle_subscription_changed,
    "customer.subscription.deleted": handle_subscription_changed,
    "invoice.paid": handle_invoice_paid,
    "invoice.payment_failed": handle_invoice_payment_failed,
    "account.updated": handle_account_updated,
    "charge.refunded": handle_charge_refunded,
    "charge.dispute.created": handle_dispute_created,
    "charge.dispute.closed": handle_dispute_closed,
}

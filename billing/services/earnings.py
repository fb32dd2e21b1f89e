"""What happens to a creator's earnings after a sale: refunds and disputes.

Every change is a row in the append-only `Sale` ledger (negative amounts), so statements are
sums over it. With destination charges Stripe moves the whole payment to the creator and takes
our fee back; a refund or a lost dispute is the platform's at Stripe first, and the creator's
share of it is taken back here (their ledger) and, for a lost dispute, at Stripe by reversing
their transfer (`POST /v1/transfers/{id}/reversals`, the fee refunded in proportion).

Shares are proportional to the original sale, rounded down like Stripe's proportional fee
refunds: the fee part of `amount` is `sale.platform_fee_amount * amount // sale.gross_amount`.
"""

from __future__ import annotations

import logging
from typing import Any

import stripe
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from billing import stripe_client
from billing.lock_objects import dispute_lock, licenses_lock, sale_lock
from billing.models import Dispute, DisputeStatus, License, LicenseStatus, Sale, SaleKind
from billing.services.licenses import license_set_status
from billing.services.subscriptions import invoice_subscription_id, obj_id, subscription_sync

logger = logging.getLogger(__name__)

_SOLD = (SaleKind.ONE_TIME, SaleKind.INVOICE)


def sale_for_payment(*, payment_intent_id: str) -> Sale | None:
    """The sale a payment made: a one-time sale records its PaymentIntent; an invoice sale is
    found through Stripe's invoice payments (this API version has no `charge.invoice`)."""
    if not payment_intent_id:
        return None
    sale = Sale.objects.filter(
        stripe_payment_intent_id=payment_intent_id, kind=SaleKind.ONE_TIME
    ).first()
    if sale is not None:
        return sale
    payments = stripe_client.get_client().v1.invoice_payments.list(
        params={"payment": {"type": "payment_intent", "payment_intent": payment_intent_id}}
    )
    for payment in payments.data:
        invoice_id = obj_id(payment["invoice"])
        sale = Sale.objects.filter(stripe_invoice_id=invoice_id, kind=SaleKind.INVOICE).first()
        if sale is not None:
            return sale
    return None


def _payment_intent_of(obj: dict[str, Any]) -> str:
    pi_id = obj_id(obj.get("payment_intent"))
    if not pi_id and isinstance(obj.get("charge"), dict):
        pi_id = obj_id(obj["charge"].get("payment_intent"))
    return pi_id


def _fee_part(sale: Sale, amount: int) -> int:
    return sale.platform_fee_amount * amount // sale.gross_amount if sale.gross_amount else 0


def _ledger_row(*, sale: Sale, kind: str, source_ref: str, amount: int) -> Sale | None:
    """A negative row taking `amount` of `sale` back (None if this source was recorded)."""
    fee = _fee_part(sale, amount)
    try:
        with transaction.atomic():
            return Sale.objects.create(
                kind=kind,
                source_ref=source_ref,
                creator_id=sale.creator_id,
                buyer_id=sale.buyer_id,
                listing_id=sale.listing_id,
                license_id=sale.license_id,
                order_id=sale.order_id,
                gross_amount=-amount,
                platform_fee_bps=sale.platform_fee_bps,
                platform_fee_amount=-fee,
                net_amount=-(amount - fee),
                currency=sale.currency,
                stripe_payment_intent_id=sale.stripe_payment_intent_id,
                stripe_invoice_id=sale.stripe_invoice_id,
            )
    except IntegrityError:
        return None  # an earlier delivery recorded it


def charge_refunded(*, charge: dict[str, Any], stripe_event_id: str = "") -> Sale | None:
    """Take a refund back from the creator's earnings, one-time sale or subscription invoice.

    `charge.amount_refunded` is cumulative and events arrive in any order, so the row records
    what is new since the rows already written (under the sale's lock); an older event then
    finds nothing new. A full refund of a one-time sale revokes its license (a subscription's
    access follows the subscription). Returns the original sale, or None if it is not ours.
    """
    original = sale_for_payment(payment_intent_id=_payment_intent_of(charge))
    if original is None:
        logger.info("billing.refund_unmatched", extra={"charge": charge.get("id")})
        return None
    refunded = int(charge.get("amount_refunded") or 0)
    with transaction.atomic():
        sale_lock(pk=original.pk)
        already = -(
            Sale.objects.filter(
                kind=SaleKind.REFUND,
                creator_id=original.creator_id,
                stripe_payment_intent_id=original.stripe_payment_intent_id,
                stripe_invoice_id=original.stripe_invoice_id,
            ).aggregate(total=Sum("gross_amount"))["total"]
            or 0
        )
        new = min(refunded, original.gross_amount) - already
        if new > 0:
            _ledger_row(
                sale=original,
                kind=SaleKind.REFUND,
                source_ref=f"refund:{charge['id']}:{refunded}",
                amount=new,
            )
        full = bool(charge.get("refunded")) or refunded >= original.gross_amount
        if original.kind == SaleKind.ONE_TIME and full and original.license_id is not None:
            for lic in licenses_lock(pks=[original.license_id]):
                license_set_status(
                    license=lic,
                    to_status=LicenseStatus.REVOKED,
                    reason="payment refunded",
                    stripe_event_id=stripe_event_id,
                )
    return original


def _subscription_license_id(sale: Sale) -> int | None:
    """An invoice sale recorded before checkout fulfilment has no license: find it through the
    invoice's subscription (re-read from Stripe; this is the rare dispute path)."""
    if sale.kind != SaleKind.INVOICE or not sale.stripe_invoice_id:
        return None
    invoice = stripe_client.get_client().v1.invoices.retrieve(sale.stripe_invoice_id).to_dict()
    sub_id = invoice_subscription_id(invoice)
    return (
        License.objects.filter(creator_subscription__stripe_subscription_id=sub_id)
        .order_by("pk")
        .values_list("pk", flat=True)
        .first()
    )


def _exposure(dispute: dict[str, Any]) -> int:
    """What the dispute has cost the platform at Stripe so far: minus the net of its balance
    transactions (withdrawal plus fee, less a reinstatement), or the amount if none yet."""
    txns = dispute.get("balance_transactions") or []
    if not txns:
        return int(dispute["amount"])
    return -sum(int(t["net"]) for t in txns)


def dispute_created(*, dispute: dict[str, Any], stripe_event_id: str = "") -> Dispute | None:
    """Open the dispute: suspend the license the payment bought, hold the creator's share of
    the disputed amount in their earnings and record our exposure. Idempotent (the unique
    dispute id; suspending a suspended license is a no-op)."""
    sale = sale_for_payment(payment_intent_id=_payment_intent_of(dispute))
    if sale is None or sale.kind not in _SOLD:
        logger.info("billing.dispute_unmatched", extra={"dispute": dispute.get("id")})
        return None
    amount = min(int(dispute["amount"]), sale.gross_amount)
    license_id = sale.license_id or _subscription_license_id(sale)
    row = Dispute(
        stripe_dispute_id=str(dispute["id"]),
        sale=sale,
        license_id=license_id,
        creator_id=sale.creator_id,
        reason=str(dispute.get("reason") or "")[:64],
        amount=amount,
        currency=str(dispute["currency"]),
        held=amount - _fee_part(sale, amount),
        exposure=_exposure(dispute),
    )
    with transaction.atomic():
        try:
            with transaction.atomic():
                row.save()
        except IntegrityError:
            row = Dispute.objects.get(stripe_dispute_id=str(dispute["id"]))
        if row.license_id is not None:
            for lic in licenses_lock(pks=[row.license_id]):
                license_set_status(
                    license=lic,
                    to_status=LicenseStatus.SUSPENDED,
                    reason="payment disputed",
                    stripe_event_id=stripe_event_id,
                )
    logger.info("billing.dispute_opened", extra={"dispute": row.stripe_dispute_id})
    return row


def dispute_closed(*, dispute: dict[str, Any], stripe_event_id: str = "") -> Dispute | None:
    """Settle a closed dispute from Stripe's current copy (events arrive in any order).

    won: the hold is released and the license comes back (if a person did not revoke it).
    lost: the creator's share leaves their earnings (a DISPUTE ledger row) and we reverse that
    much of their transfer, fee refunded in proportion, keyed by the dispute so a retry cannot
    reverse twice; a refused reversal is recorded and the ledger row stands (it is offset
    against their later earnings). Other closings (warning_closed) only release the hold.
    """
    client = stripe_client.get_client()
    current = client.v1.disputes.retrieve(str(dispute["id"])).to_dict()
    if current["status"] not in ("won", "lost", "warning_closed"):
        return None
    if not Dispute.objects.filter(stripe_dispute_id=current["id"]).exists():
        dispute_created(dispute=current, stripe_event_id=stripe_event_id)
    with transaction.atomic():
        row = dispute_lock(stripe_dispute_id=str(current["id"]))
        if row is None:
            return None
        if row.status == DisputeStatus.OPEN:
            _settle(row=row, dispute=current, stripe_event_id=stripe_event_id)
    sub = row.license.creator_subscription if row.license else None
    if row.status == DisputeStatus.WON and sub is not None:
        # A subscription's access follows the subscription (which may have moved on).
        subscription_sync(
            stripe_subscription_id=sub.stripe_subscription_id, stripe_event_id=stripe_event_id
        )
    if row.status == DisputeStatus.LOST and not (
        row.stripe_transfer_reversal_id or row.reversal_error
    ):  # also a retry after the reversal call failed in transit
        _reverse_creator_share(row=row, charge_id=obj_id(current.get("charge")))
    logger.info(
        "billing.dispute_closed", extra={"dispute": row.stripe_dispute_id, "status": row.status}
    )
    return row


def _settle(*, row: Dispute, dispute: dict[str, Any], stripe_event_id: str) -> None:
    """Close an open dispute row. Call while holding its lock."""
    lost = dispute["status"] == "lost"
    row.status = DisputeStatus.LOST if lost else DisputeStatus.WON
    row.held = 0
    row.exposure = _exposure(dispute)
    row.closed_at = timezone.now()
    sale = row.sale
    if lost:
        _ledger_row(
            sale=sale,
            kind=SaleKind.DISPUTE,
            source_ref=f"dispute:{row.stripe_dispute_id}",
            amount=row.amount,
        )
    elif sale.kind == SaleKind.ONE_TIME and row.license_id is not None:
        for lic in licenses_lock(pks=[row.license_id]):
            if lic.status == LicenseStatus.SUSPENDED:
                license_set_status(
                    license=lic,
                    to_status=LicenseStatus.ACTIVE,
                    reason="dispute won",
                    stripe_event_id=stripe_event_id,
                )
    row.save(update_fields=["status", "held", "exposure", "closed_at", "updated_at"])


def _reverse_creator_share(*, row: Dispute, charge_id: str) -> None:
    """Take the creator's share of a lost dispute back at Stripe; record the reversal (or why
    there is none). Outside the transaction: no row lock is held over the network."""
    client = stripe_client.get_client()
    reversal_id, error = "", ""
    try:
        charge = client.v1.charges.retrieve(charge_id)
        transfer_id = obj_id(charge["transfer"])
        if not transfer_id:
            error = "the charge has no transfer to reverse"
        else:
            reversal = client.v1.transfers.reversals.create(
                transfer_id,
                params={
                    "amount": row.amount,
                    "refund_application_fee": True,
                    "metadata": {"dispute": row.stripe_dispute_id},
                },
                options={
                    "idempotency_key": stripe_client.idempotency_key(
                        "dispute_reversal", row.stripe_dispute_id
                    )
                },
            )
            reversal_id = str(reversal["id"])
    except stripe.InvalidRequestError as exc:  # e.g. the creator's balance cannot cover it
        error = str(exc.user_message or exc)[:500]
    with transaction.atomic():
        locked = dispute_lock(stripe_dispute_id=row.stripe_dispute_id)
        if locked is None:
            return
        locked.stripe_transfer_reversal_id = reversal_id
        locked.reversal_error = error
        if reversal_id:  # the creator's share came back: no longer ours to carry
            recovered = row.amount - _fee_part(locked.sale, row.amount)
            locked.exposure = max(locked.exposure - recovered, 0)
        locked.save(
            update_fields=[
                "stripe_transfer_reversal_id",
                "reversal_error",
                "exposure",
                "updated_at",
            ]
        )
    row.stripe_transfer_reversal_id, row.reversal_error = reversal_id, error

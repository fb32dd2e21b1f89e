"""Where a payment's money goes, booked the way Stripe books destination charges, so statements
can be reconciled against the fake as against Stripe.

A succeeded charge on the platform gets a `charge` balance transaction (minus Stripe's fee);
with `transfer_data.destination` the full amount (or `transfer_data.amount`) is transferred to
the connected account (`transfer`, `tr_`), and an `application_fee_amount` is collected back
from it (`application_fee`, `fee_`). A refund may reverse the transfer (`reverse_transfer`) and
refund the fee (`refund_application_fee`), proportionally. A dispute debits the platform (it
carries disputes of destination charges) and a won dispute credits it back; reversing the
creator's transfer is the platform's own call (`POST /v1/transfers/{id}/reversals`).
Paid invoices of a subscription with `transfer_data` are destination charges the same way, with
the fee from `application_fee_percent`, and an `invoice_payment` links invoice and payment.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from fakes.stripe import objects
from fakes.stripe.state import JSON, FakeStripeState, new_id, now

# Stripe's standard US card pricing, and its dispute fee (minor units).
STRIPE_FEE_BPS = 290
STRIPE_FEE_FIXED = 30
DISPUTE_FEE = 1500


def _put(state: FakeStripeState, collection: str, obj: JSON) -> JSON:
    obj["_seq"] = state.count(collection)  # stable newest-first order within one second
    return state.put(collection, obj)


def balance_transaction(
    state: FakeStripeState,
    *,
    amount: int,
    type_: str,
    category: str,
    source: str,
    currency: str,
    fee: int = 0,
    description: str | None = None,
) -> JSON:
    t = now()
    fee_details = [
        {
            "amount": fee,
            "application": None,
            "currency": currency,
            "description": "Stripe processing fees" if type_ == "charge" else "Dispute fee",
            "type": "stripe_fee",
        }
    ]
    return _put(
        state,
        "balance_transactions",
        {
            "id": new_id("txn_", 24),
            "object": "balance_transaction",
            "amount": amount,
            "available_on": t + 2 * 86400,
            "balance_type": "payments",
            "created": t,
            "currency": currency,
            "description": description,
            "exchange_rate": None,
            "fee": fee,
            "fee_details": fee_details if fee else [],
            "net": amount - fee,
            "reporting_category": category,
            "source": source,
            "status": "pending",
            "type": type_,
        },
    )


def book_charge(state: FakeStripeState, ch: JSON) -> None:
    """A succeeded charge's balance transaction, its transfer and its application fee."""
    currency = ch["currency"]
    stripe_fee = (ch["amount"] * STRIPE_FEE_BPS + 5000) // 10000 + STRIPE_FEE_FIXED
    txn = balance_transaction(
        state,
        amount=ch["amount"],
        fee=stripe_fee,
        type_="charge",
        category="charge",
        source=ch["id"],
        currency=currency,
    )
    ch["balance_transaction"] = txn["id"]
    ch.setdefault("transfer", None)
    ch.setdefault("application_fee", None)
    dest_data = ch.get("transfer_data") or {}
    dest = dest_data.get("destination")
    if not dest:
        return
    share = int(dest_data.get("amount") or ch["amount"])
    tr = objects.transfer(
        {
            "currency": currency,
            "destination": dest,
            "source_transaction": ch["id"],
            "transfer_group": ch.get("transfer_group"),
        },
        amount=share,
    )
    tr["reversals"] = objects.list_envelope([], f"/v1/transfers/{tr['id']}/reversals")
    _put(state, "transfers", tr)
    tr["balance_transaction"] = balance_transaction(
        state,
        amount=-share,
        type_="transfer",
        category="transfer",
        source=tr["id"],
        currency=currency,
    )["id"]
    ch["transfer"] = tr["id"]
    app_fee = ch.get("application_fee_amount")
    if not app_fee:
        return
    fee_id = new_id("fee_", 24)
    fee = _put(
        state,
        "application_fees",
        {
            "id": fee_id,
            "object": "application_fee",
            "account": dest,
            "amount": int(app_fee),
            "amount_refunded": 0,
            "application": "ca_toolboothfake",
            "balance_transaction": None,
            "charge": tr["destination_payment"],  # the payment on the connected account
            "created": now(),
            "currency": currency,
            "fee_source": {"charge": ch["id"], "type": "charge"},
            "livemode": False,
            "originating_transaction": ch["id"],
            "refunded": False,
            "refunds": objects.list_envelope([], f"/v1/application_fees/{fee_id}/refunds"),
        },
    )
    fee["balance_transaction"] = balance_transaction(
        state,
        amount=int(app_fee),
        type_="application_fee",
        category="platform_earning",
        source=fee_id,
        currency=currency,
    )["id"]
    ch["application_fee"] = fee_id


def _refund_fee(state: FakeStripeState, fee: JSON, amount: int) -> None:
    amount = min(amount, fee["amount"] - fee["amount_refunded"])
    if amount <= 0:
        return
    fr_id = new_id("fr_", 24)
    txn = balance_transaction(
        state,
        amount=-amount,
        type_="application_fee_refund",
        category="platform_earning_refund",
        source=fr_id,
        currency=fee["currency"],
    )
    fee["refunds"]["data"].insert(
        0,
        {
            "id": fr_id,
            "object": "fee_refund",
            "amount": amount,
            "balance_transaction": txn["id"],
            "created": now(),
            "currency": fee["currency"],
            "fee": fee["id"],
            "metadata": {},
        },
    )
    fee["amount_refunded"] += amount
    fee["refunded"] = fee["amount_refunded"] >= fee["amount"]


def fee_of_transfer(state: FakeStripeState, tr: JSON) -> JSON | None:
    ch = state.get("charges", tr.get("source_transaction") or "")
    return state.get("application_fees", ch.get("application_fee") or "") if ch else None


def reverse_transfer(
    state: FakeStripeState,
    tr: JSON,
    amount: int,
    *,
    refund_application_fee: bool,
    metadata: dict[str, str] | None = None,
    source_refund: str | None = None,
) -> JSON:
    """Take `amount` back from the connected account (the caller checked it is reversible);
    with `refund_application_fee`, the fee is refunded in proportion to the amount reversed."""
    rev_id = new_id("trr_", 24)
    txn = balance_transaction(
        state,
        amount=amount,
        type_="transfer_refund",
        category="transfer_reversal",
        source=rev_id,
        currency=tr["currency"],
    )
    reversal = {
        "id": rev_id,
        "object": "transfer_reversal",
        "amount": amount,
        "balance_transaction": txn["id"],
        "created": now(),
        "currency": tr["currency"],
        "destination_payment_refund": new_id("pyr_", 24),
        "metadata": metadata or {},
        "source_refund": source_refund,
        "transfer": tr["id"],
    }
    _put(state, "transfer_reversals", reversal)
    tr.setdefault("reversals", objects.list_envelope([], f"/v1/transfers/{tr['id']}/reversals"))
    tr["reversals"]["data"].insert(0, reversal)
    tr["amount_reversed"] += amount
    tr["reversed"] = tr["amount_reversed"] >= tr["amount"]
    fee = fee_of_transfer(state, tr) if refund_application_fee else None
    if fee is not None:
        _refund_fee(state, fee, (fee["amount"] * amount) // tr["amount"])
    return reversal


def refund_charge(
    state: FakeStripeState,
    ch: JSON,
    amount: int,
    *,
    reverse: bool,
    refund_application_fee: bool,
) -> JSON:
    """A refund of `amount` (the caller checked it is refundable) and what it moves back."""
    re_id = new_id("re_", 24)
    txn = balance_transaction(
        state,
        amount=-amount,
        type_="refund",
        category="refund",
        source=re_id,
        currency=ch["currency"],
    )
    refund: JSON = {
        "id": re_id,
        "object": "refund",
        "amount": amount,
        "balance_transaction": txn["id"],
        "charge": ch["id"],
        "created": now(),
        "currency": ch["currency"],
        "destination_details": None,
        "metadata": {},
        "payment_intent": ch.get("payment_intent"),
        "reason": None,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "succeeded",
        "transfer_reversal": None,
    }
    _put(state, "refunds", refund)
    tr = state.get("transfers", ch.get("transfer") or "")
    if reverse and tr is not None:
        share = min((tr["amount"] * amount) // ch["amount"], tr["amount"] - tr["amount_reversed"])
        if share > 0:
            rev = reverse_transfer(
                state,
                tr,
                share,
                refund_application_fee=refund_application_fee,
                source_refund=re_id,
            )
            refund["transfer_reversal"] = rev["id"]
    elif refund_application_fee:
        fee = state.get("application_fees", ch.get("application_fee") or "")
        if fee is not None:
            _refund_fee(state, fee, (fee["amount"] * amount) // ch["amount"])
    return refund


def open_dispute(state: FakeStripeState, ch: JSON, *, reason: str) -> JSON:
    """The disputed amount and the dispute fee leave the platform's balance at once."""
    dp = objects.dispute(ch, reason=reason)
    txn = balance_transaction(
        state,
        amount=-dp["amount"],
        fee=DISPUTE_FEE,
        type_="adjustment",
        category="dispute",
        source=dp["id"],
        currency=dp["currency"],
        description=f"Chargeback withdrawal for {ch['id']}",
    )
    dp["balance_transactions"].append({k: v for k, v in txn.items() if not k.startswith("_")})
    _put(state, "disputes", dp)
    return dp


def close_dispute(state: FakeStripeState, dp: JSON, *, won: bool) -> None:
    """`won`: the amount comes back to the platform (the fee does not); `lost`: nothing moves."""
    dp["status"] = "won" if won else "lost"
    if won:
        txn = balance_transaction(
            state,
            amount=dp["amount"],
            type_="adjustment",
            category="dispute_reversal",
            source=dp["id"],
            currency=dp["currency"],
            description=f"Chargeback reversal for {dp['charge']}",
        )
        dp["balance_transactions"].append({k: v for k, v in txn.items() if not k.startswith("_")})


def fee_for_percent(amount: int, percent: float | None) -> int | None:
    if percent is None:
        return None
    exact = Decimal(amount) * Decimal(str(percent)) / 100
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def charge_invoice(state: FakeStripeState, sub: JSON, inv: JSON) -> JSON:
    """The payment of a paid invoice: a destination charge when the subscription has
    `transfer_data`, and the `invoice_payment` that links the two. Returns the charge."""
    amount = int(inv["amount_paid"])
    transfer_in = sub.get("transfer_data") or None
    transfer_data = (
        {"amount": None, "destination": transfer_in["destination"]} if transfer_in else None
    )
    pi = objects.payment_intent(
        amount=amount,
        currency=inv["currency"],
        customer_id=inv.get("customer"),
        application_fee_amount=fee_for_percent(amount, sub.get("application_fee_percent"))
        if transfer_in
        else None,
        transfer_data=transfer_data,
        metadata={},
        on_behalf_of=sub.get("on_behalf_of"),
        transfer_group=None,
    )
    ch = objects.charge(pi)
    pi["latest_charge"] = ch["id"]
    _put(state, "payment_intents", pi)
    _put(state, "charges", ch)
    book_charge(state, ch)
    t = now()
    _put(
        state,
        "invoice_payments",
        {
            "id": new_id("inpay_", 24),
            "object": "invoice_payment",
            "amount_paid": amount,
            "amount_requested": amount,
            "created": t,
            "currency": inv["currency"],
            "invoice": inv["id"],
            "is_default": True,
            "livemode": False,
            "payment": {"type": "payment_intent", "payment_intent": pi["id"]},
            "status": "paid",
            "status_transitions": {"canceled_at": None, "paid_at": t},
        },
    )
    return ch

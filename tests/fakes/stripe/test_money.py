"""The fake books destination charges as Stripe does: transfers, application fees, refunds that
may reverse both, disputes that are opened and closed, invoice payments, and the list endpoints
a statement is reconciled against. Read through the real `stripe` client over HTTP."""

from __future__ import annotations

from typing import Any

import pytest
import stripe

# Field names from the `stripe` 16.1 classes (`stripe/_application_fee.py`, ...).
SHAPES: dict[str, set[str]] = {
    "application_fee": {
        "id", "object", "account", "amount", "amount_refunded", "application",
        "balance_transaction", "charge", "created", "currency", "fee_source", "livemode",
        "originating_transaction", "refunded", "refunds",
    },
    "transfer": {
        "id", "object", "amount", "amount_reversed", "balance_transaction", "created", "currency",
        "description", "destination", "destination_payment", "livemode", "metadata", "reversals",
        "reversed", "source_transaction", "transfer_group",
    },
    "transfer_reversal": {
        "id", "object", "amount", "balance_transaction", "created", "currency",
        "destination_payment_refund", "metadata", "source_refund", "transfer",
    },
    "balance_transaction": {
        "id", "object", "amount", "available_on", "created", "currency", "description",
        "exchange_rate", "fee", "fee_details", "net", "reporting_category", "source", "status",
        "type",
    },
    "refund": {
        "id", "object", "amount", "balance_transaction", "charge", "created", "currency",
        "metadata", "payment_intent", "reason", "receipt_number", "source_transfer_reversal",
        "status", "transfer_reversal",
    },
    "dispute": {
        "id", "object", "amount", "balance_transactions", "charge", "created", "currency",
        "evidence", "evidence_details", "is_charge_refundable", "livemode", "metadata",
        "payment_intent", "reason", "status",
    },
    "invoice_payment": {
        "id", "object", "amount_paid", "amount_requested", "created", "currency", "invoice",
        "is_default", "livemode", "payment", "status", "status_transitions",
    },
}  # fmt: skip


def shape(kind: str, obj: Any) -> dict[str, Any]:
    data: dict[str, Any] = obj.to_dict() if isinstance(obj, stripe.StripeObject) else obj
    assert SHAPES[kind] <= set(data), f"{kind} lacks {SHAPES[kind] - set(data)}"
    assert data["object"] == kind
    return data


def _pay(client, catalogue, fake_stripe, *, fee: int = 735) -> str:
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "line_items": [{"price": catalogue.one_time_price.id, "quantity": 1}],
            "success_url": "http://127.0.0.1:1/ok",
            "payment_intent_data": {
                "application_fee_amount": fee,
                "transfer_data": {"destination": catalogue.account.id},
            },
        }
    )
    fake_stripe.complete_checkout(session.id)
    return str(client.v1.checkout.sessions.retrieve(session.id)["payment_intent"])


def test_a_destination_charge_books_a_transfer_and_an_application_fee(
    client, catalogue, fake_stripe
):
    pi_id = _pay(client, catalogue, fake_stripe)
    charge = client.v1.charges.list({"payment_intent": pi_id}).data[0]
    assert charge["amount"] == 4900
    transfers = client.v1.transfers.list({"destination": catalogue.account.id}).data
    assert [shape("transfer", t)["amount"] for t in transfers] == [4900]  # the full amount
    assert transfers[0]["source_transaction"] == charge.id
    assert charge["transfer"] == transfers[0].id
    fees = client.v1.application_fees.list().data
    assert [(shape("application_fee", f)["amount"], f["account"]) for f in fees] == [
        (735, catalogue.account.id)
    ]
    assert fees[0]["originating_transaction"] == charge.id
    assert charge["application_fee"] == fees[0].id
    txns = client.v1.balance_transactions.list({"limit": 100}).data
    by_type = {shape("balance_transaction", t)["type"]: t for t in txns}
    assert (by_type["charge"]["amount"], by_type["charge"]["fee"]) == (4900, 172)  # 2.9% + 30
    assert by_type["transfer"]["amount"] == -4900
    assert by_type["application_fee"]["amount"] == 735
    only = client.v1.balance_transactions.list({"type": "application_fee"}).data
    assert [t["source"] for t in only] == [fees[0].id]


def test_a_refund_may_reverse_the_transfer_and_refund_the_fee_in_proportion(
    client, catalogue, fake_stripe
):
    pi_id = _pay(client, catalogue, fake_stripe)
    fake_stripe.refund(pi_id, amount=1000)  # Stripe's default: the platform bears it
    fake_stripe.refund(pi_id, amount=2000, reverse_transfer=True, refund_application_fee=True)
    refunds = client.v1.refunds.list({"payment_intent": pi_id}).data
    assert [shape("refund", r)["amount"] for r in refunds] == [2000, 1000]
    assert refunds[1]["transfer_reversal"] is None
    transfer = client.v1.transfers.list({"destination": catalogue.account.id}).data[0]
    assert (transfer["amount_reversed"], transfer["reversed"]) == (2000, False)
    reversal = shape("transfer_reversal", transfer["reversals"]["data"][0])
    assert (reversal["amount"], reversal["source_refund"]) == (2000, refunds[0].id)
    assert refunds[0]["transfer_reversal"] == reversal["id"]
    fee = client.v1.application_fees.list().data[0]
    assert fee["amount_refunded"] == 300  # 735 * 2000 / 4900, rounded down
    event = fake_stripe.events("charge.refunded")[-1]["data"]["object"]
    assert (event["amount_refunded"], event["refunded"]) == (3000, False)


def test_transfer_reversals_endpoint(client, catalogue, fake_stripe):
    pi_id = _pay(client, catalogue, fake_stripe)
    transfer = client.v1.transfers.list({"destination": catalogue.account.id}).data[0]
    reversal = client.v1.transfers.reversals.create(
        transfer.id, {"amount": 4165, "refund_application_fee": True, "metadata": {"d": "dp_1"}}
    )
    assert shape("transfer_reversal", reversal)["amount"] == 4165
    assert reversal["metadata"].to_dict() == {"d": "dp_1"}
    assert client.v1.application_fees.list().data[0]["amount_refunded"] == 624  # 735*4165/4900
    with pytest.raises(stripe.InvalidRequestError):  # only 735 left to reverse
        client.v1.transfers.reversals.create(transfer.id, {"amount": 736})
    assert client.v1.transfers.retrieve(transfer.id)["amount_reversed"] == 4165
    assert pi_id


@pytest.mark.parametrize("won", [True, False])
def test_a_dispute_opens_and_closes_with_stripes_events(client, catalogue, fake_stripe, won):
    pi_id = _pay(client, catalogue, fake_stripe)
    dp = fake_stripe.dispute(pi_id, reason="fraudulent")
    assert dp["id"].startswith("dp_")
    fake_stripe.close_dispute(dp["id"], won=won)
    types = [e["type"] for e in fake_stripe.events() if e["type"].startswith("charge.dispute")]
    expected = ["charge.dispute.created", "charge.dispute.funds_withdrawn"]
    expected += ["charge.dispute.funds_reinstated"] if won else []
    assert types == [*expected, "charge.dispute.closed"]
    closed = fake_stripe.events("charge.dispute.closed")[0]
    obj = shape("dispute", closed["data"]["object"])
    assert (obj["status"], obj["amount"], obj["currency"]) == (
        "won" if won else "lost",
        4900,
        "usd",
    )
    assert (obj["payment_intent"], obj["livemode"]) == (pi_id, False)
    assert closed["data"]["previous_attributes"] == {"status": "needs_response"}
    again = shape("dispute", client.v1.disputes.retrieve(dp["id"]))
    amounts = [t["amount"] for t in again["balance_transactions"]]
    assert amounts == ([-4900, 4900] if won else [-4900])
    with pytest.raises(Exception, match="already closed"):
        fake_stripe.close_dispute(dp["id"], won=True)


def test_a_paid_subscription_invoice_is_a_destination_charge_with_an_invoice_payment(
    client, catalogue, fake_stripe
):
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": catalogue.customer.id,
            "line_items": [{"price": catalogue.licensed_price.id, "quantity": 1}],
            "success_url": "http://127.0.0.1:1/ok",
            "subscription_data": {
                "application_fee_percent": 15,
                "transfer_data": {"destination": catalogue.account.id},
            },
        }
    )
    fake_stripe.complete_checkout(session.id)
    invoice_id = client.v1.checkout.sessions.retrieve(session.id)["invoice"]
    payments = client.v1.invoice_payments.list({"invoice": invoice_id}).data
    payment = shape("invoice_payment", payments[0])
    assert (payment["amount_paid"], payment["status"]) == (900, "paid")
    pi_id = payment["payment"]["payment_intent"]
    found = client.v1.invoice_payments.list({"payment": {"payment_intent": pi_id}}).data
    assert [p.id for p in found] == [payments[0].id]
    charge = client.v1.charges.list({"payment_intent": pi_id}).data[0]
    assert (charge["amount"], charge["application_fee_amount"]) == (900, 135)
    fake_stripe.refund(pi_id, reverse_transfer=True, refund_application_fee=True)
    assert client.v1.application_fees.list().data[0]["refunded"] is True

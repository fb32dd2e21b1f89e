"""Changing a live subscription the way Stripe does, over HTTP with the real client: items
added, swapped and deleted with prorations (`create_prorations` on the next invoice,
`always_invoice` at once, `none` never), a removed metered item's usage still billed, a
downgrade's credit kept on the customer's balance, cancel at period end and resume, cancel now
(`invoice_now`, `prorate`), and `POST /v1/invoices/create_preview` agreeing with what is then
billed."""

from __future__ import annotations

import time

import pytest
import stripe


def _subscribe(client, fake_stripe, catalogue):
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": catalogue.customer.id,
            "line_items": [
                {"price": catalogue.licensed_price.id, "quantity": 1},
                {"price": catalogue.metered_price.id},
            ],
            "success_url": "http://127.0.0.1:1/ok",
        }
    )
    fake_stripe.complete_checkout(session.id)
    sub_id = client.v1.checkout.sessions.retrieve(session.id)["subscription"]
    sub = client.v1.subscriptions.retrieve(sub_id)
    licensed = next(i for i in sub["items"]["data"] if i["price"]["unit_amount"] == 900)
    metered = next(i for i in sub["items"]["data"] if i["price"]["unit_amount"] == 2)
    return sub_id, licensed["id"], metered["id"]


def _licensed(client, catalogue, amount):
    return client.v1.prices.create(
        {
            "currency": "usd",
            "product": catalogue.product.id,
            "unit_amount": amount,
            "recurring": {"interval": "month", "usage_type": "licensed"},
        }
    )


def _period(fake_stripe, sub_id):
    item = fake_stripe.state.get("subscriptions", sub_id)["items"]["data"][0]
    return item["current_period_start"], item["current_period_end"]


def _expected(amount, start, end, at):
    return round(amount * (end - at) / (end - start))


def _usage(client, customer_id, n, prefix):
    for i in range(n):
        client.v1.billing.meter_events.create(
            {
                "event_name": "tb_calls_weather",
                "payload": {"stripe_customer_id": customer_id, "value": "1"},
                "identifier": f"{prefix}-{i}",
            }
        )


def test_upgrade_with_always_invoice_bills_the_difference_at_once(client, fake_stripe, catalogue):
    sub_id, si, _ = _subscribe(client, fake_stripe, catalogue)
    team = _licensed(client, catalogue, 2900)
    start, end = _period(fake_stripe, sub_id)
    at = int(time.time())
    preview = client.v1.invoices.create_preview(
        {
            "subscription": sub_id,
            "subscription_details": {
                "items": [{"id": si, "price": team.id}],
                "proration_behavior": "always_invoice",
                "proration_date": at,
            },
        }
    )
    assert preview.id.startswith("upcoming_in_")
    assert preview["parent"]["subscription_details"]["subscription_proration_date"] == at
    credit, charge = (line["amount"] for line in preview["lines"]["data"])
    assert credit == -_expected(900, start, end, at)
    assert charge == _expected(2900, start, end, at)
    assert fake_stripe.state.get("invoices", preview.id) is None  # a preview stores nothing

    updated = client.v1.subscriptions.update(
        sub_id,
        params={
            "items": [{"id": si, "price": team.id}],
            "proration_behavior": "always_invoice",
            "proration_date": at,
        },
    )
    invoice = client.v1.invoices.retrieve(updated["latest_invoice"])
    assert invoice["billing_reason"] == "subscription_update"
    assert invoice["status"] == "paid"
    assert invoice["amount_paid"] == preview["amount_due"] == credit + charge > 0
    assert all(
        line["parent"]["subscription_item_details"]["proration"]
        for line in invoice["lines"]["data"]
    )
    # The item keeps its id and period; the next renewal bills the new price in full.
    assert _period(fake_stripe, sub_id) == (start, end)
    renewal = fake_stripe.advance_subscription(sub_id)["invoice"]
    assert [line["amount"] for line in renewal["lines"]["data"] if line["quantity"] == 1] == [2900]


def test_create_prorations_waits_for_the_next_invoice_and_a_credit_stays_on_the_balance(
    client, fake_stripe, catalogue
):
    sub_id, si, _ = _subscribe(client, fake_stripe, catalogue)
    cheap = _licensed(client, catalogue, 300)
    before = len(fake_stripe.state.all("invoices"))
    client.v1.subscriptions.update(
        sub_id,
        params={
            "items": [{"id": si, "price": cheap.id}],
            "proration_behavior": "create_prorations",
        },
    )
    assert len(fake_stripe.state.all("invoices")) == before  # nothing billed now
    preview = client.v1.invoices.create_preview({"subscription": sub_id})
    prorations = [
        line["amount"]
        for line in preview["lines"]["data"]
        if line["parent"]["subscription_item_details"]["proration"]
    ]
    assert len(prorations) == 2
    assert sum(prorations) < 0
    renewal = fake_stripe.advance_subscription(sub_id)["invoice"]
    assert renewal["total"] == preview["total"] == 300 + sum(prorations)
    # A credit bigger than the renewal is kept on the customer's balance, not paid out.
    if renewal["total"] < 0:
        assert renewal["amount_due"] == 0
        balance = client.v1.customers.retrieve(catalogue.customer.id)["balance"]
        assert balance == renewal["total"]


def test_items_are_added_and_deleted_and_removed_usage_is_still_billed(
    client, fake_stripe, catalogue
):
    sub_id, _si, metered_si = _subscribe(client, fake_stripe, catalogue)
    extra = _licensed(client, catalogue, 500)
    _usage(client, catalogue.customer.id, 3, "before")
    updated = client.v1.subscriptions.update(
        sub_id,
        params={
            "items": [{"price": extra.id}, {"id": metered_si, "deleted": True}],
            "proration_behavior": "none",
        },
    )
    items = {i["price"]["id"]: i for i in updated["items"]["data"]}
    assert set(items) == {catalogue.licensed_price.id, extra.id}
    assert items[extra.id]["quantity"] == 1
    assert (
        items[extra.id]["current_period_end"]
        == items[catalogue.licensed_price.id]["current_period_end"]
    )
    _usage(client, catalogue.customer.id, 4, "after")  # no metered item: not billed
    renewal = fake_stripe.advance_subscription(sub_id)["invoice"]
    amounts = sorted(line["amount"] for line in renewal["lines"]["data"])
    assert amounts == [3 * 2, 500, 900]

    # Re-adding the meter's price counts usage from then on only.
    client.v1.subscriptions.update(
        sub_id, params={"items": [{"price": catalogue.metered_price.id}]}
    )
    _usage(client, catalogue.customer.id, 2, "readded")
    renewal = fake_stripe.advance_subscription(sub_id)["invoice"]
    assert sorted(line["amount"] for line in renewal["lines"]["data"]) == [2 * 2, 500, 900]


@pytest.mark.parametrize(
    ("items", "param"),
    [
        ([{"price": "price_unknown"}], "items[0][price]"),
        ([{"quantity": 1}], "items[0][price]"),
        ([{"id": "SI", "deleted": True}, {"id": "MSI", "deleted": True}], "items"),
        ([{"price": "LICENSED"}], "items[0][price]"),
        ([{"id": "SI", "deleted": True, "price": "LICENSED"}], "items[0][deleted]"),
        ([{"price": "METERED", "quantity": 1}], "items[0][price]"),
    ],
)
def test_item_changes_are_refused_like_stripe(client, fake_stripe, catalogue, items, param):
    sub_id, si, metered_si = _subscribe(client, fake_stripe, catalogue)
    names = {
        "SI": si,
        "MSI": metered_si,
        "LICENSED": catalogue.licensed_price.id,
        "METERED": catalogue.metered_price.id,
    }
    resolved = [
        {k: names.get(v, v) if isinstance(v, str) else v for k, v in i.items()} for i in items
    ]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.subscriptions.update(sub_id, params={"items": resolved})
    assert exc.value.error.param == param  # type: ignore[union-attr]
    assert len(client.v1.subscriptions.retrieve(sub_id)["items"]["data"]) == 2


def test_cancel_at_period_end_then_resume_then_cancel_now(client, fake_stripe, catalogue):
    sub_id, _, _ = _subscribe(client, fake_stripe, catalogue)
    _, end = _period(fake_stripe, sub_id)
    sub = client.v1.subscriptions.update(sub_id, params={"cancel_at_period_end": True})
    assert (sub["cancel_at_period_end"], sub["cancel_at"]) == (True, end)
    final = client.v1.invoices.create_preview({"subscription": sub_id})
    assert [line["quantity"] for line in final["lines"]["data"]] == [0]  # usage only
    sub = client.v1.subscriptions.update(sub_id, params={"cancel_at_period_end": False})
    assert (sub["cancel_at_period_end"], sub["cancel_at"], sub["status"]) == (False, None, "active")

    _usage(client, catalogue.customer.id, 5, "cancel")
    before = len(fake_stripe.state.all("invoices"))
    sub = client.v1.subscriptions.cancel(sub_id, params={"invoice_now": True, "prorate": False})
    assert sub["status"] == "canceled"
    assert len(fake_stripe.state.all("invoices")) == before + 1
    last = client.v1.invoices.retrieve(sub["latest_invoice"])
    assert [line["amount"] for line in last["lines"]["data"]] == [5 * 2]  # no refund line
    assert fake_stripe.events()[-1]["type"] == "customer.subscription.deleted"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.invoices.create_preview({"subscription": sub_id})
    assert exc.value.code == "invoice_upcoming_none"


def test_cancel_now_with_prorate_credits_the_unused_time(client, fake_stripe, catalogue):
    sub_id, _, _ = _subscribe(client, fake_stripe, catalogue)
    start, end = _period(fake_stripe, sub_id)
    sub = client.v1.subscriptions.cancel(sub_id, params={"invoice_now": True, "prorate": True})
    last = client.v1.invoices.retrieve(sub["latest_invoice"])
    credit = [line["amount"] for line in last["lines"]["data"] if line["amount"] < 0]
    assert credit == [-_expected(900, start, end, sub["canceled_at"])]
    assert last["amount_due"] == 0
    balance = client.v1.customers.retrieve(catalogue.customer.id)["balance"]
    assert balance == last["total"] < 0

"""Swapping a live subscription's price, the way Stripe does it: `POST /v1/subscriptions/{id}`
with `items[n][id|price]` + `proration_behavior`, or `POST /v1/subscription_items/{id}`; the
validation Stripe applies, the `customer.subscription.updated` event, and the next period billed
at the new price."""

from __future__ import annotations

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


def _price(client, catalogue, **overrides):
    params = {
        "currency": "usd",
        "product": catalogue.product.id,
        "unit_amount": 1200,
        "recurring": {"interval": "month", "usage_type": "licensed"},
        **overrides,
    }
    return client.v1.prices.create(params)


def _licensed_lines(invoice):
    return [line["amount"] for line in invoice["lines"]["data"] if line["quantity"] == 1]


def test_swap_price_bills_the_new_price_from_the_next_period(client, fake_stripe, catalogue):
    sub_id, si, _ = _subscribe(client, fake_stripe, catalogue)
    new_price = _price(client, catalogue)
    period_end = client.v1.subscriptions.retrieve(sub_id)["items"]["data"][0]["current_period_end"]
    seen = {e["id"] for e in fake_stripe.events()}

    updated = client.v1.subscriptions.update(
        sub_id,
        params={"items": [{"id": si, "price": new_price.id}], "proration_behavior": "none"},
    )

    item = next(i for i in updated["items"]["data"] if i["id"] == si)
    assert item["price"]["id"] == new_price.id
    assert item["current_period_end"] == period_end  # no new period, no proration invoice
    assert client.v1.subscription_items.retrieve(si)["price"]["id"] == new_price.id
    new_events = [e for e in fake_stripe.events() if e["id"] not in seen]
    assert [e["type"] for e in new_events] == ["customer.subscription.updated"]
    previous = new_events[0]["data"]["previous_attributes"]
    old_items = {i["id"]: i["price"]["id"] for i in previous["items"]["data"]}
    assert old_items[si] == catalogue.licensed_price.id
    assert not any(e["type"].startswith("invoice.") for e in new_events)

    result = fake_stripe.advance_subscription(sub_id)
    assert _licensed_lines(result["invoice"]) == [1200]


def test_subscription_item_route_swaps_too(client, fake_stripe, catalogue):
    sub_id, si, _ = _subscribe(client, fake_stripe, catalogue)
    new_price = _price(client, catalogue, unit_amount=700)
    item = client.v1.subscription_items.update(
        si, params={"price": new_price.id, "proration_behavior": "none"}
    )
    assert item["object"] == "subscription_item"
    assert item["price"]["id"] == new_price.id
    assert fake_stripe.events()[-1]["type"] == "customer.subscription.updated"
    assert _licensed_lines(fake_stripe.advance_subscription(sub_id)["invoice"]) == [700]


def test_swap_is_validated_like_stripe_and_refusals_change_nothing(client, fake_stripe, catalogue):
    sub_id, si, metered_si = _subscribe(client, fake_stripe, catalogue)
    other_sub, other_si, _ = _subscribe(client, fake_stripe, catalogue)
    good = _price(client, catalogue)
    yearly = _price(client, catalogue, recurring={"interval": "year", "usage_type": "licensed"})
    euro = _price(client, catalogue, currency="eur")
    inactive = _price(client, catalogue)
    client.v1.prices.update(inactive.id, params={"active": False})

    def swap(item_id, price_id, **extra):
        params = {"items": [{"id": item_id, "price": price_id}], "proration_behavior": "none"}
        return client.v1.subscriptions.update(sub_id, params={**params, **extra})

    cases = [
        (lambda: swap("si_unknown", good.id), 404, "items[0][id]"),
        (lambda: swap(other_si, good.id), 400, "items[0][id]"),
        (lambda: swap(si, "price_unknown"), 404, "items[0][price]"),
        (lambda: swap(si, catalogue.one_time_price.id), 400, "items[0][price]"),
        (lambda: swap(si, yearly.id), 400, "items[0][price]"),
        (lambda: swap(si, euro.id), 400, "items[0][price]"),
        (lambda: swap(si, inactive.id), 400, "items[0][price]"),
        (lambda: swap(metered_si, good.id), 400, "items[0][price]"),
        (lambda: swap(si, good.id, proration_behavior="sometimes"), 400, "proration_behavior"),
        (lambda: swap(si, euro.id, proration_behavior="always_invoice"), 400, "items[0][price]"),
    ]
    for call, status, param in cases:
        with pytest.raises(stripe.StripeError) as exc:
            call()
        assert exc.value.http_status == status
        if param:
            assert exc.value.error.param == param  # type: ignore[union-attr]
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.subscriptions.update("sub_unknown", params={"metadata": {"a": "b"}})
    assert exc.value.http_status == 404
    # Unchanged on both subscriptions, and no event for any refusal.
    for sid, item_id in ((sub_id, si), (other_sub, other_si)):
        item = client.v1.subscription_items.retrieve(item_id)
        assert item["price"]["id"] == catalogue.licensed_price.id
        assert item["subscription"] == sid
    assert fake_stripe.events()[-1]["type"] != "customer.subscription.updated"

    client.v1.subscriptions.cancel(sub_id)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        swap(si, good.id)
    assert exc.value.error.param == "items"  # type: ignore[union-attr]


def test_a_dropped_swap_retried_with_its_key_applies_once(client, fake_stripe, catalogue):
    sub_id, si, _ = _subscribe(client, fake_stripe, catalogue)
    new_price = _price(client, catalogue)
    fake_stripe.fail_next(f"/v1/subscriptions/{sub_id}", "drop_response")
    updated = client.v1.subscriptions.update(
        sub_id,
        params={"items": [{"id": si, "price": new_price.id}], "proration_behavior": "none"},
        options={"idempotency_key": "swap-1"},
    )  # the client retries the dropped request with the same key
    assert updated.last_response.headers.get("Idempotent-Replayed") == "true"
    posts = [
        r
        for r in fake_stripe.state.requests
        if r["method"] == "POST" and r["path"] == f"/v1/subscriptions/{sub_id}"
    ]
    assert len(posts) == 2
    updates = fake_stripe.events("customer.subscription.updated")
    assert len(updates) == 1

"""Meters, usage and money after the sale: meter events and their rules, event summaries,
advancing a billing period into a usage invoice, payment failure, cancellation, refunds and
disputes."""

from __future__ import annotations

import time

import httpx
import pytest
import stripe

from fakes.stripe.core import ApiError


def _meter_event(client, customer_id, identifier, value="1", **extra):
    return client.v1.billing.meter_events.create(
        {
            "event_name": "tb_calls_weather",
            "payload": {"stripe_customer_id": customer_id, "value": value},
            "identifier": identifier,
            **extra,
        }
    )


def _subscribe(client, fake_stripe, catalogue, *, licensed_qty=1):
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": catalogue.customer.id,
            "line_items": [
                {"price": catalogue.licensed_price.id, "quantity": licensed_qty},
                {"price": catalogue.metered_price.id},
            ],
            "success_url": "http://127.0.0.1:1/ok",
        }
    )
    fake_stripe.complete_checkout(session.id)
    return client.v1.checkout.sessions.retrieve(session.id)["subscription"]


def test_meter_event_rules(client, catalogue, fake_stripe):
    cus = catalogue.customer.id
    _meter_event(client, cus, "call-1")
    with pytest.raises(stripe.InvalidRequestError) as exc:
        _meter_event(client, cus, "call-1")
    assert exc.value.http_status == 400
    assert exc.value.param == "identifier"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.billing.meter_events.create(
            {"event_name": "no_such_meter", "payload": {"stripe_customer_id": cus, "value": "1"}}
        )
    assert exc.value.param == "event_name"
    with pytest.raises(stripe.InvalidRequestError):
        _meter_event(client, cus, "call-old", timestamp=int(time.time()) - 36 * 86400)
    with pytest.raises(stripe.InvalidRequestError):
        _meter_event(client, cus, "call-future", timestamp=int(time.time()) + 600)
    with pytest.raises(stripe.InvalidRequestError):
        _meter_event(client, cus, "call-nan", value="lots")
    with pytest.raises(stripe.InvalidRequestError) as exc:
        _meter_event(client, "cus_unknown", "call-who")
    assert exc.value.http_status == 404
    client.v1.billing.meters.deactivate(catalogue.meter.id)
    with pytest.raises(stripe.InvalidRequestError):
        _meter_event(client, cus, "call-2")
    assert client.v1.billing.meters.list({"status": "inactive"}).data[0].id == catalogue.meter.id
    reactivated = client.v1.billing.meters.reactivate(catalogue.meter.id)
    assert reactivated["status"] == "active"
    assert reactivated["status_transitions"]["deactivated_at"] is None
    _meter_event(client, cus, "call-2")
    assert len(fake_stripe.state.meter_events()) == 2


def test_event_summaries_aggregate_per_window(client, catalogue):
    cus = catalogue.customer.id
    hour = (int(time.time()) // 3600) * 3600
    _meter_event(client, cus, "a", "2", timestamp=hour - 3600 + 10)
    _meter_event(client, cus, "b", "3", timestamp=hour - 3600 + 20)
    _meter_event(client, cus, "c", "5", timestamp=hour + 1)
    summaries = client.v1.billing.meters.event_summaries.list(
        catalogue.meter.id,
        {
            "customer": cus,
            "start_time": hour - 3600,
            "end_time": hour + 3600,
            "value_grouping_window": "hour",
        },
    )
    assert [(s["start_time"], s["aggregated_value"]) for s in summaries.data] == [
        (hour, 5.0),
        (hour - 3600, 5.0),
    ]
    whole = client.v1.billing.meters.event_summaries.list(
        catalogue.meter.id, {"customer": cus, "start_time": hour - 3600, "end_time": hour + 3600}
    )
    assert [s["aggregated_value"] for s in whole.data] == [10.0]
    with pytest.raises(stripe.InvalidRequestError):  # not on a minute boundary
        client.v1.billing.meters.event_summaries.list(
            catalogue.meter.id, {"customer": cus, "start_time": hour + 1, "end_time": hour + 3600}
        )


def test_metered_price_needs_a_meter_and_no_aggregate_usage(client, catalogue):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.prices.create(
            {
                "currency": "usd",
                "product": catalogue.product.id,
                "unit_amount": 1,
                "recurring": {"interval": "month", "usage_type": "metered"},
            }
        )
    assert exc.value.param == "recurring[meter]"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.prices.create(
            {
                "currency": "usd",
                "product": catalogue.product.id,
                "unit_amount": 1,
                "recurring": {
                    "interval": "month",
                    "usage_type": "metered",
                    "meter": catalogue.meter.id,
                    "aggregate_usage": "sum",
                },
            }
        )
    assert "recurring[aggregate_usage]" in exc.value.user_message
    archived = client.v1.prices.update(catalogue.one_time_price.id, {"active": False})
    assert archived["active"] is False
    with pytest.raises(stripe.InvalidRequestError, match="inactive"):
        client.v1.checkout.sessions.create(
            {
                "mode": "payment",
                "line_items": [{"price": catalogue.one_time_price.id, "quantity": 1}],
                "success_url": "http://127.0.0.1:1/ok",
            }
        )


def test_advance_period_bills_metered_usage(client, catalogue, fake_stripe, webhook_receiver):
    sub_id = _subscribe(client, fake_stripe, catalogue, licensed_qty=2)
    before = client.v1.subscriptions.retrieve(sub_id)
    period_end = before["items"]["data"][0]["current_period_end"]
    for i in range(7):
        _meter_event(client, catalogue.customer.id, f"call-{i}", "3")  # 21 units
    fake_stripe.wait_for_webhooks(5)
    seen = len(webhook_receiver.received)

    with httpx.Client() as http:
        answer = http.post(f"{fake_stripe.base_url}/control/subscriptions/{sub_id}/advance")
    assert answer.status_code == 200
    invoice = client.v1.invoices.retrieve(answer.json()["invoice"]["id"])
    lines = {line["pricing"]["price_details"]["price"]: line for line in invoice["lines"]["data"]}
    assert lines[catalogue.metered_price.id]["amount"] == 21 * 2
    assert lines[catalogue.metered_price.id]["quantity"] == 21
    assert lines[catalogue.licensed_price.id]["amount"] == 2 * 900
    assert invoice["amount_paid"] == 21 * 2 + 1800
    assert (invoice["status"], invoice["billing_reason"]) == ("paid", "subscription_cycle")
    assert invoice["period_end"] == period_end
    assert invoice["parent"]["subscription_details"]["subscription"] == sub_id
    after = client.v1.subscriptions.retrieve(sub_id)
    assert after["items"]["data"][0]["current_period_start"] == period_end
    assert after["latest_invoice"] == invoice.id

    assert fake_stripe.wait_for_webhooks(5)
    events = [r.event for r in webhook_receiver.received[seen:]]
    assert [e["type"] for e in events] == [
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "customer.subscription.updated",
    ]
    assert "items" in events[-1]["data"]["previous_attributes"]

    # Usage is billed once: the next period starts from zero.
    second = fake_stripe.advance_subscription(sub_id)["invoice"]
    metered = [line for line in second["lines"]["data"] if line["quantity"] == 0]
    assert len(metered) == 1
    assert metered[0]["amount"] == 0


def test_failed_payment_makes_the_subscription_past_due(
    client, catalogue, fake_stripe, webhook_receiver
):
    sub_id = _subscribe(client, fake_stripe, catalogue)
    fake_stripe.wait_for_webhooks(5)
    seen = len(webhook_receiver.received)
    with httpx.Client() as http:
        http.post(
            f"{fake_stripe.base_url}/control/subscriptions/{sub_id}/advance", data={"fail": "1"}
        )
    sub = client.v1.subscriptions.retrieve(sub_id, {"expand": ["latest_invoice"]})
    assert sub["status"] == "past_due"
    assert sub["latest_invoice"]["status"] == "open"
    assert sub["latest_invoice"]["amount_remaining"] == 900
    assert fake_stripe.wait_for_webhooks(5)
    events = [r.event for r in webhook_receiver.received[seen:]]
    assert [e["type"] for e in events][-2:] == [
        "invoice.payment_failed",
        "customer.subscription.updated",
    ]
    assert events[-1]["data"]["previous_attributes"]["status"] == "active"
    assert events[-1]["data"]["object"]["status"] == "past_due"
    recovered = fake_stripe.advance_subscription(sub_id)
    assert recovered["subscription"]["status"] == "active"


def test_cancel_at_period_end_then_advance_deletes(
    client, catalogue, fake_stripe, webhook_receiver
):
    sub_id = _subscribe(client, fake_stripe, catalogue)
    updated = client.v1.subscriptions.update(
        sub_id, {"cancel_at_period_end": True, "metadata": {"reason": "done"}}
    )
    assert updated["cancel_at_period_end"] is True
    assert updated["cancel_at"] == updated["items"]["data"][0]["current_period_end"]
    _meter_event(client, catalogue.customer.id, "last-call", "4")
    result = fake_stripe.advance_subscription(sub_id)
    assert result["subscription"]["status"] == "canceled"
    assert result["invoice"]["amount_due"] == 8  # final usage only, no new licensed period
    with pytest.raises(ApiError, match="canceled"):
        fake_stripe.advance_subscription(sub_id)
    assert fake_stripe.wait_for_webhooks(5)
    types = [r.event["type"] for r in webhook_receiver.received]
    assert types.count("customer.subscription.updated") == 1
    assert types[-1] == "customer.subscription.deleted"


def test_delete_cancels_immediately(client, catalogue, fake_stripe, webhook_receiver):
    sub_id = _subscribe(client, fake_stripe, catalogue)
    canceled = client.v1.subscriptions.cancel(sub_id)
    assert canceled["status"] == "canceled"
    assert canceled["ended_at"] is not None
    assert fake_stripe.wait_for_webhooks(5)
    deleted = [
        r.event
        for r in webhook_receiver.received
        if r.event["type"] == "customer.subscription.deleted"
    ]
    assert [e["data"]["object"]["id"] for e in deleted] == [sub_id]
    assert deleted[0]["request"]["id"].startswith("req_")


def test_refund_and_dispute_controls_emit_charge_events(
    client, catalogue, fake_stripe, webhook_receiver
):
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "line_items": [{"price": catalogue.one_time_price.id, "quantity": 1}],
            "success_url": "http://127.0.0.1:1/ok",
        }
    )
    fake_stripe.complete_checkout(session.id)
    pi_id = client.v1.checkout.sessions.retrieve(session.id)["payment_intent"]
    with httpx.Client() as http:
        partial = http.post(
            f"{fake_stripe.base_url}/control/payment_intents/{pi_id}/refund", data={"amount": "900"}
        )
        assert partial.json()["refunded"] is False
        full = http.post(f"{fake_stripe.base_url}/control/payment_intents/{pi_id}/refund")
        assert full.json()["amount_refunded"] == 4900
        assert (
            http.post(f"{fake_stripe.base_url}/control/payment_intents/{pi_id}/refund").status_code
            == 400
        )
        dispute = http.post(f"{fake_stripe.base_url}/control/payment_intents/{pi_id}/dispute")
        assert dispute.json()["payment_intent"] == pi_id
        assert (
            http.post(f"{fake_stripe.base_url}/control/payment_intents/pi_nope/refund").status_code
            == 404
        )
    assert fake_stripe.wait_for_webhooks(5)
    refunds = [r.event for r in webhook_receiver.received if r.event["type"] == "charge.refunded"]
    assert [e["data"]["object"]["amount_refunded"] for e in refunds] == [900, 4900]
    assert refunds[-1]["data"]["object"]["refunded"] is True
    assert refunds[-1]["data"]["object"]["payment_intent"] == pi_id
    assert refunds[-1]["data"]["previous_attributes"] == {"amount_refunded": 900, "refunded": False}
    (disputed,) = [
        r.event for r in webhook_receiver.received if r.event["type"] == "charge.dispute.created"
    ]
    assert disputed["data"]["object"]["object"] == "dispute"
    assert disputed["data"]["object"]["status"] == "needs_response"


def test_resend_redelivers_an_old_event(client, catalogue, fake_stripe, webhook_receiver):
    fake_stripe.wait_for_webhooks(5)
    first = webhook_receiver.received[0].event
    with httpx.Client() as http:
        assert (
            http.post(f"{fake_stripe.base_url}/control/events/{first['id']}/resend").status_code
            == 200
        )
        assert (
            http.post(f"{fake_stripe.base_url}/control/events/evt_nope/resend").status_code == 404
        )
    assert fake_stripe.wait_for_webhooks(5)
    assert webhook_receiver.received[-1].event["id"] == first["id"]
    assert webhook_receiver.received[-1].body == webhook_receiver.received[0].body

"""Contract: every object the fake returns, read through the real `stripe` client, carries every
field listed in tests/fixtures/stripe/object_fields.json (from ../shared/stripe/README.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe

from billing import stripe_client
from fakes.stripe.core import API_VERSION as FAKE_API_VERSION

FIELDS: dict[str, list[str]] = json.loads(
    (Path(__file__).parents[2] / "fixtures" / "stripe" / "object_fields.json").read_text()
)


def assert_fields(kind: str, obj: Any) -> None:
    data = obj.to_dict() if isinstance(obj, stripe.StripeObject) else obj
    missing = [name for name in FIELDS[kind] if name not in data]
    assert not missing, f"{kind} lacks {missing}"
    if "object" in FIELDS[kind] and "." not in kind and kind != "list":
        assert data["object"] == kind


def test_the_pinned_api_version_is_the_librarys():
    assert stripe_client.API_VERSION == stripe._api_version._ApiVersion.CURRENT
    assert FAKE_API_VERSION == stripe_client.API_VERSION


def test_every_listed_object_carries_every_field(client, catalogue, fake_stripe):
    v1 = client.v1
    assert_fields("customer", catalogue.customer)
    assert_fields("customer.invoice_settings", catalogue.customer["invoice_settings"])
    assert_fields("product", catalogue.product)
    assert_fields("price", catalogue.metered_price)
    assert_fields("price.recurring", catalogue.metered_price["recurring"])
    assert catalogue.metered_price["recurring"]["meter"] == catalogue.meter.id
    assert "aggregate_usage" not in catalogue.metered_price["recurring"].to_dict()
    assert_fields("price", catalogue.one_time_price)
    assert catalogue.one_time_price["recurring"] is None
    assert_fields("billing.meter", catalogue.meter)
    for part in ("status_transitions", "customer_mapping", "default_aggregation", "value_settings"):
        assert_fields(f"billing.meter.{part}", catalogue.meter[part])

    event = v1.billing.meter_events.create(
        {
            "event_name": "tb_calls_weather",
            "payload": {"stripe_customer_id": catalogue.customer.id, "value": "3"},
            "identifier": "call-1",
        }
    )
    assert_fields("billing.meter_event", event)
    assert "id" not in event.to_dict()
    start = (int(time.time()) // 60) * 60 - 3600
    summaries = v1.billing.meters.event_summaries.list(
        catalogue.meter.id,
        {"customer": catalogue.customer.id, "start_time": start, "end_time": start + 7200},
    )
    assert_fields("list", summaries)
    assert_fields("billing.meter_event_summary", summaries.data[0])
    assert summaries.data[0]["aggregated_value"] == 3

    meters = v1.billing.meters.list({"status": "active"})
    assert_fields("list", meters)
    assert [m.id for m in meters.data] == [catalogue.meter.id]

    session = v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": catalogue.customer.id,
            "line_items": [{"price": catalogue.licensed_price.id, "quantity": 1},
                           {"price": catalogue.metered_price.id}],
            "success_url": "http://127.0.0.1:1/ok?cs={CHECKOUT_SESSION_ID}",
            "cancel_url": "http://127.0.0.1:1/cancel",
            "subscription_data": {
                "application_fee_percent": 15,
                "transfer_data": {"destination": catalogue.account.id},
                "metadata": {"plan": "7"},
            },
        }
    )  # fmt: skip
    assert_fields("checkout.session", session)
    assert session["status"] == "open"
    assert session["url"] == f"{fake_stripe.base_url}/checkout/{session.id}"
    assert "line_items" not in session.to_dict()
    items = v1.checkout.sessions.line_items.list(session.id)
    assert_fields("list", items)
    for item in items.data:
        assert_fields("item", item)
    assert [i["quantity"] for i in items.data] == [1, None]

    fake_stripe.complete_checkout(session.id)
    done = v1.checkout.sessions.retrieve(session.id, {"expand": ["line_items"]})
    assert_fields("checkout.session", done)
    assert_fields("checkout.session.customer_details", done["customer_details"])
    assert (done["status"], done["payment_status"]) == ("complete", "paid")
    assert done["url"] is None
    assert len(done["line_items"]["data"]) == 2

    sub = v1.subscriptions.retrieve(
        done["subscription"], {"expand": ["items.data.price", "latest_invoice"]}
    )
    assert_fields("subscription", sub)
    assert_fields("subscription.transfer_data", sub["transfer_data"])
    assert "current_period_end" not in sub.to_dict()
    for item in sub["items"]["data"]:
        assert_fields("subscription_item", item)
        assert_fields("price", item["price"])
    invoice = sub["latest_invoice"]
    assert_fields("invoice", invoice)
    assert_fields("invoice.parent", invoice["parent"])
    assert_fields("invoice.parent.subscription_details", invoice["parent"]["subscription_details"])
    assert "subscription" not in invoice.to_dict()
    assert_fields("invoice", v1.invoices.retrieve(invoice.id))

    account = v1.accounts.retrieve(catalogue.account.id)
    assert_fields("account", account)
    assert_fields("account.requirements", account["requirements"])
    link = v1.account_links.create(
        {
            "account": account.id,
            "type": "account_onboarding",
            "refresh_url": "http://127.0.0.1:1/refresh",
            "return_url": "http://127.0.0.1:1/return",
        }
    )
    assert_fields("account_link", link)
    assert_fields("login_link", v1.accounts.login_links.create(account.id))
    transfer = v1.transfers.create(
        {"currency": "usd", "amount": 500, "destination": account.id, "transfer_group": "g1"}
    )
    assert_fields("transfer", transfer)

    pay = v1.checkout.sessions.create(
        {
            "mode": "payment",
            "line_items": [{"price": catalogue.one_time_price.id, "quantity": 1}],
            "success_url": "http://127.0.0.1:1/ok",
            "payment_intent_data": {
                "application_fee_amount": 735,
                "transfer_data": {"destination": account.id},
            },
        }
    )
    fake_stripe.complete_checkout(pay.id)
    pi_id = v1.checkout.sessions.retrieve(pay.id)["payment_intent"]
    pi = v1.payment_intents.retrieve(pi_id)
    assert_fields("payment_intent", pi)
    assert_fields("payment_intent.transfer_data", pi["transfer_data"])
    fake_stripe.refund(pi_id, amount=100)
    fake_stripe.dispute(pi_id)

    by_type = {e["type"]: e for e in fake_stripe.events()}
    assert_fields("charge", by_type["charge.refunded"]["data"]["object"])
    assert_fields("dispute", by_type["charge.dispute.created"]["data"]["object"])
    for evt in fake_stripe.events():
        retrieved = v1.events.retrieve(evt["id"])
        assert_fields("event", retrieved)
        assert_fields("event.request", retrieved["request"])
        assert retrieved["api_version"] == stripe_client.API_VERSION
        assert retrieved["data"]["object"]["object"]


def test_error_envelope_and_statuses_match_stripe(client, fake_stripe):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.retrieve("cus_missing")
    assert exc.value.http_status == 404
    assert exc.value.code == "resource_missing"
    assert exc.value.param == "id"
    assert exc.value.user_message == "No such customer: 'cus_missing'"
    bad = httpx.post(
        f"{fake_stripe.base_url}/v1/customers",
        headers={"Authorization": "Bearer sk_live_not_here"},
        data={"email": "x@example.com"},
    )
    assert bad.status_code == 401
    assert "sk_live_not_here" not in bad.text
    assert httpx.get(f"{fake_stripe.base_url}/v1/customers/cus_x").status_code == 401
    wrong = stripe.StripeClient("rk_test_restricted", base_addresses={"api": fake_stripe.base_url})
    with pytest.raises(stripe.AuthenticationError) as auth:
        wrong.v1.customers.create({})
    assert auth.value.http_status == 401

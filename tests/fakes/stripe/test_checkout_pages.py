"""Hosted Checkout and Connect onboarding over real HTTP: GET the page, POST the button, follow
the redirect, and see the signed events reach the webhook receiver in order."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import stripe

from billing import stripe_client


def _form_action(html: str, button_id: str) -> str:
    match = re.search(
        r'<form method="post" action="([^"]+)">(?:(?!</form>).)*id="' + button_id + '"', html, re.S
    )
    assert match, f"no form with button #{button_id}"
    return match[1]


def test_payment_checkout_through_the_hosted_page(client, catalogue, fake_stripe, webhook_receiver):
    fake_stripe.wait_for_webhooks(5)
    before = len(webhook_receiver.received)
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "line_items": [{"price": catalogue.one_time_price.id, "quantity": 1}],
            "customer_email": "buyer@example.com",
            "client_reference_id": "order-17",
            "metadata": {"order": "17"},
            "success_url": "http://127.0.0.1:18301/billing/success?session_id={CHECKOUT_SESSION_ID}",
            "cancel_url": "http://127.0.0.1:18301/billing/cancel",
            "payment_intent_data": {
                "application_fee_amount": 735,
                "transfer_data": {"destination": catalogue.account.id},
                "metadata": {"order": "17"},
            },
        },
        {"idempotency_key": stripe_client.idempotency_key("checkout", 17)},
    )
    with httpx.Client() as http:
        page = http.get(session.url)
        assert page.status_code == 200
        assert "Weather MCP" in page.text
        assert "49.00 USD" in page.text
        assert "<script" not in page.text
        paid = http.post(_form_action(page.text, "pay"), data={"email": "paid@example.com"})
    assert paid.status_code == 303
    location = paid.headers["Location"]
    assert parse_qs(urlsplit(location).query) == {"session_id": [session.id]}
    assert location.startswith("http://127.0.0.1:18301/billing/success")

    done = client.v1.checkout.sessions.retrieve(session.id)
    assert (done["status"], done["payment_status"]) == ("complete", "paid")
    assert done["customer_details"]["email"] == "paid@example.com"
    pi = client.v1.payment_intents.retrieve(done["payment_intent"])
    assert pi["amount"] == 4900
    assert pi["application_fee_amount"] == 735
    assert pi["transfer_data"]["destination"] == catalogue.account.id
    assert pi["metadata"]["order"] == "17"
    assert pi["status"] == "succeeded"

    assert fake_stripe.wait_for_webhooks(5)
    events = [r.event for r in webhook_receiver.received[before:]]
    assert [e["type"] for e in events] == ["payment_intent.succeeded", "checkout.session.completed"]
    completed = events[1]["data"]["object"]
    assert completed["client_reference_id"] == "order-17"
    assert completed["metadata"] == {"order": "17"}
    assert completed["payment_intent"] == pi.id
    for r in webhook_receiver.received[before:]:
        stripe_client.construct_event(r.body, r.headers["Stripe-Signature"])

    with httpx.Client() as http:  # a completed session cannot be paid twice
        again = http.get(session.url)
        assert "This Checkout Session is complete." in again.text
        assert 'id="pay"' not in again.text
        assert http.post(f"{session.url}/pay").status_code == 400


def test_subscription_checkout_creates_customer_subscription_and_paid_invoice(
    client, catalogue, fake_stripe, webhook_receiver
):
    fake_stripe.wait_for_webhooks(5)
    before = len(webhook_receiver.received)
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer_email": "new@example.com",
            "line_items": [
                {"price": catalogue.licensed_price.id, "quantity": 2},
                {"price": catalogue.metered_price.id},
            ],
            "success_url": "http://127.0.0.1:18301/ok/{CHECKOUT_SESSION_ID}",
            "subscription_data": {
                "application_fee_percent": 15,
                "transfer_data": {"destination": catalogue.account.id},
                "metadata": {"license": "5"},
            },
        }
    )
    assert session["amount_total"] == 1800
    with httpx.Client() as http:
        page = http.get(session.url)
        assert "metered" in page.text
        paid = http.post(_form_action(page.text, "pay"))
    assert paid.headers["Location"] == f"http://127.0.0.1:18301/ok/{session.id}"
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert done["customer"].startswith("cus_")
    sub = client.v1.subscriptions.retrieve(done["subscription"], {"expand": ["latest_invoice"]})
    assert sub["status"] == "active"
    assert sub["customer"] == done["customer"]
    assert sub["metadata"].to_dict() == {"license": "5"}
    assert sub["application_fee_percent"] == 15
    assert sub["transfer_data"]["destination"] == catalogue.account.id
    quantities = {i["price"]["id"]: i["quantity"] for i in sub["items"]["data"]}
    assert quantities == {catalogue.licensed_price.id: 2, catalogue.metered_price.id: None}
    item = sub["items"]["data"][0]
    assert item["current_period_end"] > item["current_period_start"]
    invoice = sub["latest_invoice"]
    assert (invoice["status"], invoice["amount_paid"], invoice["billing_reason"]) == (
        "paid",
        1800,
        "subscription_create",
    )
    assert invoice["parent"]["subscription_details"]["subscription"] == sub.id

    assert fake_stripe.wait_for_webhooks(5)
    types = [r.event["type"] for r in webhook_receiver.received[before:]]
    assert types == [
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "checkout.session.completed",
    ]
    stored_types = [e["type"] for e in fake_stripe.events()]
    assert "customer.created" in stored_types  # stored, but the endpoint does not subscribe to it


def test_cancel_redirects_and_expire_emits_expired(
    client, catalogue, fake_stripe, webhook_receiver
):
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "line_items": [{"price": catalogue.one_time_price.id, "quantity": 1}],
            "success_url": "http://127.0.0.1:18301/ok",
            "cancel_url": "http://127.0.0.1:18301/cancel?cs={CHECKOUT_SESSION_ID}",
        }
    )
    with httpx.Client() as http:
        page = http.get(session.url)
        cancel = http.post(_form_action(page.text, "cancel"))
        assert cancel.status_code == 303
        assert cancel.headers["Location"] == f"http://127.0.0.1:18301/cancel?cs={session.id}"
        expired = http.post(f"{fake_stripe.base_url}/control/checkout/sessions/{session.id}/expire")
        assert expired.status_code == 200
        assert expired.json()["status"] == "expired"
    again = client.v1.checkout.sessions.retrieve(session.id)
    assert again["status"] == "expired"
    assert again["url"] is None
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.expire(session.id)
    other = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "line_items": [{"price": catalogue.one_time_price.id, "quantity": 1}],
            "success_url": "http://127.0.0.1:18301/ok",
        }
    )
    assert client.v1.checkout.sessions.expire(other.id)["status"] == "expired"
    assert fake_stripe.wait_for_webhooks(5)
    expired_ids = [
        r.event["data"]["object"]["id"]
        for r in webhook_receiver.received
        if r.event["type"] == "checkout.session.expired"
    ]
    assert expired_ids == [session.id, other.id]


def test_checkout_enforces_stripes_line_item_rules(client, catalogue):
    cases = [
        (
            "subscription",
            [{"price": catalogue.metered_price.id, "quantity": 1}],
            "Quantity should not be defined",
        ),
        (
            "subscription",
            [{"price": catalogue.one_time_price.id, "quantity": 1}],
            "recurring price",
        ),
        ("payment", [{"price": catalogue.licensed_price.id, "quantity": 1}], "recurring price"),
        ("payment", [{"price": "price_nope", "quantity": 1}], "No such price"),
        ("payment", [{"price": catalogue.one_time_price.id}], "quantity"),
    ]
    for mode, items, message in cases:
        with pytest.raises(stripe.InvalidRequestError) as exc:
            client.v1.checkout.sessions.create(
                {"mode": mode, "line_items": items, "success_url": "http://127.0.0.1:1/ok"}
            )
        assert message in str(exc.value.user_message), (mode, items)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.checkout.sessions.create(
            {
                "mode": "payment",
                "line_items": [{"price": catalogue.one_time_price.id, "quantity": 1}],
                "subscription_data": {"metadata": {"a": "b"}},
            }
        )
    assert exc.value.param == "subscription_data"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.checkout.sessions.create(
            {
                "mode": "payment",
                "line_items": [{"price": catalogue.one_time_price.id, "quantity": 1}],
                "payment_intent_data": {"transfer_data": {"destination": "acct_missing"}},
            }
        )
    assert exc.value.http_status == 404
    assert exc.value.code == "resource_missing"


def test_connect_onboarding_page_flips_the_account_and_emits_account_updated(
    client, fake_stripe, webhook_receiver
):
    acct = client.v1.accounts.create(
        {
            "type": "express",
            "email": "c@example.com",
            "capabilities": {"transfers": {"requested": True}},
        }
    )
    assert (acct["charges_enabled"], acct["details_submitted"]) == (False, False)
    assert acct["capabilities"]["transfers"] == "inactive"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.accounts.login_links.create(acct.id)  # not onboarded yet
    link = client.v1.account_links.create(
        {
            "account": acct.id,
            "type": "account_onboarding",
            "refresh_url": "http://127.0.0.1:18301/connect/refresh",
            "return_url": "http://127.0.0.1:18301/connect/return?acct=1",
        }
    )
    with httpx.Client() as http:
        page = http.get(link.url)
        assert page.status_code == 200
        action = re.search(r'<form method="post" action="([^"]+)"', page.text)
        hidden = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', page.text))
        assert action
        done = http.post(action[1].replace("&amp;", "&"), data=hidden)
    assert done.status_code == 303
    assert done.headers["Location"] == "http://127.0.0.1:18301/connect/return?acct=1"
    acct = client.v1.accounts.retrieve(acct.id)
    assert (acct["charges_enabled"], acct["payouts_enabled"], acct["details_submitted"]) == (
        True,
        True,
        True,
    )
    assert acct["capabilities"]["transfers"] == "active"
    assert acct["requirements"]["currently_due"] == []
    assert client.v1.accounts.login_links.create(acct.id)["url"].endswith(acct.id)
    assert fake_stripe.wait_for_webhooks(5)
    (received,) = [r for r in webhook_receiver.received if r.event["type"] == "account.updated"]
    assert received.event["account"] == acct.id
    assert received.event["data"]["previous_attributes"]["charges_enabled"] is False
    assert stripe_client.construct_event(received.body, received.headers["Stripe-Signature"])


def test_usage_only_subscription_needs_no_payment(client, catalogue, fake_stripe):
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": catalogue.customer.id,
            "line_items": [{"price": catalogue.metered_price.id}],
        }
    )
    assert session["amount_total"] == 0
    fake_stripe.complete_checkout(session.id)
    done = client.v1.checkout.sessions.retrieve(session.id, {"expand": ["subscription"]})
    assert done["payment_status"] == "no_payment_required"
    assert done["subscription"]["status"] == "active"
    assert done["subscription"]["items"]["data"][0]["quantity"] is None
    invoice = client.v1.invoices.retrieve(done["invoice"])
    assert (invoice["status"], invoice["amount_due"]) == ("paid", 0)

"""Webhooks leave the fake signed exactly like Stripe's; our verifier accepts them and refuses
forged, stale and future signatures; failed deliveries are retried a bounded number of times."""

from __future__ import annotations

import json
import time

import pytest
import stripe

from billing import stripe_client
from fakes.stripe.server import FakeStripeServer
from fakes.stripe.webhooks import signature_header
from tests.fakes.stripe.conftest import CONNECT_SECRET, WEBHOOK_SECRET

PAYLOAD = json.dumps(
    {
        "id": "evt_test_1",
        "object": "event",
        "api_version": stripe_client.API_VERSION,
        "created": 1,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "invoice.paid",
        "data": {"object": {"id": "in_1", "object": "invoice"}},
    }
).encode()


def test_delivered_events_verify_with_the_library_and_with_ours(
    client, catalogue, fake_stripe, webhook_receiver
):
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "line_items": [{"price": catalogue.one_time_price.id, "quantity": 2}],
            "success_url": "http://127.0.0.1:1/ok",
        }
    )
    fake_stripe.complete_checkout(session.id)
    assert fake_stripe.wait_for_webhooks(5)
    received = webhook_receiver.received
    # account.updated comes from the fixture's onboarding.
    assert [r.event["type"] for r in received] == [
        "account.updated",
        "payment_intent.succeeded",
        "checkout.session.completed",
    ]
    for r in received:
        header = r.headers["Stripe-Signature"]
        secret = CONNECT_SECRET if r.event.get("account") else WEBHOOK_SECRET
        event = stripe.Webhook.construct_event(r.body, header, secret)
        assert event.id == r.event["id"]
        ours = stripe_client.construct_event(r.body, header)
        assert ours.type == r.event["type"]
        assert ours.data.object["object"]
    connect = received[0]
    assert connect.event["account"] == catalogue.account.id
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(
            connect.body, connect.headers["Stripe-Signature"], WEBHOOK_SECRET
        )
    completed = received[2].event
    assert completed["data"]["object"]["id"] == session.id
    assert completed["data"]["object"]["payment_status"] == "paid"
    assert "_payment_intent_data" not in received[2].body.decode()
    assert [d[2] for d in fake_stripe.deliveries] == [200, 200, 200]


def test_signatures_rotate_and_reject_forged_stale_and_future(settings):
    settings.STRIPE_WEBHOOK_SECRETS = ["whsec_new", "whsec_old"]
    now = int(time.time())
    for secret in ("whsec_new", "whsec_old"):
        event = stripe_client.construct_event(PAYLOAD, signature_header(PAYLOAD, secret, now))
        assert event.id == "evt_test_1"
    # The library's own helper signs the same way ours does.
    lib_header = stripe.WebhookSignature.generate_signature_header(
        PAYLOAD.decode(), "whsec_new", timestamp=now
    )
    assert lib_header == signature_header(PAYLOAD, "whsec_new", now)
    assert stripe_client.construct_event(PAYLOAD, lib_header).type == "invoice.paid"

    bad_cases = {
        "forged": signature_header(PAYLOAD, "whsec_attacker", now),
        "stale": signature_header(PAYLOAD, "whsec_new", now - 301),
        "future": signature_header(PAYLOAD, "whsec_new", now + 301),
        "garbled": "t=abc,v1=00",
        "no v1": f"t={now}",
        "empty": "",
    }
    for name, header in bad_cases.items():
        with pytest.raises(stripe_client.WebhookSignatureError):
            stripe_client.construct_event(PAYLOAD, header)
        assert name
    tampered = PAYLOAD.replace(b"invoice.paid", b"invoice.void")
    with pytest.raises(stripe_client.WebhookSignatureError):
        stripe_client.construct_event(tampered, signature_header(PAYLOAD, "whsec_new", now))
    # Just inside both bounds still verifies.
    assert stripe_client.construct_event(PAYLOAD, signature_header(PAYLOAD, "whsec_new", now + 250))
    assert stripe_client.construct_event(PAYLOAD, signature_header(PAYLOAD, "whsec_new", now - 250))
    settings.STRIPE_WEBHOOK_SECRETS = []
    with pytest.raises(stripe_client.WebhookSignatureError):
        stripe_client.construct_event(PAYLOAD, signature_header(PAYLOAD, "whsec_new", now))


def test_failed_deliveries_are_retried_then_given_up(client, webhook_receiver, settings):
    with FakeStripeServer(
        webhook_url=webhook_receiver.url,
        webhook_secret=WEBHOOK_SECRET,
        webhook_max_attempts=3,
        webhook_backoff_seconds=0.01,
    ) as fake:
        settings.STRIPE_API_BASE = fake.base_url
        c = stripe_client.get_client()
        acct = c.v1.accounts.create(
            {"type": "express", "capabilities": {"transfers": {"requested": True}}}
        )
        webhook_receiver.statuses = [500, 503]  # two failures, then accepted
        fake.complete_onboarding(acct.id)
        assert fake.wait_for_webhooks(5)
        assert [d[2] for d in fake.deliveries] == [500, 503, 200]
        assert len(webhook_receiver.received) == 1
        stored = fake.events("account.updated")[0]
        assert stored["pending_webhooks"] == 0

        webhook_receiver.statuses = [500, 500, 500, 500]
        fake.resend_event(stored["id"])
        assert fake.wait_for_webhooks(5)
        assert [d[2] for d in fake.deliveries[3:]] == [500, 500, 500]  # bounded: 3 attempts
        assert len(webhook_receiver.received) == 1


def test_unreachable_endpoint_is_a_connection_error_not_a_crash(client, settings):
    with FakeStripeServer(
        webhook_url="http://127.0.0.1:18399/nothing-listens-here",
        webhook_max_attempts=2,
        webhook_backoff_seconds=0.01,
    ) as fake:
        settings.STRIPE_API_BASE = fake.base_url
        acct = stripe_client.get_client().v1.accounts.create({"type": "standard"})
        fake.complete_onboarding(acct.id)
        assert fake.wait_for_webhooks(5)
        assert [d[2] for d in fake.deliveries] == [0, 0]


def test_paused_webhooks_can_be_released_out_of_order(
    client, catalogue, fake_stripe, webhook_receiver
):
    fake_stripe.wait_for_webhooks(5)
    before = len(webhook_receiver.received)
    fake_stripe.pause_webhooks()
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": catalogue.customer.id,
            "line_items": [{"price": catalogue.licensed_price.id, "quantity": 1}],
            "success_url": "http://127.0.0.1:1/ok",
        }
    )
    fake_stripe.complete_checkout(session.id)
    sub_id = client.v1.checkout.sessions.retrieve(session.id)["subscription"]
    fake_stripe.advance_subscription(sub_id)
    assert not fake_stripe.wait_for_webhooks(0.2)  # paused: queued, cannot drain
    assert len(webhook_receiver.received) == before
    fake_stripe.resume_webhooks(reverse=True)
    assert fake_stripe.wait_for_webhooks(5)
    types = [r.event["type"] for r in webhook_receiver.received[before:]]
    assert types[0] == "customer.subscription.updated"
    assert types[-1] == "customer.subscription.created"
    created = [r.event["created"] for r in webhook_receiver.received[before:]]
    assert created == sorted(created, reverse=True)

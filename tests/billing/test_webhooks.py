"""The webhook endpoint and event processing: signatures, duplicates, unknown types, failures
and re-drives, out-of-order subscription events, refunds and disputes."""

import json
import time
from io import StringIO

import pytest
from django.core.management import call_command

from billing.models import (
    CheckoutOrder,
    CreatorSubscription,
    License,
    LicenseStatus,
    Sale,
    SaleKind,
    StripeEvent,
    StripeEventStatus,
)
from billing.services.checkout import checkout_start
from tests.billing.conftest import WEBHOOK_SECRET, events_of, post_event, sign

pytestmark = pytest.mark.django_db

URLS = {"success_url": "http://127.0.0.1/s", "cancel_url": "http://127.0.0.1/c"}


def _buy(shop, fake, plan):
    checkout_start(buyer=shop.buyer, plan=plan, **URLS)
    order = CheckoutOrder.objects.filter(plan=plan).get()
    fake.complete_checkout(order.stripe_session_id)
    return order


def _deliver_all(client, events, capture):
    with capture(execute=True):
        for event in events:
            assert post_event(client, event).status_code == 200


@pytest.mark.parametrize(
    ("secret", "offset"),
    [("whsec_wrong", 0), (WEBHOOK_SECRET, -301), (WEBHOOK_SECRET, 301)],
    ids=["bad-secret", "stale", "future"],
)
def test_bad_stale_or_future_signature_is_400_and_changes_nothing(
    shop, stripe_fake, client, eager_celery, secret, offset, django_capture_on_commit_callbacks
):
    _buy(shop, stripe_fake, shop.one_time)
    (completed,) = events_of(stripe_fake, "checkout.session.completed")
    with django_capture_on_commit_callbacks(execute=True):
        response = post_event(client, completed, secret=secret, timestamp=int(time.time()) + offset)
    assert response.status_code == 400
    assert response.json() == {"error": "invalid signature"}  # says nothing about why
    assert not StripeEvent.objects.exists()
    assert not License.objects.exists()


def test_missing_signature_and_tampered_body_are_rejected(stripe_settings, client):
    body = json.dumps({"id": "evt_1", "type": "account.updated"}).encode()
    assert (
        client.post(
            "/billing/webhooks/stripe", data=body, content_type="application/json"
        ).status_code
        == 400
    )
    header = sign(body)
    tampered = body.replace(b"evt_1", b"evt_2")
    response = client.post(
        "/billing/webhooks/stripe",
        data=tampered,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=header,
    )
    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_rotated_secrets_are_both_accepted(stripe_settings, client):
    stripe_settings.STRIPE_WEBHOOK_SECRETS = ["whsec_new", WEBHOOK_SECRET]
    event = {"id": "evt_rot", "object": "event", "type": "unknown.kind", "data": {"object": {}}}
    assert post_event(client, event, secret=WEBHOOK_SECRET).status_code == 200
    assert post_event(client, {**event, "id": "evt_rot2"}, secret="whsec_new").status_code == 200
    assert StripeEvent.objects.count() == 2


def test_duplicate_delivery_is_acknowledged_and_processed_once(
    shop, stripe_fake, client, eager_celery, django_capture_on_commit_callbacks
):
    _buy(shop, stripe_fake, shop.one_time)
    (completed,) = events_of(stripe_fake, "checkout.session.completed")
    _deliver_all(client, [completed] * 3, django_capture_on_commit_callbacks)
    event = StripeEvent.objects.get()
    assert (event.status, event.attempts) == (StripeEventStatus.PROCESSED, 1)
    assert License.objects.count() == 1
    assert Sale.objects.count() == 1


def test_unknown_types_are_stored_and_ignored(
    stripe_settings, client, eager_celery, django_capture_on_commit_callbacks
):
    event = {
        "id": "evt_unknown",
        "object": "event",
        "type": "radar.early_fraud_warning.created",
        "data": {"object": {"id": "x"}},
        "created": int(time.time()),
    }
    _deliver_all(client, [event], django_capture_on_commit_callbacks)
    row = StripeEvent.objects.get()
    assert row.status == StripeEventStatus.IGNORED


def test_failed_event_keeps_error_and_the_command_redrives_it(
    shop, stripe_fake, client, eager_celery, django_capture_on_commit_callbacks
):
    order = _buy(shop, stripe_fake, shop.one_time)
    (completed,) = events_of(stripe_fake, "checkout.session.completed")
    for _ in range(3):  # the re-read of the session fails (client retries included)
        stripe_fake.fail_next(f"/v1/checkout/sessions/{order.stripe_session_id}", "500")
    _deliver_all(client, [completed], django_capture_on_commit_callbacks)
    row = StripeEvent.objects.get()
    assert (row.status, row.attempts) == (StripeEventStatus.FAILED, 1)
    assert "APIError" in row.last_error
    assert not License.objects.exists()

    out = StringIO()
    call_command("billing_reprocess_events", "--failed", stdout=out)
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error) == (StripeEventStatus.PROCESSED, 2, "")
    assert License.objects.count() == 1
    call_command("billing_reprocess_events", "--ids", row.stripe_event_id, stdout=out)
    assert License.objects.count() == 1


def test_subscription_events_out_of_order_end_in_stripes_state(
    shop, stripe_fake, client, eager_celery, django_capture_on_commit_callbacks
):
    _buy(shop, stripe_fake, shop.subscription)
    _deliver_all(client, stripe_fake.events(), django_capture_on_commit_callbacks)
    sub = CreatorSubscription.objects.get()
    lic = License.objects.get()
    seen = {e["id"] for e in stripe_fake.events()}

    stripe_fake.advance_subscription(sub.stripe_subscription_id, fail=True)  # -> past_due
    stripe_fake.advance_subscription(sub.stripe_subscription_id)  # paid -> active
    new = [e for e in stripe_fake.events() if e["id"] not in seen]
    assert "invoice.payment_failed" in [e["type"] for e in new]
    # Newest first: the stale "past_due" update and the failed invoice arrive last.
    _deliver_all(client, list(reversed(new)), django_capture_on_commit_callbacks)
    sub.refresh_from_db()
    lic.refresh_from_db()
    assert stripe_fake.state.get("subscriptions", sub.stripe_subscription_id)["status"] == "active"
    assert sub.status == "active"
    assert lic.status == LicenseStatus.ACTIVE

    # Cancel at Stripe; a late `updated` (active) after the `deleted` still ends expired.
    from billing import stripe_client

    stripe_client.get_client().v1.subscriptions.cancel(sub.stripe_subscription_id)
    latest = [e for e in stripe_fake.events() if e["type"].startswith("customer.subscription.")]
    deleted = [e for e in latest if e["type"] == "customer.subscription.deleted"]
    stale_update = next(e for e in latest if e["type"] == "customer.subscription.updated")
    _deliver_all(
        client,
        [*deleted, {**stale_update, "id": "evt_stale_copy"}],
        django_capture_on_commit_callbacks,
    )
    lic.refresh_from_db()
    sub.refresh_from_db()
    assert sub.status == "canceled"
    assert lic.status == LicenseStatus.EXPIRED
    # Every event re-read Stripe's current state, so the stale past_due never showed.
    assert list(lic.events.values_list("to_status", flat=True)) == ["active", "expired"]


def test_full_refund_revokes_and_records_a_negative_sale(
    shop, stripe_fake, client, eager_celery, django_capture_on_commit_callbacks
):
    order = _buy(shop, stripe_fake, shop.one_time)
    _deliver_all(client, stripe_fake.events(), django_capture_on_commit_callbacks)
    order.refresh_from_db()
    stripe_fake.refund(order.stripe_payment_intent_id)
    refunded = events_of(stripe_fake, "charge.refunded")
    _deliver_all(client, refunded * 2, django_capture_on_commit_callbacks)
    lic = License.objects.get()
    assert lic.status == LicenseStatus.REVOKED
    refund = Sale.objects.get(kind=SaleKind.REFUND)
    assert (refund.gross_amount, refund.platform_fee_amount, refund.net_amount) == (
        -4900,
        -735,
        -4165,
    )


def test_dispute_suspends_the_license(
    shop, stripe_fake, client, eager_celery, django_capture_on_commit_callbacks
):
    order = _buy(shop, stripe_fake, shop.one_time)
    _deliver_all(client, stripe_fake.events(), django_capture_on_commit_callbacks)
    order.refresh_from_db()
    stripe_fake.dispute(order.stripe_payment_intent_id)
    _deliver_all(
        client, events_of(stripe_fake, "charge.dispute.created"), django_capture_on_commit_callbacks
    )
    assert License.objects.get().status == LicenseStatus.SUSPENDED


def test_account_updated_marks_the_creator_payable(
    stripe_fake, client, eager_celery, django_capture_on_commit_callbacks
):
    from billing.services.creators import connect_account_ensure, creator_become
    from tests.factories import UserFactory

    creator = creator_become(user=UserFactory(), handle="newbie")
    account = connect_account_ensure(creator=creator)
    assert not account.is_payable
    stripe_fake.complete_onboarding(account.stripe_account_id)
    _deliver_all(
        client, events_of(stripe_fake, "account.updated"), django_capture_on_commit_callbacks
    )
    account.refresh_from_db()
    assert account.is_payable


def test_expired_session_closes_the_pending_order(
    shop, stripe_fake, client, eager_celery, django_capture_on_commit_callbacks
):
    checkout_start(buyer=shop.buyer, plan=shop.one_time, **URLS)
    order = CheckoutOrder.objects.get()
    stripe_fake.expire_checkout(order.stripe_session_id)
    _deliver_all(
        client,
        events_of(stripe_fake, "checkout.session.expired"),
        django_capture_on_commit_callbacks,
    )
    order.refresh_from_db()
    assert order.status == "expired"

"""Only our events change anything: an event of the other Stripe mode or of a connected
account we never created is acknowledged, stored as ignored and logged, and grants nothing."""

import logging

import pytest

from billing.models import CheckoutOrder, License, StripeEvent, StripeEventStatus
from billing.services.checkout import checkout_start
from tests.billing.conftest import events_of, post_event

pytestmark = pytest.mark.django_db

URLS = {"success_url": "http://127.0.0.1/s", "cancel_url": "http://127.0.0.1/c"}


def _completed_purchase(shop, fake):
    checkout_start(buyer=shop.buyer, plan=shop.one_time, **URLS)
    order = CheckoutOrder.objects.get(plan=shop.one_time)
    fake.complete_checkout(order.stripe_session_id)
    (completed,) = events_of(fake, "checkout.session.completed")
    return completed


def _warnings(caplog):
    return [r.msg for r in caplog.records if r.levelno >= logging.WARNING]


def _deliver(client, event, capture):
    with capture(execute=True):
        response = post_event(client, event)
    assert response.status_code == 200
    return StripeEvent.objects.get(stripe_event_id=event["id"])


def test_a_live_purchase_on_a_test_deployment_grants_nothing(
    shop, stripe_fake, client, eager_celery, django_capture_on_commit_callbacks, caplog
):
    completed = _completed_purchase(shop, stripe_fake)
    live = {**completed, "id": "evt_live_copy", "livemode": True}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="billing.services.events"):
        row = _deliver(client, live, django_capture_on_commit_callbacks)
    assert row.status == StripeEventStatus.IGNORED
    assert row.last_error == "livemode mismatch: a live event, our key is test"
    assert not License.objects.exists()
    assert _warnings(caplog) == ["billing.stripe_event_not_ours"]
    # The same purchase in our own mode does grant: the mode was the only difference.
    _deliver(client, completed, django_capture_on_commit_callbacks)
    assert License.objects.count() == 1


def test_a_test_event_on_a_live_deployment_is_ignored(
    stripe_settings, client, eager_celery, django_capture_on_commit_callbacks
):
    stripe_settings.STRIPE_SECRET_KEY = "sk_live_deployment"
    event = {
        "id": "evt_test_on_live",
        "object": "event",
        "type": "checkout.session.completed",
        "livemode": False,
        "created": 1,
        "data": {"object": {"id": "cs_test_1"}},
    }
    row = _deliver(client, event, django_capture_on_commit_callbacks)
    assert (row.status, row.last_error) == (
        StripeEventStatus.IGNORED,
        "livemode mismatch: a test event, our key is live",
    )


def test_a_connect_event_of_an_account_we_do_not_know_is_ignored(
    shop, stripe_fake, client, eager_celery, django_capture_on_commit_callbacks, caplog
):
    (known,) = [
        e
        for e in events_of(stripe_fake, "account.updated")
        if e.get("account") == shop.account.stripe_account_id
    ][:1]
    stranger = {**known, "id": "evt_stranger", "account": "acct_1NotOurs"}
    stranger["data"] = {"object": {**known["data"]["object"], "id": "acct_1NotOurs"}}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="billing.services.events"):
        row = _deliver(client, stranger, django_capture_on_commit_callbacks)
    assert row.status == StripeEventStatus.IGNORED
    assert "acct_1NotOurs" in row.last_error
    assert _warnings(caplog) == ["billing.stripe_event_not_ours"]
    # The known account's own event is processed as before.
    assert _deliver(client, known, django_capture_on_commit_callbacks).status == (
        StripeEventStatus.PROCESSED
    )

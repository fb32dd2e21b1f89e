"""Catch-up: events Stripe could not deliver are listed from `GET /v1/events` (the fake, over
HTTP, through our client), stored and processed once through the webhook pipeline; a second run
changes nothing."""

import pytest

from billing.handlers import HANDLERS
from billing.models import CheckoutOrder, License, Sale, StripeEvent, StripeEventStatus
from billing.services.checkout import checkout_start
from billing.tasks import stripe_events_catch_up_task
from config.settings.celery import CELERY_BEAT_SCHEDULE
from tests.billing.conftest import events_of, post_event

pytestmark = pytest.mark.django_db
URLS = {"success_url": "http://127.0.0.1/s", "cancel_url": "http://127.0.0.1/c"}


def _buy(shop, fake, plan):
    checkout_start(buyer=shop.buyer, plan=plan, **URLS)
    order = CheckoutOrder.objects.get(plan=plan)
    fake.complete_checkout(order.stripe_session_id)
    return order


def _requests(fake, path="/v1/events"):
    return [r for r in fake.state.requests if r["path"] == path]


def test_the_beat_runs_it():
    entry = CELERY_BEAT_SCHEDULE["billing-stripe-events-catch-up"]
    assert entry["task"] == "billing.tasks.stripe_events_catch_up_task"


def test_undelivered_events_are_fetched_and_processed_once(
    shop, stripe_fake, eager_celery, django_capture_on_commit_callbacks
):
    order = _buy(shop, stripe_fake, shop.one_time)  # no webhook goes out from this fake
    assert not StripeEvent.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        stored = stripe_events_catch_up_task()
    # Platform events of the types we handle (Connect events are listed per account).
    handled = {
        e["id"] for e in stripe_fake.events() if not e.get("account") and e["type"] in HANDLERS
    }
    assert stored == len(handled) > 0
    assert set(StripeEvent.objects.values_list("stripe_event_id", flat=True)) == handled
    completed = StripeEvent.objects.get(type="checkout.session.completed")
    assert (completed.status, completed.attempts) == (StripeEventStatus.PROCESSED, 1)
    assert License.objects.filter(order=order).count() == 1
    assert Sale.objects.count() == 1

    before = list(StripeEvent.objects.order_by("pk").values_list("pk", "status", "attempts"))
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert stripe_events_catch_up_task() == 0
    assert callbacks == []  # nothing queued
    assert list(StripeEvent.objects.order_by("pk").values_list("pk", "status", "attempts")) == (
        before
    )
    assert License.objects.count() == 1

    # What a late webhook of the same event does now: a duplicate, acknowledged, nothing more.
    (event,) = events_of(stripe_fake, "checkout.session.completed")
    from django.test import Client

    assert post_event(Client(), event).json() == {"received": True, "duplicate": True}
    assert License.objects.count() == 1


def test_the_cursor_starts_at_the_newest_event_and_undelivered_ones_are_still_found(
    shop, stripe_fake, eager_celery, django_capture_on_commit_callbacks
):
    _buy(shop, stripe_fake, shop.one_time)
    with django_capture_on_commit_callbacks(execute=True):
        stripe_events_catch_up_task()
    newest = max(StripeEvent.objects.values_list("stripe_created", flat=True))

    # An event from two hours before the newest we hold, which Stripe never delivered.
    order = _buy(shop, stripe_fake, shop.subscription)
    (late,) = [
        e
        for e in events_of(stripe_fake, "checkout.session.completed")
        if e["data"]["object"]["id"] == order.stripe_session_id
    ]
    with stripe_fake.state.lock:
        stored = stripe_fake.state.get("events", late["id"])
        stored["created"] = newest - 7200
        stored["pending_webhooks"] = 1  # Stripe still holds it as undelivered
    stripe_fake.state.requests.clear()
    with django_capture_on_commit_callbacks(execute=True):
        stripe_events_catch_up_task()
    lists = _requests(stripe_fake)
    assert len(lists) == 2  # the cursor listing and the undelivered listing
    assert StripeEvent.objects.get(stripe_event_id=late["id"]).status == (
        StripeEventStatus.PROCESSED
    )
    assert License.objects.filter(order=order).count() == 1

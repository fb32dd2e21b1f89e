"""A new monthly price reaches live subscriptions at Stripe: an increase only after the notice
period, a decrease at once; the switch is idempotent and survives dropped responses. Over
loopback HTTP with the real `stripe` client and the fake Stripe."""

from datetime import timedelta

import pytest
from django.utils import timezone

from billing import stripe_client
from billing.models import CheckoutOrder, CreatorSubscription, License, LicenseEvent
from billing.services.checkout import checkout_start
from billing.services.plans import plan_price_change, plan_prices_apply_due
from tests.billing.conftest import post_event

pytestmark = pytest.mark.django_db

URLS = {"success_url": "http://127.0.0.1/s", "cancel_url": "http://127.0.0.1/c"}


class Subscribed:
    """The shop's buyer on the $9/month plan, with every webhook delivered."""

    def __init__(self, shop, fake, client, capture) -> None:
        self.shop, self.fake, self.client, self.capture = shop, fake, client, capture
        checkout_start(buyer=shop.buyer, plan=shop.subscription, **URLS)
        order = CheckoutOrder.objects.get(plan=shop.subscription)
        fake.complete_checkout(order.stripe_session_id)
        self.deliver_new()
        self.row = CreatorSubscription.objects.get()
        self.license = License.objects.get(creator_subscription=self.row)
        self.sub_id = self.row.stripe_subscription_id

    def deliver_new(self, types: tuple[str, ...] = ()) -> None:
        seen = getattr(self, "_seen", set())
        with self.capture(execute=True):
            for event in self.fake.events():
                if event["id"] in seen or (types and event["type"] not in types):
                    continue
                assert post_event(self.client, event).status_code == 200
                seen.add(event["id"])
        self._seen = seen

    def stripe_licensed_price(self) -> str:
        sub = self.fake.state.get("subscriptions", self.sub_id)
        (item,) = [
            i for i in sub["items"]["data"] if i["price"]["recurring"]["usage_type"] == "licensed"
        ]
        return str(item["price"]["id"])

    def advance_licensed_amounts(self) -> list[int]:
        invoice = self.fake.advance_subscription(self.sub_id)["invoice"]
        return [line["amount"] for line in invoice["lines"]["data"] if line["quantity"] == 1]

    def price_posts(self) -> list[dict]:
        return [
            r
            for r in self.fake.state.requests
            if r["method"] == "POST" and r["path"] == f"/v1/subscriptions/{self.sub_id}"
        ]

    def switch_events(self) -> list[dict]:
        return [
            e
            for e in self.fake.events("customer.subscription.updated")
            if (e.get("request") or {}).get("id")
        ]


@pytest.fixture
def subscribed(shop, stripe_fake, client, eager_celery, django_capture_on_commit_callbacks):
    return Subscribed(shop, stripe_fake, client, django_capture_on_commit_callbacks)


def _raise_to(s: Subscribed, amount: int):
    with s.capture(execute=True):  # the new version's Stripe Price is created on commit
        price = plan_price_change(user=s.shop.owner, plan=s.shop.subscription, unit_amount=amount)
    price.refresh_from_db()
    return price


def test_increase_reaches_stripe_only_after_the_notice_period(subscribed, settings):
    s = subscribed
    settings.PRICE_INCREASE_NOTICE_DAYS = 14
    v1 = s.license.plan_price
    assert s.row.items[v1.stripe_price_id]
    up = _raise_to(s, 1200)
    assert up.stripe_price_id
    assert up.effective_at - timezone.now() > timedelta(days=13, hours=23)

    # Before the notice period ends: nothing moves, here or at Stripe; the next period is $9.
    with s.capture(execute=True):
        assert plan_prices_apply_due(now=up.effective_at - timedelta(minutes=1)) == 0
    assert s.stripe_licensed_price() == v1.stripe_price_id
    assert s.price_posts() == []
    assert s.advance_licensed_amounts() == [900]
    s.deliver_new()

    # After it: the due job moves the license and switches the item, without a new invoice.
    with s.capture(execute=True):
        assert plan_prices_apply_due(now=up.effective_at + timedelta(seconds=1)) == 1
    assert s.stripe_licensed_price() == up.stripe_price_id
    (post,) = s.price_posts()
    assert post["idempotency_key"] == stripe_client.idempotency_key("sub-price", s.row.pk, up.pk)
    s.row.refresh_from_db()
    s.license.refresh_from_db()
    assert up.stripe_price_id in s.row.items
    assert v1.stripe_price_id not in s.row.items
    assert s.license.plan_price_id == up.pk
    assert LicenseEvent.objects.filter(license=s.license, reason="price v1 -> v2").count() == 1
    assert s.advance_licensed_amounts() == [1200]

    # The webhook re-read maps the items by price too, and a second run changes nothing.
    s.deliver_new()
    s.row.refresh_from_db()
    s.shop.subscription.refresh_from_db()
    assert set(s.row.items) == {up.stripe_price_id, s.shop.subscription.stripe_metered_price_id}
    events_before = len(s.fake.events())
    with s.capture(execute=True):
        assert plan_prices_apply_due(now=up.effective_at + timedelta(hours=1)) == 0
    assert len(s.price_posts()) == 1
    assert len(s.fake.events()) == events_before
    assert LicenseEvent.objects.filter(license=s.license, reason="price v1 -> v2").count() == 1


def test_decrease_reaches_stripe_at_once(subscribed):
    s = subscribed
    down = _raise_to(s, 700)
    assert down.effective_at <= timezone.now()
    assert s.stripe_licensed_price() == down.stripe_price_id
    s.license.refresh_from_db()
    assert s.license.plan_price_id == down.pk
    assert s.advance_licensed_amounts() == [700]
    with s.capture(execute=True):
        plan_prices_apply_due()
    assert len(s.price_posts()) == 1


def test_overage_only_change_keeps_the_monthly_item(subscribed):
    s = subscribed
    v1 = s.license.plan_price
    with s.capture(execute=True):
        cheaper = plan_price_change(user=s.shop.owner, plan=s.shop.subscription, overage_amount=1)
    s.license.refresh_from_db()
    assert s.license.plan_price_id == cheaper.pk  # the gateway meters at the new version
    with s.capture(execute=True):
        plan_prices_apply_due()
    assert s.price_posts() == []
    assert s.stripe_licensed_price() == v1.stripe_price_id


def test_dropped_responses_then_retry_switch_once(subscribed):
    s = subscribed
    up = _raise_to(s, 1200)
    later = up.effective_at + timedelta(seconds=1)
    # Every attempt (the first and the client's two retries) is applied or replayed at Stripe,
    # but its answer is lost: the task gives up with our row still on the old item.
    for _ in range(3):
        s.fake.fail_next(f"/v1/subscriptions/{s.sub_id}", "drop_response")
    with s.capture(execute=True):
        assert plan_prices_apply_due(now=later) == 1
    assert s.stripe_licensed_price() == up.stripe_price_id
    s.row.refresh_from_db()
    assert up.stripe_price_id not in s.row.items
    assert len(s.price_posts()) == 3
    assert len(s.switch_events()) == 1

    # The next run queues the switch again: same key, so Stripe replays; our row catches up.
    with s.capture(execute=True):
        assert plan_prices_apply_due(now=later) == 0
    posts = s.price_posts()
    assert len(posts) == 4
    assert {p["idempotency_key"] for p in posts} == {
        stripe_client.idempotency_key("sub-price", s.row.pk, up.pk)
    }
    assert len(s.switch_events()) == 1
    s.row.refresh_from_db()
    assert up.stripe_price_id in s.row.items
    assert s.advance_licensed_amounts() == [1200]


def test_canceled_subscription_is_left_alone(subscribed):
    s = subscribed
    stripe_client.get_client().v1.subscriptions.cancel(s.sub_id)
    s.deliver_new()
    up = _raise_to(s, 1200)
    with s.capture(execute=True):
        plan_prices_apply_due(now=up.effective_at + timedelta(seconds=1))
    assert s.price_posts() == []

"""Subscribers change their subscription: cancel at the period end and resume, cancel now (no
refund), upgrade now with proration, downgrade at the period end, several plans from one
creator on one subscription, the customer portal, and the next invoice's estimate. Each
through our services against the fake Stripe over HTTP, with every webhook posted through our
webhook view; licenses change only from what Stripe then holds."""

from __future__ import annotations

import re

import httpx
import pytest

from billing.models import (
    ApiKey,
    CreatorSubscription,
    License,
    LicenseStatus,
    Sale,
    SubscriptionChange,
    SubscriptionChangeStatus,
)
from billing.selectors import subscription_next_invoice_get
from billing.services.checkout import checkout_start
from billing.services.licenses import api_key_create
from billing.services.plans import plan_create
from billing.services.subscription_changes import (
    billing_portal_session_create,
    subscription_cancel_at_period_end,
    subscription_cancel_now,
    subscription_plan_switch,
    subscription_resume,
)
from common.exceptions import ApplicationError
from tests.billing.services.test_subscription_price_change import URLS, Subscribed

pytestmark = pytest.mark.django_db


@pytest.fixture
def subscribed(shop, stripe_fake, client, eager_celery, django_capture_on_commit_callbacks):
    shop.team = plan_create(
        user=shop.owner,
        listing=shop.listing,
        kind="subscription",
        name="Team",
        unit_amount=2900,
        included_calls=10000,
        overage_amount=1,
    )
    return Subscribed(shop, stripe_fake, client, django_capture_on_commit_callbacks)


def _fake_sub(s: Subscribed) -> dict:
    return s.fake.state.get("subscriptions", s.sub_id)


def _prices_on_stripe(s: Subscribed) -> set[str]:
    for plan in (s.shop.subscription, s.shop.team, s.shop.per_call):
        plan.refresh_from_db()  # Stripe ids are made on the way
    return {i["price"]["id"] for i in _fake_sub(s)["items"]["data"]}


def _posts(s: Subscribed, method: str = "POST") -> list[dict]:
    return [
        r
        for r in s.fake.state.requests
        if r["method"] == method and r["path"] == f"/v1/subscriptions/{s.sub_id}"
    ]


def test_cancel_at_period_end_then_resume_then_the_period_ends(subscribed):
    s = subscribed
    row = subscription_cancel_at_period_end(buyer=s.shop.buyer, license_id=s.license.pk)
    assert row.cancel_at_period_end is True
    assert _fake_sub(s)["cancel_at_period_end"] is True
    s.deliver_new()
    s.license.refresh_from_db()
    assert s.license.status == LicenseStatus.ACTIVE  # paid until the period end

    estimate = subscription_next_invoice_get(creator_subscription=row)
    assert estimate is not None
    assert estimate.amount_due == 0  # no renewal, no usage yet: nothing more to pay
    assert estimate.ending is True

    row = subscription_resume(buyer=s.shop.buyer, license_id=s.license.pk)
    assert row.cancel_at_period_end is False
    s.deliver_new()
    # Cancel again: a new request with a new key (the first one's key would replay it).
    subscription_cancel_at_period_end(buyer=s.shop.buyer, license_id=s.license.pk)
    keys = [r["idempotency_key"] for r in _posts(s)]
    assert len(keys) == len(set(keys)) == 3
    assert _fake_sub(s)["cancel_at_period_end"] is True

    s.fake.advance_subscription(s.sub_id)  # the period ends
    s.deliver_new()
    s.license.refresh_from_db()
    assert s.license.status == LicenseStatus.EXPIRED
    assert CreatorSubscription.objects.get().status == "canceled"


def test_cancel_now_ends_access_at_once_without_a_refund(subscribed):
    s = subscribed
    sales_before = Sale.objects.count()
    row = subscription_cancel_now(buyer=s.shop.buyer, license_id=s.license.pk)
    assert row.status == "canceled"
    (delete,) = _posts(s, "DELETE")
    assert delete["idempotency_key"]
    s.license.refresh_from_db()
    assert s.license.status == LicenseStatus.EXPIRED
    s.deliver_new()
    final = s.fake.state.get("invoices", _fake_sub(s)["latest_invoice"])
    assert all(line["amount"] >= 0 for line in final["lines"]["data"])  # no credit line
    assert Sale.objects.filter(gross_amount__lt=0).count() == 0
    assert Sale.objects.count() == sales_before  # usage so far was 0: nothing billed
    with pytest.raises(ApplicationError):
        subscription_cancel_now(buyer=s.shop.buyer, license_id=s.license.pk)


def test_upgrade_now_is_prorated_and_keeps_the_keys(subscribed):
    s = subscribed
    key, _raw = api_key_create(license=s.license, name="laptop")
    team_price = s.shop.team.prices.get()
    change = subscription_plan_switch(
        buyer=s.shop.buyer, license_id=s.license.pk, plan_id=s.shop.team.pk
    )
    assert change.status == SubscriptionChangeStatus.APPLIED
    assert change.params["proration_behavior"] == "always_invoice"
    team_price.refresh_from_db()  # its Stripe price was made on the way
    s.license.refresh_from_db()
    assert (s.license.plan, s.license.plan_price) == (s.shop.team, team_price)
    assert ApiKey.objects.get(pk=key.pk).license_id == s.license.pk  # same license, same key
    on_stripe = _prices_on_stripe(s)
    assert team_price.stripe_price_id in on_stripe
    assert s.shop.team.stripe_metered_price_id in on_stripe
    on_stripe = _prices_on_stripe(s)
    assert s.shop.subscription.stripe_metered_price_id not in on_stripe
    # The proration invoice was paid at once, and its revenue is recorded from invoice.paid.
    s.deliver_new()
    invoice = s.fake.state.get("invoices", _fake_sub(s)["latest_invoice"])
    assert invoice["billing_reason"] == "subscription_update"
    assert 0 < invoice["amount_paid"] < 2900 - 900 + 1
    assert Sale.objects.get(stripe_invoice_id=invoice["id"]).gross_amount == invoice["amount_paid"]
    # The idempotency key covers the parameters: the request carried the change's own key.
    (post,) = [r for r in _posts(s) if r["idempotency_key"]]
    assert post["idempotency_key"].startswith("tb:")
    s.license.refresh_from_db()
    assert s.license.plan == s.shop.team  # the webhooks agree with the re-read


def test_downgrade_waits_for_the_period_end(subscribed):
    s = subscribed
    subscription_plan_switch(buyer=s.shop.buyer, license_id=s.license.pk, plan_id=s.shop.team.pk)
    s.deliver_new()
    change = subscription_plan_switch(
        buyer=s.shop.buyer, license_id=s.license.pk, plan_id=s.shop.subscription.pk
    )
    row = CreatorSubscription.objects.get()
    assert change.status == SubscriptionChangeStatus.SENT
    assert change.effective_at == row.current_period_end
    assert change.params["proration_behavior"] == "none"
    s.deliver_new()
    s.license.refresh_from_db()
    assert s.license.plan == s.shop.team  # still the paid-for plan
    with pytest.raises(ApplicationError, match="already scheduled"):
        subscription_plan_switch(
            buyer=s.shop.buyer, license_id=s.license.pk, plan_id=s.shop.per_call.pk
        )
    estimate = subscription_next_invoice_get(creator_subscription=row)
    assert estimate is not None

    renewal = s.fake.advance_subscription(s.sub_id)["invoice"]
    s.deliver_new()
    assert renewal["amount_due"] == estimate.amount_due  # what we showed is what was charged
    assert 900 in [line["amount"] for line in renewal["lines"]["data"]]
    s.license.refresh_from_db()
    assert s.license.plan == s.shop.subscription
    assert SubscriptionChange.objects.get(pk=change.pk).status == SubscriptionChangeStatus.APPLIED
    # The overage meter followed the plan (tidy task, on commit).
    on_stripe = _prices_on_stripe(s)
    assert s.shop.subscription.stripe_metered_price_id in on_stripe
    assert s.shop.team.stripe_metered_price_id not in on_stripe


def test_several_plans_from_one_creator_share_one_subscription(subscribed):
    s = subscribed
    url, payg = checkout_start(buyer=s.shop.buyer, plan=s.shop.per_call, **URLS)
    assert url is None
    assert payg is not None
    s.deliver_new()
    assert CreatorSubscription.objects.count() == 1
    assert {lic.plan for lic in License.objects.filter(status=LicenseStatus.ACTIVE)} == {
        s.shop.subscription,
        s.shop.per_call,
    }
    # Cancelling one plan now leaves the other running.
    subscription_cancel_now(buyer=s.shop.buyer, license_id=payg.pk)
    s.deliver_new()
    payg.refresh_from_db()
    s.license.refresh_from_db()
    assert (payg.status, s.license.status) == (LicenseStatus.EXPIRED, LicenseStatus.ACTIVE)
    on_stripe = _prices_on_stripe(s)
    assert s.shop.per_call.stripe_metered_price_id not in on_stripe
    assert CreatorSubscription.objects.get().status == "active"


def test_the_portal_switches_and_cancels_and_we_follow_its_webhooks(subscribed):
    s = subscribed
    s.shop.team.refresh_from_db()
    from billing.services.plans import plan_stripe_sync

    plan_stripe_sync(plan_id=s.shop.team.pk)
    url = billing_portal_session_create(buyer=s.shop.buyer, return_url="http://127.0.0.1/back")
    assert re.search(r"/p/session/bps_\w+$", url)
    with httpx.Client(follow_redirects=True, timeout=5) as http:
        page = http.get(url).text
        form = re.search(
            r'<form method="post" action="([^"]+/switch)"[^>]*>((?:<input[^>]+>)*)'
            r"<button type=submit>Switch to",
            page,
        )
        assert form
        fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form[2]))
        http.post(form[1], data=fields)
    s.deliver_new()
    s.license.refresh_from_db()
    assert s.license.plan == s.shop.team
    assert s.license.events.last().reason.startswith("plan Pro -> Team: switched in the customer")
    # The overage meter followed the portal's switch.
    on_stripe = _prices_on_stripe(s)
    assert s.shop.team.stripe_metered_price_id in on_stripe

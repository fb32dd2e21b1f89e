"""Switching plans after seeing the price: `subscription_switch_preview` asks Stripe
(`POST /v1/invoices/create_preview` with the update and a proration date) what the switch costs,
and `subscription_plan_switch` then sends that same update with that same proration date, so the
invoice Stripe creates charges exactly the previewed amount. Against the fake Stripe over HTTP,
with every webhook posted through our webhook view."""

from __future__ import annotations

import time

import pytest

from billing.models import CreatorSubscription, SubscriptionChange, SubscriptionChangeKind
from billing.services.subscription_changes import (
    SwitchQuoteStale,
    subscription_plan_switch,
    subscription_switch_preview,
)
from tests.billing.services.test_subscription_changes import (  # noqa: F401 (fixture)
    _fake_sub,
    subscribed,
)

pytestmark = pytest.mark.django_db


def _invoices(s) -> list[dict]:
    return s.fake.state.all("invoices")


def test_the_upgrade_charges_exactly_the_previewed_amount(subscribed):  # noqa: F811
    s = subscribed
    items_before = [(i["id"], i["price"]["id"]) for i in _fake_sub(s)["items"]["data"]]
    invoices_before = len(_invoices(s))
    quote = subscription_switch_preview(
        buyer=s.shop.buyer, license_id=s.license.pk, plan_id=s.shop.team.pk
    )
    assert quote.upgrade is True
    assert (quote.from_plan, quote.to_plan) == (s.shop.subscription, s.shop.team)
    assert quote.proration_date is not None
    # Stripe's own lines: a credit for Pro's unused time, a charge for Team's remaining time.
    assert 0 < quote.credit <= 900 < quote.charge <= 2900
    assert quote.amount_due == quote.charge - quote.credit + quote.usage - quote.balance_applied
    assert quote.amount_due > 0
    # A preview changes nothing.
    assert [(i["id"], i["price"]["id"]) for i in _fake_sub(s)["items"]["data"]] == items_before
    assert len(_invoices(s)) == invoices_before
    assert not SubscriptionChange.objects.filter(kind=SubscriptionChangeKind.UPGRADE).exists()

    time.sleep(1.1)  # "now" moves on: only the passed proration date keeps the lines' start
    change = subscription_plan_switch(
        buyer=s.shop.buyer,
        license_id=s.license.pk,
        plan_id=s.shop.team.pk,
        proration_date=quote.proration_date,
        quote_digest=quote.digest,
    )
    assert change.params["proration_date"] == quote.proration_date
    s.deliver_new()
    invoice = s.fake.state.get("invoices", _fake_sub(s)["latest_invoice"])
    assert invoice["billing_reason"] == "subscription_update"
    assert invoice["amount_due"] == invoice["amount_paid"] == quote.amount_due
    prorations = [
        line
        for line in invoice["lines"]["data"]
        if line["parent"]["subscription_item_details"]["proration"]
    ]
    assert sorted(line["amount"] for line in prorations) == [-quote.credit, quote.charge]
    assert {line["period"]["start"] for line in prorations} == {quote.proration_date}
    s.license.refresh_from_db()
    assert s.license.plan == s.shop.team


def test_the_downgrade_costs_nothing_now_and_says_when(subscribed):  # noqa: F811
    s = subscribed
    subscription_plan_switch(buyer=s.shop.buyer, license_id=s.license.pk, plan_id=s.shop.team.pk)
    s.deliver_new()
    previews_before = [r for r in s.fake.state.requests if "create_preview" in r["path"]]
    quote = subscription_switch_preview(
        buyer=s.shop.buyer, license_id=s.license.pk, plan_id=s.shop.subscription.pk
    )
    row = CreatorSubscription.objects.get()
    assert quote.upgrade is False
    assert quote.amount_due == 0
    assert quote.proration_date is None
    assert quote.effective_at == quote.renews_at == row.current_period_end
    assert [r for r in s.fake.state.requests if "create_preview" in r["path"]] == previews_before
    change = subscription_plan_switch(
        buyer=s.shop.buyer,
        license_id=s.license.pk,
        plan_id=s.shop.subscription.pk,
        quote_digest=quote.digest,
    )
    assert change.kind == SubscriptionChangeKind.DOWNGRADE
    assert change.effective_at == quote.effective_at


def test_a_quote_that_no_longer_holds_is_refused_and_sends_nothing(subscribed):  # noqa: F811
    s = subscribed
    quote = subscription_switch_preview(
        buyer=s.shop.buyer, license_id=s.license.pk, plan_id=s.shop.team.pk
    )
    posts = len([r for r in s.fake.state.requests if r["method"] == "POST"])
    assert quote.proration_date is not None
    with pytest.raises(SwitchQuoteStale):  # another update than the one priced
        subscription_plan_switch(
            buyer=s.shop.buyer,
            license_id=s.license.pk,
            plan_id=s.shop.team.pk,
            proration_date=quote.proration_date,
            quote_digest="0" * 32,
        )
    with pytest.raises(SwitchQuoteStale):  # a proration date in the future charges less
        subscription_plan_switch(
            buyer=s.shop.buyer,
            license_id=s.license.pk,
            plan_id=s.shop.team.pk,
            proration_date=quote.proration_date + 3600,
        )
    with pytest.raises(SwitchQuoteStale):  # too old
        subscription_plan_switch(
            buyer=s.shop.buyer,
            license_id=s.license.pk,
            plan_id=s.shop.team.pk,
            proration_date=quote.proration_date - 3600,
        )
    assert len([r for r in s.fake.state.requests if r["method"] == "POST"]) == posts
    assert not SubscriptionChange.objects.filter(kind=SubscriptionChangeKind.UPGRADE).exists()
    s.license.refresh_from_db()
    assert s.license.plan == s.shop.subscription

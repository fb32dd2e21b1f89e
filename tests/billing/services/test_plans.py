"""Plans, versioned prices and their Stripe objects (over loopback HTTP to the fake Stripe)."""

from datetime import timedelta

import pytest
import stripe
from django.utils import timezone

from billing.models import ConnectAccount, PlanKind, PlanPrice
from billing.services.plans import (
    plan_create,
    plan_price_change,
    plan_prices_apply_due,
    plan_stripe_sync,
    plan_update,
)
from billing.tasks import plan_stripe_sync_task
from common.exceptions import ApplicationError, NotFoundError
from tests.billing.factories import LicenseFactory, OwnedListingFactory
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _creator_listing():
    from billing.services.creators import creator_become

    listing = OwnedListingFactory()
    creator_become(user=listing.owner, handle=f"maker-{listing.pk}")
    return listing


def test_only_the_owner_can_price_a_listing():
    listing = _creator_listing()
    with pytest.raises(NotFoundError):
        plan_create(user=UserFactory(), listing=listing, kind="one_time", name="x", unit_amount=900)
    with pytest.raises(ApplicationError):
        plan_create(user=listing.owner, listing=listing, kind="per_call", name="x")  # no price


def test_price_models_follow_the_active_plans(django_capture_on_commit_callbacks):
    listing = _creator_listing()
    plan_create(user=listing.owner, listing=listing, kind="free", name="Free", included_calls=100)
    plan_create(
        user=listing.owner, listing=listing, kind="per_call", name="PAYG", per_call_amount=2
    )
    listing.refresh_from_db()
    assert listing.price_models == ",free,per_call,"


def test_increase_waits_for_notice_and_decrease_applies_at_once(settings):
    settings.PRICE_INCREASE_NOTICE_DAYS = 14
    listing = _creator_listing()
    plan = plan_create(
        user=listing.owner, listing=listing, kind="per_call", per_call_amount=5, name="p"
    )
    v1 = plan.prices.get(version=1)
    lic = LicenseFactory(plan_price=v1, plan=plan, listing=listing)

    up = plan_price_change(user=listing.owner, plan=plan, per_call_amount=8)
    assert up.effective_at - timezone.now() > timedelta(days=13, hours=23)
    lic.refresh_from_db()
    assert lic.plan_price_id == v1.pk  # existing buyer still on the old price
    assert plan_prices_apply_due() == 0

    PlanPrice.objects.filter(pk=up.pk).update(effective_at=timezone.now() - timedelta(seconds=1))
    assert plan_prices_apply_due() == 1
    lic.refresh_from_db()
    assert lic.plan_price_id == up.pk

    down = plan_price_change(user=listing.owner, plan=plan, per_call_amount=4)
    assert down.effective_at <= timezone.now()
    lic.refresh_from_db()
    assert lic.plan_price_id == down.pk


def test_stripe_objects_are_created_once(stripe_fake):
    listing = _creator_listing()
    plan = plan_create(
        user=listing.owner,
        listing=listing,
        kind=PlanKind.SUBSCRIPTION,
        name="Pro",
        unit_amount=900,
        included_calls=1000,
        overage_amount=2,
    )
    plan_stripe_sync(plan_id=plan.pk)
    plan_stripe_sync(plan_id=plan.pk)
    plan.refresh_from_db()
    state = stripe_fake.state
    assert plan.stripe_product_id
    assert plan.stripe_meter_id
    assert plan.stripe_metered_price_id
    assert len(state.all("products")) == 1
    assert len(state.all("meters")) == 1
    prices = state.all("prices")
    assert sorted(p["recurring"]["usage_type"] for p in prices) == ["licensed", "metered"]
    meter = state.get("meters", plan.stripe_meter_id)
    assert meter["event_name"] == plan.meter_event_name
    assert meter["default_aggregation"]["formula"] == "sum"


def test_dropped_response_then_task_retry_makes_one_product(stripe_fake, settings):
    listing = _creator_listing()
    plan = plan_create(
        user=listing.owner, listing=listing, kind="one_time", name="L", unit_amount=4900
    )
    # The fake creates the product, then drops the connection unanswered -- every time the
    # client retries, too (3 attempts), so the call fails as a lost response would.
    for _ in range(3):
        stripe_fake.fail_next("/v1/products", "drop_response")
    with pytest.raises(stripe.APIConnectionError):
        plan_stripe_sync(plan_id=plan.pk)
    plan.refresh_from_db()
    assert plan.stripe_product_id == ""
    assert len(stripe_fake.state.all("products")) == 1

    plan_stripe_sync_task.apply(args=[plan.pk])  # the task's retry
    plan.refresh_from_db()
    products = stripe_fake.state.all("products")
    assert len(products) == 1
    assert plan.stripe_product_id == products[0]["id"]
    assert len(stripe_fake.state.all("prices")) == 1


def test_demo_seed_makes_a_payable_creator_with_priced_listings(stripe_fake):
    from billing.services.demo import billing_demo_seed
    from tests.factories import ListingFactory

    owner = UserFactory()
    listings = [ListingFactory(), ListingFactory()]
    plans = billing_demo_seed(
        owner=owner, handle="demo-maker", listings=listings,
        onboard=stripe_fake.complete_onboarding,
    )  # fmt: skip
    assert len(plans) == 8
    assert ConnectAccount.objects.get(creator__user=owner).is_payable
    again = billing_demo_seed(
        owner=owner, handle="demo-maker", listings=listings,
        onboard=stripe_fake.complete_onboarding,
    )  # fmt: skip
    assert again == []
    for listing in listings:
        listing.refresh_from_db()
        assert listing.price_models == ",free,one_time,per_call,subscription,"
    assert len(stripe_fake.state.all("products")) == 6  # free plans need none


def test_tool_prices_only_where_a_call_can_be_charged():
    """Issue 10: a price on a plan with no meter would be shown and never collected."""
    listing = _creator_listing()
    owner = listing.owner
    priced = {"search": {"unit_amount": 5}}
    free_or_out = {"search": {"unit_amount": 0}, "admin": {"excluded": True}}
    refusing = [
        {"kind": "free", "included_calls": 100},
        {"kind": "one_time", "unit_amount": 900},
        {"kind": "subscription", "unit_amount": 900, "included_calls": 10, "hard_cap": True},
        {"kind": "subscription", "unit_amount": 900},  # unlimited: every call is included
    ]
    for fields in refusing:
        with pytest.raises(ApplicationError, match="free or excluded"):
            plan_create(user=owner, listing=listing, name="x", tool_prices=priced, **fields)
        plan_create(user=owner, listing=listing, name="x", tool_prices=free_or_out, **fields)
    overage = plan_create(
        user=owner,
        listing=listing,
        kind="subscription",
        name="Pro",
        unit_amount=900,
        included_calls=10,
        overage_amount=2,
        tool_prices=priced,
        tools=["search", "forecast"],
    )
    price = overage.prices.get()
    assert price.tools == ["forecast", "search"]  # the default covers these only
    with pytest.raises(ApplicationError, match="free or excluded"):
        plan_update(user=owner, plan=overage, hard_cap=True)  # would strand the price of 5
    with pytest.raises(ApplicationError, match="needs included calls"):
        plan_create(
            user=owner,
            listing=listing,
            kind="subscription",
            name="x",
            unit_amount=900,
            overage_amount=2,
        )
    payg = plan_create(
        user=owner,
        listing=listing,
        kind="per_call",
        name="PAYG",
        per_call_amount=3,
        tool_prices=priced,
    )
    # A new price version keeps the covered tools unless given; dropping one is an increase.
    kept = plan_price_change(user=owner, plan=payg, per_call_amount=2)
    assert kept.tools is None
    listed = plan_price_change(user=owner, plan=payg, tools=["search", "forecast"])
    fewer = plan_price_change(user=owner, plan=payg, tools=["search"])
    assert listed.effective_at <= timezone.now() < fewer.effective_at

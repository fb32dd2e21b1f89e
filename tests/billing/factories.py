"""Billing factories. Data goes through the same shapes services write."""

from datetime import UTC, datetime

import factory
from django.utils import timezone
from factory.django import DjangoModelFactory

from billing.models import (
    ConnectAccount,
    Creator,
    CreatorSubscription,
    License,
    LicenseSource,
    LicenseStatus,
    Plan,
    PlanKind,
    PlanPrice,
)
from tests.factories import ListingFactory, UserFactory


class CreatorFactory(DjangoModelFactory):
    class Meta:
        model = Creator

    user = factory.SubFactory(UserFactory)
    handle = factory.Sequence(lambda n: f"maker-{n}")


class ConnectAccountFactory(DjangoModelFactory):
    """A payable Express account (onboarding done). Use `payable=False` for a fresh one."""

    class Meta:
        model = ConnectAccount

    class Params:
        payable = True

    creator = factory.SubFactory(CreatorFactory)
    stripe_account_id = factory.Sequence(lambda n: f"acct_test{n:08d}")
    charges_enabled = factory.SelfAttribute("payable")
    payouts_enabled = factory.SelfAttribute("payable")
    details_submitted = factory.SelfAttribute("payable")


class OwnedListingFactory(ListingFactory):
    owner = factory.SubFactory(UserFactory)


class PlanFactory(DjangoModelFactory):
    class Meta:
        model = Plan

    listing = factory.SubFactory(OwnedListingFactory)
    kind = PlanKind.PER_CALL
    name = factory.LazyAttribute(lambda o: f"{o.kind} plan")
    currency = "usd"
    rate_limit_per_minute = 60
    meter_event_name = factory.LazyAttribute(
        lambda o: f"toolbooth_test_{o.listing.pk}_{o.kind}" if o.kind == PlanKind.PER_CALL else ""
    )


class PlanPriceFactory(DjangoModelFactory):
    class Meta:
        model = PlanPrice

    plan = factory.SubFactory(PlanFactory)
    version = 1
    unit_amount = 0
    per_call_amount = 3
    overage_amount = 0
    effective_at = factory.LazyFunction(timezone.now)


class LicenseFactory(DjangoModelFactory):
    class Meta:
        model = License

    buyer = factory.SubFactory(UserFactory)
    plan_price = factory.SubFactory(PlanPriceFactory)
    plan = factory.SelfAttribute("plan_price.plan")
    listing = factory.SelfAttribute("plan.listing")
    status = LicenseStatus.ACTIVE
    status_changed_at = factory.LazyFunction(timezone.now)
    source = LicenseSource.GRANT


class CreatorSubscriptionFactory(DjangoModelFactory):
    """A live subscription: what makes a metered license collectible (a Stripe customer)."""

    class Meta:
        model = CreatorSubscription

    buyer = factory.SubFactory(UserFactory)
    creator = factory.SubFactory(CreatorFactory)
    stripe_subscription_id = factory.Sequence(lambda n: f"sub_test{n:08d}")
    stripe_customer_id = factory.Sequence(lambda n: f"cus_test{n:08d}")
    status = "active"
    platform_fee_bps = 0


class MeteredLicenseFactory(LicenseFactory):
    """A license bought through Checkout: its calls are billed to its subscription's customer."""

    source = LicenseSource.PURCHASE
    creator_subscription = factory.SubFactory(
        CreatorSubscriptionFactory, buyer=factory.SelfAttribute("..buyer")
    )


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)

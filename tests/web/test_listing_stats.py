"""Popularity and trust: the aggregation over real ledger rows, licenses and reviews on
PostgreSQL, through the service, the beat task and the management command."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from gateway.models import UsageEvent, UsageOutcome
from marketplace.models import Listing
from tests.billing.factories import LicenseFactory, PlanPriceFactory
from tests.factories import ListingFactory, UserFactory
from tests.gateway.factories import HostedUpstreamFactory
from web.models import Review
from web.reports import upstream_health_get
from web.stats import listing_stats_refresh_all
from web.tasks import listing_stats_refresh_task

pytestmark = pytest.mark.django_db


def _call(lic: Any, *, outcome: str = UsageOutcome.SUCCESS, ago: timedelta) -> None:
    billable = outcome in (UsageOutcome.SUCCESS, UsageOutcome.REPLAYED)
    UsageEvent.objects.create(
        call_id=uuid.uuid4(),
        key_id=1,
        license_id=lic.pk,
        listing_id=lic.listing_id,
        plan_id=lic.plan_id,
        tool="forecast",
        unit_amount=3 if billable else 0,
        currency="usd",
        billable=billable,
        outcome=outcome,
        latency_ms=20,
        occurred_at=timezone.now() - ago,
    )


def test_calls_buyers_uptime_and_ratings_come_from_the_ledger_licenses_and_reviews() -> None:
    price = PlanPriceFactory()
    listing = price.plan.listing
    HostedUpstreamFactory(listing=listing, url="https://mcp.example.com/mcp")
    alice, bob = UserFactory(), UserFactory()
    lic_a = LicenseFactory(buyer=alice, plan_price=price)
    LicenseFactory(buyer=alice, plan_price=PlanPriceFactory(plan__listing=listing))
    lic_b = LicenseFactory(buyer=bob, plan_price=price, status="expired")
    hour = timedelta(hours=1)
    for _ in range(3):
        _call(lic_a, ago=hour)  # counted, and in the health window
    _call(lic_b, outcome=UsageOutcome.REPLAYED, ago=timedelta(days=3))  # counted
    _call(lic_a, outcome=UsageOutcome.TOOL_ERROR, ago=hour)  # an answer, but no value
    _call(lic_a, outcome=UsageOutcome.UPSTREAM_ERROR, ago=hour)  # counts against uptime
    _call(lic_a, ago=timedelta(days=31))  # too old
    Review.objects.create(listing=listing, author=alice, rating=5)
    Review.objects.create(listing=listing, author=bob, rating=2)
    quiet = ListingFactory()

    written = listing_stats_refresh_all()

    listing.refresh_from_db()
    assert listing.calls_30d == 4
    assert listing.buyers == 2
    health = upstream_health_get(listing_id=listing.pk)
    assert health is not None
    # The health selector's own 24 h figures: 3 answered + 1 tool error + 1 upstream failure.
    assert (health.calls, health.failures) == (5, 1)
    assert listing.uptime == pytest.approx(4 / 5)
    assert listing.health_state == health.state
    assert listing.rating_avg == pytest.approx(3.5)
    assert listing.rating_count == 2
    assert listing.stats_updated_at is not None
    assert written == 1
    quiet.refresh_from_db()
    assert (quiet.calls_30d, quiet.buyers, quiet.stats_updated_at) == (0, 0, None)


def test_figures_that_age_out_go_back_to_zero_and_a_rerun_writes_the_same() -> None:
    lic = LicenseFactory()
    _call(lic, ago=timedelta(days=1))
    listing_stats_refresh_all()
    first = Listing.objects.get(pk=lic.listing_id)
    assert (first.calls_30d, first.buyers, first.uptime) == (1, 1, None)  # not hosted

    listing_stats_refresh_task()  # the beat task: same figures
    again = Listing.objects.get(pk=lic.listing_id)
    assert (again.calls_30d, again.buyers) == (1, 1)

    UsageEvent.objects.all().delete()
    lic.delete()
    out = io.StringIO()
    call_command("listing_stats_refresh", stdout=out)
    assert out.getvalue() == "1 listing(s) updated\n"
    gone = Listing.objects.get(pk=lic.listing_id)
    assert (gone.calls_30d, gone.buyers, gone.rating_count) == (0, 0, 0)


def test_the_refresh_is_a_constant_number_of_queries(django_assert_max_num_queries: Any) -> None:
    for _ in range(5):
        lic = LicenseFactory()
        _call(lic, ago=timedelta(hours=2))
    with django_assert_max_num_queries(8):
        assert listing_stats_refresh_all() == 5

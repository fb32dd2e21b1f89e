"""Search results say what buying means here: hosted, free plan, "from $x", and real use, in the
API (/api/v1/listings and the detail) and on the search page, from billing's plans and prices."""

import pytest
from django.test import Client

from billing.models import PlanKind
from tests.billing.factories import OwnedListingFactory, PlanFactory, PlanPriceFactory
from tests.factories import ListingFactory
from tests.gateway.factories import HostedUpstreamFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosted():
    """A hosted listing with a free plan, a subscription whose price went from $9 to $5 (the
    newest version counts) and a retired pay-per-call plan at $0.01 (inactive: not offered)."""
    listing = OwnedListingFactory(
        name="dev.toolbooth.ada/demo-weather",
        title="Demo Weather",
        description="Tomorrow's forecast for any city.",
        price_models=",free,subscription,",
        calls_30d=1234,
        buyers=7,
        rating_avg=4.5,
        rating_count=2,
    )
    PlanPriceFactory(plan=PlanFactory(listing=listing, kind=PlanKind.FREE), per_call_amount=0)
    subscription = PlanFactory(listing=listing, kind=PlanKind.SUBSCRIPTION)
    PlanPriceFactory(plan=subscription, version=1, unit_amount=900, per_call_amount=0)
    PlanPriceFactory(plan=subscription, version=2, unit_amount=500, per_call_amount=0)
    retired = PlanFactory(listing=listing, kind=PlanKind.PER_CALL, active=False)
    PlanPriceFactory(plan=retired, per_call_amount=1)
    HostedUpstreamFactory(listing=listing)
    return listing


def test_api_results_carry_offer_and_popularity(hosted, django_assert_max_num_queries):
    ListingFactory(
        name="com.joelverhagen.mcp/Knapcode.SampleMcpServer",
        description="A sample MCP server using the MCP C# SDK. Random numbers and weather.",
    )

    # count of matches, count, page, hosting, prices
    with django_assert_max_num_queries(5):
        body = Client().get("/api/v1/listings?q=weather").json()

    first, second = body["results"]
    assert first["name"] == hosted.name
    assert first["offer"] == {
        "hosted": True,
        "free_plan": True,
        "price_from": "from $5.00 per month",
        "price_from_amount": 500,
        "currency": "usd",
    }
    assert first["popularity"] == {
        "calls_30d": 1234,
        "buyers": 7,
        "uptime": None,
        "rating_avg": 4.5,
        "rating_count": 2,
    }
    assert second["offer"] == {
        "hosted": False,
        "free_plan": False,
        "price_from": "",
        "price_from_amount": None,
        "currency": "",
    }
    assert second["popularity"]["calls_30d"] == 0


def test_api_detail_carries_the_offer_too(hosted):
    body = Client().get(f"/api/v1/listings/{hosted.name}").json()

    assert body["offer"]["price_from"] == "from $5.00 per month"
    assert body["offer"]["hosted"] is True


def test_only_free_plans_read_free():
    listing = OwnedListingFactory(name="io.github.a/gratis", price_models=",free,")
    PlanPriceFactory(plan=PlanFactory(listing=listing, kind=PlanKind.FREE), per_call_amount=0)

    (result,) = Client().get("/api/v1/listings?q=gratis").json()["results"]

    assert result["offer"]["price_from"] == "Free"
    assert result["offer"]["free_plan"] is True
    assert result["offer"]["price_from_amount"] is None


def test_search_page_shows_hosted_from_price_and_use(hosted):
    ListingFactory(name="io.github.x/weather-mirror", description="Weather, mirrored")

    html = Client().get("/?q=weather").content.decode()

    hosted_at = html.index("Demo Weather")
    mirror_at = html.index("io.github.x/weather-mirror")
    assert hosted_at < mirror_at
    result = html[hosted_at:mirror_at]
    assert '<li class="badge badge--hosted">Hosted</li>' in result
    assert "from $5.00 per month" in result
    assert "Free plan" in result
    assert "1,234 calls in 30 days · 7 buyers · rated 4.5/5 (2)" in result
    assert "Hosted</li>" not in html[mirror_at:]

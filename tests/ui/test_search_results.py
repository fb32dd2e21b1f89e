"""The search page as a buyer sees it: for "weather" the hosted Demo Weather comes first with
its Hosted badge, "from $5.00 per month", its free plan and its use, above the registry's C#
sample; a typo ("githb") still finds the GitHub server and says it searched "github".
Screenshots search-*.png."""

from __future__ import annotations

from typing import Any

from billing.models import PlanKind
from marketplace.services import search_words_refresh
from tests.billing.factories import OwnedListingFactory, PlanFactory, PlanPriceFactory
from tests.factories import ListingFactory
from tests.gateway.factories import HostedUpstreamFactory
from tests.ui.conftest import Shots, new_page

HOSTED = "dev.toolbooth.ada/demo-weather"
SAMPLE = "com.joelverhagen.mcp/Knapcode.SampleMcpServer"


def _catalogue() -> None:
    ListingFactory(
        name=SAMPLE,
        description="A sample MCP server using the MCP C# SDK. Generates random numbers and "
        "random weather.",
    )
    listing = OwnedListingFactory(
        name=HOSTED,
        title="Demo Weather",
        description="Tomorrow's forecast for any city. A demo MCP server hosted through the "
        "Toolbooth gateway.",
        price_models=",free,subscription,",
        calls_30d=1234,
        buyers=7,
    )
    PlanPriceFactory(plan=PlanFactory(listing=listing, kind=PlanKind.FREE), per_call_amount=0)
    PlanPriceFactory(
        plan=PlanFactory(listing=listing, kind=PlanKind.SUBSCRIPTION),
        unit_amount=500,
        per_call_amount=0,
    )
    HostedUpstreamFactory(listing=listing)
    ListingFactory(name="io.github.github/github-mcp-server", title="GitHub")
    search_words_refresh()


def test_search_shows_hosted_first_with_price_badges_and_finds_typos(
    live: str, browser: Any, shots: Shots
) -> None:
    _catalogue()
    page = new_page(browser)

    page.goto("/?q=weather")
    results = page.locator("ol.results > li")
    assert results.count() == 2
    first = results.nth(0)
    assert first.locator(".result__name").inner_text() == HOSTED
    assert first.locator(".badge--hosted").inner_text() == "Hosted"
    assert first.get_by_test_id("price-from").inner_text() == "from $5.00 per month"
    assert first.get_by_text("Free plan").count() == 1
    assert "1,234 calls in 30 days · 7 buyers" in first.locator(".result__popularity").inner_text()
    second = results.nth(1)
    assert second.locator(".result__name").inner_text() == SAMPLE
    assert second.locator(".badge--hosted").count() == 0
    assert second.get_by_test_id("price-from").count() == 0
    shots(page, "search-offers")

    page.goto("/?q=githb")
    assert page.locator("ol.results > li .result__name").all_inner_texts() == [
        "io.github.github/github-mcp-server"
    ]
    notice = page.get_by_test_id("corrected-query")
    assert notice.inner_text() == "Showing results for github: no server matched “githb”."
    assert page.locator("#results-heading").inner_text() == "1 server for “github”"
    shots(page, "search-typo")
    assert page.console_errors == []

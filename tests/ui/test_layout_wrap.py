"""Long unbroken text (a 500-character tool description without spaces, a long title, a long
tool name) wraps on every page that shows it, and wide tables scroll inside themselves on a
phone: the document is never wider than the window, at 1,280 px and at a 390 px phone."""

from __future__ import annotations

from typing import Any

import pytest

from tests.billing.factories import PlanPriceFactory
from tests.factories import ListingFactory
from tests.gateway.factories import HostedUpstreamFactory
from tests.ui.conftest import Shots, new_page

LONG = "x" * 500
NAME = "io.github.wide/unbroken"


def _wide_listing() -> str:
    listing = ListingFactory(
        name=NAME,
        title="T" * 100,
        description="Unbroken" + "y" * 600,
    )
    tools = [
        {"name": "tool_" + "n" * 120, "title": "z" * 100, "description": LONG},
        {"name": "ok", "title": "", "description": "short"},
    ]
    schema = {"inputSchema": {"type": "object"}}
    approved = [{**tool, **schema} for tool in tools]  # pages show the approved tools only
    HostedUpstreamFactory(listing=listing, tools=tools, approved=approved)
    for n in range(4):  # four plans: four price columns in the tools table
        PlanPriceFactory(plan__listing=listing, plan__name=f"Plan {n} " + "w" * 80)
    return listing.name


def _widths(page: Any) -> tuple[int, int]:
    return page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")


@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)])
def test_long_unbroken_text_wraps_and_tables_scroll(
    live: str, browser: Any, shots: Shots, width: int, height: int
) -> None:
    name = _wide_listing()
    page = new_page(browser, width=width, height=height)

    page.goto(f"/servers/{name}")
    assert LONG in page.content()  # the tool description is on the page
    shots(page, f"wrap-listing-{width}")
    scroll, window = _widths(page)
    assert scroll <= window, f"listing page is {scroll} px wide in a {window} px window"
    if width < 600:
        # The tools table keeps its columns and scrolls inside its own box instead.
        box = page.locator("table.tools").evaluate(
            "t => { const s = getComputedStyle(t.parentElement);"
            " return [s.overflowX, t.parentElement.scrollWidth > t.parentElement.clientWidth] }"
        )
        assert box[0] in ("auto", "scroll")

    page.goto("/?q=unbroken")
    assert page.locator(".result__title").count() >= 1
    shots(page, f"wrap-search-{width}")
    scroll, window = _widths(page)
    assert scroll <= window, f"search page is {scroll} px wide in a {window} px window"
    assert page.console_errors == []

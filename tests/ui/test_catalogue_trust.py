"""In a real browser: the home page leads with the hosted servers (featured, popular, new) above
the mirror; a verified buyer reviews a listing, its creator replies, and the creator's profile
page shows their listings and verified namespaces. Uses the shared site (`live`, port 18900).
Screenshots 40-44."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from billing.models import ClaimStatus, ListingClaim
from gateway.models import UsageEvent
from tests.billing.factories import CreatorFactory, LicenseFactory, PlanFactory, PlanPriceFactory
from tests.factories import ListingFactory, UserFactory
from tests.gateway.factories import HostedUpstreamFactory
from tests.ui.conftest import Shots, new_page
from web.stats import listing_stats_refresh_all

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct horse battery staple"  # tests.factories.UserFactory's


def _market(upstream: str) -> tuple[Any, Any, Any]:
    """A creator with two hosted listings (one claimed through the registry), a buyer whose
    license made calls, and mirror listings that sort before them by name."""
    ListingFactory(name="io.github.aaa/test-server", description="A test server.")
    ListingFactory(name="io.github.aab/another-test", description="Another test server.")
    creator = CreatorFactory(handle="acme-tools", display_name="Acme Tools")
    weather = ListingFactory(
        name="io.github.acme/weather",
        title="Acme Weather",
        description="Forecasts and alerts for any city.",
        owner=creator.user,
        price_models=",per_call,",
    )
    notes = ListingFactory(
        name="dev.toolbooth.acme-tools/notes",
        title="Acme Notes",
        description="Keep notes your agent can search.",
        owner=creator.user,
        price_models=",free,",
    )
    for listing in (weather, notes):
        HostedUpstreamFactory(listing=listing, url=upstream)
    ListingClaim.objects.create(
        listing=weather,
        registry_name=weather.name,
        creator=creator,
        token=uuid.uuid4().hex,
        status=ClaimStatus.VERIFIED,
        expires_at=timezone.now() + timedelta(days=1),
        verified_at=timezone.now(),
    )
    price = PlanPriceFactory(plan=PlanFactory(listing=weather, name="Pay as you go"))
    buyer = UserFactory(username="dana")
    lic = LicenseFactory(buyer=buyer, plan_price=price)
    for _ in range(12):
        UsageEvent.objects.create(
            call_id=uuid.uuid4(),
            key_id=1,
            license_id=lic.pk,
            listing_id=weather.pk,
            plan_id=price.plan_id,
            tool="forecast",
            unit_amount=3,
            currency="usd",
            billable=True,
            outcome="success",
            latency_ms=40,
            occurred_at=timezone.now() - timedelta(hours=2),
        )
    listing_stats_refresh_all()
    return creator, weather, buyer


def _log_in(page: Any, username: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_home_review_reply_and_creator_page(
    live: str, browser: Any, shots: Shots, demo_upstream: str
) -> None:
    creator, weather, buyer = _market(demo_upstream)

    page = new_page(browser)
    page.goto("/")
    popular = page.locator("#popular")
    expect(popular.get_by_role("link", name="Acme Weather")).to_be_visible()
    expect(popular).to_contain_text("12 calls in 30 days")
    expect(page.locator("#new").get_by_role("link", name="Acme Notes")).to_be_visible()
    # The hosted servers come before the mirror's first (test) server.
    hosted_top = popular.bounding_box()["y"]
    mirror_top = page.locator("#results").bounding_box()["y"]
    assert hosted_top < mirror_top
    shots(page, "40-home-hosted-first")
    # Searching (htmx swaps the results) takes the hosted sections away: no result twice.
    page.get_by_label("Search").first.fill("acme weather")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#popular")).to_have_count(0)
    expect(page.locator("#results").get_by_role("link", name="Acme Weather")).to_be_visible()
    page.goto("/")

    _log_in(page, buyer.username)
    page.goto(f"/servers/{weather.name}")
    form = page.locator("#review-form")
    expect(form).to_contain_text("Write a review")
    form.get_by_label("4 stars").check()
    form.get_by_label("Your review").fill("Accurate forecasts; <b>fast</b>.\nWould buy again.")
    form.get_by_role("button", name="Publish review").click()
    expect(page.locator(".message--success")).to_contain_text("your review is saved")
    review = page.locator(".review").first
    expect(review).to_contain_text("Accurate forecasts; <b>fast</b>.")  # shown as text
    expect(page.locator("#rating-summary")).to_contain_text("4.0 of 5 from 1 verified buyer")
    shots(page, "41-listing-review-by-buyer")

    owner = new_page(browser)
    _log_in(owner, creator.user.username)
    owner.goto(f"/servers/{weather.name}")
    owner.get_by_label("Reply to dana").fill("Thank you, Dana: alerts are next.")
    owner.get_by_role("button", name="Save reply").click()
    expect(owner.locator(".review__reply")).to_contain_text("alerts are next")
    shots(owner, "42-listing-review-with-reply")

    page.goto(f"/servers/{weather.name}")
    expect(page.locator(".review__reply")).to_contain_text("Reply from the creator")
    page.get_by_role("link", name="acme-tools").click()
    expect(page).to_have_url(f"{live}/creators/acme-tools")
    expect(page.get_by_role("heading", name="Acme Tools")).to_be_visible()
    expect(page.locator("#namespaces")).to_have_text("dev.toolbooth.acme-tools, io.github.acme")
    expect(page.get_by_role("link", name="Acme Weather")).to_be_visible()
    expect(page.get_by_role("link", name="Acme Notes")).to_be_visible()
    shots(page, "43-creator-profile")

    phone = new_page(browser, width=390, height=800)
    phone.goto(f"/servers/{weather.name}#reviews")
    shots(phone, "44-listing-reviews-phone")
    for p in (page, owner, phone):
        assert p.console_errors == []

"""The creator's and buyer's finishing touches (issue 12, section 5) in a real browser (Debian's
chromium) against the site under uvicorn: the plan form shows only the chosen kind's inputs
and refuses a price below the minimum in dollars, a plan summary shows its cap, "Stop selling"
needs its confirmation box, the /creator/ dashboard shows each hosted listing's health badge, a
listing page lists the licenses the visitor already holds, and both usage CSV links download
the calls.

Screenshots: 60-plan-form-subscription, 61-plan-form-per-call, 62-plan-form-error,
63-plan-created, 64-creator-dashboard-badges, 65-listing-held-licenses, 66-license-csv-link.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from billing.models import LicenseSource
from gateway.models import UsageEvent, UsageOutcome
from tests.billing.conftest import Shop
from tests.billing.factories import LicenseFactory
from tests.gateway.factories import HostedUpstreamFactory
from tests.ui.conftest import SITE, Shots, new_page
from web.exports import CSV_HEADER

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "a long and unusual passphrase 42"


def _log_in(page: Any, username: str) -> None:
    page.goto(f"{SITE}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"^(?!.*/accounts/login/).*$"))


def _with_password(user: Any) -> Any:
    user.set_password(PASSWORD)
    user.save()
    return user


def _calls(lic: Any, n: int) -> list[UsageEvent]:
    now = timezone.now()
    return [
        UsageEvent.objects.create(
            call_id=uuid.uuid4(),
            key_id=1,
            license_id=lic.pk,
            listing_id=lic.listing_id,
            plan_id=lic.plan_id,
            tool="forecast",
            unit_amount=0,
            currency="usd",
            billable=True,
            outcome=UsageOutcome.SUCCESS,
            latency_ms=30,
            occurred_at=now - timedelta(minutes=n - i),
        )
        for i in range(n)
    ]


def _download_csv(page: Any, link: Any) -> list[list[str]]:
    with page.expect_download() as info:
        link.click()
    path = info.value.path()
    with open(path, encoding="utf-8") as handle:
        return list(csv.reader(io.StringIO(handle.read())))


def _field(page: Any, name: str) -> Any:
    return page.locator(f"#plan-create .plan-field--{name}")


def test_creator_plan_form_badges_held_licenses_and_csv_exports(
    live: str, browser: Any, shots: Shots, fake_stripe: Any, demo_upstream: str
) -> None:
    shop = Shop(fake_stripe)
    HostedUpstreamFactory(listing=shop.listing, url=demo_upstream)
    owner = _with_password(shop.owner)
    buyer = _with_password(shop.buyer)
    lic = LicenseFactory(
        buyer=buyer,
        plan_price=shop.subscription.prices.get(),
        source=LicenseSource.GRANT,
    )
    calls = _calls(lic, 3)
    name = shop.listing.name

    # The plan form: only the chosen kind's inputs.
    page = new_page(browser)
    _log_in(page, owner.username)
    page.goto(f"{SITE}/creator/listings/{name}/#plans")
    form = page.locator("#plan-create")
    form.get_by_label("Kind").select_option("subscription")
    expect(_field(page, "unit_amount")).to_be_visible()
    expect(_field(page, "overage_amount")).to_be_visible()
    expect(_field(page, "per_call_amount")).to_be_hidden()
    form.get_by_label("Stop at the included calls (no overage)").check()
    expect(_field(page, "overage_amount")).to_be_hidden()  # nothing past a hard cap
    form.scroll_into_view_if_needed()
    shots(page, "60-plan-form-subscription")
    form.get_by_label("Kind").select_option("per_call")
    expect(_field(page, "per_call_amount")).to_be_visible()
    expect(_field(page, "unit_amount")).to_be_hidden()
    expect(_field(page, "hard_cap")).to_be_hidden()
    expect(_field(page, "overage_amount")).to_be_hidden()
    expect(_field(page, "included_calls")).to_be_visible()
    shots(page, "61-plan-form-per-call")

    # Below Stripe's minimum: refused in dollars, on the price field, kind kept.
    form.get_by_label("Kind").select_option("subscription")
    form.get_by_label("Plan name").fill("Team")
    form.locator("#id_unit_amount").fill("0.20")
    form.get_by_label("Included calls a month").fill("10000")
    form.get_by_role("button", name="Create plan").click()
    error = page.locator("#id_unit_amount_error")
    expect(error).to_have_text("Price must be at least $0.50 a month.")
    expect(page.locator("#plan-create")).not_to_contain_text("minor units")
    expect(page.locator("#plan-create").get_by_label("Kind")).to_have_value("subscription")
    expect(_field(page, "per_call_amount")).to_be_hidden()
    page.locator("#plan-create").scroll_into_view_if_needed()
    shots(page, "62-plan-form-error")

    form = page.locator("#plan-create")
    form.locator("#id_unit_amount").fill("19.00")
    if not form.get_by_label("Stop at the included calls (no overage)").is_checked():
        form.get_by_label("Stop at the included calls (no overage)").check()
    form.get_by_role("button", name="Create plan").click()
    page.wait_for_url(re.compile(r"#plans$"))
    team = page.locator("article.plan-admin", has_text="Team")
    expect(team).to_contain_text("$19.00 per month, stops at 10,000 calls a month")
    team.scroll_into_view_if_needed()
    shots(page, "63-plan-created")

    # Stop selling asks first: without the box ticked the browser does not submit.
    stop_selling = team.get_by_role("button", name=re.compile(r"^Stop selling"))
    stop_selling.click()
    expect(team.get_by_role("button", name=re.compile(r"^Stop selling"))).to_be_visible()
    team.get_by_label(re.compile(r"Yes, stop selling")).check()
    stop_selling.click()
    team = page.locator("article.plan-admin", has_text="Team")
    expect(team.get_by_role("button", name=re.compile(r"^Sell again"))).to_be_visible()
    team.get_by_role("button", name=re.compile(r"^Sell again")).click()
    team = page.locator("article.plan-admin", has_text="Team")
    expect(team.get_by_role("button", name=re.compile(r"^Stop selling"))).to_be_visible()

    # The creator's CSV: every buyer's calls on the listing this month.
    rows = _download_csv(page, page.locator("#usage-export a").first)
    assert tuple(rows[0]) == CSV_HEADER
    assert [r[5] for r in rows[1:]] == [str(c.call_id) for c in calls]

    # /creator/: the same badge as the listing page.
    page.goto(f"{SITE}/creator/")
    badge = page.locator(f"#owned-{shop.listing.pk} .health")
    expect(badge).to_contain_text("Healthy")
    expect(badge).to_contain_text("100% of 3 calls answered in 24 h")
    shots(page, "64-creator-dashboard-badges")
    assert page.console_errors == []

    # The buyer sees what they already hold, above the buy buttons.
    buyer_page = new_page(browser)
    _log_in(buyer_page, buyer.username)
    buyer_page.goto(f"{SITE}/servers/{name}")
    held = buyer_page.locator("#held-licenses")
    expect(held).to_contain_text("You already hold a license for this server")
    expect(held).to_contain_text("Pro")
    expect(held).to_contain_text("Active")
    box = held.bounding_box()
    buy = buyer_page.get_by_role("link", name=re.compile(r"^Buy Pro")).bounding_box()
    assert box is not None
    assert buy is not None
    assert box["y"] < buy["y"]
    expect(buyer_page.locator(".plan", has_text="Team")).to_contain_text(
        "stops at 10,000 calls a month"
    )
    held.scroll_into_view_if_needed()
    shots(buyer_page, "65-listing-held-licenses")
    held.get_by_role("link", name="Pro").click()
    buyer_page.wait_for_url(f"{SITE}/me/licenses/{lic.pk}/")

    # The buyer's CSV of this license.
    link = buyer_page.locator("#usage-export").get_by_role("link", name="this month")
    link.scroll_into_view_if_needed()
    shots(buyer_page, "66-license-csv-link")
    rows = _download_csv(buyer_page, link)
    assert tuple(rows[0]) == CSV_HEADER
    assert [r[5] for r in rows[1:]] == [str(c.call_id) for c in calls]
    assert all(r[0].endswith("Z") and r[3:5] == ["0.00", "USD"] for r in rows[1:])
    assert buyer_page.console_errors == []

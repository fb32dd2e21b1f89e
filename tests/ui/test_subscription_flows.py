"""A subscriber runs their subscription in a real browser (Debian's chromium) against the real
site and the fake Stripe sending signed webhooks: subscribe, see the renewal date and Stripe's
estimate of the next invoice, upgrade (prorated now), cancel at the period end, resume, open the
customer portal and come back, then cancel now after a confirmation page."""

from __future__ import annotations

import re
from typing import Any

import pytest

from billing import stripe_client
from billing.models import License, LicenseStatus, Sale
from billing.services.plans import plan_create
from common.money import money_format
from tests.billing.conftest import Shop
from tests.ui.conftest import SITE, Shots, new_page
from tests.ui.test_browser_flows import _sign_up

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_a_subscriber_switches_cancels_resumes_and_uses_the_portal(
    live: str, browser: Any, shots: Shots, fake_stripe: Any
) -> None:
    shop = Shop(fake_stripe)
    team = plan_create(
        user=shop.owner,
        listing=shop.listing,
        kind="subscription",
        name="Team",
        unit_amount=2900,
        included_calls=10000,
        overage_amount=1,
    )
    page = new_page(browser)
    _sign_up(page, "subscriber")

    # Subscribe to Pro ($9 a month) through the fake hosted Checkout.
    page.goto(f"/billing/buy/{shop.subscription.pk}")
    page.get_by_role("button", name="Subscribe with Stripe").click()
    page.wait_for_url(re.compile(r"/checkout/cs_"))
    page.locator("#pay").click()
    page.wait_for_url(re.compile(r"/billing/checkout/success"))
    assert fake_stripe.wait_for_webhooks(10)
    lic = License.objects.get(buyer__username="subscriber")
    page.goto(f"/me/licenses/{lic.pk}/")
    assert page.locator("#sub-status").inner_text() == "Active"
    row = lic.creator_subscription
    row.refresh_from_db()
    assert page.locator("#sub-renewal").inner_text() == f"{row.current_period_end:%Y-%m-%d}"
    assert "$9.00" in page.locator("#sub-estimate").inner_text()
    shots(page, "30-subscription-active")

    # Switch plan first shows what the upgrade costs; Back changes nothing.
    page.get_by_label("Switch to").select_option(value=str(team.pk))
    page.get_by_role("button", name="Switch plan").click()
    page.wait_for_url(re.compile(rf"/me/licenses/{lic.pk}/switch/\?plan={team.pk}$"))
    assert page.locator("h1").inner_text() == "Upgrade from Pro to Team?"
    charged = page.locator("#switch-amount strong").inner_text()
    assert re.fullmatch(r"\$\d+\.\d\d", charged)
    assert "for the rest of this period on Team" in page.locator("#switch-breakdown").inner_text()
    assert "$29.00" in page.locator("#switch-renewal").inner_text()
    assert f"{row.current_period_end:%Y-%m-%d}" in page.locator("#switch-renewal").inner_text()
    shots(page, "30b-switch-upgrade-confirm")
    page.get_by_role("link", name="Back").click()
    page.wait_for_url(re.compile(r"/me/licenses/\d+/#subscription$"))
    lic.refresh_from_db()
    assert lic.plan == shop.subscription
    assert Sale.objects.filter(buyer=lic.buyer, kind="invoice").count() == 1

    # Upgrade to Team now: prorated, charged at once the amount shown; the license (and its
    # keys) move.
    page.get_by_label("Switch to").select_option(value=str(team.pk))
    page.get_by_role("button", name="Switch plan").click()
    page.wait_for_url(re.compile(r"/switch/\?plan="))
    charged = page.locator("#switch-amount strong").inner_text()
    page.get_by_role("button", name="Confirm switch").click()
    page.wait_for_url(re.compile(r"/me/licenses/\d+/#subscription$"))
    assert "charged now" in page.locator(".messages").inner_text()
    assert "Team" in page.locator("h1").inner_text()
    assert "$29.00" in page.locator("#sub-estimate").inner_text()
    shots(page, "31-subscription-upgraded")
    lic.refresh_from_db()
    assert lic.plan == team
    assert fake_stripe.wait_for_webhooks(10)
    assert Sale.objects.filter(buyer=lic.buyer, kind="invoice").count() == 2  # first + proration
    proration = Sale.objects.filter(buyer=lic.buyer, kind="invoice").order_by("-pk").first()
    assert proration is not None
    assert money_format(amount=proration.gross_amount, currency="usd") == charged

    # A downgrade's page says when it takes effect and the new price; nothing is charged.
    page.get_by_label("Switch to").select_option(value=str(shop.subscription.pk))
    page.get_by_role("button", name="Switch plan").click()
    page.wait_for_url(re.compile(r"/switch/\?plan="))
    assert page.locator("h1").inner_text() == "Downgrade from Team to Pro?"
    assert page.locator("#switch-amount").inner_text() == "$0.00"
    assert (
        page.locator("#switch-when").inner_text().startswith(f"{row.current_period_end:%Y-%m-%d}")
    )
    assert "$9.00" in page.locator("#switch-renewal").inner_text()
    shots(page, "31b-switch-downgrade-confirm")
    page.get_by_role("link", name="Back").click()
    page.wait_for_url(re.compile(r"/me/licenses/\d+/#subscription$"))

    # Stripe failing (500 to every try): the confirmation page says so with 503 + Retry-After
    # and nothing changes. (A tab of its own: the browser logs the 503 on the console.)
    for _ in range(stripe_client.MAX_NETWORK_RETRIES + 1):
        fake_stripe.fail_next(f"/v1/subscriptions/{row.stripe_subscription_id}", "500")
    outage = page.context.new_page()
    response = outage.goto(f"/me/licenses/{lic.pk}/switch/?plan={shop.subscription.pk}")
    assert response is not None
    assert response.status == 503
    assert response.headers["retry-after"] == str(stripe_client.PAYMENTS_RETRY_AFTER_SECONDS)
    assert "Nothing was changed" in outage.locator("#switch-unavailable").inner_text()
    assert outage.get_by_role("button", name="Confirm switch").count() == 0
    shots(outage, "31c-switch-stripe-unavailable")
    outage.close()
    lic.refresh_from_db()
    assert lic.plan == team

    # Cancel at the period end, then take it back.
    page.get_by_role("button", name="Cancel at period end").click()
    assert page.locator("#sub-status").inner_text().startswith("Ends on")
    assert "usage of this period only" in page.locator("#sub-estimate").inner_text()
    shots(page, "32-subscription-ending")
    page.get_by_role("button", name="Resume subscription").click()
    assert page.locator("#sub-status").inner_text() == "Active"
    shots(page, "33-subscription-resumed")

    # Stripe's customer portal, and back.
    page.get_by_role("button", name="Cards and invoices (Stripe)").click()
    page.wait_for_url(re.compile(r"/p/session/bps_"))
    assert "Renews on" in page.locator(".renewal").inner_text()
    assert page.locator("#invoices tr").count() >= 2
    shots(page, "34-stripe-portal")
    page.locator("#return").click()
    page.wait_for_url(f"{SITE}/me/licenses/{lic.pk}/")

    # Cancel now, after a confirmation page that states the refund rule.
    page.get_by_role("link", name="Cancel now…").click()
    page.wait_for_url(re.compile(r"/cancel/$"))
    assert "not refunded" in page.locator("#refund-rule").inner_text()
    shots(page, "35-cancel-now-confirm")
    page.get_by_role("button", name="Yes, cancel now").click()
    page.wait_for_url(re.compile(r"/me/licenses/\d+/#subscription$"))
    assert page.locator("#sub-status").inner_text() == "Ended"
    assert "Expired" in page.locator(".status").first.inner_text()
    shots(page, "36-subscription-cancelled")
    lic.refresh_from_db()
    assert lic.status == LicenseStatus.EXPIRED
    assert page.console_errors == []

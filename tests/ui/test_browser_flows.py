"""End to end in a real browser (Debian's chromium through Playwright) against the real site.

1. Anyone searches the catalogue (as-you-type with htmx, and with the plain form) and opens a
   listing.
2. A creator signs up, claims a listing (the registry publishes the token), onboards with
   Stripe Connect on the fake's hosted page, connects the demo upstream (an unsafe URL is
   refused on the field) and sets prices. A buyer signs up, buys through the fake hosted
   checkout, sees the key once, copies the client configuration, calls a tool through the
   gateway with the copied Python client, and sees that call in the usage chart; the creator
   sees the sale in earnings and the call per tool.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
from playwright.sync_api import expect

from billing.models import License, Sale
from billing.services.claims import claims_verify_from_registry
from gateway.tasks import usage_drain_task
from tests.factories import ListingFactory, ServerVersionFactory, http_remote, npm_package
from tests.ui.conftest import SITE, UPSTREAM_PORT, Shots, new_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "a long and unusual passphrase 42"


def L(text: str) -> re.Pattern[str]:
    """A form label, with or without Django's trailing colon."""
    return re.compile(rf"^\s*{re.escape(text)}:?\s*$")


def _catalogue() -> None:
    for name, title, description in [
        ("io.github.acme/weather", "Acme Weather", "Forecasts and rain alerts for any city."),
        ("io.github.acme/github", "GitHub tools", "Issues, pull requests and code search."),
        ("io.github.zed/notes", "Notes", "Keep notes <script>alert(1)</script> in markdown."),
    ]:
        ServerVersionFactory(
            name=name,
            description=description,
            title=title,
            remotes=[http_remote()] if "weather" in name else [],
            packages=[npm_package(f"{name.split('/')[1]}-mcp")],
        )
        ListingFactory(
            name=name,
            title=title,
            description=description,
            has_remote="weather" in name,
            has_package=True,
            package_types=",npm,",
            transports=",stdio,",
        )
    ListingFactory(
        name="io.github.old/deprecated-thing",
        title="Old thing",
        description="Weather from the past.",
        status="deprecated",
        status_message="Use io.github.acme/weather instead.",
    )


def test_search_and_open_a_listing(live: str, browser: Any, shots: Shots) -> None:
    _catalogue()
    page = new_page(browser)
    page.goto("/")
    assert page.locator("h1").inner_text() == "MCP servers"
    shots(page, "01-home")

    # As-you-type search (htmx) replaces the results without a page load.
    page.get_by_label(L("Search")).fill("weather")
    page.wait_for_function(
        "() => document.querySelector('#results-heading')?.textContent.includes('weather')"
    )
    results = page.locator(".result__title")
    assert "Acme Weather" in results.all_inner_texts()
    shots(page, "02-search-results")

    # The same search without JavaScript: the form submits and the page renders the results.
    no_js = browser.new_context(base_url=SITE, java_script_enabled=False).new_page()
    no_js.goto("/")
    no_js.get_by_label(L("Search")).fill("weather")
    no_js.get_by_role("button", name="Search").click()
    assert "q=weather" in no_js.url
    assert "Acme Weather" in no_js.locator(".result__title").all_inner_texts()
    no_js.context.close()

    page.get_by_role("link", name="Acme Weather").click()
    page.wait_for_url(re.compile(r"/servers/io\.github\.acme/weather$"))
    assert page.locator("h1").inner_text() == "Acme Weather"
    assert page.get_by_role("heading", name="Packages").is_visible()
    assert "not host this server" in page.locator(".offer").inner_text()
    shots(page, "03-listing")

    # Registry text is inert: the script tag is shown as text and never runs.
    page.goto("/servers/io.github.zed/notes")
    assert "<script>alert(1)</script>" in page.locator(".listing__description").inner_text()
    page.goto("/servers/io.github.old/deprecated-thing")
    assert "Deprecated" in page.locator(".banner").inner_text()
    shots(page, "04-listing-deprecated")
    assert page.console_errors == []


def _sign_up(page: Any, username: str, shots: Shots | None = None) -> None:
    page.goto("/accounts/signup/")
    page.get_by_label(L("Username")).fill(username)
    page.get_by_label(L("Email")).fill(f"{username}@example.com")
    page.get_by_label(L("Password")).fill(PASSWORD)
    page.get_by_label(L("Password confirmation")).fill(PASSWORD)
    if shots:
        shots(page, "05-signup")
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(f"{SITE}/")
    assert page.get_by_role("button", name=re.compile("Log out")).is_visible()


def test_creator_sells_and_buyer_buys_calls_and_sees_usage(
    live: str, browser: Any, shots: Shots, fake_stripe: Any, tmp_path: Any
) -> None:
    name = "io.github.maker/weather"
    ServerVersionFactory(name=name, title="Maker Weather", description="Tomorrow's weather.")
    ListingFactory(name=name, title="Maker Weather", description="Tomorrow's weather.")

    # --- the creator -----------------------------------------------------------------------
    creator = new_page(browser)
    _sign_up(creator, "maker", shots)
    creator.get_by_role("link", name="Sell").click()
    creator.get_by_label(L("Handle")).fill("maker")
    creator.get_by_role("button", name="Become a creator").click()
    assert "Not set up yet" in creator.locator("#payout-status").inner_text()
    shots(creator, "06-creator-new")

    creator.get_by_role("link", name="Claim a listing").click()
    creator.get_by_label(L("Server name")).fill(name)
    creator.get_by_role("button", name="Get a claim token").click()
    token = creator.locator("#claim-token").inner_text().strip()
    snippet = json.loads(creator.locator("#claim-snippet").inner_text())
    assert json.dumps(snippet).count(token) == 1
    shots(creator, "07-creator-claim")
    # The creator publishes a version carrying the token; the registry sync verifies it.
    ServerVersionFactory(name=name, version="1.1.0", extra_server=snippet)
    assert claims_verify_from_registry(names=[name]) == 1

    creator.goto("/creator/")
    creator.get_by_role("button", name=re.compile("Set up payouts")).click()
    creator.wait_for_url(re.compile(r"/connect/onboard/acct_"))
    shots(creator, "08-stripe-onboarding")
    # The return page re-reads the account from Stripe: no webhook needed to show the result.
    fake_stripe.pause_webhooks()
    try:
        creator.locator("form button").first.click()
        creator.wait_for_url(f"{SITE}/creator/")
        assert "ready" in creator.locator("#payout-status").inner_text()
        shots(creator, "08b-creator-onboarded")
    finally:
        fake_stripe.resume_webhooks()
    assert fake_stripe.wait_for_webhooks(10)

    creator.get_by_role("link", name="Maker Weather").click()
    # SSRF guard: a private address is refused, with the reason on the URL field.
    creator.get_by_label(L("Upstream URL")).fill("http://10.0.0.7/mcp")
    creator.get_by_role("button", name="Save upstream").click()
    url_error = creator.locator("#upstream .errorlist").inner_text()
    assert url_error
    shots(creator, "09-creator-upstream-refused")
    creator.get_by_label(L("Upstream URL")).fill(f"http://127.0.0.1:{UPSTREAM_PORT}/mcp")
    creator.get_by_label(L("Serve calls through Toolbooth")).check()
    creator.get_by_role("button", name="Save upstream").click()
    assert "Upstream saved." in creator.locator(".messages").inner_text()

    form = creator.locator("#plan-create")
    form.get_by_label(L("Kind")).select_option("one_time")
    form.get_by_label(L("Plan name")).fill("Lifetime")
    form.get_by_label(L("Price")).fill("4.90")
    form.get_by_label(L("Tool prices")).fill("fail=excluded")
    form.get_by_role("button", name="Create plan").click()
    assert "Plan created." in creator.locator(".messages").inner_text()
    assert "$4.90 once" in creator.locator(".plan-admin").inner_text()
    shots(creator, "10-creator-listing")

    # --- the buyer ---------------------------------------------------------------------------
    buyer = new_page(browser)
    _sign_up(buyer, "buyer")
    buyer.get_by_label(L("Search")).fill("maker weather")
    buyer.get_by_role("button", name="Search").click()
    # The home page also lists hosted servers above the results until the search answers.
    buyer.locator("#results").get_by_role("link", name="Maker Weather").click()
    assert buyer.locator("#gateway-url").inner_text() == f"{SITE}/mcp/{name}"
    assert "$4.90 once" in buyer.locator(".plan").inner_text()
    shots(buyer, "11-listing-hosted")
    buyer.get_by_role("link", name=re.compile("Buy Lifetime")).click()
    shots(buyer, "12-buy")
    buyer.get_by_role("button", name="Pay with Stripe").click()
    buyer.wait_for_url(re.compile(r"/checkout/cs_"))
    shots(buyer, "13-stripe-checkout")
    buyer.locator("#pay").click()
    buyer.wait_for_url(re.compile(r"/billing/checkout/success"))
    raw_key = buyer.locator("#raw-key").inner_text().strip()
    assert raw_key.startswith("tb_")
    shots(buyer, "14-checkout-success-key-once")

    # Copy the Python client with the key in it (the clipboard is what a person pastes).
    buyer.locator("summary", has_text="Python").click()
    buyer.get_by_role("button", name="Copy the Python (mcp SDK) configuration").click()
    copied = buyer.evaluate("navigator.clipboard.readText()")
    assert raw_key in copied
    buyer.get_by_role("button", name="Copy the Claude Desktop configuration").click()
    claude = json.loads(buyer.evaluate("navigator.clipboard.readText()"))
    server = claude["mcpServers"]["io-github-maker-weather"]
    assert server["args"] == [
        "mcp-remote",
        f"{SITE}/mcp/{name}",
        "--header",
        "Authorization:${AUTH}",
    ]
    assert server["env"]["AUTH"] == f"Bearer {raw_key}"

    # Shown exactly once: a reload does not show it again.
    buyer.reload()
    assert buyer.locator("#raw-key").count() == 0

    # The copied script calls a tool through the gateway with the key.
    script = tmp_path / "toolbooth_client.py"
    script.write_text(copied)
    ran = subprocess.run(
        [sys.executable, str(script), "forecast", '{"city": "Oslo"}'],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert "tools: forecast, add" in ran.stdout
    assert "isError: False" in ran.stdout
    assert "Oslo" in ran.stdout
    assert usage_drain_task() >= 1

    # The usage chart shows that call.
    lic = License.objects.get(buyer__username="buyer")
    buyer.goto(f"/me/licenses/{lic.pk}/")
    assert buyer.locator("#usage-total-calls").inner_text() == "1"
    bars = buyer.locator("#chart-days rect.chart__bar")
    assert bars.count() == 1
    assert "1 call" in bars.first.locator("title").text_content()
    assert "forecast" in buyer.locator("#usage-tools").inner_text()
    shots(buyer, "15-license-usage")

    # Keys: create one with a spend cap (htmx swaps the section in place), rotate, revoke.
    buyer.get_by_label(L("Key name")).fill("laptop")
    buyer.get_by_label(L("Monthly spend cap")).first.fill("5.00")
    buyer.get_by_role("button", name="Create key").click()
    second = buyer.locator("#raw-key").inner_text().strip()
    assert second.startswith("tb_")
    assert second != raw_key
    expect(buyer.locator("#key-table tbody tr")).to_have_count(2)
    buyer.get_by_role("button", name=re.compile(r"Rotate key " + re.escape(raw_key[:14]))).click()
    expect(buyer.locator("#keys")).to_contain_text("old key keeps working")
    # Revoking asks for a tick first (the browser's own required-field check, no script).
    revoke = buyer.get_by_role("button", name=re.compile(r"Revoke key " + re.escape(second[:14])))
    revoke.click()
    expect(buyer.locator("#keys")).not_to_contain_text("Key revoked")
    buyer.get_by_role(
        "checkbox", name=re.compile(r"Yes, revoke key " + re.escape(second[:14]))
    ).check()
    revoke.click()
    expect(buyer.locator("#keys")).to_contain_text("Key revoked")
    expect(buyer.locator("#key-table tbody tr")).to_have_count(3)
    shots(buyer, "16-license-keys")
    buyer.goto("/me/licenses/")
    assert "Receipt" in buyer.locator("#invoices + .table-wrap").inner_text()
    shots(buyer, "17-my-licenses")
    buyer.get_by_role("link", name="Receipt").click()
    assert buyer.locator("#receipt-amount").inner_text() == "$4.90"
    shots(buyer, "18-receipt")

    # --- the creator sees the sale and the call ----------------------------------------------
    sale = Sale.objects.get(listing__name=name)
    assert (sale.gross_amount, sale.platform_fee_amount, sale.net_amount) == (490, 74, 416)
    creator.goto("/creator/")
    earnings = creator.locator("#earnings").inner_text()
    assert "$4.90" in earnings
    assert "$0.74" in earnings
    assert "$4.16" in earnings
    shots(creator, "19-creator-earnings")
    creator.goto(f"/creator/listings/{name}/")
    stats = creator.locator("#tool-stats").inner_text()
    assert "forecast" in stats
    shots(creator, "20-creator-listing-stats")

    # The listing page now has a health badge from that call.
    buyer.goto(f"/servers/{name}")
    assert "Healthy" in buyer.locator("#health").inner_text()

    for page in (creator, buyer):
        assert page.console_errors == [], "\n".join(page.console_errors)


def test_phone_width_and_password_reset(live: str, browser: Any, shots: Shots) -> None:
    from tests.factories import UserFactory

    UserFactory(username="forgetful", email="forgetful@example.com")
    _catalogue()
    phone = new_page(browser, width=375, height=740)
    phone.goto("/")
    # Nothing scrolls sideways at phone width.
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    shots(phone, "21-home-phone")
    phone.goto("/servers/io.github.acme/weather")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    shots(phone, "22-listing-phone")

    phone.goto("/accounts/login/")
    shots(phone, "23-login")
    phone.get_by_role("link", name="Forgot your password?").click()
    phone.get_by_label(L("Email")).fill("forgetful@example.com")
    phone.get_by_role("button", name="Send the link").click()
    assert phone.locator("h1").inner_text() == "Check your email"
    shots(phone, "24-password-reset-sent")
    assert phone.console_errors == []

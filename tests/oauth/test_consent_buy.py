"""Buying inside the connect flow, in a real browser: a buyer without a license of the listing
sees its plans on the consent page (`#consent-buy`), buys one through the fake Stripe's hosted
Checkout, comes back to the consent page, picks the new license and allows; the client's token
calls a tool, billed to that license. My licenses then lists the connected client, and revoking
it there stops the token."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from django.db import connections

from billing.models import License
from billing.services.creators import (
    connect_account_ensure,
    connect_account_sync,
    creator_become,
)
from billing.services.plans import plan_create
from gateway.models import UsageEvent
from gateway.proxy import RECEIPT_KEY
from tests.billing.factories import OwnedListingFactory
from tests.factories import UserFactory
from tests.gateway.conftest import drain
from tests.oauth.conftest import (
    ENTITLEMENT_CACHE_SECONDS,
    SITE,
    Callback,
    Pkce,
    authorize_params,
    browser_login,
    chromium,
    exchange,
    expect_url,
    gateway_url,
    hosted_upstream,
    mcp_call,
    new_page,
    register,
    shot,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CLIENT_NAME = "Connector Under Test"


def _hosted_shop(oauth_stripe: Any, upstream: str) -> tuple[Any, Any]:
    """A payable creator (onboarded on the fake) whose hosted listing sells one plan: pay per
    call, 3 cents. Returns (listing, plan)."""
    listing = OwnedListingFactory(title="Buyable Weather")
    creator = creator_become(user=listing.owner, handle=f"oauth-shop-{listing.pk}")
    account = connect_account_ensure(creator=creator)
    oauth_stripe.complete_onboarding(account.stripe_account_id)
    connect_account_sync(stripe_account_id=account.stripe_account_id)
    hosted_upstream(listing, upstream)
    plan = plan_create(
        user=listing.owner, listing=listing, kind="per_call", name="PAYG", per_call_amount=3
    )
    return listing, plan


async def _flow(
    name: str, username: str, client_id: str, pkce: Pkce, callback: Callback, fake: Any
) -> dict[str, Any]:
    try:
        return await _steps(name, username, client_id, pkce, callback, fake)
    finally:
        # Django keeps a connection per asyncio context: the one the ORM opened in this event
        # loop would outlive the test and keep the test database from being dropped.
        connections.close_all()


async def _steps(
    name: str, username: str, client_id: str, pkce: Pkce, callback: Callback, fake: Any
) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    params = authorize_params(client_id, gateway_url(name), pkce)
    async with chromium() as browser:
        page = await new_page(browser)
        await page.goto(f"{SITE}/oauth/authorize?{urlencode(params)}")
        await browser_login(page, username)
        buy = page.locator("#consent-buy")
        seen["buy_text"] = await buy.inner_text()
        seen["radios_before"] = await page.locator('input[name="license"]').count()
        seen["allow_before"] = await page.locator('button[name="action"][value="allow"]').count()
        await shot(page, "oauth-10-consent-buy")
        await buy.locator("button.consent-buy-plan").first.click()
        await expect_url(page, re.compile(r"/checkout/cs_"), "buy-plan")
        await shot(page, "oauth-11-checkout")
        await page.locator("#pay").click()
        await expect_url(page, re.compile(r"/oauth/consent/"), "checkout-return")
        radios = page.locator('input[name="license"]')
        seen["radios_after"] = await radios.evaluate_all(
            "els => els.map(e => [e.value, e.checked])"
        )
        await shot(page, "oauth-12-consent-after-buy")
        await page.click('button[name="action"][value="allow"]')
        await expect_url(page, re.compile(r"^http://127\.0\.0\.1:\d+/callback\?"), "buy-allow")
        seen["callback"] = await asyncio.to_thread(callback.wait, 5)
        seen["consent_console"] = list(page.console_errors)
        seen["webhooks"] = await asyncio.to_thread(fake.wait_for_webhooks, 10)

        # My licenses: the connected client, then revoke it there.
        lic = License.objects.get(buyer__username=username)  # (DJANGO_ALLOW_ASYNC_UNSAFE)
        seen["license_id"] = lic.pk
        exchanged = await asyncio.to_thread(
            lambda: exchange(seen["callback"]["code"], pkce, client_id, gateway_url(name))
        )
        seen["token_status"] = exchanged.status_code
        tokens = exchanged.json()
        seen["tokens"] = tokens
        called = await asyncio.to_thread(
            lambda: mcp_call(name, tokens.get("access_token"), tool="forecast")
        )
        seen["call"] = (called.status_code, called.json())
        seen["drained"] = drain()  # the beat task's work: usage, last use
        await page.goto(f"{SITE}/me/licenses/{lic.pk}/")
        clients = page.locator("#connected-clients")
        seen["clients_text"] = await clients.inner_text()
        revoke = clients.locator("button.revoke-connection")
        seen["revoke_buttons"] = await revoke.count()
        await shot(page, "oauth-13-connected-clients")

        # Revoking asks first: a confirm() dialog (the contract), or, like the keys table, a
        # required "yes" tick that the browser checks before it submits.
        dialogs: list[str] = []

        async def accept(dialog: Any) -> None:
            dialogs.append(dialog.message)
            await dialog.accept()

        page.on("dialog", accept)
        await revoke.first.click()
        await page.wait_for_timeout(500)
        seen["dialogs"] = list(dialogs)
        seen["text_after_unconfirmed_click"] = await clients.inner_text()
        if not dialogs:
            await clients.locator('input[type="checkbox"]').first.check()
            await revoke.first.click()
        await page.wait_for_load_state()
        await page.wait_for_timeout(500)
        seen["clients_text_after"] = await page.locator("#connected-clients").inner_text()
        await shot(page, "oauth-14-connection-revoked")
        seen["console_errors"] = list(page.console_errors)
    return seen


def test_buyer_without_license_buys_on_the_consent_page(
    oauth_live: str, oauth_upstream: str, oauth_stripe: Any, callback: Callback
) -> None:
    listing, plan = _hosted_shop(oauth_stripe, oauth_upstream)
    buyer = UserFactory(username="consent-buyer")
    client_id = register(name=CLIENT_NAME)["client_id"]
    pkce = Pkce()

    out = asyncio.run(
        asyncio.wait_for(
            _flow(listing.name, buyer.username, client_id, pkce, callback, oauth_stripe), 90
        )
    )

    # Before buying: the plan to buy, nothing to pick and nothing to allow.
    assert "PAYG" in out["buy_text"]
    assert "$0.03" in out["buy_text"]
    assert out["radios_before"] == 0
    assert out["allow_before"] == 0
    # After Checkout: back on the consent page with the new license picked.
    lic = License.objects.get(buyer=buyer)
    assert lic.plan_id == plan.pk
    assert out["radios_after"] == [[str(lic.pk), True]]
    assert out["callback"].get("state") == "st4te"
    assert out["token_status"] == 200, out["tokens"]
    status, body = out["call"]
    assert status == 200, body
    assert body["result"]["_meta"][RECEIPT_KEY]["amount"] == 3
    drain()
    event = UsageEvent.objects.get(license_id=lic.pk)
    assert (event.tool, event.billable, event.unit_amount) == ("forecast", True, 3)
    assert event.stripe_customer_id == lic.creator_subscription.stripe_customer_id

    # My licenses lists the client (connected today); revoking it there stops its token.
    assert CLIENT_NAME in out["clients_text"]
    assert out["revoke_buttons"] == 1
    assert "never" not in out["clients_text"].lower(), "last use not shown after a drained call"
    if not out["dialogs"]:  # the tick box, then: without it nothing was disconnected
        assert out["text_after_unconfirmed_click"] == out["clients_text"]
    assert out["clients_text_after"] != out["clients_text"]
    access = out["tokens"]["access_token"]
    deadline = ENTITLEMENT_CACHE_SECONDS + 1
    for _ in range(int(deadline / 0.2)):
        if mcp_call(listing.name, access).status_code == 401:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the token still works {deadline} s after revoking on the license page")
    assert out["consent_console"] == []
    assert out["console_errors"] == []

"""The `mcp` Python SDK's own OAuth client (`mcp.client.auth.OAuthClientProvider`) against the
running site, with a real browser doing the login and the consent: it discovers the protected
resource and the authorization server from the gateway's 401, registers itself (DCR), sends the
buyer to the authorize URL, gets the code on a loopback callback, lists and calls a tool (billed
once, receipt in `_meta`), and after the access token expired refreshes by itself; the refresh
token it used is dead afterwards."""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

from gateway.models import UsageEvent
from gateway.proxy import RECEIPT_KEY
from tests.factories import UserFactory
from tests.gateway.conftest import drain
from tests.oauth.conftest import (
    ACCESS_TOKEN_SECONDS,
    CALLBACK,
    Callback,
    browser_login,
    chromium,
    error_of,
    expect_url,
    gateway_url,
    hosted_listing,
    mcp_call,
    metered_license,
    new_page,
    refresh,
    shot,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CLIENT_NAME = "SDK Test Client"


class MemoryStorage:
    """The SDK's TokenStorage in memory; keeps every token set it was given, oldest first."""

    def __init__(self) -> None:
        self.history: list[OAuthToken] = []
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.history[-1] if self.history else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.history.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


async def _session(name: str, username: str, license_id: int, callback: Callback) -> dict[str, Any]:
    storage = MemoryStorage()
    seen: dict[str, Any] = {}
    async with chromium() as browser:
        page = await new_page(browser)

        async def redirect_handler(authorization_url: str) -> None:
            seen["authorization_url"] = authorization_url
            await page.goto(authorization_url)
            await browser_login(page, username, screenshot="oauth-01-login")
            seen["consent_text"] = await page.locator("main").inner_text()
            seen["licenses"] = await page.locator('input[name="license"]').evaluate_all(
                "els => els.map(e => [e.value, e.checked])"
            )
            await shot(page, "oauth-02-consent")
            await page.check(f'input[name="license"][value="{license_id}"]')
            await page.click('button[name="action"][value="allow"]')
            await expect_url(page, re.compile(rf"^{re.escape(CALLBACK)}\?"), "sdk-allow")

        async def callback_handler() -> AuthorizationCodeResult:
            query = await anyio.to_thread.run_sync(callback.wait)
            return AuthorizationCodeResult(code=query["code"], state=query.get("state"))

        provider = OAuthClientProvider(
            server_url=gateway_url(name),
            client_metadata=OAuthClientMetadata(
                client_name=CLIENT_NAME,
                redirect_uris=[CALLBACK],
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
                token_endpoint_auth_method="none",
            ),
            storage=storage,
            redirect_handler=redirect_handler,
            callback_handler=callback_handler,
        )
        http = httpx2.AsyncClient(auth=provider, timeout=30)
        async with http, Client(streamable_http_client(gateway_url(name), http_client=http)) as c:
            tools = [t.name for t in (await c.list_tools()).tools]
            first = await c.call_tool("add", {"a": 2, "b": 3})
            seen["tokens_before"] = list(storage.history)
            await asyncio.sleep(ACCESS_TOKEN_SECONDS + 1)
            # The first access token is dead now; the SDK must refresh on its own.
            seen["expired_status"] = await anyio.to_thread.run_sync(
                lambda: mcp_call(name, storage.history[0].access_token).status_code
            )
            second = await c.call_tool("forecast", {"city": "Oslo"})
        seen["console_errors"] = page.console_errors
    seen |= {
        "tools": tools,
        "first": first,
        "second": second,
        "history": storage.history,
        "client_info": storage.client_info,
    }
    return seen


def test_mcp_sdk_oauth_client_connects_calls_and_refreshes(
    oauth_live: str, oauth_upstream: str, callback: Callback
) -> None:
    buyer = UserFactory(username="sdk-buyer")
    listing = hosted_listing(oauth_upstream, title="SDK Weather")
    lic = metered_license(listing, buyer, per_call=4)

    out = asyncio.run(
        asyncio.wait_for(_session(listing.name, buyer.username, lic.pk, callback), 90)
    )

    query = parse_qs(urlsplit(out["authorization_url"]).query)
    assert query["resource"] == [gateway_url(listing.name)]
    assert query["code_challenge_method"] == ["S256"]
    # Which client asks for which listing (the contract's words are "<client> wants to use
    # <listing>"; the page words it "Connect <client> to <listing>").
    consent_text = " ".join(out["consent_text"].split())
    assert CLIENT_NAME in consent_text
    assert "SDK Weather" in consent_text
    assert out["licenses"] == [[str(lic.pk), True]]
    assert out["client_info"].client_id  # registered through DCR
    assert {"forecast", "add", "fail"} <= set(out["tools"])

    first, second = out["first"], out["second"]
    assert first.is_error is False
    assert first.structured_content == {"result": 5}
    assert second.is_error is False
    assert second.structured_content["city"] == "Oslo"
    receipts = [(r.meta or {}).get(RECEIPT_KEY) for r in (first, second)]
    assert [r["amount"] for r in receipts] == [4, 4]

    # Refreshed by the SDK: one more token set, both tokens new.
    history = out["history"]
    assert len(out["tokens_before"]) == 1
    assert len(history) == 2, "the SDK did not refresh (or re-authorized instead)"
    old, new = history
    assert old.access_token.startswith("tbo_")
    assert old.refresh_token.startswith("tbr_")
    assert new.access_token != old.access_token
    assert new.refresh_token != old.refresh_token
    assert out["expired_status"] == 401, "an expired access token still worked at the gateway"

    # Billed once per call, each with the receipt's call id, on the chosen license.
    drain()
    events = UsageEvent.objects.filter(license_id=lic.pk).order_by("occurred_at")
    assert [(e.tool, e.billable, e.unit_amount) for e in events] == [
        ("add", True, 4),
        ("forecast", True, 4),
    ]
    assert [str(e.call_id) for e in events] == [r["call_id"] for r in receipts]

    # The refresh token the SDK used is dead.
    client_id = out["client_info"].client_id
    reused = refresh(old.refresh_token, client_id, gateway_url(listing.name))
    assert reused.status_code == 400
    assert error_of(reused) == "invalid_grant"
    assert out["console_errors"] == []

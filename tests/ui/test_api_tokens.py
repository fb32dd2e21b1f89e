"""Personal API tokens (issue 12 §4) in a real browser against the site under uvicorn: a buyer
makes a token on /me/tokens/, sees it once, and a script uses it with `/api/v1/me/licenses`;
a reload shows only its prefix; revoking asks for a confirmation and stops the token.

Screenshots: 67-api-token-created, 68-api-token-revoked.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from billing.models import LicenseSource, PersonalToken
from tests.billing.factories import LicenseFactory
from tests.factories import UserFactory
from tests.ui.conftest import SITE, Shots, new_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "a long and unusual passphrase 42"


def test_a_personal_token_is_shown_once_works_for_scripts_and_is_revoked_with_a_confirmation(
    live: str, browser: Any, shots: Shots
) -> None:
    buyer = UserFactory(username="scripter", email="scripter@example.com")
    buyer.set_password(PASSWORD)
    buyer.save()
    lic = LicenseFactory(buyer=buyer, source=LicenseSource.GRANT)

    page = new_page(browser)
    page.goto(f"{SITE}/accounts/login/")
    page.get_by_label("Username").fill("scripter")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"^(?!.*/accounts/login/).*$"))
    page.goto(f"{SITE}/me/tokens/")
    expect(page.get_by_text("No API tokens yet.")).to_be_visible()
    page.get_by_label("Name").fill("nightly report")
    page.get_by_role("button", name="Create token").click()

    raw = page.locator("#raw-token").inner_text().strip()
    assert raw.startswith("tbp_")
    expect(page.locator("#token-example")).to_contain_text(f"Bearer {raw}")
    shots(page, "67-api-token-created")
    stored = PersonalToken.objects.get(user=buyer)
    assert raw not in (stored.token_hash, stored.display_prefix)  # only a hash is kept

    # A script: the token reads the buyer's own licenses, nothing else needs a session.
    listed = httpx.get(
        f"{SITE}/api/v1/me/licenses", headers={"Authorization": f"Bearer {raw}"}, timeout=10
    )
    assert listed.status_code == 200, listed.text[:300]
    assert [item["id"] for item in listed.json()["results"]] == [lic.pk]

    # Shown once: a reload has the prefix and the name, never the token.
    page.goto(f"{SITE}/me/tokens/")
    assert raw not in page.content()
    row = page.locator("#token-table tbody tr").first
    expect(row).to_contain_text("nightly report")
    expect(row).to_contain_text("Active")

    # Revoking needs the confirmation box: without it the browser does not submit.
    row.get_by_role("button", name=re.compile("Revoke")).click()
    expect(row).to_contain_text("Active")
    row.get_by_label(re.compile("Yes, revoke it")).check()
    row.get_by_role("button", name=re.compile("Revoke")).click()
    expect(page.locator("#token-table tbody tr").first).to_contain_text("Revoked")
    shots(page, "68-api-token-revoked")
    refused = httpx.get(
        f"{SITE}/api/v1/me/licenses", headers={"Authorization": f"Bearer {raw}"}, timeout=10
    )
    assert refused.status_code == 401
    assert raw not in refused.text

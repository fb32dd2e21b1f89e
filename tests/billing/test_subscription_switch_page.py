"""The Switch plan confirmation page: what the switch does and costs before anything changes,
"Confirm switch" charging exactly the amount shown, a tampered or missing quote going back to
the page, and Stripe unreachable answered on the page with 503 + Retry-After and nothing
changed. Django's test client against the fake Stripe over HTTP."""

from __future__ import annotations

import re

import pytest

from billing import stripe_client
from billing.models import SubscriptionChange
from common.money import money_format
from tests.billing.services.test_subscription_changes import (  # noqa: F401 (fixture)
    _fake_sub,
    subscribed,
)
from tests.billing.test_outages import UNAVAILABLE, closed_port  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db


def _quote_field(html: str) -> str:
    match = re.search(r'name="quote" value="([^"]+)"', html)
    assert match, "no quote on the page"
    return match.group(1)


def test_confirm_page_shows_the_charge_and_confirming_charges_it(subscribed):  # noqa: F811
    s = subscribed
    s.client.force_login(s.shop.buyer)
    lic_url = f"/me/licenses/{s.license.pk}/"
    page = s.client.get(f"{lic_url}switch/?plan={s.shop.team.pk}")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Upgrade from Pro to Team?" in html
    amount = re.search(r'id="switch-amount"><strong>([^<]+)</strong>', html)
    assert amount
    assert not SubscriptionChange.objects.exists()  # the page changed nothing

    # No quote, or one signed for something else: back to the confirmation page.
    bare = s.client.post(f"{lic_url}subscription/", {"action": "switch", "plan": s.shop.team.pk})
    assert bare.status_code == 302
    assert bare["Location"] == f"{lic_url}switch/?plan={s.shop.team.pk}"
    forged = _quote_field(html)[:-2] + "xx"
    again = s.client.post(
        f"{lic_url}subscription/",
        {"action": "switch", "plan": s.shop.team.pk, "quote": forged},
    )
    assert again["Location"] == f"{lic_url}switch/?plan={s.shop.team.pk}"
    assert not SubscriptionChange.objects.exists()

    done = s.client.post(
        f"{lic_url}subscription/",
        {"action": "switch", "plan": s.shop.team.pk, "quote": _quote_field(html)},
    )
    assert done.status_code == 302
    assert done["Location"] == f"{lic_url}#subscription"
    s.deliver_new()
    invoice = s.fake.state.get("invoices", _fake_sub(s)["latest_invoice"])
    assert invoice["billing_reason"] == "subscription_update"
    assert money_format(amount=invoice["amount_paid"], currency="usd") == amount.group(1)
    s.license.refresh_from_db()
    assert s.license.plan == s.shop.team


def test_downgrade_page_says_when_and_the_new_price(subscribed):  # noqa: F811
    s = subscribed
    s.client.force_login(s.shop.buyer)
    html = s.client.get(
        f"/me/licenses/{s.license.pk}/switch/?plan={s.shop.per_call.pk}"
    ).content.decode()
    s.license.creator_subscription.refresh_from_db()
    end = s.license.creator_subscription.current_period_end
    assert "Downgrade from Pro to" in html
    assert f"{end:%Y-%m-%d}</time>, at the end of the period you paid for" in html


def test_stripe_unreachable_is_a_503_on_the_page_and_changes_nothing(
    subscribed,  # noqa: F811
    settings,
    closed_port,  # noqa: F811
):
    s = subscribed
    s.client.force_login(s.shop.buyer)
    lic_url = f"/me/licenses/{s.license.pk}/"
    html = s.client.get(f"{lic_url}switch/?plan={s.shop.team.pk}").content.decode()
    token = _quote_field(html)

    settings.STRIPE_API_BASE = closed_port
    page = s.client.get(f"{lic_url}switch/?plan={s.shop.team.pk}")
    assert page.status_code == 503
    assert page["Retry-After"] == str(stripe_client.PAYMENTS_RETRY_AFTER_SECONDS)
    assert UNAVAILABLE in page.content.decode()
    assert "Confirm switch" not in page.content.decode()
    confirm = s.client.post(
        f"{lic_url}subscription/", {"action": "switch", "plan": s.shop.team.pk, "quote": token}
    )
    assert confirm.status_code == 503
    assert confirm["Retry-After"] == str(stripe_client.PAYMENTS_RETRY_AFTER_SECONDS)
    assert "Nothing was changed" in confirm.content.decode()
    assert not SubscriptionChange.objects.exists()
    s.license.refresh_from_db()
    assert s.license.plan == s.shop.subscription

    settings.STRIPE_API_BASE = s.fake.base_url  # Stripe is back: the retry form works
    retry = s.client.post(
        f"{lic_url}subscription/",
        {
            "action": "switch",
            "plan": s.shop.team.pk,
            "quote": _quote_field(confirm.content.decode()),
        },
    )
    assert retry["Location"] == f"{lic_url}#subscription"
    s.license.refresh_from_db()
    assert s.license.plan == s.shop.team

"""The people pages over Django's test client: escaping and CSP, CSRF, ownership (404 for other
people's licenses and listings), keys shown once, spend caps, the SSRF error on the upstream
field, sign-up and password reset, search facets, and bounded queries."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from billing import keys
from billing.models import ApiKey, Sale, SaleKind, StripeEvent
from billing.services.licenses import api_key_create
from gateway.models import HostedUpstream, UsageEvent, UsageOutcome
from tests.billing.factories import (
    ConnectAccountFactory,
    CreatorFactory,
    LicenseFactory,
    PlanFactory,
    PlanPriceFactory,
)
from tests.factories import ListingFactory, UserFactory
from tests.gateway.factories import HostedUpstreamFactory
from tests.marketplace.test_pages import XSS, assert_no_inline_script_or_style

pytestmark = pytest.mark.django_db


def _hosted_listing_with_plan(**listing: Any) -> tuple[Any, Any]:
    creator = CreatorFactory()
    ConnectAccountFactory(creator=creator)
    owned = ListingFactory(owner=creator.user, **listing)
    HostedUpstreamFactory(listing=owned, url="https://mcp.example.com/mcp")
    plan = PlanFactory(listing=owned, kind="per_call", name=f"Pay as you go {XSS}")
    PlanPriceFactory(
        plan=plan,
        per_call_amount=3,
        tool_prices={"search": {"unit_amount": 5}, "admin": {"unit_amount": 0, "excluded": True}},
    )
    return owned, plan


def _usage(lic: Any, *, tool: str = "forecast", outcome: str = "success", **kw: Any) -> UsageEvent:
    billable = outcome == UsageOutcome.SUCCESS
    return UsageEvent.objects.create(
        call_id=uuid.uuid4(),
        key_id=kw.get("key_id", 1),
        license_id=lic.pk,
        listing_id=lic.listing_id,
        plan_id=lic.plan_id,
        tool=tool,
        unit_amount=kw.get("unit_amount", 3) if billable else 0,
        currency="usd",
        billable=billable,
        outcome=outcome,
        latency_ms=kw.get("latency_ms", 40),
        occurred_at=kw.get("occurred_at", timezone.now()),
    )


def test_listing_page_shows_plans_tool_prices_gateway_and_health_escaped(client: Client) -> None:
    listing, plan = _hosted_listing_with_plan(description=XSS, title="Weather")
    response = client.get(f"/servers/{listing.name}")
    html = response.content.decode()
    assert response.status_code == 200
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert f'id="gateway-url">http://127.0.0.1:8000/mcp/{listing.name}</code>' in html
    assert "$0.03 per call" in html
    assert "<code>search</code></td><td>$0.05 per call" in html
    assert "not available on this plan" in html  # the excluded tool
    assert f'href="/billing/buy/{plan.pk}"' in html
    assert "No calls in the last 24 hours" in html
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert_no_inline_script_or_style(html)


def test_listing_page_health_badge_counts_only_upstream_failures(client: Client) -> None:
    listing, plan = _hosted_listing_with_plan()
    lic = LicenseFactory(plan_price=plan.prices.get())
    for _ in range(3):
        _usage(lic)
    _usage(lic, outcome=UsageOutcome.TOOL_ERROR)  # the tool working as designed
    _usage(lic, outcome=UsageOutcome.TIMEOUT)
    html = client.get(f"/servers/{listing.name}").content.decode()
    assert "health--degraded" in html
    assert "80% of 5 calls answered in 24 h" in html


def test_deleted_listing_cannot_be_bought(client: Client) -> None:
    listing, plan = _hosted_listing_with_plan(status="deleted")
    html = client.get(f"/servers/{listing.name}").content.decode()
    assert "banner--deleted" in html
    assert f"/billing/buy/{plan.pk}" not in html
    assert "cannot be bought" in html


def test_listing_page_is_a_bounded_number_of_queries(
    client: Client, django_assert_max_num_queries: Any
) -> None:
    listing, _plan = _hosted_listing_with_plan()
    with django_assert_max_num_queries(10):
        assert client.get(f"/servers/{listing.name}").status_code == 200


def test_people_pages_need_login_and_hide_other_peoples_things(client: Client) -> None:
    lic = LicenseFactory()
    listing, _ = _hosted_listing_with_plan()
    for url in ("/me/licenses/", f"/me/licenses/{lic.pk}/", "/creator/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=")
    client.force_login(UserFactory())
    assert client.get(f"/me/licenses/{lic.pk}/").status_code == 404
    assert client.get(f"/creator/listings/{listing.name}/").status_code == 404
    sale = Sale.objects.create(
        kind=SaleKind.ONE_TIME,
        source_ref="pi_x",
        creator=listing.owner.creator,
        buyer=lic.buyer,
        listing=lic.listing,
        gross_amount=490,
        platform_fee_bps=1500,
        platform_fee_amount=74,
        net_amount=416,
        currency="usd",
    )
    assert client.get(f"/me/receipts/{sale.pk}/").status_code == 404


def test_forms_need_csrf() -> None:
    lic = LicenseFactory()
    client = Client(enforce_csrf_checks=True)
    client.force_login(lic.buyer)
    response = client.post(f"/me/licenses/{lic.pk}/", {"action": "create"})
    assert response.status_code == 403
    assert not ApiKey.objects.exists()


def test_key_create_shows_the_key_once_with_client_config(client: Client) -> None:
    lic = LicenseFactory()
    client.force_login(lic.buyer)
    response = client.post(
        f"/me/licenses/{lic.pk}/", {"action": "create", "name": "ci", "monthly_spend_cap": "5"}
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    raw = re.search(r'<code id="raw-key">([^<]+)</code>', html)[1]  # type: ignore[index]
    key = ApiKey.objects.get(key_hash=keys.key_hash(raw))
    assert (key.name, key.monthly_spend_cap, key.daily_spend_cap) == ("ci", 500, None)
    assert f"Bearer {raw}" in html  # the ready-to-paste snippets carry it
    assert "&quot;mcpServers&quot;" in html
    assert "&quot;servers&quot;" in html
    assert "streamable_http_client" in html
    again = client.get(f"/me/licenses/{lic.pk}/").content.decode()
    assert raw not in again
    assert "&lt;your license key&gt;" in again


def test_htmx_key_actions_swap_the_keys_section_and_caps_are_saved(
    client: Client, redis_client: Any
) -> None:
    lic = LicenseFactory()
    key, _raw = api_key_create(license=lic)
    client.force_login(lic.buyer)
    response = client.post(
        f"/me/licenses/{lic.pk}/",
        {"action": "caps", "key": key.pk, "daily_spend_cap": "1.50", "monthly_spend_cap": ""},
        HTTP_HX_REQUEST="true",
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="keys"')
    assert "<html" not in html
    key.refresh_from_db()
    assert (key.daily_spend_cap, key.monthly_spend_cap) == (150, None)
    bad = client.post(
        f"/me/licenses/{lic.pk}/",
        {"action": "caps", "key": key.pk, "daily_spend_cap": "0.001"},
        HTTP_HX_REQUEST="true",
    )
    assert bad.status_code == 400
    assert 'role="alert"' in bad.content.decode()
    rotated = client.post(f"/me/licenses/{lic.pk}/", {"action": "rotate", "key": key.pk})
    assert "old key keeps working for 24 hours" in rotated.content.decode()
    key.refresh_from_db()
    assert key.expires_at is not None
    unconfirmed = client.post(f"/me/licenses/{lic.pk}/", {"action": "revoke", "key": key.pk})
    assert unconfirmed.status_code == 400
    assert "Yes, revoke" in unconfirmed.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is None
    client.post(f"/me/licenses/{lic.pk}/", {"action": "revoke", "key": key.pk, "confirm": "1"})
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_license_page_usage_chart_and_per_tool_table(client: Client) -> None:
    lic = LicenseFactory()
    _usage(lic, tool="forecast")
    _usage(lic, tool="forecast", occurred_at=timezone.now() - timedelta(days=2))
    _usage(lic, tool="add", outcome=UsageOutcome.TOOL_ERROR)
    _usage(lic, tool="old", occurred_at=timezone.now() - timedelta(days=45))  # outside 30 days
    client.force_login(lic.buyer)
    html = client.get(f"/me/licenses/{lic.pk}/").content.decode()
    assert '<strong id="usage-total-calls">3</strong>' in html
    assert html.count('class="chart__bar"') == 2 + 2  # two days with calls, two tools
    assert '<code>forecast</code></td><td class="num">2</td>' in html
    assert "<code>old</code>" not in html
    assert_no_inline_script_or_style(html)


def test_upstream_form_shows_the_ssrf_refusal_on_the_url_field(client: Client) -> None:
    creator = CreatorFactory()
    listing = ListingFactory(owner=creator.user)
    client.force_login(creator.user)
    response = client.post(
        f"/creator/listings/{listing.name}/",
        {"section": "upstream", "url": "http://169.254.169.254/latest", "enabled": "on"},
    )
    html = response.content.decode()
    assert response.status_code == 400
    field = html[html.index('id="upstream"') :]
    assert re.search(r'<ul class="errorlist" id="id_url_error">\s*<li>[^<]+</li>', field)
    assert not HostedUpstream.objects.filter(listing=listing).exists()


def test_creator_sets_plans_and_a_price_increase_waits_for_notice(client: Client) -> None:
    creator = CreatorFactory()
    ConnectAccountFactory(creator=creator)
    listing = ListingFactory(owner=creator.user)
    client.force_login(creator.user)
    url = f"/creator/listings/{listing.name}/"
    created = client.post(
        url,
        {
            "section": "plan",
            "kind": "subscription",
            "name": "Pro",
            "unit_amount": "9.00",
            "included_calls": "1000",
            "overage_amount": "0.02",
            "rate_limit_per_minute": "120",
            "tool_prices": "search=0.05, admin=excluded, ping=free",
        },
    )
    assert created.status_code == 302
    plan = listing.plans.get()
    price = plan.prices.get()
    assert (price.unit_amount, price.overage_amount, plan.included_calls) == (900, 2, 1000)
    assert price.tool_prices["admin"]["excluded"] is True
    assert price.tool_prices["search"]["unit_amount"] == 5
    raised = client.post(
        url,
        {
            "section": "price",
            "plan": plan.pk,
            f"plan{plan.pk}-unit_amount": "12.00",
            f"plan{plan.pk}-overage_amount": "0.02",
        },
        follow=True,
    )
    html = raised.content.decode()
    assert "existing buyers move to it on" in html
    assert "Applies to existing buyers on" in html
    assert plan.prices.count() == 2


def test_plan_rate_limit_has_the_apis_ceiling(client: Client) -> None:
    creator = CreatorFactory()
    ConnectAccountFactory(creator=creator)
    listing = ListingFactory(owner=creator.user)
    client.force_login(creator.user)
    plan = {"section": "plan", "kind": "per_call", "name": "Fast", "per_call_amount": "0.01"}
    refused = client.post(
        f"/creator/listings/{listing.name}/", {**plan, "rate_limit_per_minute": "100001"}
    )
    assert refused.status_code == 400
    assert "100000" in refused.content.decode().replace(",", "").replace("\u202f", "")
    assert not listing.plans.exists()
    taken = client.post(
        f"/creator/listings/{listing.name}/", {**plan, "rate_limit_per_minute": "100000"}
    )
    assert taken.status_code == 302
    assert listing.plans.get().rate_limit_per_minute == 100_000


def test_sign_up_logs_in_and_refuses_a_taken_email(client: Client) -> None:
    UserFactory(username="taken", email="taken@example.com")
    page = client.get("/accounts/signup/").content.decode()
    for field in ("id_username", "id_email", "id_password1", "id_password2"):
        assert f'<label for="{field}"' in page
    refused = client.post(
        "/accounts/signup/",
        {
            "username": "x1",
            "email": "Taken@example.com",
            "password1": "pw-long-enough-42",
            "password2": "pw-long-enough-42",
        },
    )
    assert "already exists" in refused.content.decode()
    made = client.post(
        "/accounts/signup/",
        {
            "username": "newbie",
            "email": "newbie@example.com",
            "password1": "pw-long-enough-42",
            "password2": "pw-long-enough-42",
        },
    )
    assert made.status_code == 302
    assert "My licenses" in client.get("/").content.decode()


def test_password_reset_mails_a_working_link(client: Client) -> None:
    UserFactory(username="forgetful", email="forgetful@example.com")
    response = client.post("/accounts/password_reset/", {"email": "forgetful@example.com"})
    assert response.status_code == 302
    (message,) = mail.outbox
    link = re.search(r"https?://[^/]+(/accounts/reset/\S+)", message.body)[1]  # type: ignore[index]
    form = client.get(link, follow=True)
    assert "Choose a new password" in form.content.decode()
    done = client.post(
        form.redirect_chain[-1][0],
        {"new_password1": "a-brand-new-pass-99", "new_password2": "a-brand-new-pass-99"},
    )
    assert done.status_code == 302
    assert client.login(username="forgetful", password="a-brand-new-pass-99")


def test_search_facets_price_model_and_free_tier_and_htmx_partial(client: Client) -> None:
    ListingFactory(name="io.github.a/free-weather", price_models=",free,per_call,")
    ListingFactory(name="io.github.a/paid-weather", price_models=",per_call,")
    ListingFactory(name="io.github.a/no-plans-weather")
    html = client.get("/", {"q": "weather", "price_model": "per_call"}).content.decode()
    assert "free-weather" in html
    assert "paid-weather" in html
    assert "no-plans" not in html
    html = client.get("/", {"q": "weather", "price_model": "per_call", "free_tier": "on"}).content
    assert b"free-weather" in html
    assert b"paid-weather" not in html
    partial = client.get("/", {"q": "weather"}, HTTP_HX_REQUEST="true")
    body = partial.content.decode()
    assert body.lstrip().startswith('<section id="results"')
    assert "HX-Request" in partial["Vary"]
    assert "Pay per call" in body  # the price-model badge


def test_creator_page_shows_earnings_per_month(client: Client) -> None:
    creator = CreatorFactory()
    listing = ListingFactory(owner=creator.user)
    buyer = UserFactory()
    for ref, gross, fee in (("pi_1", 490, 74), ("in_1", 900, 135), ("re_1", -490, -74)):
        Sale.objects.create(
            kind=SaleKind.REFUND if gross < 0 else SaleKind.ONE_TIME,
            source_ref=ref,
            creator=creator,
            buyer=buyer,
            listing=listing,
            gross_amount=gross,
            platform_fee_bps=1500,
            platform_fee_amount=fee,
            net_amount=gross - fee,
            currency="usd",
        )
    client.force_login(creator.user)
    html = client.get("/creator/").content.decode()
    table = html[html.index('id="earnings"') :]
    assert "$9.00" in table
    assert "$1.35" in table
    assert "$7.65" in table


def test_admin_pages_render_for_staff_and_never_show_key_material(client: Client) -> None:
    lic = LicenseFactory()
    key, raw = api_key_create(license=lic)
    StripeEvent.objects.create(stripe_event_id="evt_ui_1", type="charge.refunded", payload={})
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)
    for url in (
        "/admin/marketplace/listing/",
        "/admin/registry_sync/syncrun/",
        "/admin/registry_sync/syncalert/",
        "/admin/billing/license/",
        "/admin/billing/stripeevent/",
        f"/admin/billing/apikey/{key.pk}/change/",
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert raw not in html
        assert key.key_hash not in html
    events = client.get("/admin/billing/stripeevent/").content.decode()
    assert 'value="redrive"' in events


def test_stop_selling_asks_for_confirmation(client: Client) -> None:
    owned, plan = _hosted_listing_with_plan()
    client.force_login(owned.owner)
    page = f"/creator/listings/{owned.name}/"
    assert "Yes, stop selling" in client.get(page).content.decode()
    refused = client.post(page, {"section": "active", "plan": plan.pk, "active": "0"}, follow=True)
    assert "Tick “Yes, stop selling” first" in refused.content.decode()
    plan.refresh_from_db()
    assert plan.active is True
    client.post(page, {"section": "active", "plan": plan.pk, "active": "0", "confirm": "1"})
    plan.refresh_from_db()
    assert plan.active is False
    client.post(page, {"section": "active", "plan": plan.pk, "active": "1"})  # no tick to resume
    plan.refresh_from_db()
    assert plan.active is True

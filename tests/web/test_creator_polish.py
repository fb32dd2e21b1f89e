"""Issue 12 section 5 over Django's test client: the plan form's per-kind fields and its
minimums in dollars (from billing.pricing), plan summaries with the cap and per-tool prices on
every page that summarises a plan, thousands separators, the licenses a visitor already holds
on a listing page, usage CSV exports (owner only, streamed) and the /creator/ health badges."""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client
from django.utils import timezone

from billing.pricing import MIN_CHARGE_AMOUNT, MIN_PER_CALL_AMOUNT
from billing.services.plans import plan_create
from common.exceptions import ApplicationError
from common.money import money_format
from gateway.models import UsageEvent, UsageOutcome
from tests.billing.factories import (
    ConnectAccountFactory,
    CreatorFactory,
    LicenseFactory,
    PlanFactory,
    PlanPriceFactory,
)
from tests.factories import ListingFactory, UserFactory
from tests.gateway.factories import HostedUpstreamFactory
from web.exports import CSV_HEADER, month_bounds_utc, previous_month
from web.forms import PlanCreateForm
from web.reports import upstream_health_get
from web.selectors import plan_offer_get

pytestmark = pytest.mark.django_db


def _creator_listing(client: Client) -> tuple[Any, str]:
    creator = CreatorFactory()
    ConnectAccountFactory(creator=creator)
    listing = ListingFactory(owner=creator.user)
    client.force_login(creator.user)
    return listing, f"/creator/listings/{listing.name}/"


def _errors(html: str, field: str) -> str:
    match = re.search(rf'<ul class="errorlist" id="id_{field}_error">(.*?)</ul>', html, re.S)
    return match.group(1) if match else ""


# --- the plan form -------------------------------------------------------------------------


def test_plan_form_refuses_amounts_below_the_minimum_in_dollars(client: Client) -> None:
    listing, url = _creator_listing(client)
    minimum = money_format(amount=MIN_CHARGE_AMOUNT, currency="usd")
    assert minimum == "$0.50"  # the figure Stripe documents for usd; the test reads the constant
    below = f"{(MIN_CHARGE_AMOUNT - 1) / 100:.2f}"
    sub = client.post(
        url,
        {
            "section": "plan",
            "kind": "subscription",
            "unit_amount": below,
            "rate_limit_per_minute": "60",
        },
    )
    html = sub.content.decode()
    assert sub.status_code == 400
    assert f"Price must be at least {minimum} a month." in _errors(html, "unit_amount")
    assert "minor units" not in html
    once = client.post(
        url,
        {
            "section": "plan",
            "kind": "one_time",
            "unit_amount": below,
            "rate_limit_per_minute": "60",
        },
    )
    assert f"Price must be at least {minimum}." in _errors(once.content.decode(), "unit_amount")
    per_call = client.post(
        url,
        {
            "section": "plan",
            "kind": "per_call",
            "per_call_amount": "0",
            "rate_limit_per_minute": "1",
        },
    )
    cent = money_format(amount=MIN_PER_CALL_AMOUNT, currency="usd")
    assert f"Price per call must be at least {cent}." in _errors(
        per_call.content.decode(), "per_call_amount"
    )
    overage = client.post(
        url,
        {
            "section": "plan",
            "kind": "subscription",
            "unit_amount": "9.00",
            "included_calls": "1000",
            "rate_limit_per_minute": "60",
        },
    )
    assert "Set an overage price per call" in _errors(overage.content.decode(), "overage_amount")
    assert not listing.plans.exists()
    at_minimum = client.post(
        url,
        {
            "section": "plan",
            "kind": "subscription",
            "unit_amount": f"{MIN_CHARGE_AMOUNT / 100:.2f}",
            "rate_limit_per_minute": "60",
        },
    )
    assert at_minimum.status_code == 302
    assert listing.plans.get().prices.get().unit_amount == MIN_CHARGE_AMOUNT


def test_plan_form_ignores_the_inputs_of_other_kinds(client: Client) -> None:
    """Without JavaScript every input is sent: another kind's values (even malformed) are
    ignored rather than stored or refused."""
    listing, url = _creator_listing(client)
    response = client.post(
        url,
        {
            "section": "plan",
            "kind": "per_call",
            "name": "Metered",
            "per_call_amount": "0.03",
            "unit_amount": "not money",
            "overage_amount": "0.07",
            "hard_cap": "on",
            "rate_limit_per_minute": "60",
        },
    )
    assert response.status_code == 302
    plan = listing.plans.get()
    price = plan.prices.get()
    assert (price.unit_amount, price.per_call_amount, price.overage_amount) == (0, 3, 0)
    assert plan.hard_cap is False
    free = client.post(
        url,
        {
            "section": "plan",
            "kind": "free",
            "name": "Try",
            "unit_amount": "5.00",
            "included_calls": "100",
            "rate_limit_per_minute": "60",
        },
    )
    assert free.status_code == 302
    assert listing.plans.get(name="Try").prices.get().unit_amount == 0


def test_plan_form_marks_each_kinds_inputs_for_the_script(client: Client) -> None:
    _listing, url = _creator_listing(client)
    html = client.get(url).content.decode()
    form = html[html.index('id="plan-create"') :]
    assert "data-plan-form" in html
    assert 'data-plan-kinds="one_time subscription"><label for="id_unit_amount"' in form
    assert 'data-plan-kinds="per_call"><label for="id_per_call_amount"' in form
    assert 'data-plan-kinds="subscription"><label for="id_overage_amount"' in form
    assert '<div class="plan-field plan-field--kind">' in form  # always shown


def test_the_service_speaks_dollars_and_names_the_field() -> None:
    listing = ListingFactory(owner=UserFactory())
    CreatorFactory(user=listing.owner)
    with pytest.raises(ApplicationError) as caught:
        plan_create(
            user=listing.owner, listing=listing, kind="subscription", name="x", unit_amount=20
        )
    assert caught.value.message == "Price must be at least $0.50 a month."
    assert caught.value.extra["fields"] == {
        "unit_amount": ["Price must be at least $0.50 a month."]
    }


def test_form_and_service_agree_on_the_tool_price_rule() -> None:
    form = PlanCreateForm(
        {
            "kind": "one_time",
            "unit_amount": "5.00",
            "rate_limit_per_minute": "60",
            "tool_prices": "search=0.05",
        }
    )
    assert not form.is_valid()
    assert "on this plan a tool can only be free or excluded" in form.errors["tool_prices"][0]


# --- plan summaries ------------------------------------------------------------------------


def _hosted_plans() -> tuple[Any, Any, Any]:
    creator = CreatorFactory()
    ConnectAccountFactory(creator=creator)
    listing = ListingFactory(owner=creator.user)
    HostedUpstreamFactory(listing=listing, url="https://mcp.example.com/mcp")
    capped = PlanFactory(
        listing=listing,
        kind="subscription",
        name="Team",
        included_calls=10_000,
        hard_cap=True,
        rate_limit_per_minute=12_000,
    )
    PlanPriceFactory(
        plan=capped, unit_amount=2900, per_call_amount=0, tool_prices={"admin": {"excluded": True}}
    )
    metered = PlanFactory(
        listing=listing,
        kind="subscription",
        name="Pro",
        included_calls=1000,
        meter_event_name=f"toolbooth_test_{listing.pk}_pro",
    )
    PlanPriceFactory(
        plan=metered,
        unit_amount=900,
        per_call_amount=0,
        overage_amount=2,
        tool_prices={"search": {"unit_amount": 5}},
    )
    return listing, capped, metered


def test_plan_summaries_show_the_cap_and_tool_prices_on_every_page(client: Client) -> None:
    listing, capped, metered = _hosted_plans()
    capped_text = plan_offer_get(plan=capped).price
    metered_text = plan_offer_get(plan=metered).price
    assert capped_text == "$29.00 per month, stops at 10,000 calls a month"
    assert metered_text == "$9.00 per month, 1,000 calls a month included, then $0.02 per call"

    page = client.get(f"/servers/{listing.name}").content.decode()
    assert capped_text in page
    assert metered_text in page
    assert "Up to 12,000 tool calls a minute" in page

    buy = client.get(f"/billing/buy/{metered.pk}").content.decode()
    assert f'<dd id="buy-price">{metered_text}</dd>' in buy
    assert "<caption>Tool prices</caption>" in buy
    assert "<code>search</code></td><td>included, then $0.05 per call" in buy
    capped_buy = client.get(f"/billing/buy/{capped.pk}").content.decode()
    assert capped_text in capped_buy
    assert "<code>admin</code></td><td>not available on this plan" in capped_buy
    assert "12,000 tool calls a minute" in capped_buy

    client.force_login(listing.owner)
    manage = client.get(f"/creator/listings/{listing.name}/").content.decode()
    assert f"Version 1: {capped_text}" in manage
    assert f"Version 1: {metered_text}" in manage
    assert "12,000 tool calls a minute per license" in manage
    assert "<code>search</code></td><td>included, then $0.05 per call" in manage


def test_counts_get_thousands_separators(client: Client) -> None:
    listing, _capped, _metered = _hosted_plans()
    type(listing).objects.filter(pk=listing.pk).update(calls_30d=1_234_567, buyers=4321)
    html = client.get(f"/servers/{listing.name}").content.decode()
    assert "1,234,567 calls answered in 30 days" in html
    assert "4,321 buyers" in html


# --- licenses the visitor holds ------------------------------------------------------------


def test_listing_page_shows_the_visitors_licenses_above_the_buy_buttons(client: Client) -> None:
    listing, capped, metered = _hosted_plans()
    buyer = UserFactory()
    held = LicenseFactory(buyer=buyer, plan_price=capped.prices.get())
    ended = LicenseFactory(buyer=buyer, plan_price=metered.prices.get(), status="expired")
    LicenseFactory(plan_price=metered.prices.get())  # someone else's
    LicenseFactory(buyer=buyer)  # the buyer's, on another listing
    url = f"/servers/{listing.name}"

    assert 'id="held-licenses"' not in client.get(url).content.decode()  # anonymous
    client.force_login(buyer)
    html = client.get(url).content.decode()
    box = html[html.index('id="held-licenses"') : html.index("</div>", html.index("held-licenses"))]
    assert "You already hold 2 licenses for this server" in box
    assert f'<a href="/me/licenses/{held.pk}/">Team</a>' in box
    assert "status--active" in box
    assert f'<a href="/me/licenses/{ended.pk}/">Pro</a>' in box
    assert "Expired" in box
    assert box.count("<li>") == 2
    assert html.index('id="held-licenses"') < html.index(f'href="/billing/buy/{capped.pk}"')

    client.force_login(UserFactory())
    assert 'id="held-licenses"' not in client.get(url).content.decode()


# --- usage CSV exports ---------------------------------------------------------------------


def _call(lic: Any, *, at: datetime, tool: str = "search", amount: int = 3, **kw: Any) -> Any:
    outcome = kw.get("outcome", UsageOutcome.SUCCESS)
    billable = outcome == UsageOutcome.SUCCESS
    return UsageEvent.objects.create(
        call_id=uuid.uuid4(),
        key_id=1,
        license_id=lic.pk,
        listing_id=lic.listing_id,
        plan_id=lic.plan_id,
        tool=tool,
        unit_amount=amount if billable else 0,
        currency="usd",
        billable=billable,
        outcome=outcome,
        latency_ms=40,
        occurred_at=at,
    )


def _rows(response: Any) -> list[list[str]]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


def test_buyer_downloads_their_license_usage_as_csv(client: Client) -> None:
    lic = LicenseFactory()
    start, _end = month_bounds_utc(None)
    first = _call(lic, at=start + timedelta(hours=1, microseconds=5))
    failed = _call(lic, at=start + timedelta(hours=2), tool="=cmd|calc", outcome="tool_error")
    _call(lic, at=start - timedelta(seconds=1))  # last month
    _call(LicenseFactory(plan_price=lic.plan_price), at=start + timedelta(hours=3))  # another

    client.force_login(lic.buyer)
    page = client.get(f"/me/licenses/{lic.pk}/").content.decode()
    assert f'href="/me/licenses/{lic.pk}/usage.csv"' in page
    last = previous_month()
    assert (
        f'href="/me/licenses/{lic.pk}/usage.csv?month={last:%Y-%m}" download>{last:%B %Y}' in page
    )

    response = client.get(f"/me/licenses/{lic.pk}/usage.csv")
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="usage-')
    rows = _rows(response)
    assert tuple(rows[0]) == CSV_HEADER
    assert rows[1] == [
        first.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "search",
        "success",
        "0.03",
        "USD",
        str(first.call_id),
    ]
    assert rows[1][0].endswith("Z")
    # A tool name a spreadsheet would run as a formula is quoted as text.
    assert rows[2] == [rows[2][0], "'=cmd|calc", "tool_error", "0.00", "USD", str(failed.call_id)]
    assert len(rows) == 3

    earlier = _rows(
        client.get(f"/me/licenses/{lic.pk}/usage.csv?month={start - timedelta(days=1):%Y-%m}")
    )
    assert len(earlier) == 2  # the header and the call just before this month


def test_only_the_owner_gets_a_usage_export(client: Client) -> None:
    lic = LicenseFactory()
    listing_url = f"/creator/listings/{lic.listing.name}/usage.csv"
    assert client.get(f"/me/licenses/{lic.pk}/usage.csv").status_code == 404  # anonymous
    assert client.get(listing_url).status_code == 404
    client.force_login(UserFactory())
    assert client.get(f"/me/licenses/{lic.pk}/usage.csv").status_code == 404
    assert client.get(listing_url).status_code == 404
    client.force_login(lic.buyer)  # a buyer is not the listing's owner
    assert client.get(listing_url).status_code == 404
    assert client.get(f"/me/licenses/{lic.pk}/usage.csv?month=2026-13").status_code == 404
    assert client.get(f"/me/licenses/{lic.pk}/usage.csv?month=junk").status_code == 404


def test_creator_downloads_every_buyers_calls_on_their_listing(client: Client) -> None:
    lic = LicenseFactory()
    other_buyer = LicenseFactory(plan_price=lic.plan_price)
    start, _end = month_bounds_utc(None)
    a = _call(lic, at=start + timedelta(minutes=1), amount=250)
    b = _call(other_buyer, at=start + timedelta(minutes=2))
    _call(LicenseFactory(), at=start + timedelta(minutes=3))  # another listing
    client.force_login(lic.listing.owner)
    CreatorFactory(user=lic.listing.owner)
    page = client.get(f"/creator/listings/{lic.listing.name}/").content.decode()
    assert f'href="/creator/listings/{lic.listing.name}/usage.csv"' in page
    rows = _rows(client.get(f"/creator/listings/{lic.listing.name}/usage.csv"))
    assert [r[5] for r in rows[1:]] == [str(a.call_id), str(b.call_id)]
    assert rows[1][3:5] == ["2.50", "USD"]


@pytest.mark.django_db(transaction=True)
def test_under_asgi_the_export_is_an_async_stream() -> None:
    """The site runs under ASGI, where Django would collect a synchronous body into a list
    before sending it: the export must hand it an async iterator (read chunk by chunk)."""
    lic = LicenseFactory()
    start, _end = month_bounds_utc(None)
    calls = [_call(lic, at=start + timedelta(seconds=n)) for n in range(5)]

    async def fetch() -> tuple[Any, bytes]:
        client = AsyncClient()
        await client.aforce_login(lic.buyer)
        response = await client.get(f"/me/licenses/{lic.pk}/usage.csv")
        body = b"".join([part async for part in response.streaming_content])
        return response, body

    response, body = async_to_sync(fetch)()
    assert response.status_code == 200
    assert response.is_async
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert [r[5] for r in rows[1:]] == [str(c.call_id) for c in calls]


def test_month_bounds_are_utc_months() -> None:
    assert month_bounds_utc("2026-12") == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert previous_month(datetime(2026, 1, 15, tzinfo=UTC).date()) == date(2025, 12, 1)
    now = timezone.now()
    start, end = month_bounds_utc(None)
    assert start <= now < end


# --- the creator dashboard -----------------------------------------------------------------


def test_creator_dashboard_shows_each_hosted_listings_health_badge(client: Client) -> None:
    creator = CreatorFactory()
    hosted = ListingFactory(owner=creator.user, title="Hosted one")
    HostedUpstreamFactory(listing=hosted, url="https://mcp.example.com/mcp")
    paused = ListingFactory(owner=creator.user, title="Paused one")
    HostedUpstreamFactory(listing=paused, url="https://mcp.example.com/mcp", enabled=False)
    bare = ListingFactory(owner=creator.user, title="Not hosted")
    client.force_login(creator.user)
    html = client.get("/creator/").content.decode()

    def item(listing: Any) -> str:
        start = html.index(f'id="owned-{listing.pk}"')
        return html[start : html.index("</li>", start)]

    health = upstream_health_get(listing_id=hosted.pk)
    assert health is not None
    assert f"<strong>{health.title}</strong>" in item(hosted)
    assert f"health--{health.state}" in item(hosted)
    assert "<strong>Paused</strong>" in item(paused)
    assert "health" not in item(bare)
    assert "not hosted yet" in item(bare)

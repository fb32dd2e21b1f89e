"""Refusals a person or an agent can act on (issue 12, section 4), through a real gateway process
with billing's real rows: the 401 names the listing's page and is the same for every bad key;
a tool outside the plan names the plans that offer it; quota and spend-cap refusals link the
license page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from billing.keys import key_generate
from billing.models import PlanKind
from billing.services.licenses import api_key_caps_set, api_key_create, api_key_revoke
from tests.billing.factories import (
    LicenseFactory,
    MeteredLicenseFactory,
    PlanFactory,
    PlanPriceFactory,
)
from tests.gateway.conftest import PORT_BASE, post, rpc, start_gateway, stop
from tests.gateway.factories import HostedUpstreamFactory

pytestmark = pytest.mark.django_db(transaction=True)

PORT = PORT_BASE + 60
SITE = "http://site.example"


@pytest.fixture
def gw(upstream_processes: None) -> Iterator[str]:
    # No invalid-key throttling here: this test sends several bad keys on purpose.
    proc = start_gateway(PORT, SITE_URL=SITE, GATEWAY_AUTH_FAILURES_PER_MINUTE="0")
    yield f"http://127.0.0.1:{PORT}"
    stop(proc)


def call(base, name, key, tool="ok", rid=1):
    return post(base, name, rpc("tools/call", {"name": tool, "arguments": {}}, rid=rid), key)


def test_every_bad_key_gets_the_same_401_with_the_listing_page(gw):
    up = HostedUpstreamFactory(listing__name="io.example/guided")
    other = HostedUpstreamFactory()
    lic = LicenseFactory(plan_price__plan__listing=up.listing)
    revoked, revoked_raw = api_key_create(license=lic)
    api_key_revoke(key_id=revoked.pk)
    _, elsewhere_raw = api_key_create(
        license=LicenseFactory(plan_price__plan__listing=other.listing)
    )
    _, good_raw = api_key_create(license=lic)
    name = up.listing.name
    unknown = key_generate(live=False)  # well formed, never issued
    answers = [
        call(gw, name, None),
        call(gw, name, "not-a-key"),
        call(gw, name, unknown),
        call(gw, name, revoked_raw),
        call(gw, name, elsewhere_raw),
    ]
    assert [r.status_code for r in answers] == [401] * 5
    challenges = {r.headers["www-authenticate"] for r in answers}
    assert challenges == {
        f'Bearer resource_metadata="{SITE}/.well-known/oauth-protected-resource/mcp/{name}", '
        'scope="mcp"'
    }
    assert len({r.content for r in answers}) == 1, "the body must not tell keys apart"
    error = answers[0].json()["error"]
    assert error["code"] == -32001
    page = f"{SITE}/servers/io.example/guided"
    assert page in error["message"]
    assert error["data"] == {"listing_url": page}
    for raw in (revoked_raw, elsewhere_raw, good_raw):
        assert raw not in answers[0].text
    assert call(gw, name, good_raw).status_code == 200


def test_tool_not_on_plan_names_the_plans_that_offer_it(gw):
    up = HostedUpstreamFactory()
    listing = up.listing
    basic = PlanPriceFactory(
        plan__listing=listing,
        plan__name="Basic",
        tool_prices={"secret_tool": {"unit_amount": 0, "excluded": True}},
    )
    PlanPriceFactory(plan__listing=listing, plan__name="Pro")
    PlanPriceFactory(plan__listing=listing, plan__name="Team", plan__kind=PlanKind.FREE)
    PlanPriceFactory(plan__listing=listing, plan__name="Retired", plan__active=False)
    # A plan whose newest price version excludes the tool again does not offer it.
    newer = PlanFactory(listing=listing, name="Legacy")
    PlanPriceFactory(plan=newer, version=1)
    PlanPriceFactory(
        plan=newer, version=2, tool_prices={"secret_tool": {"unit_amount": 0, "excluded": True}}
    )
    lic = LicenseFactory(plan_price=basic)
    _, raw = api_key_create(license=lic)

    refused = call(gw, listing.name, raw, tool="secret_tool")
    assert refused.status_code == 200
    error = refused.json()["error"]
    assert error["code"] == -32602
    assert error["message"].startswith("Tool secret_tool is not on your plan.")
    assert error["data"]["plans"] == ["Pro", "Team"]
    assert error["data"]["reason"] == "not_on_plan"
    assert error["data"]["listing_url"] in error["message"]
    assert call(gw, listing.name, raw, tool="ok").status_code == 200

    # A tool no plan offers is said to be unknown, with no plan named.
    only = HostedUpstreamFactory()
    price = PlanPriceFactory(
        plan__listing=only.listing,
        tool_prices={"secret_tool": {"unit_amount": 0, "excluded": True}},
    )
    _, lone = api_key_create(license=LicenseFactory(plan_price=price))
    error = call(gw, only.listing.name, lone, tool="secret_tool").json()["error"]
    assert error["message"].startswith("Unknown tool: secret_tool (not on your plan")
    assert "plans" not in error["data"]


def test_quota_and_spend_cap_refusals_link_the_license_page(gw):
    up = HostedUpstreamFactory()
    capped = LicenseFactory(
        plan_price__plan__listing=up.listing,
        plan_price__plan__kind=PlanKind.SUBSCRIPTION,
        plan_price__plan__included_calls=1,
        plan_price__plan__hard_cap=True,
    )
    _, raw = api_key_create(license=capped)
    name = up.listing.name
    assert call(gw, name, raw).status_code == 200
    refused = call(gw, name, raw, rid=2)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == -32030
    page = f"{SITE}/me/licenses/{capped.pk}/"
    assert error["data"]["license_url"] == page
    assert page in error["message"]
    assert error["data"]["retry_after"] == int(refused.headers["retry-after"])

    metered = MeteredLicenseFactory(
        plan_price__plan__listing=up.listing, plan_price__per_call_amount=4
    )
    key, metered_raw = api_key_create(license=metered)
    api_key_caps_set(key_id=key.pk, daily_spend_cap=4, monthly_spend_cap=None)
    assert call(gw, name, metered_raw).status_code == 200
    over = call(gw, name, metered_raw, rid=2)
    assert over.status_code == 429
    error = over.json()["error"]
    assert error["code"] == -32031
    assert error["data"]["license_url"] == f"{SITE}/me/licenses/{metered.pk}/"
    assert "raise the key's cap" in error["message"]

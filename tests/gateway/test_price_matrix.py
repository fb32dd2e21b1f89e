"""The 5 plan kinds x 4 tool pricings end to end (issue 10, section 3): real billing rows, a real
gateway process and upstream, the real drain and the listing page. For each combination the
price in tools/list `_meta`, the receipt, the ledger row and the page's words agree, a
charged row always has a Stripe customer and meter to be collected with, and the meter
reports (to the fake Stripe, over HTTP) add up to exactly the receipts of each customer.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from html import unescape

import pytest
from django.test import Client
from django.utils import timezone

from billing.models import CreatorSubscription, PlanKind
from billing.services.licenses import api_key_create
from billing.stripe_client import get_client
from fakes.stripe.server import FakeStripeServer
from gateway.models import UsageEvent
from gateway.proxy import PRICE_KEY, RECEIPT_KEY
from gateway.services import usage_report
from tests.billing.factories import (
    CreatorFactory,
    LicenseFactory,
    OwnedListingFactory,
    PlanFactory,
    PlanPriceFactory,
)
from tests.factories import UserFactory
from tests.gateway.conftest import SCRIPTED_PORT, drain, post, rpc
from tests.gateway.factories import HostedUpstreamFactory
from web.formatting import money_format

pytestmark = pytest.mark.django_db(transaction=True)

# The scripted upstream lists these four; all but tool_error answer with a result.
DEFAULT, PRICED, FREE, EXCLUDED = "ok", "headers", "secret_tool", "tool_error"
# kind -> (plan fields, price fields); tool prices are added per kind below.
PLANS = {
    "free": ({"kind": PlanKind.FREE, "included_calls": 2, "hard_cap": True}, {}),
    "one_time": ({"kind": PlanKind.ONE_TIME, "hard_cap": True}, {"unit_amount": 4900}),
    "subscription": (
        {"kind": PlanKind.SUBSCRIPTION, "included_calls": 1},
        {"unit_amount": 900, "overage_amount": 2},
    ),
    "capped": (
        {"kind": PlanKind.SUBSCRIPTION, "included_calls": 2, "hard_cap": True},
        {"unit_amount": 900},
    ),
    "per_call": ({"kind": PlanKind.PER_CALL}, {"per_call_amount": 3}),
}
CHARGING = {"subscription", "per_call"}


def _stripe_customers() -> dict[str, tuple[str, str]]:
    """label -> (customer, meter event name), made on the fake Stripe for the charging plans."""
    client = get_client()
    out = {}
    for label in sorted(CHARGING):
        event_name = f"tb_matrix_{label}_{uuid.uuid4().hex[:8]}"
        client.v1.billing.meters.create(
            {
                "display_name": label,
                "event_name": event_name,
                "default_aggregation": {"formula": "sum"},
                "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
                "value_settings": {"event_payload_key": "value"},
            }
        )
        customer = client.v1.customers.create({"email": f"{label}@example.com"}).id
        out[label] = (customer, event_name)
    return out


def _setup(stripe_ids: dict[str, tuple[str, str]]):
    listing = OwnedListingFactory()
    HostedUpstreamFactory(
        listing=listing,
        url=f"http://127.0.0.1:{SCRIPTED_PORT}/mcp",
        tools=[{"name": n, "title": "", "description": ""} for n in (DEFAULT, PRICED, FREE)]
        + [{"name": EXCLUDED, "title": "", "description": ""}],
    )
    creator = CreatorFactory(user=listing.owner)
    keys = {}
    for label, (plan_fields, price_fields) in PLANS.items():
        plan = PlanFactory(
            listing=listing,
            name=label,
            rate_limit_per_minute=600,
            meter_event_name=stripe_ids[label][1] if label in CHARGING else "",
            **plan_fields,
        )
        price = PlanPriceFactory(
            plan=plan,
            tool_prices={
                # billing.services.plans accepts a non-zero tool price only where it is charged
                PRICED: {"unit_amount": 5 if label in CHARGING else 0, "excluded": False},
                FREE: {"unit_amount": 0, "excluded": False},
                EXCLUDED: {"unit_amount": 0, "excluded": True},
            },
            tools=[DEFAULT, PRICED, FREE, EXCLUDED],
            **{"per_call_amount": 0, **price_fields},
        )
        sub, buyer = None, UserFactory()
        if label in CHARGING:
            sub = CreatorSubscription.objects.create(
                buyer=buyer,
                creator=creator,
                stripe_subscription_id=f"sub_matrix_{listing.pk}_{label}",
                stripe_customer_id=stripe_ids[label][0],
                status="active",
                current_period_start=timezone.now() - timedelta(hours=1),
                platform_fee_bps=1000,
            )
        lic = LicenseFactory(plan_price=price, buyer=buyer, creator_subscription=sub)
        _key, raw = api_key_create(license=lic)
        keys[label] = raw
    return listing, keys


def _page_cells(html: str, plans: list[str]) -> dict[tuple[str, str], str]:
    """(tool, plan name) -> the tools table's cell text on the listing page."""
    header = re.search(r'<table class="compact tools".*?<thead>(.*?)</thead>', html, re.S)
    assert header is not None
    names = [unescape(n) for n in re.findall(r'<th scope="col">(.*?)</th>', header.group(1))][1:]
    assert sorted(names) == sorted(plans)
    cells = {}
    for row in re.findall(r'<tr id="tool-\d+">(.*?)</tr>', html, re.S):
        tool = re.search(r"<code>(.*?)</code>", row).group(1)  # type: ignore[union-attr]
        for plan, text in zip(names, re.findall(r"<td>(.*?)</td>", row), strict=True):
            cells[(tool, plan)] = unescape(text)
    return cells


def _words(meta: dict | None, label: str) -> str:
    """What the page must say for a tool's advertised price (tools/list `_meta`)."""
    if meta is None:
        return "not available on this plan"
    if meta.get("included_calls") is not None and meta.get("hard_cap"):
        return "included (within the plan's monthly calls)"
    money = money_format(amount=meta["unit_amount"], currency=meta["currency"])
    if meta["unit_amount"] > 0:
        return f"included, then {money} per call" if "included_calls" in meta else money
    return "included" if label == "one_time" else "free"


def test_tools_list_receipts_ledger_page_and_stripe_agree(gateway, settings, redis_client):
    """`redis_client` empties the test Redis first: license ids start again at 1 in a new test
    database, and a quota counter an earlier session left under the same id would count."""
    settings.STRIPE_SECRET_KEY = "sk_test_matrix"
    with FakeStripeServer(webhook_url=None) as fake:
        settings.STRIPE_API_BASE = fake.base_url
        _matrix(gateway, fake)


def _matrix(gateway: str, fake: FakeStripeServer) -> None:
    stripe_ids = _stripe_customers()
    listing, keys = _setup(stripe_ids)
    name = listing.name
    cells = _page_cells(Client().get(f"/servers/{name}").content.decode(), list(PLANS))
    receipts: dict[str, tuple[str, int]] = {}
    for label, raw in keys.items():
        listed = post(gateway, name, rpc("tools/list", {}, 1), raw).json()["result"]["tools"]
        advertised = {t["name"]: t["_meta"][PRICE_KEY] for t in listed}
        assert EXCLUDED not in advertised  # hidden, and refused below
        for tool in (DEFAULT, PRICED, FREE, EXCLUDED):
            meta = advertised.get(tool)
            cell = cells.get((tool, label))
            if cell is None:  # a tool every plan excludes is not on the page at all
                assert meta is None
                continue
            assert _words(meta, label) in cell, (label, tool, cell)
        if label not in CHARGING:
            assert all(m["unit_amount"] == 0 for m in advertised.values()), label
        assert advertised.get(PRICED, {}).get("unit_amount") == (5 if label in CHARGING else 0)

        billed = 0
        for i, tool in enumerate([DEFAULT, DEFAULT, PRICED, FREE, DEFAULT, EXCLUDED], start=2):
            r = post(gateway, name, rpc("tools/call", {"name": tool, "arguments": {}}, i), raw)
            meta = advertised.get(tool)
            if meta is None:
                assert r.json()["error"]["code"] == -32602, (label, tool)
                continue
            included = meta.get("included_calls")
            within = included is not None and billed < included
            if included is not None and not within and meta["hard_cap"]:
                assert r.status_code == 429, (label, tool)
                assert r.json()["error"]["code"] == -32030
                continue
            assert "result" in r.json(), (label, tool, r.status_code, r.text)
            receipt = r.json()["result"]["_meta"][RECEIPT_KEY]
            expected = 0 if within else meta["unit_amount"]
            assert receipt["amount"] == expected, (label, tool, billed)
            receipts[receipt["call_id"]] = (label, expected)
            billed += 1

    drain()
    rows = {str(e.call_id): e for e in UsageEvent.objects.filter(listing_id=listing.pk)}
    for call_id, (label, amount) in receipts.items():
        row = rows[call_id]
        assert (row.billable, row.unit_amount) == (True, amount), label
        if amount:  # what the meter report sends: this row's amount for this customer
            assert (row.stripe_customer_id, row.meter_event_name) == stripe_ids[label]
    charged = {label for label, amount in receipts.values() if amount}
    assert charged == CHARGING  # the one-time, free and capped plans never charge
    # The meter reports: each customer's total at Stripe is the sum of its receipts.
    usage_report(now=timezone.now() + timedelta(seconds=75))  # seal this minute too
    for label, (customer, _event) in stripe_ids.items():
        receipted = sum(a for lb, a in receipts.values() if lb == label)
        at_stripe = sum(
            e["_value"] for e in fake.state.meter_events() if e["_customer"] == customer
        )
        assert (label, at_stripe) == (label, receipted)

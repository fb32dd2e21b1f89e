"""Data for the agents' surfaces (tests/web/test_agents.py, test_catalog_mcp.py): a hosted listing
with a plan of each kind, from registry-shaped mirror rows, billing factories and a gateway row."""

from __future__ import annotations

from dataclasses import dataclass

from billing.models import Plan, PlanKind
from marketplace.models import Listing
from marketplace.services import listings_refresh_from_registry
from tests.billing.factories import PlanFactory, PlanPriceFactory
from tests.factories import ServerVersionFactory, http_remote, npm_package
from tests.gateway.factories import HostedUpstreamFactory

WEATHER = "io.github.acme/weather"
LOCAL_ONLY = "io.github.acme/local-notes"


@dataclass
class Shop:
    listing: Listing
    free: Plan
    per_call: Plan
    subscription: Plan


def mirrored_listing(name: str, **server: object) -> Listing:
    """A listing as the registry sync leaves it (mirror row first, then the catalogue row)."""
    ServerVersionFactory(name=name, version="0.9.0", is_latest=False, **server)
    ServerVersionFactory(name=name, version="1.0.0", **server)
    listings_refresh_from_registry(names=[name])
    return Listing.objects.get(name=name)


def price_models_set(listing: Listing) -> None:
    # What billing's plan services keep in step; the factories write plans directly.
    kinds = sorted(set(Plan.objects.filter(listing=listing).values_list("kind", flat=True)))
    Listing.objects.filter(pk=listing.pk).update(price_models=",".join(["", *kinds, ""]))


def build_shop() -> Shop:
    listing = mirrored_listing(
        WEATHER,
        title="Acme Weather",
        description="Weather forecasts for any city.",
        remotes=[http_remote("https://weather.acme.example/mcp")],
        packages=[npm_package("@acme/weather-mcp")],
    )
    HostedUpstreamFactory(listing=listing, url="http://127.0.0.1:18899/mcp")
    free = PlanFactory(
        listing=listing, kind=PlanKind.FREE, name="Hobby", included_calls=100, hard_cap=True
    )
    PlanPriceFactory(plan=free, per_call_amount=0)
    per_call = PlanFactory(listing=listing, kind=PlanKind.PER_CALL, name="Metered")
    PlanPriceFactory(
        plan=per_call,
        per_call_amount=3,
        tool_prices={
            "forecast_hourly": {"unit_amount": 10, "excluded": False},
            "ping": {"unit_amount": 0, "excluded": False},
            "admin_reset": {"unit_amount": 0, "excluded": True},
        },
    )
    subscription = PlanFactory(
        listing=listing,
        kind=PlanKind.SUBSCRIPTION,
        name="Pro",
        included_calls=1000,
        rate_limit_per_minute=120,
    )
    PlanPriceFactory(plan=subscription, unit_amount=500, per_call_amount=0, overage_amount=2)
    price_models_set(listing)
    listing.refresh_from_db()
    return Shop(listing=listing, free=free, per_call=per_call, subscription=subscription)

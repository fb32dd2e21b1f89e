"""Reads for the agents' surfaces: a listing as something to buy (catalogue + plans + hosting).

Composed from the public selectors of marketplace and billing. Whether a listing is callable
through our gateway is "has an enabled HostedUpstream" (gateway/models.py); gateway's own
selector decrypts the creator's credential, which a public page must never touch, so the flag is
read here from the model, one query for any number of listings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import quote

from django.conf import settings
from django.db.models import QuerySet
from django.urls import NoReverseMatch, reverse

from billing.entitlements import Entitlement
from billing.pricing import advertised_price
from billing.selectors import (
    listing_starting_prices,
    plan_entitlement_terms,
    plan_price_latest,
    plans_for_listing,
)
from common.exceptions import NotFoundError
from gateway.discovery import tool_text
from gateway.models import HostedUpstream, ToolManifest
from gateway.selectors import tool_manifest_current
from marketplace.models import Listing
from marketplace.selectors import (
    NO_OFFER,
    PRICE_MODEL_CHOICES,
    TRANSPORT_CHOICES,
    ListingDetail,
    ListingOfferSummary,
    listing_detail_get,
    listing_search,
)
from web.formatting import (
    PLAN_KIND_LABELS,
    plan_price_summary,
    starting_price_text,
    tool_plan_price_text,
)

if TYPE_CHECKING:
    from billing.models import Plan

SEARCH_MAX_LIMIT = 50
# A listing has a handful of plans; the cap keeps a hostile or broken one to bounded work.
MAX_PLANS = 20
# Discovery stores at most 200 tools (gateway.discovery.MAX_TOOLS); the page shows them all.
MAX_TOOLS = 200


def site_url(path: str) -> str:
    return f"{settings.SITE_URL}{path}"


def _quoted(name: str) -> str:
    # Names keep their slash; anything else unusual is percent-encoded so the URL is one token
    # in markdown and in JSON (no spaces, parentheses or angle brackets).
    return quote(name, safe="/")


def page_url(name: str) -> str:
    return site_url(f"/servers/{_quoted(name)}")


def markdown_url(name: str) -> str:
    return site_url(f"/servers/{_quoted(name)}.md")


def gateway_url(name: str) -> str:
    return site_url(f"/mcp/{_quoted(name)}")


def named_url(name: str, *args: object) -> str | None:
    """An absolute URL for a route another app owns, or None if that route is not installed."""
    try:
        return site_url(reverse(name, args=args))
    except NoReverseMatch:
        return None


def licenses_url() -> str | None:
    """Where a buyer creates keys: the people pages' licenses list (None if not installed)."""
    return named_url("ui:licenses")


def sign_up_url() -> str | None:
    return named_url("ui:signup")


def sign_in_url() -> str | None:
    login = settings.LOGIN_URL
    if isinstance(login, str) and login.startswith("/"):
        return site_url(login)
    return named_url(str(login))


@dataclass(frozen=True, slots=True)
class ToolPriceOffer:
    tool: str
    unit_amount: int
    excluded: bool
    price: str


@dataclass(frozen=True, slots=True)
class PlanOffer:
    id: int
    name: str
    kind: str
    kind_label: str
    currency: str
    unit_amount: int
    per_call_amount: int
    overage_amount: int
    included_calls: int | None
    hard_cap: bool
    rate_limit_per_minute: int
    price: str
    tool_prices: list[ToolPriceOffer]
    buy_url: str | None
    # What a key on this plan would be entitled to (no key or license: ids are 0), so a tool's
    # price here comes from the gateway's own rule, billing.pricing.advertised_price.
    terms: Entitlement = field(repr=False, compare=False)

    @property
    def is_free(self) -> bool:
        return self.kind == "free"

    @property
    def other_tools_price(self) -> str:
        """Words for a tool the plan does not name ("" is never a tool's name)."""
        return self.tool_price("").price

    def tool_price(self, tool: str) -> ToolPlanPrice:
        advert = advertised_price(self.terms, tool)
        return ToolPlanPrice(
            plan_id=self.id,
            plan_name=self.name,
            available=advert is not None,
            unit_amount=None if advert is None else advert.unit_amount,
            price=tool_plan_price_text(advert=advert, kind=self.kind),
        )


@dataclass(frozen=True, slots=True)
class ToolPlanPrice:
    """One discovered tool on one plan: its price, or not available (the plan excludes it)."""

    plan_id: int
    plan_name: str
    available: bool
    unit_amount: int | None
    price: str


@dataclass(frozen=True, slots=True)
class ToolOffer:
    """A tool the upstream lists (cleaned at discovery; still untrusted text) with its prices."""

    name: str
    title: str
    description: str
    prices: list[ToolPlanPrice]


@dataclass(frozen=True, slots=True)
class ListingOffer:
    detail: ListingDetail
    hosted: bool
    plans: list[PlanOffer] = field(default_factory=list)
    tools: list[ToolOffer] = field(default_factory=list)
    # Hosted, but its creator never approved a tool list: agents see no tools and every call
    # is refused (the gateway's rug-pull guard), so the page says so rather than list any.
    tools_awaiting_approval: bool = False

    @property
    def listing(self) -> Listing:
        return self.detail.listing

    @property
    def gateway_url(self) -> str | None:
        return gateway_url(self.listing.name) if self.hosted else None


def hosted_listing_ids(*, listing_ids: list[int]) -> set[int]:
    if not listing_ids:
        return set()
    return set(
        HostedUpstream.objects.filter(listing_id__in=listing_ids, enabled=True).values_list(
            "listing_id", flat=True
        )
    )


def listing_offer_summaries(*, listing_ids: list[int]) -> dict[int, ListingOfferSummary]:
    """Search results' offer facts (settings.MARKETPLACE_OFFER_SUMMARY_PROVIDER): hosted here,
    a free plan, and "from $x" from the same plans and newest prices the listing page shows
    (billing.selectors.listing_starting_prices). Two queries for a page of results."""
    hosted = hosted_listing_ids(listing_ids=listing_ids)
    prices = listing_starting_prices(listing_ids=listing_ids)
    summaries = {}
    for listing_id in listing_ids:
        price = prices.get(listing_id)
        summaries[listing_id] = ListingOfferSummary(
            hosted=listing_id in hosted,
            free_plan=price is not None and price.has_free_plan,
            price_from=starting_price_text(price) if price is not None else "",
            price_from_amount=price.amount if price is not None and price.kind else None,
            currency=price.currency if price is not None else "",
        )
    return summaries


def _plan_offer(plan: Plan) -> PlanOffer:
    price = plan_price_latest(plan=plan)
    terms = plan_entitlement_terms(plan=plan, price=price)
    tool_prices = []
    for tool in sorted(terms.tool_prices):
        advert = advertised_price(terms, tool)
        tool_prices.append(
            ToolPriceOffer(
                tool=tool,
                unit_amount=0 if advert is None else advert.unit_amount,
                excluded=advert is None,
                price=tool_plan_price_text(advert=advert, kind=plan.kind),
            )
        )
    return PlanOffer(
        id=plan.pk,
        name=plan.name,
        kind=plan.kind,
        kind_label=PLAN_KIND_LABELS.get(plan.kind, plan.kind),
        currency=plan.currency,
        unit_amount=price.unit_amount,
        per_call_amount=price.per_call_amount,
        overage_amount=price.overage_amount,
        included_calls=plan.included_calls,
        hard_cap=plan.hard_cap,
        rate_limit_per_minute=plan.rate_limit_per_minute,
        price=plan_price_summary(
            kind=plan.kind,
            currency=plan.currency,
            unit_amount=price.unit_amount,
            per_call_amount=price.per_call_amount,
            overage_amount=price.overage_amount,
            included_calls=plan.included_calls,
            hard_cap=plan.hard_cap,
        ),
        tool_prices=tool_prices,
        buy_url=named_url("billing:buy", plan.pk),
        terms=terms,
    )


def plan_offer_get(*, plan: Plan) -> PlanOffer:
    """One plan as the listing page shows it (summary, per-tool prices, the cap), for the
    other pages that summarise a plan: the buy page, the creator's plan list. Two queries."""
    return _plan_offer(plan)


def _tool_offers(raw_tools: object, plans: list[PlanOffer]) -> list[ToolOffer]:
    """The stored tool list with each plan's price; a tool every plan excludes is hidden (the
    gateway hides it from tools/list on each of them)."""
    if not isinstance(raw_tools, list):
        return []
    offers: list[ToolOffer] = []
    for raw in raw_tools[:MAX_TOOLS]:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
            continue
        name = raw["name"]
        prices = [plan.tool_price(name) for plan in plans]
        if prices and not any(p.available for p in prices):
            continue
        offers.append(
            ToolOffer(
                name=name,
                title=str(raw.get("title") or ""),
                description=str(raw.get("description") or ""),
                prices=prices,
            )
        )
    return offers


def listing_offer_get(*, name: str) -> ListingOffer | None:
    """A listing with its active plans at their current prices and whether we host it.

    3 (detail) + 1 (hosting, with the discovered tools) + 1 (the approved manifest, when
    hosted) + 1 (plans) + 1 per plan (its newest price) queries. Tools are shown as agents see
    them: the approved copies of the tools the upstream serves.
    """
    detail = listing_detail_get(name=name)
    if detail is None:
        return None
    listing = detail.listing
    plans: list[PlanOffer] = []
    for plan in plans_for_listing(listing_id=listing.pk)[:MAX_PLANS]:
        try:
            plans.append(_plan_offer(plan))
        except NotFoundError:
            continue  # a plan without any price version cannot be bought yet
    discovered = (
        HostedUpstream.objects.filter(listing_id=listing.pk, enabled=True)
        .values_list("tools", flat=True)
        .first()
    )
    hosted = discovered is not None
    current = tool_manifest_current(listing_id=listing.pk) if hosted else None
    return ListingOffer(
        detail=detail,
        hosted=hosted,
        plans=plans,
        tools=_tool_offers(_approved_served(discovered, current), plans),
        tools_awaiting_approval=hosted and current is None,
    )


def _approved_served(discovered: object, current: ToolManifest | None) -> list[dict[str, str]]:
    """What agents are shown (the gateway's tools_guard): the approved copy of each tool the
    upstream still serves, in its order; a tool never approved, or anything before a first
    approval, is not shown. A changed description shows as approved, never as now served."""
    if current is None or not isinstance(discovered, list):
        return []
    approved = {t["name"]: t for t in current.tools if isinstance(t, dict) and "name" in t}
    shown = []
    for served in discovered:
        copy = approved.get(served.get("name")) if isinstance(served, dict) else None
        text = copy and tool_text(copy["name"], copy.get("title"), copy.get("description"))
        if text:
            shown.append(text)
    return shown


@dataclass(frozen=True, slots=True)
class ListingCard:
    listing: Listing
    hosted: bool
    # Cheapest plan ("from $x"), free plan; as search results show them.
    offer: ListingOfferSummary = NO_OFFER

    @property
    def price_models(self) -> list[str]:
        return [m for m in self.listing.price_models.split(",") if m]

    @property
    def gateway_url(self) -> str | None:
        return gateway_url(self.listing.name) if self.hosted else None


def listing_cards_search(
    *,
    q: str = "",
    transport: str | None = None,
    price_model: str | None = None,
    limit: int = 10,
) -> list[ListingCard]:
    """The first `limit` search results (same ranking as the catalogue) with their hosting flag.

    Unknown filter values are refused rather than ignored, so an agent learns the vocabulary.
    """
    if transport and transport not in TRANSPORT_CHOICES:
        raise ValueError(f"transport must be one of {', '.join(TRANSPORT_CHOICES)}")
    if price_model and price_model not in PRICE_MODEL_CHOICES:
        raise ValueError(f"price_model must be one of {', '.join(PRICE_MODEL_CHOICES)}")
    limit = max(1, min(int(limit), SEARCH_MAX_LIMIT))
    results: QuerySet[Listing] = listing_search(
        q=q, transport=transport or None, price_model=price_model or None
    )
    return listing_cards(list(results[:limit]))


def listing_cards(listings: list[Listing]) -> list[ListingCard]:
    """Cards for `listings`, their offers read in one go (billing's summary provider)."""
    offers = listing_offer_summaries(listing_ids=[listing.pk for listing in listings])
    return [
        ListingCard(listing=listing, hosted=offer.hosted, offer=offer)
        for listing in listings
        for offer in (offers.get(listing.pk, NO_OFFER),)
    ]

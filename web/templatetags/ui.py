"""Template helpers for the people pages. Nothing here marks text safe: autoescape stays on."""

from __future__ import annotations

from typing import Any

from django import template

from web.clients import client_snippets
from web.formatting import count_format, money_format
from web.selectors import PlanOffer, gateway_url, plan_offer_get

register = template.Library()


@register.filter
def money(amount: object, currency: object = "usd") -> str:
    """Integer minor units as money: {{ 490|money:"usd" }} -> "$4.90"."""
    if amount is None or amount == "":
        return "\u2013"
    try:
        value = int(amount)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return "\u2013"
    return money_format(amount=value, currency=str(currency or "usd"))


@register.filter
def count(value: object) -> str:
    """A count with thousands separators: {{ 12345|count }} -> "12,345" (web.formatting)."""
    if value is None or value == "":
        return "\u2013"
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return str(value)
    return count_format(number)


@register.simple_tag
def plan_offer(plan: Any) -> PlanOffer:
    """A plan as the listing page summarises it (web.selectors.plan_offer_get): its price line
    with the cap and its per-tool prices, from billing.pricing."""
    return plan_offer_get(plan=plan)


@register.filter
def minor_decimal(amount: object) -> str:
    """Minor units as a plain decimal for an input's value (490 -> "4.90"), "" for None."""
    if amount is None or amount == "":
        return ""
    try:
        value = int(amount)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return ""
    return f"{value // 100}.{value % 100:02d}"


@register.simple_tag
def client_configs(name: str, key: str | None = None) -> list[Any]:
    """The ready-to-paste client snippets for a listing (with the raw key only when given)."""
    return client_snippets(name=name, gateway_url=gateway_url(name), key=key or None)


@register.simple_tag
def gateway_url_for(name: str) -> str:
    return gateway_url(name)


@register.simple_tag
def upcoming_price(license: Any) -> dict[str, str] | None:
    """A price increase this license is in the notice period of (as its email said it)."""
    from billing.services.notices import license_upcoming_price

    return license_upcoming_price(license=license)

"""Text for agents: money, plan prices, and markdown that registry text cannot escape from.

Registry text is untrusted (ARCHITECTURE.md, "Registry text is data"). In markdown it is
backslash-escaped, or put in code spans, so a description cannot add links, images, HTML,
headings or GFM autolinks to an agent's context. Only URLs we build ourselves become links.
"""

import re

from billing.pricing import StartingPrice, ToolAdvert, plan_headline_amount, plan_terms
from common.money import money_format
from common.text import clean_text

__all__ = ["money_format"]  # re-exported: pages and agents' views import it from here


PLAN_KIND_LABELS = {
    "free": "Free",
    "one_time": "One-time license",
    "subscription": "Subscription",
    "per_call": "Pay per call",
}


def count_format(value: int) -> str:
    """A count as people read it (calls, quotas, limits, buyers): 12,345. Pages use it through
    the `count` template filter (web.templatetags.ui), agents' text directly."""
    return f"{value:,}"


def plan_price_summary(
    *,
    kind: str,
    currency: str,
    unit_amount: int,
    per_call_amount: int,
    overage_amount: int,
    included_calls: int | None,
    hard_cap: bool,
) -> str:
    """One line saying what a plan costs, e.g. "$5.00 per month, 1,000 calls a month included,
    then $0.01 per call" or "$9.00 per month, stops at 5,000 calls a month". The amounts and
    the cap are billing.pricing's (`plan_headline_amount`, `plan_terms`), as the gateway
    charges them."""

    def money(amount: int) -> str:
        return money_format(amount=amount, currency=currency)

    headline = money(
        plan_headline_amount(kind=kind, unit_amount=unit_amount, per_call_amount=per_call_amount)
    )
    lead = {
        "free": "Free",
        "one_time": f"{headline} once",
        "subscription": f"{headline} per month",
        "per_call": f"{headline} per call",
    }
    parts = [lead.get(kind, PLAN_KIND_LABELS.get(kind, kind))]
    if included_calls is not None:
        calls = count_format(included_calls)
        past, _tools, capped, _other = plan_terms(
            kind=kind,
            hard_cap=hard_cap,
            included_calls=included_calls,
            per_call_amount=per_call_amount,
            overage_amount=overage_amount,
            tool_prices=None,
            tools=None,
        )
        if capped:
            parts.append(f"stops at {calls} calls a month")
        elif kind == "per_call":
            parts.append(f"the first {calls} calls a month free")
        else:
            parts.append(f"{calls} calls a month included")
            if past:
                parts.append(f"then {money(past)} per call")
    return ", ".join(parts)


def starting_price_text(price: StartingPrice) -> str:
    """ "from $5.00 per month" for search results (the cheapest paid plan's headline), or
    "Free" when every plan is free."""
    if not price.kind:
        return "Free"
    unit = {"one_time": "once", "subscription": "per month", "per_call": "per call"}[price.kind]
    return f"from {money_format(amount=price.amount, currency=price.currency)} {unit}"


def tool_plan_price_text(*, advert: ToolAdvert | None, kind: str) -> str:
    """What one call to a tool costs on a plan, in words, from `billing.pricing.advertised_price`
    (the numbers tools/list and receipts use): not available; included calls first; then the
    tool's price, or refused past a hard cap."""
    if advert is None:
        return "not available on this plan"
    money = money_format(amount=advert.unit_amount, currency=advert.currency)
    if advert.included_calls is not None:
        if advert.hard_cap:
            return "included (within the plan's monthly calls)"
        if advert.unit_amount > 0:
            return f"included, then {money} per call"
        return "free"
    if advert.unit_amount == 0:
        return "included" if kind in ("one_time", "subscription") else "free"
    return f"{money} per call"


# Markdown: every ASCII character that can start or end an inline construct (emphasis, code,
# links, images, raw HTML, entities, strikethrough, tables) or a block at the start of a line.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~&@=^\"$])")
# Tokens a GFM renderer would turn into a link (a scheme, "www." or an e-mail address) go in
# code spans: escaping alone does not stop e-mail autolinks.
_LINKISH = re.compile(r"\S*(?:[A-Za-z][A-Za-z0-9+.-]*:\S|www\.|@)\S*", re.IGNORECASE)
_LEADING_BULLET = re.compile(r"^(\s*)-")
_LEADING_ORDERED = re.compile(r"^(\s*\d{1,9})\.")


def _md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_text(value: object, *, max_length: int) -> str:
    """Untrusted text as inert, single-line markdown (escaped; capped; no control characters)."""
    text = clean_text(value, max_length=max_length)
    parts: list[str] = []
    pos = 0
    for match in _LINKISH.finditer(text):
        parts.append(_md_escape(text[pos : match.start()]))
        parts.append("`" + match.group().replace("`", "'") + "`")
        pos = match.end()
    parts.append(_md_escape(text[pos:]))
    text = "".join(parts)
    # "- x" or "1. x" at the start of a line would make a list item; we always place text after
    # a label, but escape it anyway so the rule holds wherever the text goes.
    text = _LEADING_BULLET.sub(r"\1\\-", text)
    return _LEADING_ORDERED.sub(r"\1\\.", text)


def md_code(value: object, *, max_length: int) -> str:
    """Untrusted text as a code span (literal in markdown: no links, HTML or autolinks)."""
    text = clean_text(value, max_length=max_length).replace("`", "'")
    return f"`{text}`" if text else ""

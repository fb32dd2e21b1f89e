"""Text for agents: money, plan prices, and markdown that registry text cannot escape from.

Registry text is untrusted (ARCHITECTURE.md, "Registry text is data"). In markdown it is
backslash-escaped, or put in code spans, so a description cannot add links, images, HTML,
headings or GFM autolinks to an agent's context. Only URLs we build ourselves become links.
"""

import re

from billing.pricing import StartingPrice, ToolAdvert
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
    then $0.01 per call"."""

    def money(amount: int) -> str:
        return money_format(amount=amount, currency=currency)

    if kind == "free":
        parts = ["Free"]
    elif kind == "one_time":
        parts = [f"{money(unit_amount)} once"]
    elif kind == "subscription":
        parts = [f"{money(unit_amount)} per month"]
    elif kind == "per_call":
        parts = [f"{money(per_call_amount)} per call"]
    else:
        parts = [PLAN_KIND_LABELS.get(kind, kind)]
    if included_calls is not None:
        parts.append(f"{count_format(included_calls)} calls a month included")
        if kind == "subscription" and not hard_cap and overage_amount:
            parts.append(f"then {money(overage_amount)} per call")
        elif hard_cap or kind in ("free", "one_time"):
            parts.append("no calls past that until the next month")
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

"""What one tool call costs: the single definition (issue 10, section 3).

Every surface takes its numbers from here: the gateway's admission (the in-process limiter calls
`call_price`; the Redis script is a lookup over the same data and a test runs both over the same
cases), `tools/list` `_meta`, receipts, the ledger and the meter value (the admitted amount),
pages and plan summaries (`advertised_price`).

The rule, by plan kind:
- A call within the plan's included calls (the license's monthly quota) costs 0.
- Past them (or on a plan without included calls): a hard-capped plan refuses the call; else a
  tool with its own price costs that price (a free tool stays 0) and any other tool costs the
  plan's per-call price (pay per call) or overage price (subscription).
- Only plans that can collect a per-call amount carry per-call prices
  (`plan_charges_per_call`): pay per call, and a subscription with included calls and no hard
  cap (overage). Free tiers, one-time licenses and hard-capped or unlimited subscriptions have
  no Stripe meter to send an amount to, so `billing.services.plans` refuses a non-zero tool price
  on them, and `plan_terms` resolves whatever is stored to 0 (an older price version included).
- A tool outside the price version's tool list (one the upstream started listing after the
  creator saved the prices) is refused, never charged a default (`Entitlement.other_tools`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from billing.entitlements import Entitlement, ToolPrice
from common.money import money_format

# Why a call is refused (`CallPrice.refused`).
REFUSED_TOOL = "tool"  # excluded, or not in the price version's tool list
REFUSED_QUOTA = "quota"  # past the included calls of a hard-capped plan


@dataclass(frozen=True, slots=True)
class CallPrice:
    amount: int  # minor units; 0 when refused
    refused: str = ""


@dataclass(frozen=True, slots=True)
class ToolAdvert:
    """What a buyer or agent is told one call to a tool costs on a plan: the first
    `included_calls` calls a month (all tools of the license together) cost 0; after that
    `unit_amount` per call, or refused when `hard_cap`."""

    unit_amount: int
    currency: str
    included_calls: int | None
    hard_cap: bool

    def meta(self) -> dict[str, Any]:
        """`_meta["dev.toolbooth/price"]` of a tool in `tools/list`."""
        out: dict[str, Any] = {"unit_amount": self.unit_amount, "currency": self.currency}
        if self.included_calls is not None:
            out["included_calls"] = self.included_calls
            out["hard_cap"] = self.hard_cap
        return out


def plan_charges_per_call(*, kind: str, hard_cap: bool, included_calls: int | None) -> bool:
    """Whether calls on this plan can cost money: only where a Stripe meter bills them to a
    customer (pay per call; a subscription's overage past its included calls)."""
    if kind == "per_call":
        return not (hard_cap and included_calls is not None)
    if kind == "subscription":
        return included_calls is not None and not hard_cap
    return False


def plan_terms(
    *,
    kind: str,
    hard_cap: bool,
    included_calls: int | None,
    per_call_amount: int,
    overage_amount: int,
    tool_prices: dict[str, Any] | None,
    tools: list[str] | None,
    collectible: bool = True,
) -> tuple[int, dict[str, ToolPrice], bool, bool]:
    """A plan's stored prices resolved into what `call_price` looks up: (default amount per
    call past the included calls, per-tool table, hard cap, whether tools without an entry may
    be called). `tools` is the price version's tool list (None: saved before any tool was
    discovered, so the default covers every tool); listed tools without a price of their own
    get an entry at the default, and anything else is refused. `collectible=False` (a license
    with no Stripe customer and meter, e.g. a grant) resolves every price to 0: nothing could
    collect it, so nothing is shown or charged."""
    charges = collectible and plan_charges_per_call(
        kind=kind, hard_cap=hard_cap, included_calls=included_calls
    )
    default = 0
    if charges:
        default = per_call_amount if kind == "per_call" else overage_amount
    table: dict[str, ToolPrice] = {}
    for name in tools or ():
        table[str(name)] = ToolPrice(unit_amount=default)
    for name, spec in (tool_prices or {}).items():
        if not isinstance(spec, dict):
            continue
        own = int(spec.get("unit_amount", 0) or 0) if charges else 0
        table[str(name)] = ToolPrice(unit_amount=own, excluded=bool(spec.get("excluded", False)))
    capped = hard_cap or kind in ("free", "one_time")
    return default, table, capped, tools is None


def call_price(ent: Entitlement, tool: str, used: int) -> CallPrice:
    """What a call to `tool` costs when the license has made `used` calls this quota month.

    The definition the gateway enforces: `gateway.ratelimit.LocalLimiter` calls it and
    `_ADMIT_LUA` mirrors it line for line (tests/gateway/test_pricing.py runs both)."""
    entry = ent.tool_prices.get(tool)
    if entry is not None:
        if entry.excluded:
            return CallPrice(0, REFUSED_TOOL)
        amount = entry.unit_amount
    elif ent.other_tools:
        amount = ent.unit_amount
    else:
        return CallPrice(0, REFUSED_TOOL)
    if ent.included_calls is not None:
        if used < ent.included_calls:
            return CallPrice(0)
        if ent.hard_cap:
            return CallPrice(0, REFUSED_QUOTA)
    return CallPrice(amount)


def advertised_price(ent: Entitlement, tool: str) -> ToolAdvert | None:
    """What `tools/list`, pages and plan summaries say a call to `tool` costs; None = the tool
    is not available (hidden from tools/list, refused by tools/call). Consistent with
    `call_price` by construction: 0 below `included_calls`, `unit_amount` from there on."""
    past = call_price(ent, tool, ent.included_calls or 0)
    if past.refused == REFUSED_TOOL:
        return None
    return ToolAdvert(
        unit_amount=past.amount,
        currency=ent.currency,
        included_calls=ent.included_calls,
        hard_cap=ent.hard_cap,
    )


def tool_price_refusal(
    *, kind: str, hard_cap: bool, included_calls: int | None, tool_prices: dict[str, Any]
) -> str:
    """Why these per-tool prices cannot be stored on this plan ("" = they can): a non-zero
    price on a plan that cannot charge per call would be shown and never collected."""
    if plan_charges_per_call(kind=kind, hard_cap=hard_cap, included_calls=included_calls):
        return ""
    priced = sorted(
        t for t, s in tool_prices.items() if not s.get("excluded") and s.get("unit_amount")
    )
    if not priced:
        return ""
    return (
        "Only pay-per-call plans and subscriptions with included calls and overage charge per "
        "call; on this plan a tool can only be free or excluded "
        f"(priced: {', '.join(priced[:5])})."
    )


# The smallest amounts a plan may charge, in minor units. A license or monthly price below
# Stripe's minimum charge ($0.50 in usd; the same 50 minor units is applied to every currency)
# would be refused at checkout, so it is refused when the plan is saved; a call costs at least
# one minor unit, because meters bill whole units. The form and the service both ask
# `plan_amount_errors`, so the numbers and the words have one source.
# https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts
MIN_CHARGE_AMOUNT = 50
MIN_PER_CALL_AMOUNT = 1


def plan_amount_errors(
    *,
    kind: str,
    currency: str,
    unit_amount: int,
    per_call_amount: int,
    overage_amount: int,
    hard_cap: bool,
    included_calls: int | None,
) -> dict[str, str]:
    """Why these amounts cannot be a plan's price, per field ("__all__" for the plan as a
    whole), in the buyer's money ("at least $0.50 a month"); {} when they can."""

    def money(amount: int) -> str:
        return money_format(amount=amount, currency=currency)

    if min(unit_amount, per_call_amount, overage_amount) < 0:
        return {"__all__": "Prices cannot be negative."}
    errors: dict[str, str] = {}
    if kind == "free" and (unit_amount or per_call_amount or overage_amount):
        errors["__all__"] = "A free plan has no prices."
    elif kind == "one_time" and unit_amount < MIN_CHARGE_AMOUNT:
        errors["unit_amount"] = f"Price must be at least {money(MIN_CHARGE_AMOUNT)}."
    elif kind == "subscription":
        if unit_amount < MIN_CHARGE_AMOUNT:
            errors["unit_amount"] = f"Price must be at least {money(MIN_CHARGE_AMOUNT)} a month."
        if not hard_cap and included_calls is not None and overage_amount <= 0:
            errors["overage_amount"] = (
                f"Set an overage price per call (at least {money(MIN_PER_CALL_AMOUNT)}), "
                "or stop at the included calls."
            )
        elif overage_amount and (hard_cap or included_calls is None):
            # Overage is charged only past included calls on an uncapped plan; anywhere else
            # it would be shown and never charged.
            errors["overage_amount"] = (
                "An overage price needs included calls and no stop at the included calls."
            )
    elif kind == "per_call" and per_call_amount < MIN_PER_CALL_AMOUNT:
        errors["per_call_amount"] = f"Price per call must be at least {money(MIN_PER_CALL_AMOUNT)}."
    return errors


@dataclass(frozen=True, slots=True)
class StartingPrice:
    """A listing's cheapest way in, for "from $x" in search results."""

    kind: str  # the cheapest paid plan's kind ("" if the listing has only free plans)
    amount: int  # its headline amount in minor units (0 if only free plans)
    currency: str
    has_free_plan: bool


def plan_headline_amount(*, kind: str, unit_amount: int, per_call_amount: int) -> int:
    """The one number a plan is advertised by: the license or monthly price, or the per-call
    price for pay per call (what `plan_price_summary` leads with). 0 for a free plan."""
    if kind == "per_call":
        return per_call_amount
    if kind in ("one_time", "subscription"):
        return unit_amount
    return 0


def starting_price(plans: list[tuple[str, str, int, int]]) -> StartingPrice | None:
    """From (kind, currency, unit_amount, per_call_amount) of a listing's active plans at their
    newest price: the cheapest paid headline, and whether a free plan exists. None without plans.
    """
    if not plans:
        return None
    has_free = any(kind == "free" for kind, _, _, _ in plans)
    paid = [
        (plan_headline_amount(kind=kind, unit_amount=unit, per_call_amount=per_call), kind, cur)
        for kind, cur, unit, per_call in plans
        if kind != "free"
    ]
    if not paid:
        return StartingPrice(kind="", amount=0, currency=plans[0][1], has_free_plan=True)
    amount, kind, currency = min(paid)
    return StartingPrice(kind=kind, amount=amount, currency=currency, has_free_plan=has_free)

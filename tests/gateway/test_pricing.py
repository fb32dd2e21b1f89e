"""One price, shown and charged (issue 10, section 3), on the real limiter implementations.

`billing.pricing.call_price` is the definition. The in-process limiter calls it; the Redis
admission script mirrors it over the data billing resolves into the entitlement. These tests
run the script (real Redis test DB), the in-process limiter and the function over the same
plans, tools and call sequences: what tools/list advertises = the receipt = the ledger row = the
meter value, and quotas, spend caps and the plan's rate limit (per license) hold.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import asdict, dataclass, replace

import pytest
import redis
from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from billing.entitlements import Entitlement
from billing.pricing import (
    REFUSED_QUOTA,
    REFUSED_TOOL,
    advertised_price,
    call_price,
    plan_charges_per_call,
    plan_terms,
    tool_price_refusal,
)
from gateway import metering
from gateway.ratelimit import (
    EXCLUDED,
    KIND_CALL,
    KIND_FREE,
    KIND_REQUEST,
    OK,
    QUOTA,
    RATE_LIMITED,
    SPEND_CAP,
    LocalLimiter,
    RedisLimiter,
)
from gateway.resp import RespClient

NAME = "io.github.acme/pricing"
TOOLS = ("plain", "priced", "free", "excluded")  # plan default, own price, free, excluded
_ids = itertools.count(50_000_000)


@dataclass(frozen=True)
class PlanSpec:
    kind: str  # free | one_time | subscription | capped | per_call
    included: int | None
    unit: int  # per-call price (per_call) or overage (subscription)
    tool_price: int  # the "priced" tool's own price

    @property
    def hard_cap(self) -> bool:
        return self.kind in ("free", "one_time", "capped")

    @property
    def plan_kind(self) -> str:
        return "subscription" if self.kind == "capped" else self.kind


def terms_for(
    spec: PlanSpec, *, covered: list[str] | None = None, **caps: int | None
) -> Entitlement:
    """The entitlement billing builds for a key on this plan (billing.selectors does the same
    with rows): prices resolved by billing.pricing.plan_terms; a Stripe customer and meter only
    where the plan is metered."""
    tool_prices = {
        "priced": {"unit_amount": spec.tool_price},
        "free": {"unit_amount": 0},
        "excluded": {"unit_amount": 0, "excluded": True},
    }
    if tool_price_refusal(
        kind=spec.plan_kind,
        hard_cap=spec.hard_cap,
        included_calls=spec.included,
        tool_prices=tool_prices,
    ):
        # billing.services.plans refuses such a price; the plan then has the tool free.
        tool_prices["priced"] = {"unit_amount": 0}
    default, table, hard_cap, other = plan_terms(
        kind=spec.plan_kind,
        hard_cap=spec.hard_cap,
        included_calls=spec.included,
        per_call_amount=spec.unit if spec.kind == "per_call" else 0,
        overage_amount=spec.unit if spec.kind == "subscription" else 0,
        tool_prices=tool_prices,
        tools=covered,
    )
    metered = plan_charges_per_call(
        kind=spec.plan_kind, hard_cap=spec.hard_cap, included_calls=spec.included
    )
    key = next(_ids)
    return Entitlement(
        key_id=key,
        license_id=key,
        listing_id=1,
        listing_name=NAME,
        plan_id=1,
        plan_kind=spec.plan_kind,
        status="active",
        currency="usd",
        rate_limit_per_minute=100_000,
        included_calls=spec.included,
        hard_cap=hard_cap,
        unit_amount=default,
        overage_unit_amount=spec.unit if spec.kind == "subscription" else 0,
        tool_prices=table,
        other_tools=other,
        daily_spend_cap=caps.get("daily"),
        monthly_spend_cap=caps.get("monthly"),
        stripe_customer_id="cus_test" if metered else None,
        meter_event_name="tb_calls" if metered else None,
        period_start=time.time() - 3600,
    )


def limiters(ents: dict[str, Entitlement]) -> tuple[LocalLimiter, RedisLimiter]:
    async def loader(key_hash: str) -> Entitlement | None:
        return ents.get(key_hash)

    local = LocalLimiter(loader, cache_seconds=60, session_ttl=60)
    shared = RedisLimiter(
        RespClient(settings.REDIS_URL, timeout=0.5),
        LocalLimiter(loader, cache_seconds=60, session_ttl=60),
        loader,
        cache_seconds=60,
        session_ttl=60,
        stream="tb:usage:pricing-test",
    )
    return local, shared


async def admit(limiter, key_hash, kind, tool, now, call_id=""):
    return await limiter.admit(
        key_hash=key_hash,
        listing_name=NAME,
        kind=kind,
        tool=tool,
        session_id="",
        now=now,
        call_id=call_id,
    )


class Model:
    """What the counters must hold if the rules are kept: the license's calls this month and
    the key's spend. Verdicts follow from call_price plus the caps."""

    def __init__(self, ent: Entitlement) -> None:
        self.ent, self.used, self.spent = ent, 0, 0

    def expect(self, tool: str) -> tuple[int, int]:
        price = call_price(self.ent, tool, self.used)
        if price.refused == REFUSED_TOOL:
            return EXCLUDED, 0
        if price.refused == REFUSED_QUOTA:
            return QUOTA, 0
        caps = [c for c in (self.ent.daily_spend_cap, self.ent.monthly_spend_cap) if c is not None]
        if price.amount > 0 and any(self.spent + price.amount > c for c in caps):
            return SPEND_CAP, 0
        return OK, price.amount

    def settle(self, amount: int, billable: bool) -> None:
        if billable:
            self.used += self.ent.included_calls is not None
            self.spent += amount


def run_sequence(ent: Entitlement, calls: list[tuple[str, bool]]) -> None:
    """Every call through the script and the in-process limiter, checked against the model;
    a call that turns out not billable is refunded as the gateway does."""
    key_hash = f"h{ent.key_id}"

    async def go() -> None:
        local, shared = limiters({key_hash: ent})
        client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
        model = Model(ent)
        now = time.time()
        try:
            for i, (tool, billable) in enumerate(calls):
                verdict, amount = model.expect(tool)
                got = []
                for limiter in (local, shared):
                    call_id = f"{key_hash}-{i}"  # in flight until recorded, like the gateway's
                    adm = await admit(limiter, key_hash, KIND_CALL, tool, now + i * 0.001, call_id)
                    got.append((adm.verdict, adm.amount))
                    if adm.verdict == OK and not billable:
                        if limiter is local:
                            local.refund(adm.reserved)
                        else:  # the gateway's record script, refunding (gateway.ratelimit)
                            flat = [x for pair in adm.reserved for x in pair]
                            await shared._record([shared._stream, b"{}", "1", call_id, *flat])
                assert got == [(verdict, amount), (verdict, amount)], (tool, i, model.used)
                if verdict != OK:
                    continue
                advert = advertised_price(ent, tool)
                assert advert is not None
                within = ent.included_calls is not None and model.used < ent.included_calls
                # What tools/list said is what the receipt says.
                assert amount == (0 if within else advert.unit_amount)
                record = metering.usage_record(
                    call_id="c",
                    ent=ent,
                    tool=tool,
                    amount=amount,
                    billable=billable,
                    outcome="success" if billable else "tool_error",
                    latency_ms=1,
                    occurred_at=now,
                )
                assert record["unit_amount"] == (amount if billable else 0)  # the ledger row
                if record["unit_amount"] > 0:  # charged: something must collect it
                    assert record["stripe_customer_id"]
                    assert record["meter_event_name"]
                model.settle(amount, billable)
            if ent.included_calls is not None and ent.hard_cap:
                assert model.used <= ent.included_calls
            for cap in (ent.daily_spend_cap, ent.monthly_spend_cap):
                assert cap is None or model.spent <= cap
        finally:
            await client.aclose()
            await shared.client.close()

    asyncio.run(go())


KINDS = {
    "free": PlanSpec("free", 3, 0, 5),
    "one_time": PlanSpec("one_time", 3, 0, 5),
    "subscription": PlanSpec("subscription", 2, 2, 5),
    "capped": PlanSpec("capped", 2, 0, 5),
    "per_call": PlanSpec("per_call", None, 3, 5),
}
# (plan kind, tool) -> (what a call costs past the included calls, as advertised;
# None = not available). A price on a plan that cannot charge it is refused at save time.
EXPECTED_PAST_QUOTA = {
    ("free", "plain"): 0,
    ("free", "priced"): 0,
    ("one_time", "plain"): 0,
    ("one_time", "priced"): 0,
    ("subscription", "plain"): 2,
    ("subscription", "priced"): 5,  # its own price, not the overage price
    ("capped", "plain"): 0,
    ("capped", "priced"): 0,
    ("per_call", "plain"): 3,
    ("per_call", "priced"): 5,
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_five_plan_kinds_by_four_tool_pricings(redis_client, kind):
    ent = terms_for(KINDS[kind])
    for tool in TOOLS:
        advert = advertised_price(ent, tool)
        if tool == "excluded":
            assert advert is None
            continue
        assert advert is not None
        assert advert.unit_amount == EXPECTED_PAST_QUOTA.get((kind, tool), 0)
    calls = [(tool, True) for _ in range(4) for tool in TOOLS]
    run_sequence(ent, calls)


def test_non_zero_tool_prices_are_refused_where_nothing_can_charge_them():
    priced = {"search": {"unit_amount": 5, "excluded": False}}
    free = {"search": {"unit_amount": 0, "excluded": False}, "x": {"excluded": True}}
    for kind, cap, included in [
        ("free", True, 10),
        ("one_time", True, 10),
        ("subscription", True, 10),
        ("subscription", False, None),
    ]:
        args = {"kind": kind, "hard_cap": cap, "included_calls": included}
        assert "free or excluded" in tool_price_refusal(**args, tool_prices=priced)
        assert tool_price_refusal(**args, tool_prices=free) == ""
    for kind, included in [("per_call", None), ("subscription", 10)]:
        args = {"kind": kind, "hard_cap": False, "included_calls": included}
        assert tool_price_refusal(**args, tool_prices=priced) == ""


def test_a_tool_outside_the_price_versions_list_is_refused_not_billed(redis_client):
    """The creator saved prices while the upstream listed `plain`, `priced`, `free`: a tool it
    started listing later is refused on both limiters and hidden from tools/list."""
    ent = terms_for(KINDS["per_call"], covered=["plain", "priced", "free"])
    assert advertised_price(ent, "new_tool") is None
    assert advertised_price(ent, "plain") is not None
    run_sequence(ent, [("new_tool", True), ("plain", True), ("new_tool", True)])
    legacy = terms_for(KINDS["per_call"])  # saved before any tool was known: default covers all
    assert advertised_price(legacy, "new_tool") is not None


plans = st.builds(
    PlanSpec,
    kind=st.sampled_from(["free", "one_time", "subscription", "capped", "per_call"]),
    included=st.none() | st.integers(0, 4),
    unit=st.integers(1, 9),
    tool_price=st.integers(0, 9),
).filter(lambda p: p.kind not in ("subscription", "capped", "free") or p.included is not None)


@given(
    spec=plans,
    daily=st.none() | st.integers(0, 30),
    monthly=st.none() | st.integers(0, 40),
    covered=st.none() | st.just(["plain", "priced", "free"]),
    calls=st.lists(
        st.tuples(st.sampled_from([*TOOLS, "unlisted"]), st.booleans()), min_size=1, max_size=25
    ),
)
@hsettings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_advertised_equals_charged_on_both_limiters(
    redis_client, spec, daily, monthly, covered, calls
):
    run_sequence(terms_for(spec, covered=covered, daily=daily, monthly=monthly), calls)


def _license_keys(n: int, rate: int) -> dict[str, Entitlement]:
    base = terms_for(KINDS["per_call"])
    return {
        f"k{base.license_id}-{i}": replace(
            base, key_id=base.key_id * 100 + i, rate_limit_per_minute=rate
        )
        for i in range(n)
    }


@pytest.mark.parametrize("impl", ["local", "redis"])
def test_twenty_keys_share_the_plans_limit_and_other_methods_do_not_use_it(redis_client, impl):
    ents = _license_keys(20, rate=3)

    async def go() -> list[tuple[str, int]]:
        local, shared = limiters(ents)
        limiter = local if impl == "local" else shared
        now = 1_000_000.0
        out = []
        try:
            for key_hash in ents:  # every key: handshake, listing, a ping, then a tool call
                for kind in (KIND_REQUEST, KIND_FREE, KIND_REQUEST, KIND_REQUEST):
                    adm = await admit(limiter, key_hash, kind, "", now)
                    assert adm.verdict == OK
                adm = await admit(limiter, key_hash, KIND_CALL, "plain", now)
                out.append((adm.verdict, adm.retry_after, adm.rate_reset, adm.rate_policy))
        finally:
            await shared.client.close()
        return out

    got = asyncio.run(go())
    assert [v for v, *_ in got] == [OK] * 3 + [RATE_LIMITED] * 17
    for _, retry, reset, policy in got[3:]:
        assert retry == reset == 20  # RateLimit's t agrees with Retry-After
        assert policy == "tool-calls"


@pytest.mark.parametrize("impl", ["local", "redis"])
def test_a_flood_of_other_methods_meets_its_own_per_key_limit(redis_client, impl, settings):
    ents = _license_keys(2, rate=3)

    async def go() -> tuple[list[int], int, int]:
        async def loader(key_hash: str) -> Entitlement | None:
            return ents.get(key_hash)

        local = LocalLimiter(loader, cache_seconds=60, session_ttl=60, method_rate=5)
        shared = RedisLimiter(
            RespClient(settings.REDIS_URL, timeout=0.5),
            LocalLimiter(loader, cache_seconds=60, session_ttl=60),
            loader,
            cache_seconds=60,
            session_ttl=60,
            stream="tb:usage:pricing-test",
            method_rate=5,
        )
        limiter = local if impl == "local" else shared
        first, second = list(ents)
        now = 1_000_000.0
        try:
            flood = [(await admit(limiter, first, KIND_REQUEST, "", now)).verdict for _ in range(7)]
            other_key = (await admit(limiter, second, KIND_FREE, "", now)).verdict
            call = (await admit(limiter, first, KIND_CALL, "plain", now)).verdict
        finally:
            await shared.client.close()
        return flood, other_key, call

    flood, other_key, call = asyncio.run(go())
    assert flood == [OK] * 5 + [RATE_LIMITED] * 2
    assert other_key == OK  # per key
    assert call == OK  # tool calls have the plan's budget


def test_the_cached_entitlement_json_carries_what_the_script_reads():
    ent = terms_for(KINDS["subscription"], covered=["plain"])
    data = json.loads(json.dumps(asdict(ent)))
    assert data["other_tools"] is False
    assert data["tool_prices"]["priced"] == {"unit_amount": 5, "excluded": False}
    assert data["tool_prices"]["plain"] == {"unit_amount": 2, "excluded": False}

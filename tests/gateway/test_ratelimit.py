"""The Redis script and the in-process limiter answer the same questions the same way."""

import asyncio
import json
import time
from dataclasses import asdict

import pytest
import redis.asyncio

from billing.entitlements import ToolPrice
from gateway.ratelimit import (
    EXCLUDED,
    KIND_CALL,
    KIND_FREE,
    KIND_REQUEST,
    OK,
    QUOTA,
    RATE_LIMITED,
    SESSION,
    SPEND_CAP,
    LocalLimiter,
    RedisLimiter,
)
from gateway.resp import RespClient
from tests.gateway.conftest import entitlement

NAME = "io.github.acme/weather"


def _limiters(settings, ent):
    async def loader(key_hash):
        return ent

    local = LocalLimiter(loader, cache_seconds=5, session_ttl=60)
    client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
    shared = RedisLimiter(
        RespClient(settings.REDIS_URL, timeout=0.1),
        LocalLimiter(loader, cache_seconds=5, session_ttl=60),
        loader,
        cache_seconds=5,
        session_ttl=60,
        stream="tb:usage:test",
    )
    return local, shared, client


async def _admit(limiter, kind, tool, now):
    return await limiter.admit(
        key_hash="h", listing_name=NAME, kind=kind, tool=tool, session_id="", now=now
    )


SCENARIOS = {
    "rate": (  # the plan's limit counts tool calls only; other requests pass
        {"rate_limit_per_minute": 3},
        [(KIND_REQUEST, "")] * 5 + [(KIND_CALL, "a")] * 4 + [(KIND_FREE, ""), (KIND_REQUEST, "")],
        [OK] * 5 + [OK, OK, OK, RATE_LIMITED, OK, OK],
    ),
    "quota": (
        {"included_calls": 2, "hard_cap": True},
        [(KIND_CALL, "a")] * 3 + [(KIND_REQUEST, "")],
        [OK, OK, QUOTA, OK],
    ),
    "spend": (
        {"unit_amount": 4, "daily_spend_cap": 9},
        [(KIND_CALL, "a")] * 3 + [(KIND_CALL, "free")],
        [OK, OK, SPEND_CAP, OK],
    ),
    "excluded": (
        {"tool_prices": {"hidden": ToolPrice(1, excluded=True), "free": ToolPrice(0)}},
        [(KIND_CALL, "hidden"), (KIND_CALL, "free"), (KIND_CALL, "other")],
        [EXCLUDED, OK, OK],
    ),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_redis_and_local_agree(settings, redis_client, scenario):
    overrides, steps, expected = SCENARIOS[scenario]
    overrides = {"tool_prices": {"free": ToolPrice(0)}, **overrides}
    ent = entitlement(NAME, **overrides)

    async def run():
        local, shared, client = _limiters(settings, ent)
        await client.set("tb:ent:h", json.dumps(asdict(ent)))
        now = time.time()
        out = []
        for kind, tool in steps:
            answers = []
            for limiter in (local, shared):
                adm = await _admit(limiter, kind, tool, now)
                answers.append((adm.verdict, adm.amount, adm.quota_remaining, adm.rate_remaining))
            out.append(answers)
        await client.aclose()
        return out

    results = asyncio.run(run())
    assert [local for local, _ in results] == [shared for _, shared in results]
    assert [local[0] for local, _ in results] == expected


def test_a_rate_beyond_timestamp_precision_admits(settings, redis_client):
    """Beyond ~250M a minute the GCRA interval is below a timestamp's precision: no limit in
    effect, and the script must not fail (it once set a 0 ms expiry, refusing every call)."""
    ent = entitlement(NAME, rate_limit_per_minute=2_000_000_000, unit_amount=3)

    async def run():
        local, shared, client = _limiters(settings, ent)
        await client.set("tb:ent:h", json.dumps(asdict(ent)))
        got = []
        for limiter in (local, shared):
            for _ in range(3):
                adm = await _admit(limiter, KIND_CALL, "a", time.time())
                got.append((adm.verdict, adm.amount))
        await client.aclose()
        return got

    assert asyncio.run(run()) == [(OK, 3)] * 6


def test_gcra_refills_over_time(settings, redis_client):
    ent = entitlement(NAME, rate_limit_per_minute=60)  # one per second, burst 60

    async def run():
        local, shared, client = _limiters(settings, ent)
        await client.set("tb:ent:h", json.dumps(asdict(ent)))
        now = 1_000_000.0
        verdicts = []
        for limiter in (local, shared):
            got = []
            for t in [now] * 61 + [now + 0.5, now + 1.01]:
                adm = await _admit(limiter, KIND_CALL, "a", t)
                got.append((adm.verdict, adm.retry_after))
            verdicts.append(got)
        await client.aclose()
        return verdicts

    local, shared = asyncio.run(run())
    assert local == shared
    assert [v for v, _ in local[:60]] == [OK] * 60
    assert local[60] == (RATE_LIMITED, 1)
    assert local[61][0] == RATE_LIMITED
    assert local[62][0] == OK


def test_session_binding_and_refund(settings, redis_client):
    ent = entitlement(NAME, included_calls=1, hard_cap=True)

    async def run():
        _local, shared, client = _limiters(settings, ent)
        await client.set("tb:ent:h", json.dumps(asdict(ent)))
        now = time.time()
        await shared.session_bind("s1", ent.key_id, now)
        ok = await shared.admit(
            key_hash="h", listing_name=NAME, kind=KIND_REQUEST, tool="", session_id="s1", now=now
        )
        await client.set("tb:sess:s2", "999")
        foreign = await shared.admit(
            key_hash="h", listing_name=NAME, kind=KIND_REQUEST, tool="", session_id="s2", now=now
        )
        call = await shared.admit(
            key_hash="h",
            listing_name=NAME,
            kind=KIND_CALL,
            tool="a",
            session_id="",
            now=now,
            call_id="c1",
        )
        assert await client.hexists("tb:inflight", "c1")
        failed = []
        shared.record(
            b"{}",
            call_id="c1",
            refund=True,
            reserved=call.reserved,
            now=now,
            on_failure=lambda: failed.append(1),
        )
        await asyncio.sleep(0.01)  # the deferred write goes out within 2 ms
        assert failed == []
        again = await shared.admit(
            key_hash="h", listing_name=NAME, kind=KIND_CALL, tool="a", session_id="", now=now
        )
        entries = await client.xlen("tb:usage:test")
        inflight = await client.hlen("tb:inflight")
        await client.aclose()
        return ok.verdict, foreign.verdict, call.verdict, again.verdict, entries, inflight

    # refunded (the hard-capped quota admits `again`), recorded once, no longer in flight
    assert asyncio.run(run()) == (OK, SESSION, OK, OK, 1, 0)

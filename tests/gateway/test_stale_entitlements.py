"""The miss path's stale copies (`tb:ents:<key hash>`): what stands in for PostgreSQL during an
outage, and what never does. Real Redis; the loader is the gateway's injected dependency (the
process test in test_processes.py runs the real one against a held PostgreSQL)."""

import asyncio
import time

import pytest

from gateway.ratelimit import (
    INVALID,
    KIND_CALL,
    OK,
    STALE_PREFIX,
    LocalLimiter,
    RedisLimiter,
    StoreUnavailable,
)
from gateway.resp import RespClient
from gateway.selectors import UsageCounters
from tests.gateway.conftest import entitlement

NAME = "io.github.acme/weather"


class Store:
    """What PostgreSQL answers: the entitlement, nothing (revoked), or a timeout."""

    def __init__(self, **overrides: object) -> None:
        self.ent = entitlement(NAME, **overrides)
        self.mode = "up"
        self.loads = 0

    async def load(self, key_hash: str):
        self.loads += 1
        if self.mode == "down":
            raise StoreUnavailable("TimeoutError")
        return self.ent if self.mode == "up" else None

    async def counters(self, ent, now):  # the ledger's totals (empty here)
        if self.mode == "down":
            raise StoreUnavailable("TimeoutError")
        return UsageCounters(calls=0, spent_today=0, spent_month=0)


def _limiter(settings, store: Store, stale_seconds: int = 300) -> RedisLimiter:
    return RedisLimiter(
        RespClient(settings.REDIS_URL, timeout=0.1),
        LocalLimiter(store.load, cache_seconds=1, session_ttl=60),
        store.load,
        cache_seconds=1,
        session_ttl=60,
        stream="tb:usage:test",
        counters=store.counters,
        stale_seconds=stale_seconds,
    )


async def _call(limiter: RedisLimiter, key: str = "h"):
    return await limiter.admit(
        key_hash=key, listing_name=NAME, kind=KIND_CALL, tool="a", session_id="", now=time.time()
    )


def _expire_cache(redis_client, key: str = "h") -> None:
    redis_client.delete(f"tb:ent:{key}")  # what the 1 s TTL does, without the wait


def test_a_confirmed_key_is_served_from_its_copy_while_postgresql_is_down(settings, redis_client):
    store = Store()

    async def run():
        limiter = _limiter(settings, store)
        assert (await _call(limiter)).verdict == OK
        assert 298 <= redis_client.ttl(f"{STALE_PREFIX}h") <= 299  # 300 s - the cache's 1 s
        store.mode = "down"
        _expire_cache(redis_client)
        stale = await _call(limiter)
        assert (stale.verdict, stale.amount) == (OK, 5)  # served and priced as before
        assert store.loads == 2
        _expire_cache(redis_client)
        assert (await _call(limiter)).verdict == OK
        assert store.loads == 2  # the breaker: no second wait on PostgreSQL within a second
        with pytest.raises(StoreUnavailable):  # never confirmed: nothing stands in for it
            await _call(limiter, key="unknown")
        await limiter.close()

    asyncio.run(run())


def test_a_key_postgresql_no_longer_returns_loses_its_copy(settings, redis_client):
    store = Store()

    async def run():
        limiter = _limiter(settings, store)
        assert (await _call(limiter)).verdict == OK
        store.mode = "gone"  # revoked while PostgreSQL still answered
        _expire_cache(redis_client)
        assert (await _call(limiter)).verdict == INVALID
        await asyncio.sleep(0.01)  # the deferred DEL rides the next write (at most 2 ms)
        assert not redis_client.exists(f"{STALE_PREFIX}h")
        store.mode = "down"
        _expire_cache(redis_client)
        with pytest.raises(StoreUnavailable):
            await _call(limiter)
        await limiter.close()

    asyncio.run(run())


def test_past_the_bound_or_with_lost_counters_it_fails_closed(settings, redis_client):
    store = Store(included_calls=10, overage_unit_amount=2)

    async def run():
        limiter = _limiter(settings, store)
        assert (await _call(limiter)).verdict == OK
        store.mode = "down"
        for key in redis_client.scan_iter("tb:q:*"):
            redis_client.delete(key)  # Redis lost the quota counter: only the ledger knows
        _expire_cache(redis_client)
        with pytest.raises(StoreUnavailable):
            await _call(limiter)
        redis_client.delete(f"{STALE_PREFIX}h")  # the copy expired (the bound)
        with pytest.raises(StoreUnavailable):
            await _call(limiter)
        await limiter.close()

    asyncio.run(run())


def test_off_when_the_bound_is_not_past_the_cache_ttl(settings, redis_client):
    store = Store()

    async def run():
        limiter = _limiter(settings, store, stale_seconds=1)
        assert (await _call(limiter)).verdict == OK
        assert not redis_client.exists(f"{STALE_PREFIX}h")
        store.mode = "down"
        _expire_cache(redis_client)
        with pytest.raises(StoreUnavailable):
            await _call(limiter)
        await limiter.close()

    asyncio.run(run())

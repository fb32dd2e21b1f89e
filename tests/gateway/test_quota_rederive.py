"""Quota and spend counters lost in Redis are re-derived from the usage ledger.

Real billing rows, a real gateway process, the real drain; then the Redis test DB is flushed
(what a restart without persistence does) and the next call must still be refused. Also the
limiter itself: a live counter is never overwritten, and a warm call reads no PostgreSQL.
"""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from billing.keys import key_hash
from billing.selectors import entitlement_get_by_key_hash
from billing.services.licenses import api_key_create
from gateway.ratelimit import (
    KIND_CALL,
    OK,
    QUOTA,
    LocalLimiter,
    RedisLimiter,
    day_key,
    ledger_counters,
)
from gateway.resp import RespClient
from tests.billing.factories import MeteredLicenseFactory
from tests.gateway.conftest import PORT_BASE, drain, start_gateway, stop
from tests.gateway.test_real_licenses import _license, call

pytestmark = pytest.mark.django_db(transaction=True)

QUOTA_PLAN = {"plan_price__plan__included_calls": 3, "plan_price__plan__hard_cap": True}


def test_hard_cap_quota_survives_a_redis_flush(gateway, redis_client):
    name, lic, _key, raw = _license(**QUOTA_PLAN)
    assert [call(gateway, name, raw, rid=i).status_code for i in range(3)] == [200, 200, 200]
    assert drain() == 3
    redis_client.flushdb()  # counters, entitlement cache and stream all gone
    refused = call(gateway, name, raw, rid=4)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == -32030
    assert redis_client.get(f"tb:q:{lic.pk}:{int(_period_start(raw))}") == b"3"


@pytest.mark.parametrize("cap", ["daily_spend_cap", "monthly_spend_cap"])
def test_spend_cap_survives_a_redis_flush(gateway, redis_client, cap):
    name, lic, _key, _raw = _license(MeteredLicenseFactory, plan_price__per_call_amount=5)
    _key, raw = api_key_create(license=lic, **{cap: 15})
    assert [call(gateway, name, raw, rid=i).status_code for i in range(3)] == [200, 200, 200]
    assert drain() == 3
    for pattern in ("tb:sd:*", "tb:sm:*", "tb:ent:*"):  # only what a restart would lose
        for k in redis_client.scan_iter(pattern):
            redis_client.delete(k)
    capped = call(gateway, name, raw, rid=4)
    assert capped.status_code == 429
    assert capped.json()["error"]["code"] == -32031
    # Another key of the same license has its own cap.
    _other, other_raw = api_key_create(license=lic, **{cap: 15})
    assert call(gateway, name, other_raw, rid=5).status_code == 200


def _period_start(raw: str) -> float:
    ent = entitlement_get_by_key_hash(key_hash=key_hash(raw))
    assert ent is not None
    return ent.period_start


def test_live_counter_is_not_overwritten_and_warm_calls_skip_postgres(
    gateway, redis_client, settings
):
    """One missing counter triggers the re-derivation; the live one (a concurrent request
    made it) wins over the ledger. Once the entitlement is cached, neither loader runs."""
    name, lic, _key, _raw = _license(**QUOTA_PLAN)
    key, raw = api_key_create(license=lic, daily_spend_cap=100)
    assert [call(gateway, name, raw, rid=i).status_code for i in range(3)] == [200, 200, 200]
    assert drain() == 3
    period = int(_period_start(raw))
    qk, dk = f"tb:q:{lic.pk}:{period}", f"tb:sd:{key.pk}:{day_key(time.time())}"
    redis_client.delete(f"tb:ent:{key.key_hash}", dk)
    redis_client.set(qk, 1)
    loads = {"ent": 0, "ledger": 0}

    async def load_ent(h):
        loads["ent"] += 1
        return await sync_to_async(entitlement_get_by_key_hash)(key_hash=h)

    async def load_ledger(ent, now):
        loads["ledger"] += 1
        return await ledger_counters(ent, now)

    async def run():
        limiter = RedisLimiter(
            RespClient(settings.REDIS_URL, timeout=0.5),
            LocalLimiter(load_ent, cache_seconds=5, session_ttl=60),
            load_ent,
            cache_seconds=5,
            session_ttl=60,
            stream="tb:usage:test",
            counters=load_ledger,
        )
        verdicts, seen = [], []
        for _ in range(3):
            adm = await limiter.admit(
                key_hash=key.key_hash,
                listing_name=name,
                kind=KIND_CALL,
                tool="ok",
                session_id="",
                now=time.time(),
            )
            verdicts.append(adm.verdict)
            seen.append(dict(loads))
        await limiter.close()
        await sync_to_async(connections.close_all)()  # the loaders' thread's connection
        return verdicts, seen

    verdicts, seen = asyncio.run(run())
    assert verdicts == [OK, OK, QUOTA]  # 1 -> 2 -> 3: the live counter counted, not the ledger
    assert seen == [{"ent": 1, "ledger": 1}] * 3  # the warm calls read no PostgreSQL
    assert redis_client.get(qk) == b"3"
    assert redis_client.get(dk) == b"0"  # seeded: the calls were inside the included quota


def test_demo_restart_does_not_hand_out_a_fresh_quota():
    """Without Redis the in-process limiter is the backend; a new process seeds from the ledger."""
    name, _lic, _key, raw = _license(**QUOTA_PLAN)
    env = {"REDIS_URL": "", "CELERY_BROKER_URL": "memory://"}
    base = f"http://127.0.0.1:{PORT_BASE + 126}"
    proc = start_gateway(PORT_BASE + 126, **env)
    try:
        assert [call(base, name, raw, rid=i).status_code for i in range(3)] == [200, 200, 200]
    finally:
        stop(proc)  # the in-process queue is flushed to the ledger on shutdown
    proc = start_gateway(PORT_BASE + 126, **env)
    try:
        refused = call(base, name, raw, rid=4)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == -32030
    finally:
        stop(proc)

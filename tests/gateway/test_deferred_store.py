"""gateway.deferred's stores on real Redis and in-process: an answer settles once, however many
gateways race to settle it, and only a billable settlement puts the counters back."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from django.conf import settings

from gateway import deferred
from gateway.resp import RespClient

STREAM = "tb:usage:test-deferred"


def _template(**extra: Any) -> dict[str, Any]:
    return {
        "call_id": str(uuid.uuid4()),
        "key_id": 7,
        "license_id": 3,
        "listing_id": 5,
        "plan_id": 2,
        "tool": "add",
        "unit_amount": 0,
        "currency": "usd",
        "billable": False,
        "outcome": "cancelled",
        "latency_ms": 1,
        "occurred_at": 1.0,
        "amount": 4,
        "reserved": [["tb:sd:7:20261125", 4]],
        **extra,
    }


def _stores(redis_client: Any) -> list[Any]:
    local_counters: dict[str, int] = {}
    written: list[dict[str, Any]] = []
    local = deferred.LocalDeferred(local_counters, written.append)
    client = RespClient(settings.REDIS_URL, timeout=0.1)
    remote = deferred.RedisDeferred(client, stream=STREAM, session_ttl=60)
    return [local, remote]


@pytest.mark.parametrize("backend", ["local", "redis"])
def test_racing_settlements_bill_once(redis_client, backend):
    async def run() -> list[bool]:
        store = _stores(redis_client)[0 if backend == "local" else 1]
        template = _template()
        await store.remember_call("sess-1", 9, template)
        assert "9" in await store.pending_calls("sess-1")
        records = [
            deferred.settled_record(template, billable=True, outcome="replayed") for _ in range(20)
        ]
        results = await asyncio.gather(*(store.settle_call("sess-1", 9, r) for r in records))
        assert await store.pending_calls("sess-1") == {}
        if backend == "local":
            assert store._counters == {"tb:sd:7:20261125": 4}
        return list(results)

    results = asyncio.run(run())
    assert results.count(True) == 1
    if backend == "redis":
        assert redis_client.xlen(STREAM) == 1
        assert int(redis_client.get("tb:sd:7:20261125")) == 4


def test_ids_keep_their_json_type(redis_client):
    async def run() -> tuple[bool, bool]:
        store = _stores(redis_client)[1]
        await store.remember_call("s", "9", _template())
        record = deferred.settled_record(_template(), billable=True, outcome="replayed")
        return await store.settle_call("s", 9, record), await store.settle_call("s", "9", record)

    assert asyncio.run(run()) == (False, True)


def test_unbillable_settlement_leaves_counters_alone(redis_client):
    async def run() -> None:
        store = _stores(redis_client)[1]
        template = _template()
        await store.remember_task(5, "task-a", 7, template, 3600)
        record = deferred.settled_record(template, billable=False, outcome="tool_error")
        assert record["unit_amount"] == 0
        assert await store.settle_task(5, "task-a", record)
        assert not await store.settle_task(5, "task-a", record)
        assert await store.task(5, "task-a") == (7, None)  # still bound to its key
        assert await store.task(5, "task-b") is None

    asyncio.run(run())
    assert redis_client.get("tb:sd:7:20261125") is None
    assert redis_client.xlen(STREAM) == 1


def test_settled_call_id_is_derived_and_stable():
    original = str(uuid.uuid4())
    assert deferred.settled_call_id(original) == deferred.settled_call_id(original)
    assert deferred.settled_call_id(original) != original
    assert deferred.task_ttl({"ttl": 300_000}) == 3600
    assert deferred.task_ttl({"ttl": 10**12}) == deferred.TASK_TTL_MAX
    assert deferred.task_ttl({}) == deferred.TASK_TTL_DEFAULT

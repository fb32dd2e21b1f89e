"""The drain: batches into the ledger, crash windows re-claimed, nothing lost or doubled."""

import json
import time
import uuid

import pytest

from gateway.metering import GROUP, new_call_id, usage_record
from gateway.models import UsageEvent
from gateway.usage import usage_drain
from tests.gateway.conftest import entitlement

pytestmark = pytest.mark.django_db
STREAM = "tb:usage"


def _push(redis_client, n, billable=True):
    ent = entitlement("io.github.acme/x")
    ids = []
    for _ in range(n):
        cid = new_call_id()
        record = usage_record(
            call_id=str(cid),
            ent=ent,
            tool="ok",
            amount=5,
            billable=billable,
            outcome="success" if billable else "tool_error",
            latency_ms=3,
            occurred_at=time.time(),
        )
        redis_client.xadd(STREAM, {"e": json.dumps(record)})
        ids.append(cid)
    return ids


def test_drain_moves_everything_once(redis_client):
    ids = _push(redis_client, 25)
    _push(redis_client, 5, billable=False)
    assert usage_drain(client=redis_client, consumer="a", batch=10) == 30
    assert usage_drain(client=redis_client, consumer="a", batch=10) == 0
    assert set(UsageEvent.objects.filter(billable=True).values_list("call_id", flat=True)) == set(
        ids
    )
    assert UsageEvent.objects.filter(billable=False, unit_amount=0).count() == 5
    assert redis_client.xlen(STREAM) == 0  # acknowledged entries are deleted


def test_entries_a_dead_consumer_read_are_reclaimed(redis_client):
    """Crash after XREADGROUP, before the commit: the entries stay pending, then re-claimed."""
    ids = _push(redis_client, 12)
    redis_client.xgroup_create(STREAM, GROUP, id="0")
    redis_client.xreadgroup(GROUP, "dead", {STREAM: ">"}, count=100)  # then killed
    assert usage_drain(client=redis_client, consumer="new", claim_idle_ms=60_000) == 0
    assert UsageEvent.objects.count() == 0  # not idle long enough yet: left alone
    time.sleep(0.05)
    assert usage_drain(client=redis_client, consumer="new", claim_idle_ms=10) == 12
    assert redis_client.xpending(STREAM, GROUP)["pending"] == 0
    assert set(UsageEvent.objects.values_list("call_id", flat=True)) == set(ids)


def test_committed_but_unacknowledged_batch_is_not_doubled(redis_client):
    """Crash after the commit, before XACK: the re-claimed batch inserts nothing new."""
    from gateway.services import usage_events_write

    _push(redis_client, 8)
    redis_client.xgroup_create(STREAM, GROUP, id="0")
    entries = redis_client.xreadgroup(GROUP, "dead", {STREAM: ">"}, count=100)[0][1]
    usage_events_write(records=[json.loads(f[b"e"]) for _, f in entries])  # then killed
    time.sleep(0.05)
    assert usage_drain(client=redis_client, consumer="new", claim_idle_ms=10) == 0
    assert UsageEvent.objects.count() == 8
    assert redis_client.xpending(STREAM, GROUP)["pending"] == 0


def test_call_ids_are_uuid7_and_ordered():
    ids = [new_call_id() for _ in range(1000)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    ms = [i.int >> 80 for i in ids]
    assert ms == sorted(ms)
    assert len(set(ids)) == 1000

"""The ledger side of the usage queue: drain the Redis stream into PostgreSQL.

Stream `tb:usage`, consumer group `ledger`. Each run first re-claims entries another consumer
read but never acknowledged for GATEWAY_USAGE_CLAIM_IDLE_MS (a killed worker), then reads new
ones. A batch is written in one transaction (unique call_id, conflicts ignored) and only then
XACKed and XDELed, so a crash anywhere repeats at most one batch and the repeat inserts nothing.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from functools import lru_cache
from typing import Any

import redis
from django.conf import settings
from django.db.models import Count

from gateway.metering import DRAIN_BATCH, DRAIN_MAX_BATCHES, GROUP
from gateway.models import MeterReport, MeterReportStatus, UsageEvent, UsageOutcome
from gateway.services import usage_events_write

# A call admitted by a gateway process that died: settle it once, as not billed, and give its
# reserved quota and spend back (the process's own record, if it ever comes, refunds nothing).
_SWEEP_LUA = """
if redis.call('HDEL', 'tb:inflight', ARGV[1]) == 0 then return 0 end
redis.call('XADD', ARGV[2], '*', 'e', ARGV[3])
for i = 4, #ARGV, 2 do redis.call('DECRBY', ARGV[i], ARGV[i + 1]) end
return 1
"""
# A call younger than this is left alone even when its process looks dead.
INFLIGHT_GRACE_SECONDS = 60.0
# An entry of a live process this old and not in the ledger is no running call: forget it.
INFLIGHT_FORGET_SECONDS = 24 * 3600.0


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    # Off the hot path: a slower timeout than the gateway's is fine here.
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)


def redis_client() -> redis.Redis:
    return _client(settings.REDIS_URL)


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _ensure_group(client: redis.Redis, stream: str) -> None:
    try:
        client.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _write_and_ack(client: redis.Redis, stream: str, entries: list[Any]) -> int:
    ids = [entry_id for entry_id, _ in entries]
    records = [json.loads(fields[b"e"]) for _, fields in entries if fields and b"e" in fields]
    moved = usage_events_write(records=records) if records else 0
    if ids:  # only after the commit above
        pipe = client.pipeline(transaction=False)
        pipe.xack(stream, GROUP, *ids)
        pipe.xdel(stream, *ids)
        pipe.execute()
    return moved


def usage_drain(
    *,
    client: redis.Redis,
    consumer: str,
    batch: int = DRAIN_BATCH,
    max_batches: int = DRAIN_MAX_BATCHES,
    claim_idle_ms: int | None = None,
) -> int:
    """Move up to `max_batches` batches into the ledger; returns the number of new rows.

    Safe to run concurrently (the group hands each entry to one consumer) and repeatedly.
    """
    stream = settings.GATEWAY_USAGE_STREAM
    idle = settings.GATEWAY_USAGE_CLAIM_IDLE_MS if claim_idle_ms is None else claim_idle_ms
    _ensure_group(client, stream)
    moved, batches = 0, 0
    start = "0-0"
    while batches < max_batches:
        reply: Any = client.xautoclaim(stream, GROUP, consumer, idle, start_id=start, count=batch)
        start, entries = reply[0], reply[1]
        if entries:
            moved += _write_and_ack(client, stream, entries)
            batches += 1
        if start in (b"0-0", "0-0") or not entries:
            break
    while batches < max_batches:
        read: Any = client.xreadgroup(GROUP, consumer, {stream: ">"}, count=batch)
        if not read or not read[0][1]:
            break
        entries = read[0][1]
        moved += _write_and_ack(client, stream, entries)
        batches += 1
        if len(entries) < batch:
            break
    return moved


def inflight_sweep(
    *, client: redis.Redis, now: float, grace: float = INFLIGHT_GRACE_SECONDS
) -> int:
    """Settle the in-flight calls of gateway processes whose heartbeat is gone.

    Every Redis-admitted tools/call sits in `tb:inflight` from admission until its record is
    written. A process killed in between (kill -9, OOM, a lost machine) leaves entries behind;
    once its heartbeat (`tb:gw:<id>`) has expired they become ledger rows with outcome
    `gateway_lost`, not billed, and their reservations are refunded. A mark whose call is in
    the ledger already is only removed: its record went around Redis (the in-process queue,
    while Redis was unreachable), so the call was recorded and nothing is refunded. Returns how
    many calls were settled as lost."""
    stream = settings.GATEWAY_USAGE_STREAM
    sweep = client.register_script(_SWEEP_LUA)
    old: dict[str, Any] = {}
    for call_id, raw in client.hscan_iter("tb:inflight", count=500):
        entry = json.loads(raw)
        if float(entry["a"]) <= now - grace:
            old[call_id.decode()] = entry
    if not old:
        return 0
    recorded = UsageEvent.objects.filter(call_id__in=list(old)).values_list("call_id", flat=True)
    for call_id in recorded:
        client.hdel("tb:inflight", str(call_id))
        del old[str(call_id)]
    alive: dict[str, bool] = {}
    swept = 0
    for call_id, entry in old.items():
        gateway_id = str(entry["g"])
        if gateway_id not in alive:
            alive[gateway_id] = bool(client.exists(f"tb:gw:{gateway_id}"))
        if alive[gateway_id]:
            if float(entry["a"]) < now - INFLIGHT_FORGET_SECONDS:
                client.hdel("tb:inflight", call_id)  # no call runs this long: only forget it
            continue
        record = {
            "call_id": call_id,
            "key_id": int(entry["k"]),
            "license_id": int(entry["l"]),
            "listing_id": int(entry["s"]),
            "plan_id": int(entry["p"]),
            "tool": str(entry["t"])[:200],
            "unit_amount": 0,
            "currency": entry.get("cu") or "usd",
            "billable": False,
            "outcome": UsageOutcome.GATEWAY_LOST.value,
            "latency_ms": 0,
            "occurred_at": float(entry["a"]),
            "stripe_customer_id": entry.get("sc") or "",
            "meter_event_name": entry.get("m") or "",
        }
        flat = entry.get("r") or []  # cjson encodes an empty table as {}
        args: list[Any] = [call_id, stream, json.dumps(record)]
        args += list(flat) if isinstance(flat, list) else []
        swept += int(sweep(args=args))
    return swept


def reported_pairs(*, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """(meter, customer) pairs with reported usage in the window, with Stripe's meter id."""
    from billing.stripe_client import get_client

    window = {"window_start__gte": start, "window_start__lt": end}
    pairs = list(
        MeterReport.objects.filter(status=MeterReportStatus.SENT, **window)
        .values("meter_event_name", "stripe_customer_id")
        .annotate(n=Count("id"))
    )
    if not pairs:
        return []
    meters = {m.event_name: m.id for m in get_client().v1.billing.meters.list().auto_paging_iter()}
    return [{**p, "meter_id": meters.get(p["meter_event_name"], "")} for p in pairs]

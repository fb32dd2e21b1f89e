"""Usage metering: call ids, the usage record, the queues between gateway and ledger, metrics.

A finished tools/call (billable or not) becomes one JSON record. With Redis it is XADDed to the
stream `tb:usage` (consumer group `ledger`) in the same script that refunds an unbillable call's
reservations (gateway.ratelimit); `usage_drain` (Celery) moves batches into PostgreSQL, unique on
call_id, and acknowledges only after the commit, so a worker killed mid-batch loses nothing
(the batch stays pending and is re-claimed) and doubles nothing (the insert ignores known ids).
Without Redis (the demo, or an outage) records go to an in-process queue that an asyncio task
writes to the ledger every half second.

Metrics are per process (prometheus_client's default registry); with several worker processes
scrape each one, or set PROMETHEUS_MULTIPROC_DIR before start for the library's multiprocess mode.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from functools import lru_cache
from typing import Any

from asgiref.sync import sync_to_async
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from gateway import fastjson

logger = logging.getLogger(__name__)

GROUP = "ledger"
_random = random.Random()  # noqa: S311 (uniqueness, not secrecy: see new_call_id)
# A forked worker must not replay its parent's sequence (duplicate call ids would be dropped
# by the ledger's unique constraint): reseed from the OS in every child.
os.register_at_fork(after_in_child=_random.seed)
# One XREADGROUP batch; a bulk_create of this size is one INSERT of a few hundred kB.
DRAIN_BATCH = 1000
# Upper bound of one drain run (then the next beat tick continues), so a backlog cannot pin a
# worker past the task's time limit.
DRAIN_MAX_BATCHES = 200

CALLS = Counter(
    "toolbooth_gateway_calls_total",
    "Finished tools/call requests by outcome.",
    ["listing", "tool", "outcome"],
)
REQUESTS = Counter(
    "toolbooth_gateway_requests_total", "Gateway requests by MCP method family.", ["listing"]
)
REJECTED = Counter(
    "toolbooth_gateway_rejected_total",
    "Requests refused by the gateway (auth, rate limit, quota, spend cap, unavailable).",
    ["listing", "reason"],
)
LATENCY = Histogram(
    "toolbooth_gateway_call_seconds",
    "tools/call latency through the gateway, to the end of the response.",
    ["listing", "tool"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


# `.labels()` takes a lock and builds a key on every call; the hot path reuses the children.
@lru_cache(maxsize=4096)
def calls_metric(listing: str, tool: str, outcome: str) -> Any:
    return CALLS.labels(listing, tool, outcome)


@lru_cache(maxsize=4096)
def latency_metric(listing: str, tool: str) -> Any:
    return LATENCY.labels(listing, tool)


@lru_cache(maxsize=4096)
def requests_metric(listing: str) -> Any:
    return REQUESTS.labels(listing)


@lru_cache(maxsize=4096)
def rejected_metric(listing: str, reason: str) -> Any:
    return REJECTED.labels(listing, reason)


def metrics_payload() -> bytes:
    """The exposition text: multiprocess-aggregated when PROMETHEUS_MULTIPROC_DIR is set."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


def new_call_id() -> uuid.UUID:
    """UUIDv7 (RFC 9562): 48-bit Unix ms, version 7, variant, 74 random bits; sorts by time.

    The bits only need to be unique, not secret (a receipt shows the id to its buyer), so they
    come from the per-process PRNG (seeded from the OS) rather than a getrandom() syscall."""
    ms = time.time_ns() // 1_000_000
    rand = _random.getrandbits(80)
    value = (ms & 0xFFFFFFFFFFFF) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & 0x3FFFFFFFFFFFFFFF
    return uuid.UUID(int=value)


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class LocalUsageQueue:
    """The in-process queue: records written to the ledger by an asyncio task.

    Used when there is no Redis (the demo) and while Redis is down. A crash loses at most the
    last half second of records, which during an outage are free calls only (paid ones fail
    closed), and in the demo nothing real is billed.
    """

    INTERVAL = 0.5

    def __init__(self) -> None:
        self._items: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    def put(self, record: dict[str, Any]) -> None:
        self._items.append(record)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def __len__(self) -> int:
        return len(self._items)

    async def _run(self) -> None:
        while self._items:
            await asyncio.sleep(self.INTERVAL)
            await self.flush()

    async def flush(self) -> int:
        from gateway.services import usage_events_write

        batch, self._items = self._items, []
        if not batch:
            return 0
        try:
            return await sync_to_async(usage_events_write)(records=batch)
        except Exception:
            logger.exception("gateway.local_usage_flush_failed", extra={"n": len(batch)})
            self._items[:0] = batch
            return 0


def usage_record(
    *,
    call_id: str,
    ent: Any,
    tool: str,
    amount: int,
    billable: bool,
    outcome: str,
    latency_ms: int,
    occurred_at: float,
) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "key_id": ent.key_id,
        "license_id": ent.license_id,
        "listing_id": ent.listing_id,
        "plan_id": ent.plan_id,
        "tool": tool[:200],
        "unit_amount": amount if billable else 0,
        "currency": ent.currency,
        "billable": billable,
        "outcome": outcome,
        "latency_ms": latency_ms,
        "occurred_at": occurred_at,
        "stripe_customer_id": ent.stripe_customer_id or "",
        "meter_event_name": ent.meter_event_name or "",
    }


def record_json(record: dict[str, Any]) -> bytes:
    return fastjson.dumps(record)

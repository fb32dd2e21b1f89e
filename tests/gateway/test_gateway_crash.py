"""A gateway process killed mid-call loses no usage: its in-flight calls become ledger rows.

Real gateway processes, the scripted upstream's `slow` tool (answers after 3 s), real Redis and
the real drain. The process is killed with SIGKILL while the call waits on the upstream; after
its heartbeat is gone the sweeper records the call as `gateway_lost` (not billed) and gives
back the quota it had reserved. A live process's calls are never swept.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time

import httpx
import pytest

from gateway.models import UsageEvent
from gateway.usage import inflight_sweep
from tests.gateway.conftest import (
    PORT_BASE,
    SCRIPTED_PORT,
    drain,
    post,
    rpc,
    start_gateway,
    stop,
)

pytestmark = pytest.mark.django_db(transaction=True)

GW_PORT = PORT_BASE + 42
QUOTA = 5


def _slow_call_in_background(base: str, name: str, key: str) -> threading.Thread:
    def go() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the gateway dies under this request
            post(base, name, rpc("tools/call", {"name": "slow", "arguments": {}}), key)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def _wait_inflight(redis_client, n: int, timeout: float = 5) -> dict[bytes, bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = redis_client.hgetall("tb:inflight")
        if len(entries) == n:
            return entries
        time.sleep(0.02)
    raise AssertionError(f"expected {n} in-flight calls, saw {redis_client.hlen('tb:inflight')}")


def _quota_key(redis_client) -> bytes:
    keys = list(redis_client.scan_iter("tb:q:*"))
    assert len(keys) == 1
    return keys[0]


def test_calls_of_a_killed_gateway_are_recorded_and_refunded(
    upstream_processes, hosted, seed_key, redis_client
):
    name = hosted(port=SCRIPTED_PORT)
    key = seed_key(name, included_calls=QUOTA, hard_cap=True, unit_amount=0)
    proc = start_gateway(GW_PORT, GATEWAY_UPSTREAM_READ_TIMEOUT="5")
    base = f"http://127.0.0.1:{GW_PORT}"
    try:
        done = post(base, name, rpc("tools/call", {"name": "ok", "arguments": {}}), key)
        assert done.status_code == 200
        _wait_inflight(redis_client, 0)  # a finished call leaves nothing in flight
        _slow_call_in_background(base, name, key)
        entries = _wait_inflight(redis_client, 1)
        assert int(redis_client.get(_quota_key(redis_client))) == 2  # reserved
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    finally:
        stop(proc)
    [(call_id, raw)] = entries.items()
    entry = json.loads(raw)
    gateway_alive = f"tb:gw:{entry['g']}"
    assert redis_client.exists(gateway_alive)  # the dead process's heartbeat has not expired
    later = time.time() + 120
    assert inflight_sweep(client=redis_client, now=later) == 0  # not yet: it may be alive
    redis_client.delete(gateway_alive)  # what its TTL does 30 s after the last beat
    assert inflight_sweep(client=redis_client, now=time.time()) == 0  # inside the grace
    assert inflight_sweep(client=redis_client, now=later) == 1
    assert inflight_sweep(client=redis_client, now=later) == 0  # once
    assert redis_client.hlen("tb:inflight") == 0
    assert int(redis_client.get(_quota_key(redis_client))) == 1  # the lost call's unit is back
    assert drain() == 2
    lost = UsageEvent.objects.get(call_id=call_id.decode())
    assert (lost.outcome, lost.billable, lost.unit_amount, lost.tool) == (
        "gateway_lost",
        False,
        0,
        "slow",
    )
    assert UsageEvent.objects.filter(outcome="success").count() == 1


def test_calls_of_a_live_gateway_are_not_swept(upstream_processes, hosted, seed_key, redis_client):
    name = hosted(port=SCRIPTED_PORT)
    key = seed_key(name, unit_amount=2, daily_spend_cap=100)
    proc = start_gateway(GW_PORT, GATEWAY_UPSTREAM_READ_TIMEOUT="5")
    base = f"http://127.0.0.1:{GW_PORT}"
    try:
        thread = _slow_call_in_background(base, name, key)
        _wait_inflight(redis_client, 1)
        assert inflight_sweep(client=redis_client, now=time.time() + 120) == 0
        thread.join(10)
        _wait_inflight(redis_client, 0)  # its own record settled it
    finally:
        stop(proc)
    assert drain() == 1
    [event] = UsageEvent.objects.all()
    assert (event.outcome, event.billable, event.unit_amount) == ("success", True, 2)

"""kill -9 of Redis (append-only file on, as docker-compose runs it) under metered load, then a
restart from its files: every call answered with a charge is billed exactly once, and no call
that was refused or failed is billed.

Real parts: a private redis-server with `appendonly yes`, a gateway process, the scripted
upstream, eight clients on keep-alive connections, and the real drain into PostgreSQL. While
Redis is gone, priced calls fail closed (503); calls that were admitted before the kill and
answered after it reach the ledger through the gateway's in-process queue.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import redis

from gateway.models import UsageEvent
from gateway.proxy import RECEIPT_KEY
from gateway.usage import usage_drain
from tests.gateway.conftest import (
    PORT_BASE,
    rpc,
    seed_private,
    start,
    start_gateway,
    stop,
    wait_port,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

GW_PORT, REDIS_PORT = PORT_BASE + 44, PORT_BASE + 45
KILL_AT, AFTER, CLIENTS, PRICE = 1000, 1000, 8, 5  # calls before the kill; answers after


def _redis(tmp_path) -> subprocess.Popen[bytes]:
    cmd = ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(tmp_path)]
    return start(cmd, REDIS_PORT)


def test_redis_killed_under_load_loses_and_doubles_no_billed_call(gateway, hosted, tmp_path):
    name = hosted()
    server = _redis(tmp_path)
    proc = start_gateway(
        GW_PORT, REDIS_URL=f"redis://127.0.0.1:{REDIS_PORT}/0", GATEWAY_UPSTREAM_READ_TIMEOUT="5"
    )
    key = seed_private(REDIS_PORT, name, unit_amount=PRICE, rate_limit_per_minute=100_000)
    url = f"http://127.0.0.1:{GW_PORT}/mcp/{name}"
    headers = {
        "Authorization": f"Bearer {key}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    lock = threading.Lock()
    charged: list[str] = []  # call ids of answers that carried a charge
    statuses: dict[int, int] = {}
    sent, slowest = 0, 0.0
    done = threading.Event()

    def client() -> None:
        nonlocal sent, slowest
        with httpx.Client(timeout=10) as http:
            while not done.is_set():
                with lock:
                    sent += 1
                    rid = sent
                t0 = time.monotonic()
                body = rpc("tools/call", {"name": "ok", "arguments": {}}, rid=rid)
                r = http.post(url, json=body, headers=headers)
                took = time.monotonic() - t0
                receipt = r.json().get("result", {}).get("_meta", {}).get(RECEIPT_KEY)
                with lock:
                    slowest = max(slowest, took)
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code == 200 and receipt and receipt["amount"] == PRICE:
                        charged.append(receipt["call_id"])

    def wait_for(answers: int) -> None:
        deadline = time.monotonic() + 60
        while len(charged) < answers:
            assert time.monotonic() < deadline, statuses
            time.sleep(0.01)

    restarted = None
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(client) for _ in range(CLIENTS)]
            try:
                wait_for(KILL_AT)
                os.kill(server.pid, signal.SIGKILL)
                server.wait(5)
                time.sleep(0.5)
                restarted = _redis(tmp_path)  # the same files: the append-only log is replayed
                wait_port(REDIS_PORT)
                wait_for(len(charged) + AFTER)
            finally:
                done.set()
            for future in futures:
                future.result(30)
        time.sleep(1.5)  # records waiting on the in-process queue (flushed every 0.5 s)
    finally:
        stop(proc)  # shutdown writes what is deferred
        if restarted is not None:
            client_ = redis.Redis(port=REDIS_PORT)
            while usage_drain(client=client_, consumer="pytest") > 0:
                pass
            client_.close()
            stop(restarted)
        elif server.poll() is None:
            stop(server)

    assert statuses.get(503, 0) > 0, statuses  # the outage was felt: priced calls failed closed
    assert set(statuses) <= {200, 503}, statuses
    assert slowest < 2.0  # nobody waited on the dead Redis
    assert len(charged) == len(set(charged))
    billed = UsageEvent.objects.filter(billable=True)
    assert sorted(str(c) for c in billed.values_list("call_id", flat=True)) == sorted(charged)
    assert {e.unit_amount for e in billed} == {PRICE}

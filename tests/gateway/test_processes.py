"""Two gateway processes share limits, quotas, sessions and billing through Redis/PostgreSQL;
Redis killed or frozen (SIGSTOP) behaves as the written failure policy says and never hangs."""

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.models import UsageEvent
from gateway.proxy import RECEIPT_KEY
from tests.gateway.conftest import (
    PORT_BASE,
    drain,
    post,
    rpc,
    seed_private,
    start,
    start_gateway,
    stop,
    wait_port,
)

pytestmark = pytest.mark.django_db(transaction=True)
GW_A, GW_B = PORT_BASE + 21, PORT_BASE + 22
FAULT_REDIS, FAULT_GW = PORT_BASE + 40, PORT_BASE + 41


def call(base, name, key, tool="ok", rid=1, headers=None):
    body = rpc("tools/call", {"name": tool, "arguments": {}}, rid=rid)
    return post(base, name, body, key, headers)


@pytest.fixture
def two_gateways(gateway):
    a, b = start_gateway(GW_A), start_gateway(GW_B)
    yield f"http://127.0.0.1:{GW_A}", f"http://127.0.0.1:{GW_B}"
    stop(a)
    stop(b)


def test_limits_sessions_and_billing_hold_across_processes(two_gateways, hosted, seed_key):
    a, b = two_gateways
    name = hosted()
    limited = seed_key(name, rate_limit_per_minute=4)
    codes = [call(gw, name, limited, rid=i).status_code for i, gw in enumerate([a, b] * 3)]
    assert codes == [200, 200, 200, 200, 429, 429]

    quota = seed_key(name, included_calls=3, hard_cap=True, rate_limit_per_minute=600)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: call((a, b)[i % 2], name, quota, rid=i), range(10)))
    assert sorted(r.status_code for r in results) == [200] * 3 + [429] * 7

    owner, other = seed_key(name), seed_key(name)
    sid = post(a, name, rpc("initialize", {}), owner).headers["mcp-session-id"]
    assert (
        post(b, name, rpc("tools/list", {}, 2), owner, {"Mcp-Session-Id": sid}).status_code == 200
    )
    assert (
        post(b, name, rpc("tools/list", {}, 3), other, {"Mcp-Session-Id": sid}).status_code == 404
    )

    payer = seed_key(name, unit_amount=3)
    ids = [
        call((a, b)[i % 2], name, payer, rid=i).json()["result"]["_meta"][RECEIPT_KEY]["call_id"]
        for i in range(20)
    ]
    drain()
    billed = UsageEvent.objects.filter(billable=True, unit_amount=3)
    assert sorted(str(c) for c in billed.values_list("call_id", flat=True)) == sorted(ids)


@pytest.fixture
def fault_redis(tmp_path):
    proc = start(
        [
            "redis-server",
            "--port",
            str(FAULT_REDIS),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        FAULT_REDIS,
    )
    yield proc
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
    stop(proc)


@pytest.fixture
def fault_gateway(gateway, fault_redis):
    proc = start_gateway(FAULT_GW, REDIS_URL=f"redis://127.0.0.1:{FAULT_REDIS}/0")
    yield f"http://127.0.0.1:{FAULT_GW}"
    stop(proc)


def _timed(fn):
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


@pytest.mark.parametrize("fault", ["kill", "sigstop"])
def test_redis_failure_policy(fault_gateway, fault_redis, hosted, fault):
    gw = fault_gateway
    name = hosted()
    paid = seed_private(FAULT_REDIS, name, unit_amount=5)
    free = seed_private(FAULT_REDIS, name, unit_amount=0, plan_kind="free", rate_limit_per_minute=3)
    assert call(gw, name, paid).status_code == 200
    assert call(gw, name, free).status_code == 200  # warms the in-process copy

    if fault == "kill":
        fault_redis.kill()
        fault_redis.wait()
    else:
        os.kill(fault_redis.pid, signal.SIGSTOP)

    refused, took = _timed(lambda: call(gw, name, paid, rid=7))
    assert refused.status_code == 503
    assert refused.json()["id"] == 7
    assert refused.headers["retry-after"] == "1"
    assert took < 1.0  # one 100 ms Redis timeout at most, never a hang
    listed, took = _timed(lambda: post(gw, name, rpc("tools/list", {}, 8), paid))
    assert listed.status_code == 200
    assert took < 1.0
    # Free calls pass on the in-process limiter (3/min, one already used in Redis's window
    # does not count here) and are recorded on the in-process queue.
    responses = [call(gw, name, free, rid=i) for i in range(5)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
    time.sleep(1.2)  # the local queue flushes every 0.5 s
    ids = {r.json()["result"]["_meta"][RECEIPT_KEY]["call_id"] for r in responses[:3]}
    ledger = UsageEvent.objects.filter(outcome="success", billable=True, unit_amount=0)
    assert ids <= {str(c) for c in ledger.values_list("call_id", flat=True)}

    if fault == "sigstop":
        os.kill(fault_redis.pid, signal.SIGCONT)
    else:
        fault_redis_restart = subprocess.Popen(fault_redis.args)
        wait_port(FAULT_REDIS)
        try:
            paid2 = seed_private(FAULT_REDIS, name, unit_amount=5)
            time.sleep(1.1)  # the breaker retries Redis after 1 s
            assert call(gw, name, paid2).status_code == 200
        finally:
            stop(fault_redis_restart)
        return
    time.sleep(1.1)
    assert call(gw, name, paid, rid=9).status_code == 200  # recovered


def test_a_record_written_around_frozen_redis_is_not_swept_as_lost(fault_redis, gateway, hosted):
    """Redis freezes while a paid call runs: the call's record reaches the ledger through the
    in-process queue, and its in-flight mark stays behind in Redis. The sweeper finds the call
    in the ledger, so it only removes the mark: no refund, no `gateway_lost` row."""
    import redis

    from gateway.usage import inflight_sweep

    proc = start_gateway(
        FAULT_GW,
        REDIS_URL=f"redis://127.0.0.1:{FAULT_REDIS}/0",
        GATEWAY_UPSTREAM_READ_TIMEOUT="5",
    )
    client = redis.Redis(port=FAULT_REDIS)
    name = hosted()
    key = seed_private(FAULT_REDIS, name, unit_amount=5, daily_spend_cap=100)
    try:
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(call, f"http://127.0.0.1:{FAULT_GW}", name, key, "slow")
            deadline = time.monotonic() + 5
            while client.hlen("tb:inflight") == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            [spend_key] = client.keys("tb:sd:*")
            assert int(client.get(spend_key)) == 5  # reserved at admission
            os.kill(fault_redis.pid, signal.SIGSTOP)
            response = answer.result(10)
        assert response.status_code == 200
        call_id = response.json()["result"]["_meta"][RECEIPT_KEY]["call_id"]
        deadline = time.monotonic() + 5
        while not UsageEvent.objects.filter(call_id=call_id).exists():
            assert time.monotonic() < deadline, "the record never reached the ledger"
            time.sleep(0.1)
    finally:
        os.kill(fault_redis.pid, signal.SIGCONT)
        stop(proc)
    assert client.hexists("tb:inflight", call_id)  # the record never passed through Redis
    assert inflight_sweep(client=client, now=time.time() + 120) == 0
    assert client.hlen("tb:inflight") == 0
    assert int(client.get(spend_key)) == 5  # nothing refunded
    [event] = UsageEvent.objects.all()
    assert (str(event.call_id), event.outcome, event.billable) == (call_id, "success", True)


def test_a_full_upstream_gets_503_after_the_connect_timeout_unbilled(gateway, hosted, seed_key):
    """One slot per upstream: a slow call holds it, the next call waits the connect timeout and
    gets 503 + Retry-After (not billed) instead of queueing behind it for ever."""
    port = PORT_BASE + 46
    proc = start_gateway(
        port,
        GATEWAY_UPSTREAM_POOL_SIZE="1",
        GATEWAY_UPSTREAM_CONNECT_TIMEOUT="0.3",
        GATEWAY_UPSTREAM_READ_TIMEOUT="5",
    )
    base = f"http://127.0.0.1:{port}"
    name = hosted()
    key = seed_key(name, unit_amount=2)
    try:
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(call, base, name, key, "slow", 1)
            time.sleep(0.5)  # the slow call holds the only slot
            busy, took = _timed(lambda: call(base, name, key, "ok", 2))
            assert (busy.status_code, busy.headers["retry-after"], busy.json()["id"]) == (
                503,
                "1",
                2,
            )
            assert 0.25 < took < 2.0
            assert slow.result(10).status_code == 200
        assert call(base, name, key, "ok", 3).status_code == 200  # the slot came back
    finally:
        stop(proc)
    drain()
    outcomes = sorted(UsageEvent.objects.values_list("outcome", "billable", "unit_amount"))
    assert outcomes == [("gateway_error", False, 0), ("success", True, 2), ("success", True, 2)]


class _HoldingProxy:
    """A TCP relay to PostgreSQL that can stop passing bytes (a hung database, as a frozen
    server or a dead network path looks to the client) and pass them on again later."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.target = target
        self.flowing = threading.Event()
        self.flowing.set()
        self.server = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                self.flowing.wait()
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.flowing.set()
        self.server.close()


def test_a_hung_database_costs_a_bounded_wait_and_a_503(gateway, hosted, seed_key):
    """PostgreSQL stops answering: a key Redis knows keeps working on the upstream config the
    process had (stale if error); a key only PostgreSQL could confirm gets 503 + Retry-After
    after GATEWAY_DB_TIMEOUT, not a hang; once PostgreSQL answers again all is as before."""
    from django.db import connection

    db = connection.settings_dict
    proxy = _HoldingProxy(PORT_BASE + 47, (db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)))
    port = PORT_BASE + 48
    url = f"postgres://{db['USER']}@127.0.0.1:{PORT_BASE + 47}/{db['NAME']}"
    proc = start_gateway(port, DATABASE_URL=url, GATEWAY_DB_TIMEOUT="1")
    base = f"http://127.0.0.1:{port}"
    name = hosted()
    cached = seed_key(name)
    unknown = seed_key(name, ttl=1)
    try:
        assert call(base, name, cached).status_code == 200
        proxy.flowing.clear()
        time.sleep(1.1)  # the upstream config (0.5 s) and the second key's cache entry expire
        served, took = _timed(lambda: call(base, name, cached, rid=2))
        assert served.status_code == 200  # on the upstream config it had
        assert took < 2.5
        refused, took = _timed(lambda: call(base, name, unknown, rid=3))
        assert (refused.status_code, refused.headers["retry-after"]) == (503, "1")
        assert (refused.json()["id"], refused.json()["error"]["code"]) == (3, -32050)
        assert took < 2.5
        proxy.flowing.set()
        time.sleep(0.2)  # the held queries finish
        assert call(base, name, unknown, rid=4).status_code == 401  # not in PostgreSQL
        assert call(base, name, cached, rid=5).status_code == 200
    finally:
        stop(proc)
        proxy.close()


def test_a_recently_served_key_outlives_a_database_outage_for_a_bounded_time(
    gateway, hosted, redis_client
):
    """PostgreSQL stops answering after the gateway served a real key: once the key's cache
    entry expires, the key keeps working (and is billed) from its stale copy until
    GATEWAY_STALE_ENTITLEMENT_SECONDS after PostgreSQL last confirmed it, then fails closed
    (503). A key PostgreSQL never confirmed gets 503, and so does a key revoked before the
    outage. Once PostgreSQL answers, the usage recorded meanwhile lands in the ledger once."""
    from django.conf import settings
    from django.db import connection

    from billing.services.licenses import api_key_create, api_key_revoke
    from tests.billing.factories import MeteredLicenseFactory
    from tests.gateway.factories import HostedUpstreamFactory

    up = HostedUpstreamFactory()
    name = up.listing.name
    lic = MeteredLicenseFactory(plan_price__plan__listing=up.listing, plan_price__per_call_amount=4)
    served, raw = api_key_create(license=lic)
    revoked, revoked_raw = api_key_create(license=lic)
    _, unseen_raw = api_key_create(license=lic)  # in PostgreSQL, never served before
    db = connection.settings_dict
    proxy = _HoldingProxy(PORT_BASE + 50, (db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)))
    port = PORT_BASE + 51
    proc = start_gateway(
        port,
        DATABASE_URL=f"postgres://{db['USER']}@127.0.0.1:{PORT_BASE + 50}/{db['NAME']}",
        GATEWAY_DB_TIMEOUT="0.5",
        GATEWAY_ENTITLEMENT_CACHE_SECONDS="1",
        GATEWAY_STALE_ENTITLEMENT_SECONDS="8",
    )
    base = f"http://127.0.0.1:{port}"
    receipts: list[str] = []

    def paid(rid: int):
        answer = call(base, name, raw, rid=rid)
        if answer.status_code == 200:
            receipt = answer.json()["result"]["_meta"][RECEIPT_KEY]
            assert receipt["amount"] == 4
            receipts.append(receipt["call_id"])
        return answer

    try:
        assert call(base, name, revoked_raw, rid=1).status_code == 200
        api_key_revoke(key_id=revoked.pk)  # before the outage: its stale copy goes too
        confirmed = time.monotonic()
        assert paid(2).status_code == 200  # PostgreSQL confirms the key: a stale copy is kept
        assert redis_client.ttl(f"tb:ents:{served.key_hash}") in (6, 7)  # 8 s - the cache's 1
        assert not redis_client.exists(f"tb:ents:{revoked.key_hash}")

        proxy.flowing.clear()
        time.sleep(1.2)  # the cache entry (1 s) and the upstream config (0.5 s) expire
        during, took = _timed(lambda: paid(3))
        assert during.status_code == 200, during.text  # and billed (paid() checks the receipt)
        assert took < 2.0  # the upstream config's and the entitlement's GATEWAY_DB_TIMEOUT
        for key, rid in ((unseen_raw, 4), (revoked_raw, 5)):
            refused = call(base, name, key, rid=rid)
            assert (refused.status_code, refused.headers["retry-after"]) == (503, "1")
            assert refused.json()["error"]["code"] == -32050
        for rid in range(6, 9):  # inside the bound every call is served, most from the cache
            assert paid(rid).status_code == 200
        with ThreadPoolExecutor(16) as pool:  # under load, at most one request waits on a probe
            timed = list(pool.map(lambda rid: _timed(lambda: paid(rid)), range(100, 116)))
        assert [r.status_code for r, _ in timed] == [200] * 16
        slow = sorted(took for _, took in timed if took > 0.6)  # waited a GATEWAY_DB_TIMEOUT
        assert len(slow) <= 1, slow
        assert time.monotonic() < confirmed + 7
        time.sleep(max(0.0, confirmed + 8.3 - time.monotonic()))
        late = paid(9)  # past the bound: fails closed
        assert (late.status_code, late.headers["retry-after"]) == (503, "1")
        stream = settings.GATEWAY_USAGE_STREAM
        assert redis_client.xlen(stream) >= 5  # the outage's usage waits in the stream

        proxy.flowing.set()
        time.sleep(0.3)  # the held queries finish
        deadline = time.monotonic() + 5
        while (back := paid(10)).status_code != 200:
            assert time.monotonic() < deadline, back.text
            time.sleep(0.2)
        assert call(base, name, revoked_raw, rid=11).status_code == 401
    finally:
        stop(proc)
        proxy.close()
    drain()
    billed = UsageEvent.objects.filter(key_id=served.pk, billable=True)
    assert len(receipts) == 22  # rid 2, 3, 6, 7, 8, 10 and the 16 concurrent ones
    assert sorted(str(c) for c in billed.values_list("call_id", flat=True)) == sorted(receipts)
    assert set(billed.values_list("unit_amount", flat=True)) == {4}

"""Floods of invalid keys are throttled per client address (gateway.authfail), through a real
gateway process (uvicorn) on real Redis and PostgreSQL. Clients get their own loopback
addresses (127.0.0.2, ...): Linux answers the whole of 127/8."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from billing.keys import _checksum, key_generate, key_is_well_formed
from billing.services.licenses import api_key_create
from tests.billing.factories import LicenseFactory
from tests.gateway.conftest import PORT_BASE, rpc, start_gateway, stop

pytestmark = pytest.mark.django_db(transaction=True)

PORT = PORT_BASE + 161
LIMIT = 5
PROXY = "127.0.0.9"  # the one trusted reverse proxy of this gateway


@pytest.fixture
def throttled_gateway(upstream_processes: None, redis_client: object) -> Iterator[str]:
    proc = start_gateway(
        PORT, GATEWAY_AUTH_FAILURES_PER_MINUTE=str(LIMIT), TRUSTED_PROXIES=f"{PROXY}/32"
    )
    # The window is a calendar minute: start well inside one, so the test cannot straddle two.
    if time.time() % 60 > 45:
        time.sleep(61 - time.time() % 60)
    yield f"http://127.0.0.1:{PORT}"
    stop(proc)


def client_from(address: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


def ping(http: httpx.Client, base: str, name: str, key: str | None, **headers: str):
    h = {"Accept": "application/json, text/event-stream"}
    if key:
        h["Authorization"] = f"Bearer {key}"
    return http.post(f"{base}/mcp/{name}", json=rpc("ping"), headers={**h, **headers})


def guess(prefix_of: str) -> str:
    """A well-formed key (valid checksum) that shares `prefix_of`'s first 20 characters."""
    body = prefix_of[:20] + key_generate(live=False)[20:-6]
    guessed = body + _checksum(body)
    assert key_is_well_formed(guessed)
    assert guessed != prefix_of
    return guessed


def test_invalid_keys_are_throttled_per_address_not_per_key(
    throttled_gateway, hosted, seed_key, redis_client
):
    base, name = throttled_gateway, hosted()
    owner_key = seed_key(name)
    attacker, owner = client_from("127.0.0.2"), client_from("127.0.0.3")
    with attacker, owner:
        for _ in range(LIMIT):  # guesses at the owner's key prefix: plain 401s up to the limit
            assert ping(attacker, base, name, guess(owner_key)).status_code == 401
        refused = ping(attacker, base, name, guess(owner_key))
        assert refused.status_code == 429
        retry = int(refused.headers["retry-after"])
        assert 1 <= retry <= 60
        assert refused.json()["error"] == {
            "code": -32029,
            "message": "Too many invalid keys from this address.",
            "data": {"retry_after": retry},
        }
        # Throttled: missing and malformed keys too, and a forged X-Forwarded-For from a peer
        # that is not a trusted proxy changes nothing.
        assert ping(attacker, base, name, None).status_code == 429
        assert ping(attacker, base, name, "tb_test_nonsense").status_code == 429
        spoofed = ping(attacker, base, name, guess(owner_key), **{"X-Forwarded-For": "192.0.2.1"})
        assert spoofed.status_code == 429
        # The owner, elsewhere, whose prefix was guessed at, is not affected at all.
        for _ in range(3):
            assert ping(owner, base, name, owner_key).status_code == 200
        # Another address still gets plain 401s for its own mistakes.
        with client_from("127.0.0.4") as bystander:
            assert ping(bystander, base, name, guess(owner_key)).status_code == 401
        # A key Redis knows keeps working from the throttled address itself (a key owner
        # behind the same address, e.g. a NAT, is not locked out).
        assert ping(attacker, base, name, owner_key).status_code == 200
    assert int(redis_client.get(f"tb:af:127.0.0.2:{int(time.time() // 60)}")) == LIMIT + 1  # type: ignore[attr-defined]


def test_throttled_address_keys_are_not_looked_up_in_postgresql(throttled_gateway, redis_client):
    from tests.gateway.factories import HostedUpstreamFactory

    up = HostedUpstreamFactory()
    lic = LicenseFactory(plan_price__plan__listing=up.listing, plan_price__per_call_amount=0)
    _key, raw = api_key_create(license=lic)  # a real key, in PostgreSQL only (not cached)
    base, name = throttled_gateway, up.listing.name
    with client_from("127.0.0.5") as attacker, client_from("127.0.0.6") as other:
        for _ in range(LIMIT + 1):
            ping(attacker, base, name, key_generate(live=False))
        # Cold keys from the throttled address are refused without a PostgreSQL read ...
        assert ping(attacker, base, name, raw).status_code == 429
        assert redis_client.get(f"tb:ent:{_key.key_hash}") is None  # type: ignore[attr-defined]
        # ... while the same key from elsewhere is read, cached and served.
        assert ping(other, base, name, raw).status_code == 200
        assert redis_client.get(f"tb:ent:{_key.key_hash}") is not None  # type: ignore[attr-defined]
        # Now that Redis knows it, it works from the throttled address too.
        assert ping(attacker, base, name, raw).status_code == 200


def test_behind_a_trusted_proxy_each_forwarded_client_counts_alone(throttled_gateway, hosted):
    base, name = throttled_gateway, hosted()
    with client_from(PROXY) as proxy:
        flood = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}  # the proxy appended .7
        for _ in range(LIMIT):
            assert ping(proxy, base, name, key_generate(live=False), **flood).status_code == 401
        assert ping(proxy, base, name, key_generate(live=False), **flood).status_code == 429
        # The client left of the proxy's entry is what the client wrote: it proves nothing.
        other = {"X-Forwarded-For": "198.51.100.1, 203.0.113.8"}
        assert ping(proxy, base, name, key_generate(live=False), **other).status_code == 401


def test_a_valid_key_never_touches_the_failure_counter(
    throttled_gateway, hosted, seed_key, redis_client
):
    base, name = throttled_gateway, hosted()
    key = seed_key(name)
    call = rpc("tools/call", {"name": "ok", "arguments": {}})
    headers = {"Accept": "application/json, text/event-stream", "Authorization": f"Bearer {key}"}
    with client_from("127.0.0.7") as http:
        for _ in range(LIMIT * 3):
            assert http.post(f"{base}/mcp/{name}", json=call, headers=headers).status_code == 200
            assert ping(http, base, name, key).status_code == 200
    assert redis_client.keys("tb:af:*") == []  # type: ignore[attr-defined]


def test_without_redis_each_process_counts_alone():
    """The demo (no REDIS_URL), or Redis failing: the count is kept in process."""
    import asyncio

    from gateway.authfail import AuthFailures

    failures = AuthFailures(None, 2)
    now = 60 * 16_667 + 20.0  # 20 s into a minute
    assert [asyncio.run(failures.failed("192.0.2.1", now)) for _ in range(3)] == [0, 0, 40]
    assert failures.retry_after("192.0.2.1", now + 10) == 30
    assert failures.retry_after("192.0.2.2", now) == 0
    assert failures.retry_after("192.0.2.1", now + 40) == 0  # the next minute
    assert asyncio.run(failures.failed("192.0.2.1", now + 40)) == 0

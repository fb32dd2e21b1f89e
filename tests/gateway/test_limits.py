"""Rate limits, quotas, spend caps and session binding through a real gateway process."""

import time

import pytest
from django.conf import settings

from billing.entitlements import ToolPrice
from gateway.proxy import RECEIPT_KEY
from tests.gateway.conftest import MCP_PORT, post, rpc

pytestmark = pytest.mark.django_db(transaction=True)


def call(gateway, name, key, tool="ok", rid=1):
    return post(gateway, name, rpc("tools/call", {"name": tool, "arguments": {}}, rid=rid), key)


def test_rate_limit_429_shape(gateway, hosted, seed_key):
    name = hosted()
    key = seed_key(name, rate_limit_per_minute=2)
    first = call(gateway, name, key, rid=1)
    assert first.headers["ratelimit-policy"] == '"tool-calls";q=2;w=60'
    assert first.headers["ratelimit"].startswith('"tool-calls";r=1;')
    assert call(gateway, name, key, rid=2).status_code == 200
    limited = call(gateway, name, key, rid="abc")
    assert limited.status_code == 429
    retry = int(limited.headers["retry-after"])
    assert 1 <= retry <= 30
    assert limited.headers["ratelimit-policy"] == '"tool-calls";q=2;w=60'
    assert limited.headers["ratelimit"] == f'"tool-calls";r=0;t={retry}'  # t agrees
    body = limited.json()
    assert body["id"] == "abc"
    assert body["error"]["code"] == -32029
    assert body["error"]["data"]["retry_after"] == retry
    # Other methods are not tool calls: they pass while the license is limited, counted in
    # their own per-key bucket.
    note = post(gateway, name, {"jsonrpc": "2.0", "method": "notifications/initialized"}, key)
    assert note.status_code == 202
    listed = post(gateway, name, rpc("tools/list", {}, 9), key)
    assert listed.status_code == 200
    assert listed.headers["ratelimit-policy"] == '"methods";q=600;w=60'
    # Another key of the same license shares the plan's limit; another license has its own.
    same = seed_key(name, rate_limit_per_minute=2, license_id=license_of(key))
    assert call(gateway, name, same).status_code == 429
    assert call(gateway, name, seed_key(name, rate_limit_per_minute=2)).status_code == 200


def license_of(raw: str) -> int:
    import redis

    from billing.keys import key_hash
    from gateway.ratelimit import entitlement_from_json

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return entitlement_from_json(client.get(f"tb:ent:{key_hash(raw)}")).license_id
    finally:
        client.close()


def test_quota_hard_cap_counts_only_billable_calls(gateway, hosted, seed_key):
    name = hosted()
    key = seed_key(name, included_calls=2, hard_cap=True, plan_kind="subscription")
    first = call(gateway, name, key, rid=1)
    assert first.json()["result"]["_meta"][RECEIPT_KEY] == {
        "call_id": first.json()["result"]["_meta"][RECEIPT_KEY]["call_id"],
        "amount": 0,
        "currency": "usd",
        "quota_remaining": 1,
    }
    assert call(gateway, name, key, "tool_error", 2).status_code == 200  # refunded
    assert call(gateway, name, key, "http500", 3).status_code == 500  # refunded
    assert (
        call(gateway, name, key, rid=4).json()["result"]["_meta"][RECEIPT_KEY]["quota_remaining"]
        == 0
    )
    refused = call(gateway, name, key, rid=5)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == -32030
    assert refused.json()["id"] == 5
    assert int(refused.headers["retry-after"]) > 3600
    # Free methods still work past the quota.
    assert post(gateway, name, rpc("tools/list", {}, 6), key).status_code == 200


def test_overage_is_billed_past_included_calls(gateway, hosted, seed_key):
    name = hosted()
    key = seed_key(
        name,
        plan_kind="subscription",
        included_calls=1,
        hard_cap=False,
        unit_amount=9,  # billing resolves a default tool's price to the overage price
        overage_unit_amount=9,
        tool_prices={"headers": ToolPrice(unit_amount=0)},
    )
    amounts = [
        call(gateway, name, key, tool, rid=i).json()["result"]["_meta"][RECEIPT_KEY]["amount"]
        for i, tool in enumerate(["ok", "ok", "headers"])
    ]
    # Past the included call a tool's own price wins over the overage price (a free one is 0).
    assert amounts == [0, 9, 0]


def test_spend_caps(gateway, hosted, seed_key):
    name = hosted()
    key = seed_key(name, unit_amount=5, daily_spend_cap=15)
    assert [call(gateway, name, key, rid=i).status_code for i in range(2)] == [200, 200]
    assert call(gateway, name, key, "tool_error", 3).status_code == 200  # reserved, refunded
    assert call(gateway, name, key, rid=4).status_code == 200  # 15 of 15
    capped = call(gateway, name, key, rid=5)
    assert capped.status_code == 429
    assert capped.json()["error"]["code"] == -32031
    assert 0 < int(capped.headers["retry-after"]) <= 86400
    monthly = seed_key(name, unit_amount=5, monthly_spend_cap=5)
    assert call(gateway, name, monthly, rid=1).status_code == 200
    assert call(gateway, name, monthly, rid=2).json()["error"]["code"] == -32031


def test_sessions_are_bound_to_the_key_that_opened_them(gateway, hosted, seed_key):
    name = hosted()
    owner, other = seed_key(name), seed_key(name)
    init = post(gateway, name, rpc("initialize", {"protocolVersion": "2025-06-18"}), owner)
    sid = init.headers["mcp-session-id"]
    h = {"Mcp-Session-Id": sid}
    assert post(gateway, name, rpc("tools/list", {}, 2), owner, h).status_code == 200
    stolen = post(gateway, name, rpc("tools/list", {}, 3), other, h)
    assert stolen.status_code == 404
    assert stolen.json()["id"] == 3
    made_up = post(gateway, name, rpc("tools/list", {}, 4), owner, {"Mcp-Session-Id": "nope"})
    assert made_up.status_code == 404


def test_revoked_key_stops_within_the_cache_ttl(gateway, hosted, seed_key, redis_client):
    """Billing deletes the cache entry on revoke; the next request re-reads PostgreSQL."""
    name = hosted()
    key = seed_key(name)
    assert call(gateway, name, key).status_code == 200
    from billing.keys import key_hash
    from billing.services.licenses import entitlement_cache_invalidate

    entitlement_cache_invalidate(key_hashes=[key_hash(key)])  # the key has no row: revoked
    started = time.monotonic()
    assert call(gateway, name, key).status_code == 401
    assert time.monotonic() - started < 5


def test_python_upstream_needs_its_own_host(gateway, hosted, seed_key):
    """A Python MCP upstream refuses a foreign Host (421); the gateway sends the upstream's."""
    name = hosted(port=MCP_PORT)
    key = seed_key(name)
    init = post(
        gateway,
        name,
        rpc(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        ),
        key,
        {"Host": "gw.example"},
    )
    assert init.status_code == 200

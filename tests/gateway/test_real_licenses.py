"""End to end with billing's real rows: license + key from billing's services, the gateway's
cache miss reads PostgreSQL, revocation stops the key, the drain updates last_used_at. Also the
demo shape: no Redis at all (in-process limiter, cache and usage queue)."""

import time

import pytest

from billing.services.licenses import api_key_create, api_key_revoke
from gateway.models import UsageEvent
from gateway.proxy import RECEIPT_KEY
from tests.billing.factories import LicenseFactory, MeteredLicenseFactory
from tests.gateway.conftest import PORT_BASE, drain, post, rpc, start_gateway, stop
from tests.gateway.factories import HostedUpstreamFactory

pytestmark = pytest.mark.django_db(transaction=True)


def call(base, name, key, rid=1, tool="ok"):
    return post(base, name, rpc("tools/call", {"name": tool, "arguments": {}}, rid=rid), key)


def _license(factory=LicenseFactory, **price):
    up = HostedUpstreamFactory()
    lic = factory(plan_price__plan__listing=up.listing, **price)
    key, raw = api_key_create(license=lic)
    return up.listing.name, lic, key, raw


def test_real_key_through_gateway_then_revoked(gateway, redis_client):
    name, lic, key, raw = _license(MeteredLicenseFactory, plan_price__per_call_amount=4)
    first = call(gateway, name, raw)
    assert first.status_code == 200
    assert first.json()["result"]["_meta"][RECEIPT_KEY]["amount"] == 4
    assert redis_client.ttl(f"tb:ent:{key.key_hash}") in range(1, 6)
    api_key_revoke(key_id=key.pk)  # deletes the cache entry on commit
    deadline = time.monotonic() + 5
    while call(gateway, name, raw).status_code != 401:
        assert time.monotonic() < deadline, "revoked key still works after 5 s"
        time.sleep(0.2)
    assert drain() == 1
    event = UsageEvent.objects.get()
    assert (event.key_id, event.license_id, event.unit_amount) == (key.pk, lic.pk, 4)
    assert event.stripe_customer_id == lic.creator_subscription.stripe_customer_id
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_demo_shape_without_redis():
    name, lic, key, raw = _license(plan_price__per_call_amount=0)
    lic.plan.rate_limit_per_minute = 2
    lic.plan.save()
    proc = start_gateway(PORT_BASE + 26, REDIS_URL="", CELERY_BROKER_URL="memory://")
    base = f"http://127.0.0.1:{PORT_BASE + 26}"
    try:
        assert [call(base, name, raw, rid=i).status_code for i in range(3)] == [200, 200, 429]
        time.sleep(1.2)  # the in-process queue writes every 0.5 s
        assert UsageEvent.objects.filter(key_id=key.pk).count() == 2
        _, owner_raw = api_key_create(license=lic)  # its own rate budget
        init = post(base, name, rpc("initialize", {}), owner_raw)
        _, other_raw = api_key_create(license=lic)
        sid = {"Mcp-Session-Id": init.headers["mcp-session-id"]}
        assert post(base, name, rpc("ping", {}, 2), other_raw, sid).status_code == 404
    finally:
        stop(proc)

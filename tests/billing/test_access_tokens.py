"""OAuth access tokens as billing credentials: admitted by hash like a key, expiring with the
token, cleared from the gateway's cache with their key and license, never listed as keys; and
the authorization server's rotation rules that decide when they stop (oauth.services)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from billing import keys
from billing.models import AccessToken, ApiKeyKind
from billing.selectors import api_key_list_for_license, entitlement_get_by_key_hash
from billing.services.licenses import (
    access_token_issue,
    access_tokens_purge,
    api_key_create,
    api_key_revoke,
    invalidate_licenses_on_commit,
    oauth_key_create,
)
from common.exceptions import ApplicationError
from oauth import services as oauth_services
from oauth.models import AuthorizationCode, AuthorizationRequest, Client, ClientKind, Connection
from tests.billing.factories import LicenseFactory

pytestmark = pytest.mark.django_db


def _connection(lic, user=None) -> Connection:
    client = Client.objects.create(
        client_id="client-1", kind=ClientKind.REGISTERED, name="Test client", metadata={}
    )
    key = oauth_key_create(license=lic, name="Test client")
    return Connection.objects.create(
        user=user or lic.buyer, client=client, key=key, resource="http://x/mcp/a", scopes=["mcp"]
    )


def test_a_token_admits_as_its_key_until_it_expires():
    lic = LicenseFactory()
    key = oauth_key_create(license=lic, name="Claude")
    token, raw = access_token_issue(key=key, seconds=60)
    assert keys.credential_is_well_formed(raw)
    assert not keys.key_is_well_formed(raw)
    ent = entitlement_get_by_key_hash(key_hash=keys.key_hash(raw))
    assert ent is not None
    assert (ent.key_id, ent.license_id, ent.listing_id) == (key.pk, lic.pk, lic.listing_id)
    assert ent.expires_at == pytest.approx(token.expires_at.timestamp())
    # The key row's own (discarded) secret is not the token.
    assert key.key_hash != token.token_hash

    AccessToken.objects.filter(pk=token.pk).update(expires_at=timezone.now())
    assert entitlement_get_by_key_hash(key_hash=keys.key_hash(raw)) is None


def test_a_revoked_connection_key_stops_its_tokens():
    lic = LicenseFactory()
    key = oauth_key_create(license=lic, name="Claude")
    _, raw = access_token_issue(key=key, seconds=60)
    api_key_revoke(key_id=key.pk)
    assert entitlement_get_by_key_hash(key_hash=keys.key_hash(raw)) is None
    key.refresh_from_db()
    with pytest.raises(ApplicationError):
        access_token_issue(key=key, seconds=60)


def test_tokens_are_cleared_from_the_gateway_cache_with_their_license(
    redis_client, django_capture_on_commit_callbacks
):
    lic = LicenseFactory()
    _, raw_key = api_key_create(license=lic)
    key = oauth_key_create(license=lic, name="Claude")
    _, raw = access_token_issue(key=key, seconds=60)
    cached = [f"tb:ent:{keys.key_hash(raw)}", f"tb:ents:{keys.key_hash(raw)}"]
    cached.append(f"tb:ent:{keys.key_hash(raw_key)}")
    for name in cached:
        redis_client.set(name, "{}")
    with django_capture_on_commit_callbacks(execute=True):
        invalidate_licenses_on_commit(license_ids=[lic.pk])
    assert [redis_client.exists(name) for name in cached] == [0, 0, 0]


def test_connections_are_not_keys():
    lic = LicenseFactory()
    own, _ = api_key_create(license=lic)
    oauth_key_create(license=lic, name="Claude")
    assert list(api_key_list_for_license(license=lic)) == [own]
    assert lic.keys.filter(kind=ApiKeyKind.OAUTH).count() == 1


def test_expired_tokens_are_purged_a_day_later():
    lic = LicenseFactory()
    key = oauth_key_create(license=lic, name="Claude")
    old, _ = access_token_issue(key=key, seconds=60)
    fresh, _ = access_token_issue(key=key, seconds=60)
    AccessToken.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(days=2))
    assert access_tokens_purge() == 1
    assert list(AccessToken.objects.values_list("pk", flat=True)) == [fresh.pk]


def test_refresh_rotation_and_reuse_revokes_the_connection():
    lic = LicenseFactory()
    connection = _connection(lic)
    first = oauth_services._issue(connection)
    second = oauth_services.refresh_exchange(
        client_id="client-1", refresh_token=first.refresh_token
    )
    assert second.refresh_token != first.refresh_token
    # Another client cannot use it.
    with pytest.raises(oauth_services.InvalidGrant):
        oauth_services.refresh_exchange(client_id="other", refresh_token=second.refresh_token)
    # The spent one again: refused, and the whole connection is revoked with it.
    with pytest.raises(oauth_services.InvalidGrant):
        oauth_services.refresh_exchange(client_id="client-1", refresh_token=first.refresh_token)
    connection.refresh_from_db()
    connection.key.refresh_from_db()
    assert connection.revoked_at is not None
    assert connection.key.revoked_at is not None
    with pytest.raises(oauth_services.InvalidGrant):
        oauth_services.refresh_exchange(client_id="client-1", refresh_token=second.refresh_token)
    assert entitlement_get_by_key_hash(key_hash=keys.key_hash(second.access_token)) is None


def test_a_replayed_code_revokes_what_it_issued():
    lic = LicenseFactory()
    connection = _connection(lic)
    req = AuthorizationRequest.objects.create(
        id="r1",
        client=connection.client,
        listing=lic.listing,
        resource=connection.resource,
        redirect_uri="http://127.0.0.1:1/cb",
        code_challenge="x" * 43,
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    raw = keys.oauth_token_generate("tbc_")
    AuthorizationCode.objects.create(
        code_hash=keys.key_hash(raw),
        request=req,
        connection=connection,
        expires_at=timezone.now() + timedelta(minutes=5),
    )
    issued = oauth_services.code_exchange(client_id="client-1", code=raw)
    assert entitlement_get_by_key_hash(key_hash=keys.key_hash(issued.access_token)) is not None
    with pytest.raises(oauth_services.InvalidGrant):
        oauth_services.code_exchange(client_id="client-1", code=raw)
    assert entitlement_get_by_key_hash(key_hash=keys.key_hash(issued.access_token)) is None

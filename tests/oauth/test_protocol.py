"""The authorization server and the gateway as resource server, spoken to over HTTP the way a
client would (issue 13's contract, /work/briefs/oauth-contract.md): discovery documents, the
gateway's 401 challenge, Dynamic Client Registration and Client ID Metadata Documents, PKCE
S256 only, resource indicators (a token is bound to one listing), single-use codes, rotating
refresh tokens with reuse detection, revocation, and expiry.

Login and consent are Django's forms posted with httpx (the browser drives them in
test_sdk_client.py and test_consent_buy.py)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.proxy import RECEIPT_KEY
from tests.factories import UserFactory
from tests.oauth.conftest import (
    ACCESS_TOKEN_SECONDS,
    CALLBACK,
    ENTITLEMENT_CACHE_SECONDS,
    SITE,
    ClientDocuments,
    Connection,
    Pkce,
    authorize,
    authorize_params,
    connect,
    consent,
    error_of,
    exchange,
    gateway_url,
    hosted_listing,
    location,
    login,
    mcp_call,
    mcp_works,
    metered_license,
    redirect_query,
    refresh,
    register,
    token,
)

pytestmark = [pytest.mark.slow]


@dataclass
class World:
    buyer: Any
    a: Any  # listing A, and the buyer's license of it
    b: Any
    license_a: Any
    license_b: Any
    browser: httpx.Client  # the buyer's logged-in session (cookies)


@pytest.fixture
def world(oauth_live: str, oauth_upstream: str) -> Any:
    buyer = UserFactory(username="oauth-buyer")
    a = hosted_listing(oauth_upstream, title="Weather A")
    b = hosted_listing(oauth_upstream, title="Weather B")
    license_a = metered_license(a, buyer, per_call=4)
    license_b = metered_license(b, buyer, per_call=2)
    with httpx.Client(timeout=15) as session:
        login(session, buyer.username)
        yield World(buyer, a, b, license_a, license_b, session)


def _connected(world: World, listing: Any = None, license_: Any = None) -> Connection:
    client_id = register()["client_id"]
    listing = listing or world.a
    license_ = license_ or world.license_a
    return connect(
        world.browser, client_id=client_id, listing_name=listing.name, license_id=license_.pk
    )


def _until(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


# --- discovery -------------------------------------------------------------------------------


def test_authorization_server_metadata(oauth_live: str) -> None:
    answer = httpx.get(f"{SITE}/.well-known/oauth-authorization-server", timeout=10)
    assert answer.status_code == 200
    doc = answer.json()
    assert doc["issuer"].rstrip("/") == SITE
    assert doc["authorization_endpoint"] == f"{SITE}/oauth/authorize"
    assert doc["token_endpoint"] == f"{SITE}/oauth/token"
    assert doc["registration_endpoint"] == f"{SITE}/oauth/register"
    assert doc["revocation_endpoint"] == f"{SITE}/oauth/revoke"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["scopes_supported"] == ["mcp"]
    assert doc["client_id_metadata_document_supported"] is True
    assert "code" in doc["response_types_supported"]
    assert {"authorization_code", "refresh_token"} <= set(doc["grant_types_supported"])


def test_protected_resource_metadata_per_listing(world: World) -> None:
    for listing in (world.a, world.b):
        answer = httpx.get(
            f"{SITE}/.well-known/oauth-protected-resource/mcp/{listing.name}", timeout=10
        )
        assert answer.status_code == 200, answer.text[:300]
        doc = answer.json()
        assert doc["resource"] == gateway_url(listing.name)
        assert [s.rstrip("/") for s in doc["authorization_servers"]] == [SITE]
        assert doc["scopes_supported"] == ["mcp"]
        assert doc["bearer_methods_supported"] == ["header"]

    from tests.factories import ListingFactory

    unhosted = ListingFactory()  # in the catalogue, but not served through the gateway
    for name in ("io.github.nobody/nothing", unhosted.name):
        missing = httpx.get(f"{SITE}/.well-known/oauth-protected-resource/mcp/{name}", timeout=10)
        assert missing.status_code == 404, (name, missing.status_code)


@pytest.mark.parametrize("credential", [None, "tbo_not_a_token", "tb_test_not_a_key"])
def test_gateway_401_points_at_the_resource_metadata(world: World, credential: str | None) -> None:
    refused = mcp_call(world.a.name, credential)
    assert refused.status_code == 401
    challenge = refused.headers.get("www-authenticate", "")
    prm = f"{SITE}/.well-known/oauth-protected-resource/mcp/{world.a.name}"
    assert challenge.startswith("Bearer "), challenge
    assert f'resource_metadata="{prm}"' in challenge, challenge
    assert 'scope="mcp"' in challenge, challenge
    # The body stays what it was: a JSON-RPC error pointing at the listing's page.
    body = refused.json()
    assert body["jsonrpc"] == "2.0"
    assert "error" in body
    assert f"/servers/{world.a.name}" in str(body["error"])


# --- registration ----------------------------------------------------------------------------


def test_dynamic_client_registration(oauth_live: str) -> None:
    public = register(name="Public client")
    assert public["client_id"]
    assert public.get("token_endpoint_auth_method", "none") == "none"
    assert not public.get("client_secret")
    assert public["redirect_uris"] == [CALLBACK]

    confidential = register(name="Confidential client", auth_method="client_secret_post")
    assert confidential["client_id"] != public["client_id"]
    assert confidential["client_secret"]
    assert confidential["token_endpoint_auth_method"] == "client_secret_post"

    # No redirect URI: refused (RFC 7591 §3.2.2 invalid_redirect_uri / invalid_client_metadata).
    bad = httpx.post(
        f"{SITE}/oauth/register", json={"client_name": "x", "redirect_uris": []}, timeout=10
    )
    assert bad.status_code == 400
    assert error_of(bad) in ("invalid_redirect_uri", "invalid_client_metadata")


@pytest.mark.parametrize(
    "redirect_uri",
    ["http://evil.example/callback", "javascript:alert(1)//", "data:text/html,hi"],
)
def test_registration_refuses_redirect_uris_that_are_not_https_or_loopback(
    oauth_live: str, redirect_uri: str
) -> None:
    """MCP authorization (Communication security): every redirect URI is localhost or https
    (a native app's own scheme, like cursor://, is allowed by RFC 8252 §7.1)."""
    answer = httpx.post(
        f"{SITE}/oauth/register",
        json={
            "client_name": "Plain http",
            "redirect_uris": [redirect_uri],
            "token_endpoint_auth_method": "none",
        },
        timeout=10,
    )
    assert answer.status_code == 400, f"{redirect_uri} registered: {answer.text[:300]}"
    assert error_of(answer) in ("invalid_redirect_uri", "invalid_client_metadata")


def test_registration_accepts_loopback_https_and_app_schemes(oauth_live: str) -> None:
    for uri in ("http://localhost:33418/cb", "https://claude.ai/api/mcp/auth_callback"):
        assert register(redirect_uri=uri)["redirect_uris"] == [uri]
    assert register(redirect_uri="cursor://anysphere.cursor-mcp/oauth/callback")["client_id"]


# --- authorize -------------------------------------------------------------------------------


def _refused_before_consent(answer: httpx.Response, error: str | tuple[str, ...]) -> None:
    """Refused at /oauth/authorize: an error redirect to the client (or a 400 page), never the
    consent page."""
    errors = (error,) if isinstance(error, str) else error
    if answer.status_code in (302, 303):
        target = location(answer)
        assert "/oauth/consent/" not in target, f"went on to consent: {target}"
        assert redirect_query(answer).get("error") in errors, target
    else:
        assert answer.status_code == 400, f"{answer.status_code} {answer.text[:300]}"


def test_authorize_requires_pkce_s256(world: World) -> None:
    client_id = register()["client_id"]
    resource = gateway_url(world.a.name)
    without = authorize(world.browser, authorize_params(client_id, resource, None))
    _refused_before_consent(without, "invalid_request")
    pkce = Pkce()
    plain = authorize_params(client_id, resource, pkce)
    plain |= {"code_challenge": pkce.verifier, "code_challenge_method": "plain"}
    _refused_before_consent(authorize(world.browser, plain), "invalid_request")
    # The same request with S256 goes on to the consent page.
    ok = authorize(world.browser, authorize_params(client_id, resource, pkce))
    assert "/oauth/consent/" in location(ok)


def test_authorize_needs_a_hosted_listing_as_resource(world: World) -> None:
    from tests.factories import ListingFactory

    client_id = register()["client_id"]
    unhosted = ListingFactory()
    for resource in (
        gateway_url("io.github.nobody/nothing"),
        gateway_url(unhosted.name),
        f"{SITE}/servers/{world.a.name}",
        f"https://elsewhere.example/mcp/{world.a.name}",
    ):
        answer = authorize(world.browser, authorize_params(client_id, resource, Pkce()))
        assert answer.status_code in (302, 303), (resource, answer.status_code)
        assert redirect_query(answer).get("error") == "invalid_target", resource
    no_resource = authorize_params(client_id, gateway_url(world.a.name), Pkce())
    del no_resource["resource"]
    _refused_before_consent(
        authorize(world.browser, no_resource), ("invalid_target", "invalid_request")
    )


def test_authorize_refuses_an_unknown_client_or_redirect_without_redirecting(world: World) -> None:
    resource = gateway_url(world.a.name)
    unknown = authorize(world.browser, authorize_params("no-such-client", resource, Pkce()))
    assert unknown.status_code in (400, 401), unknown.status_code
    client_id = register()["client_id"]
    evil = authorize_params(client_id, resource, Pkce(), redirect_uri="http://127.0.0.1:1/evil")
    answer = authorize(world.browser, evil)
    assert answer.status_code == 400, f"{answer.status_code} {answer.headers.get('location')}"


def test_consent_needs_login_and_deny_answers_access_denied(world: World) -> None:
    client_id = register(name="Denied client")["client_id"]
    started = authorize(
        world.browser, authorize_params(client_id, gateway_url(world.a.name), Pkce())
    )
    consent_url = location(started)
    anonymous = httpx.get(consent_url, follow_redirects=False, timeout=10)
    assert anonymous.status_code == 302
    assert anonymous.headers["location"].startswith("/accounts/login/?next=")

    page = world.browser.get(consent_url)
    assert "Denied client" in page.text
    assert "Weather A" in page.text
    assert f'value="{world.license_a.pk}"' in page.text
    assert f'value="{world.license_b.pk}"' not in page.text  # B's license is not usable at A
    back = redirect_query(consent(world.browser, consent_url, action="deny"))
    assert (back.get("error"), back.get("state"), back.get("code")) == (
        "access_denied",
        "st4te",
        None,
    )


def _consent_url(world: World, listing: Any = None) -> str:
    client_id = register()["client_id"]
    resource = gateway_url((listing or world.a).name)
    return location(authorize(world.browser, authorize_params(client_id, resource, Pkce())))


def test_consent_refuses_a_license_that_is_not_the_buyers_or_not_this_listings(
    world: World,
) -> None:
    stranger = metered_license(world.a, UserFactory(username="someone-else"))
    for other in (stranger, world.license_b):
        consent_url = _consent_url(world)
        answer = consent(world.browser, consent_url, license_id=other.pk)
        assert answer.status_code in (400, 403, 404), (other, answer.status_code)
        assert "code=" not in answer.headers.get("location", "")
        # The request is still open: the buyer can pick their own license.
        back = redirect_query(consent(world.browser, consent_url, license_id=world.license_a.pk))
        assert "code" in back


def test_consent_is_answered_once_and_only_with_the_csrf_token(world: World) -> None:
    consent_url = _consent_url(world)
    page = world.browser.get(consent_url)
    # Not framable (a framed Allow button could be clicked by a trick).
    framing = page.headers.get("x-frame-options", "").upper()
    assert framing in ("DENY", "SAMEORIGIN") or "frame-ancestors 'none'" in page.headers.get(
        "content-security-policy", ""
    )
    forged = world.browser.post(
        consent_url,
        data={"license": str(world.license_a.pk), "action": "allow"},
        headers={"Referer": consent_url},
        follow_redirects=False,
    )
    assert forged.status_code == 403, "a consent POST without the CSRF token was accepted"
    back = redirect_query(consent(world.browser, consent_url, license_id=world.license_a.pk))
    assert "code" in back
    # Answered: the page is gone, and a replayed answer gets no second code.
    again = world.browser.get(consent_url, follow_redirects=False)
    assert again.status_code in (404, 410), again.status_code
    token_field = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token_field
    replay = world.browser.post(
        consent_url,
        data={
            "csrfmiddlewaretoken": token_field[1],
            "license": str(world.license_a.pk),
            "action": "allow",
        },
        headers={"Referer": consent_url},
        follow_redirects=False,
    )
    assert "code=" not in replay.headers.get("location", ""), "a second code for one request"


# --- token -----------------------------------------------------------------------------------


def test_code_flow_issues_tokens_that_the_gateway_meters(world: World) -> None:
    from gateway.models import UsageEvent
    from tests.gateway.conftest import drain

    conn = _connected(world)
    tokens = conn.tokens
    assert tokens["access_token"].startswith("tbo_")
    assert tokens["refresh_token"].startswith("tbr_")
    assert tokens["token_type"].lower() == "bearer"
    assert tokens["expires_in"] == ACCESS_TOKEN_SECONDS
    assert tokens["scope"] == "mcp"

    called = mcp_call(world.a.name, tokens["access_token"])
    assert called.status_code == 200, called.text[:300]
    assert "result" in called.json(), called.text[:500]
    result = called.json()["result"]
    assert result["structuredContent"] == {"result": 5}
    receipt = result["_meta"][RECEIPT_KEY]
    assert receipt["amount"] == 4
    drain()
    event = UsageEvent.objects.get(license_id=world.license_a.pk)
    assert (event.billable, event.unit_amount, event.tool) == (True, 4, "add")
    assert str(event.call_id) == receipt["call_id"]


def test_wrong_code_verifier_and_code_reuse_are_invalid_grant(world: World) -> None:
    client_id = register()["client_id"]
    resource = gateway_url(world.a.name)
    pkce = Pkce()
    started = authorize(world.browser, authorize_params(client_id, resource, pkce))
    back = redirect_query(consent(world.browser, location(started), license_id=world.license_a.pk))

    wrong = exchange(back["code"], Pkce(), client_id, resource)
    assert wrong.status_code == 400
    assert error_of(wrong) == "invalid_grant"

    # A second authorization: the first use works, the second is refused.
    pkce = Pkce()
    started = authorize(world.browser, authorize_params(client_id, resource, pkce))
    back = redirect_query(consent(world.browser, location(started), license_id=world.license_a.pk))
    first = exchange(back["code"], pkce, client_id, resource)
    assert first.status_code == 200, first.text[:300]
    again = exchange(back["code"], pkce, client_id, resource)
    assert again.status_code == 400
    assert error_of(again) == "invalid_grant"


def test_token_redirect_uri_must_match_the_authorized_one(world: World) -> None:
    client_id = register()["client_id"]
    resource = gateway_url(world.a.name)
    pkce = Pkce()
    started = authorize(world.browser, authorize_params(client_id, resource, pkce))
    back = redirect_query(consent(world.browser, location(started), license_id=world.license_a.pk))
    other = token(
        grant_type="authorization_code",
        code=back["code"],
        redirect_uri=CALLBACK + "/elsewhere",
        client_id=client_id,
        code_verifier=pkce.verifier,
        resource=resource,
    )
    assert other.status_code == 400
    assert error_of(other) in ("invalid_grant", "invalid_request")


def test_token_resource_must_match_the_authorized_one(world: World) -> None:
    client_id = register()["client_id"]
    pkce = Pkce()
    started = authorize(world.browser, authorize_params(client_id, gateway_url(world.a.name), pkce))
    back = redirect_query(consent(world.browser, location(started), license_id=world.license_a.pk))
    other = exchange(back["code"], pkce, client_id, gateway_url(world.b.name))
    assert other.status_code == 400
    assert error_of(other) in ("invalid_target", "invalid_grant")


def test_refresh_rotates_and_reuse_revokes_the_connection(world: World) -> None:
    conn = _connected(world)
    first = conn.tokens
    rotated = refresh(first["refresh_token"], conn.client_id, conn.resource)
    assert rotated.status_code == 200, rotated.text[:300]
    second = rotated.json()
    assert second["refresh_token"].startswith("tbr_")
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert mcp_works(world.a.name, second["access_token"])

    # The new refresh token works (and rotates again).
    third = refresh(second["refresh_token"], conn.client_id, conn.resource)
    assert third.status_code == 200, third.text[:300]
    latest = third.json()

    # The old one is refused, and presenting it revokes the whole connection.
    reused = refresh(first["refresh_token"], conn.client_id, conn.resource)
    assert reused.status_code == 400
    assert error_of(reused) == "invalid_grant"
    after_reuse = refresh(latest["refresh_token"], conn.client_id, conn.resource)
    assert after_reuse.status_code == 400, "reuse of a rotated refresh token left the connection"
    assert error_of(after_reuse) == "invalid_grant"
    _until(
        lambda: mcp_call(world.a.name, latest["access_token"]).status_code == 401,
        ENTITLEMENT_CACHE_SECONDS + 1,
        "the connection's access token still works after refresh-token reuse",
    )


def test_refresh_token_of_another_client_is_refused(world: World) -> None:
    conn = _connected(world)
    other = register()["client_id"]
    stolen = refresh(conn.tokens["refresh_token"], other, conn.resource)
    assert stolen.status_code in (400, 401)
    assert error_of(stolen) in ("invalid_grant", "invalid_client")


@pytest.mark.parametrize("which", ["access_token", "refresh_token"])
def test_revocation_stops_the_token_at_the_gateway(world: World, which: str) -> None:
    conn = _connected(world)
    access = conn.tokens["access_token"]
    assert mcp_works(world.a.name, access)  # now in the entitlement cache
    revoked = httpx.post(
        f"{SITE}/oauth/revoke",
        data={"token": conn.tokens[which], "client_id": conn.client_id, "token_type_hint": which},
        timeout=10,
    )
    assert revoked.status_code == 200, revoked.text[:300]
    started = time.monotonic()
    _until(
        lambda: mcp_call(world.a.name, access).status_code == 401,
        ENTITLEMENT_CACHE_SECONDS + 1,
        f"access token still works {ENTITLEMENT_CACHE_SECONDS + 1} s after revoking the {which}",
    )
    assert time.monotonic() - started <= ENTITLEMENT_CACHE_SECONDS + 1
    # Revoking either token ends the connection: the refresh token is dead too.
    dead = refresh(conn.tokens["refresh_token"], conn.client_id, conn.resource)
    assert dead.status_code == 400
    assert error_of(dead) == "invalid_grant"
    # RFC 7009 §2.2: an unknown or already revoked token is still answered 200.
    again = httpx.post(
        f"{SITE}/oauth/revoke", data={"token": "tbo_unknown", "client_id": conn.client_id}
    )
    assert again.status_code == 200


def test_token_for_listing_a_is_refused_at_listing_b(world: World) -> None:
    conn = _connected(world)
    access = conn.tokens["access_token"]
    assert mcp_works(world.a.name, access)
    at_b = mcp_call(world.b.name, access)
    assert at_b.status_code == 401, at_b.text[:300]
    prm_b = f"{SITE}/.well-known/oauth-protected-resource/mcp/{world.b.name}"
    assert f'resource_metadata="{prm_b}"' in at_b.headers.get("www-authenticate", "")
    # The same refusal as an unknown credential (nothing tells the two apart).
    unknown = mcp_call(world.b.name, "tbo_" + "x" * 40)
    assert at_b.json() == unknown.json()
    # Still refused after it has been admitted (and cached) at A a second time.
    assert mcp_works(world.a.name, access)
    assert mcp_call(world.b.name, access).status_code == 401


def test_confidential_client_must_authenticate_at_the_token_endpoint(world: World) -> None:
    reg = register(name="Confidential", auth_method="client_secret_post")
    client_id, secret = reg["client_id"], reg["client_secret"]
    resource = gateway_url(world.a.name)

    def code() -> tuple[str, Pkce]:
        pkce = Pkce()
        started = authorize(world.browser, authorize_params(client_id, resource, pkce))
        back = redirect_query(
            consent(world.browser, location(started), license_id=world.license_a.pk)
        )
        return back["code"], pkce

    def with_secret(grant: str, pkce: Pkce, client_secret: str) -> Any:
        return token(
            grant_type="authorization_code",
            code=grant,
            redirect_uri=CALLBACK,
            client_id=client_id,
            client_secret=client_secret,
            code_verifier=pkce.verifier,
            resource=resource,
        )

    without = exchange(*code(), client_id, resource)
    assert without.status_code == 401, without.text[:300]
    assert error_of(without) == "invalid_client"
    wrong = with_secret(*code(), secret + "x")
    assert wrong.status_code == 401
    assert error_of(wrong) == "invalid_client"
    right = with_secret(*code(), secret)
    assert right.status_code == 200, right.text[:300]
    assert mcp_works(world.a.name, right.json()["access_token"])


def test_a_revoked_license_stops_its_tokens(world: World) -> None:
    from billing.services.licenses import license_revoke

    conn = _connected(world)
    access = conn.tokens["access_token"]
    assert mcp_works(world.a.name, access)
    license_revoke(license_id=world.license_a.pk, reason="test")
    _until(
        lambda: mcp_call(world.a.name, access).status_code == 401,
        ENTITLEMENT_CACHE_SECONDS + 1,
        "an access token of a revoked license still works",
    )
    # A token refreshed after that is refused too (if a refresh is granted at all).
    again = refresh(conn.tokens["refresh_token"], conn.client_id, conn.resource)
    if again.status_code == 200:
        assert mcp_call(world.a.name, again.json()["access_token"]).status_code == 401
    else:
        assert error_of(again) == "invalid_grant"


def test_the_token_is_never_forwarded_upstream(world: World, scripted_upstream: str) -> None:
    from tests.gateway.factories import HostedUpstreamFactory

    echo = HostedUpstreamFactory(url=scripted_upstream).listing  # the scripted tools, approved
    license_echo = metered_license(echo, world.buyer, per_call=1)
    conn = _connected(world, echo, license_echo)
    access = conn.tokens["access_token"]
    answer = mcp_call(echo.name, access, tool="headers", arguments={})
    assert answer.status_code == 200, answer.text[:300]
    seen = {k.lower(): v for k, v in answer.json()["result"]["structuredContent"].items()}
    assert "content-type" in seen, seen  # the upstream did echo what it received
    assert "authorization" not in seen, seen.get("authorization")
    assert "tbo_" not in json.dumps(seen)


def test_access_token_expires(world: World) -> None:
    conn = _connected(world)
    access = conn.tokens["access_token"]
    assert mcp_works(world.a.name, access)
    time.sleep(ACCESS_TOKEN_SECONDS + 0.5)
    _until(
        lambda: mcp_call(world.a.name, access).status_code == 401,
        2,
        f"an access token of {ACCESS_TOKEN_SECONDS} s still works after it expired",
    )
    fresh = refresh(conn.tokens["refresh_token"], conn.client_id, conn.resource)
    assert fresh.status_code == 200
    assert mcp_works(world.a.name, fresh.json()["access_token"])


# --- Client ID Metadata Documents ------------------------------------------------------------


def _cimd(url: str, name: str = "Metadata document client", **extra: Any) -> dict[str, Any]:
    return {
        "client_id": url,
        "client_name": name,
        "redirect_uris": [CALLBACK],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        **extra,
    }


def test_client_id_metadata_document_client_completes_the_flow(
    world: World, client_documents: ClientDocuments
) -> None:
    url = client_documents.publish("/client.json", {})
    client_documents.publish("/client.json", _cimd(url, "Metadata Client", scope="mcp"))
    conn = connect(
        world.browser, client_id=url, listing_name=world.a.name, license_id=world.license_a.pk
    )
    assert "/client.json" in client_documents.fetched
    assert conn.tokens["access_token"].startswith("tbo_")
    assert mcp_works(world.a.name, conn.tokens["access_token"])
    rotated = refresh(conn.tokens["refresh_token"], url, conn.resource)
    assert rotated.status_code == 200, rotated.text[:300]


def test_client_id_metadata_document_without_scope_may_ask_for_mcp(
    world: World, client_documents: ClientDocuments
) -> None:
    """`scope` is optional client metadata (RFC 7591 §2); a DCR client without one is given
    "mcp", so a metadata-document client without one must not get invalid_scope either."""
    url = client_documents.publish("/plain.json", {})
    client_documents.publish("/plain.json", _cimd(url, "Plain Metadata Client"))
    started = authorize(world.browser, authorize_params(url, gateway_url(world.a.name), Pkce()))
    assert "/oauth/consent/" in location(started)


def test_client_id_metadata_document_must_name_its_own_url(
    world: World, client_documents: ClientDocuments
) -> None:
    url = client_documents.publish("/liar.json", {})
    client_documents.publish("/liar.json", _cimd(f"{url}?not-me", "Liar"))
    answer = authorize(world.browser, authorize_params(url, gateway_url(world.a.name), Pkce()))
    # An unverified client: refused on our page, never redirected to its redirect_uri.
    assert answer.status_code in (400, 401), (answer.status_code, answer.headers.get("location"))
    # A document that cannot be fetched is refused the same way.
    missing = f"{url.rsplit('/', 1)[0]}/missing.json"
    gone = authorize(world.browser, authorize_params(missing, gateway_url(world.a.name), Pkce()))
    assert gone.status_code in (400, 401), (gone.status_code, gone.headers.get("location"))

"""The authorization server's writes: clients, the consent answer, codes and token rotation.

Every function is sync (Django ORM); `oauth.provider` calls them from the SDK's async handlers
through `sync_to_async`. Raw secrets (client secrets, codes, tokens) are returned to the caller
once and stored only as `billing.keys.key_hash` HMACs.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing import keys
from billing.selectors import access_token_key_id, license_get_for_buyer, license_is_usable
from billing.services.licenses import access_token_issue, api_key_revoke, oauth_key_create
from common.exceptions import ApplicationError, NotFoundError
from common.text import clean_text
from marketplace.models import Listing
from oauth.models import (
    AuthorizationCode,
    AuthorizationRequest,
    Client,
    ClientKind,
    Connection,
    RefreshToken,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

GATEWAY_PREFIX = "/mcp/"


class InvalidTarget(ApplicationError):
    """The `resource` names no listing our gateway serves (RFC 8707 `invalid_target`)."""


class InvalidGrant(ApplicationError):
    """A code or refresh token that is unknown, expired, used or not the client's."""


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    scopes: list[str]


# --- resources ------------------------------------------------------------------------------


def resource_url(*, listing_name: str) -> str:
    """The gateway URL of a listing: the OAuth resource a token for it is bound to."""
    return f"{settings.SITE_URL}{GATEWAY_PREFIX}{listing_name}"


def resource_listing(*, resource: str | None) -> Listing:
    """The hosted listing a resource indicator names, or `InvalidTarget`.

    Exactly `SITE_URL/mcp/<name>` (a trailing slash tolerated, as clients differ); a listing
    without an enabled upstream is not a resource we serve."""
    if not resource:
        raise InvalidTarget("The resource parameter (RFC 8707) is required: the MCP server's URL.")
    prefix = settings.SITE_URL + GATEWAY_PREFIX
    if not resource.startswith(prefix) or "?" in resource or "#" in resource:
        raise InvalidTarget("The resource is not an MCP server of this marketplace.")
    name = resource[len(prefix) :].rstrip("/")
    listing = Listing.objects.filter(name=name, hosted_upstream__enabled=True).first()
    if listing is None:
        raise InvalidTarget("The resource is not an MCP server of this marketplace.")
    return listing


# --- clients --------------------------------------------------------------------------------


def client_register(*, client_id: str, metadata: dict[str, Any], secret: str | None) -> Client:
    """Store a dynamically registered client (RFC 7591); its secret only as a hash."""
    client = Client(
        client_id=client_id,
        kind=ClientKind.REGISTERED,
        name=clean_text(metadata.get("client_name"), max_length=100),
        metadata={k: v for k, v in metadata.items() if k != "client_secret"},
        secret_hash=keys.key_hash(secret) if secret else "",
    )
    client.full_clean()
    client.save()
    logger.info("oauth.client_registered", extra={"client_pk": client.pk})
    return client


def client_document_store(*, url: str, metadata: dict[str, Any]) -> Client:
    """Create or refresh the row of a Client ID Metadata Document client (keyed by its URL)."""
    client, _ = Client.objects.update_or_create(
        client_id=url,
        defaults={
            "kind": ClientKind.METADATA_DOCUMENT,
            "name": clean_text(metadata.get("client_name"), max_length=100),
            "metadata": metadata,
            "secret_hash": "",
            "fetched_at": timezone.now(),
        },
    )
    return client


# --- authorization --------------------------------------------------------------------------


def authorization_request_create(
    *,
    client: Client,
    resource: str | None,
    redirect_uri: str,
    redirect_uri_explicit: bool,
    code_challenge: str,
    state: str | None,
    scopes: list[str] | None,
) -> AuthorizationRequest:
    """Remember an /authorize request until the buyer answers it on the consent page."""
    listing = resource_listing(resource=resource)
    wanted = scopes or list(settings.OAUTH_SCOPES)
    unknown = set(wanted) - set(settings.OAUTH_SCOPES)
    if unknown:
        raise ApplicationError(f"Unknown scope: {', '.join(sorted(unknown))}.")
    now = timezone.now()
    req = AuthorizationRequest.objects.create(
        id=secrets.token_urlsafe(32),
        client=client,
        listing=listing,
        resource=resource_url(listing_name=listing.name),
        redirect_uri=redirect_uri,
        redirect_uri_explicit=redirect_uri_explicit,
        code_challenge=code_challenge,
        state=state or "",
        scopes=wanted,
        expires_at=now + timedelta(seconds=settings.OAUTH_AUTHORIZATION_REQUEST_SECONDS),
    )
    return req


def authorization_request_get(*, request_id: str) -> AuthorizationRequest:
    """A pending request, or NotFoundError (unknown, expired or already answered)."""
    req = (
        AuthorizationRequest.objects.select_related("client", "listing")
        .filter(pk=request_id, answered_at__isnull=True, expires_at__gt=timezone.now())
        .first()
    )
    if req is None:
        raise NotFoundError("This authorization request has expired or was already answered.")
    return req


def _redirect(req: AuthorizationRequest, **params: str) -> str:
    parts = urlsplit(req.redirect_uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params.items() if v]
    if req.state:
        query.append(("state", req.state))
    return urlunsplit(parts._replace(query=urlencode(query)))


def authorization_approve(*, request_id: str, user: User, license_id: int) -> str:
    """The buyer allowed the client to use one of their licenses for the listing: make (or
    reuse) the connection, mint a code, return the client's redirect URL carrying it.

    One transaction with the request row locked, so a double-submitted form answers once."""
    with transaction.atomic():
        req = (
            AuthorizationRequest.objects.select_for_update()
            .filter(pk=request_id, answered_at__isnull=True, expires_at__gt=timezone.now())
            .first()
        )
        if req is None:
            raise NotFoundError("This authorization request has expired or was already answered.")
        lic = license_get_for_buyer(buyer=user, license_id=license_id)
        if lic.listing_id != req.listing_id or not license_is_usable(license=lic):
            raise ApplicationError("Pick one of your active licenses for this server.")
        client = req.client
        connection = (
            Connection.objects.select_related("key")
            .filter(
                user=user,
                client=client,
                key__license=lic,
                resource=req.resource,
                revoked_at__isnull=True,
                key__revoked_at__isnull=True,
            )
            .first()
        )
        if connection is None:
            key = oauth_key_create(
                license=lic, name=client.name or urlsplit(client.client_id).netloc
            )
            connection = Connection.objects.create(
                user=user, client=client, key=key, resource=req.resource, scopes=req.scopes
            )
            logger.info(
                "oauth.connection_created",
                extra={"connection_id": connection.pk, "license_id": lic.pk},
            )
        code = keys.oauth_token_generate("tbc_")
        AuthorizationCode.objects.create(
            code_hash=keys.key_hash(code),
            request=req,
            connection=connection,
            expires_at=timezone.now() + timedelta(seconds=settings.OAUTH_CODE_SECONDS),
        )
        req.answered_at = timezone.now()
        req.user = user
        req.save(update_fields=["answered_at", "user"])
    return _redirect(req, code=code)


def authorization_deny(*, request_id: str, user: User) -> str:
    """The buyer said no: the client learns `access_denied` at its redirect URI."""
    with transaction.atomic():
        req = (
            AuthorizationRequest.objects.select_for_update()
            .filter(pk=request_id, answered_at__isnull=True)
            .first()
        )
        if req is None:
            raise NotFoundError("This authorization request has expired or was already answered.")
        req.answered_at = timezone.now()
        req.user = user
        req.save(update_fields=["answered_at", "user"])
    return _redirect(req, error="access_denied", error_description="The user denied access.")


# --- tokens ---------------------------------------------------------------------------------


def _issue(connection: Connection) -> IssuedTokens:
    """A new access token and refresh token for a live connection. Call inside a transaction."""
    seconds = settings.OAUTH_ACCESS_TOKEN_SECONDS
    _, access = access_token_issue(key=connection.key, seconds=seconds)
    refresh = keys.oauth_token_generate(keys.REFRESH_TOKEN_PREFIX)
    RefreshToken.objects.create(
        token_hash=keys.key_hash(refresh),
        connection=connection,
        expires_at=timezone.now() + timedelta(seconds=settings.OAUTH_REFRESH_TOKEN_SECONDS),
    )
    return IssuedTokens(
        access_token=access,
        refresh_token=refresh,
        expires_in=seconds,
        scopes=list(connection.scopes),
    )


def _spend_once(
    model: type[AuthorizationCode] | type[RefreshToken],
    *,
    lookup: dict[str, str],
    what: str,
    reused_event: str,
) -> IssuedTokens:
    """Spend a one-time grant (a code or a refresh token) for a new pair of tokens. Presenting
    a spent one again means two parties hold it, so the whole connection is revoked, in its
    own transaction (the refusal must not roll the revocation back)."""
    with transaction.atomic():
        row = (
            model.objects.select_for_update()
            .select_related("connection__key", "connection__client")
            .filter(**lookup)
            .first()
        )
        if row is None or row.expires_at <= timezone.now():
            raise InvalidGrant(f"The {what} is unknown or has expired.")
        connection = row.connection
        if row.used_at is None:
            if connection.revoked_at is not None or connection.key.revoked_at is not None:
                raise InvalidGrant("This connection was revoked.")
            row.used_at = timezone.now()
            row.save(update_fields=["used_at"])
            return _issue(connection)
    logger.warning(reused_event, extra={"connection_id": connection.pk})
    connection_revoke(connection_id=connection.pk)
    raise InvalidGrant(f"The {what} was already used.")


def code_exchange(*, client_id: str, code: str) -> IssuedTokens:
    """Trade a code for tokens, once; a second use revokes the connection it made (RFC 6749
    §4.1.2: the code may have been stolen). PKCE and the redirect URI were checked by the
    SDK's token handler before this is called."""
    return _spend_once(
        AuthorizationCode,
        lookup={"code_hash": keys.key_hash(code), "connection__client__client_id": client_id},
        what="authorization code",
        reused_event="oauth.code_reused",
    )


def refresh_exchange(*, client_id: str, refresh_token: str) -> IssuedTokens:
    """Rotate: the refresh token is spent and a new pair issued; presenting a spent one again
    revokes the connection (OAuth 2.1 §4.3.1)."""
    return _spend_once(
        RefreshToken,
        lookup={
            "token_hash": keys.key_hash(refresh_token),
            "connection__client__client_id": client_id,
        },
        what="refresh token",
        reused_event="oauth.refresh_reused",
    )


def connection_revoke(*, connection_id: int) -> Connection:
    """Disconnect a client: its key is revoked (the gateway's cache entries of its access
    tokens are cleared on commit) and its refresh tokens stop working. Idempotent."""
    with transaction.atomic():
        connection = Connection.objects.select_for_update().get(pk=connection_id)
        if connection.revoked_at is None:
            connection.revoked_at = timezone.now()
            connection.save(update_fields=["revoked_at"])
            logger.info("oauth.connection_revoked", extra={"connection_id": connection.pk})
        api_key_revoke(key_id=connection.key_id)
    return connection


def connection_revoke_for_buyer(*, user: User, connection_id: int) -> Connection:
    """The buyer's "Disconnect" button: only their own connections (others: 404)."""
    if not Connection.objects.filter(pk=connection_id, user=user).exists():
        raise NotFoundError("Not found.")
    return connection_revoke(connection_id=connection_id)


def token_revoke(*, client_id: str, token: str) -> None:
    """RFC 7009: revoking an access or a refresh token disconnects its connection. Unknown or
    someone else's tokens are ignored (the endpoint answers 200 regardless)."""
    digest = keys.key_hash(token)
    connection_id = (
        RefreshToken.objects.filter(token_hash=digest, connection__client__client_id=client_id)
        .values_list("connection_id", flat=True)
        .first()
    )
    if connection_id is None:
        key_id = access_token_key_id(token_hash=digest)
        connection_id = (
            Connection.objects.filter(key_id=key_id, client__client_id=client_id)
            .values_list("pk", flat=True)
            .first()
            if key_id is not None
            else None
        )
    if connection_id is not None:
        connection_revoke(connection_id=connection_id)


def oauth_state_purge(*, now: datetime | None = None) -> dict[str, int]:
    """Delete what can no longer be used: refresh tokens and codes past their expiry (a day's
    margin, for support questions) and authorization requests that expired unanswered or were
    answered a day ago. Connections stay (the license page lists them, revoked ones too)."""
    cutoff = (now or timezone.now()) - timedelta(days=1)
    refresh, _ = RefreshToken.objects.filter(expires_at__lt=cutoff).delete()
    codes, _ = AuthorizationCode.objects.filter(expires_at__lt=cutoff).delete()
    requests, _ = AuthorizationRequest.objects.filter(expires_at__lt=cutoff).delete()
    return {"refresh_tokens": refresh, "codes": codes, "requests": requests}

"""The `mcp` SDK's authorization-server provider, backed by our models.

The SDK's handlers (`mcp.server.auth.handlers`) do the protocol: request validation, PKCE S256,
redirect URI checks, error shapes, RFC 7591 registration and RFC 7009 revocation. This class
answers their questions from PostgreSQL through `oauth.services` and `oauth.clientmeta`.
"""

from __future__ import annotations

import base64
import hmac
import logging
import time
from contextvars import ContextVar
from typing import Any
from urllib.parse import unquote

from asgiref.sync import sync_to_async
from django.conf import settings
from django.urls import reverse
from mcp.server.auth.middleware.client_auth import AuthenticationError, ClientAuthenticator
from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    RefreshToken,
    RegistrationError,
    TokenError,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from starlette.requests import Request

from billing import keys
from common.exceptions import ApplicationError
from oauth import clientmeta, services
from oauth.models import AuthorizationCode as CodeRow
from oauth.models import Client, Connection
from oauth.models import RefreshToken as RefreshRow

logger = logging.getLogger(__name__)

# The `resource` of the token request being handled (set by `oauth.asgi._TokenResource`).
requested_resource: ContextVar[str | None] = ContextVar("requested_resource", default=None)


def _resource_matches(issued_for: str | None) -> None:
    """A token request may name a resource only if it is the one the grant was issued for."""
    asked = requested_resource.get()
    if asked and (issued_for or "").rstrip("/") != asked.rstrip("/"):
        raise TokenError("invalid_target", "The resource is not the one you were authorized for.")


def _client_info(client: Client) -> OAuthClientInformationFull:
    # The secret is never in `metadata`; `_HashedSecretAuthenticator` checks it by hash.
    return OAuthClientInformationFull.model_validate(
        {**client.metadata, "client_id": client.client_id, "client_secret": None}
    )


def _client_get_sync(client_id: str) -> Client | None:
    return Client.objects.filter(client_id=client_id).first()


def _tokens(issued: services.IssuedTokens) -> OAuthToken:
    return OAuthToken(
        access_token=issued.access_token,
        token_type="Bearer",  # noqa: S106 (the scheme's name)
        expires_in=issued.expires_in,
        scope=" ".join(issued.scopes),
        refresh_token=issued.refresh_token,
    )


class TollboothProvider:
    """`OAuthAuthorizationServerProvider` over `oauth.models` (structural typing: the SDK's
    Protocol is satisfied by these methods)."""

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        client = await sync_to_async(_client_get_sync)(client_id)
        stale = client is None or not clientmeta.document_is_fresh(client)
        if stale and clientmeta.is_document_client_id(client_id):
            try:
                metadata = await clientmeta.document_fetch(client_id)
            except clientmeta.ClientDocumentError as exc:
                logger.info("oauth.client_document_refused", extra={"reason": str(exc)})
                return None
            client = await sync_to_async(services.client_document_store)(
                url=client_id, metadata=metadata
            )
        return _client_info(client) if client is not None else None

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        uris = [str(u) for u in client_info.redirect_uris or []]
        if (error := clientmeta.redirect_uris_error(uris)) is not None:
            raise RegistrationError(error="invalid_redirect_uri", error_description=error)
        metadata = client_info.model_dump(mode="json", exclude_none=True)
        await sync_to_async(services.client_register)(
            client_id=client_info.client_id or "",
            metadata=metadata,
            secret=client_info.client_secret,
        )

    async def authorize(
        self, client: OAuthClientInformationFull, params: AuthorizationParams
    ) -> str:
        row = await sync_to_async(_client_get_sync)(client.client_id or "")
        if row is None:
            raise AuthorizeError("invalid_request", "Unknown client.")
        try:
            req = await sync_to_async(services.authorization_request_create)(
                client=row,
                resource=params.resource,
                redirect_uri=str(params.redirect_uri),
                redirect_uri_explicit=params.redirect_uri_provided_explicitly,
                code_challenge=params.code_challenge,
                state=params.state,
                scopes=params.scopes,
            )
        except services.InvalidTarget as exc:
            raise AuthorizeError("invalid_target", exc.message) from exc
        except ApplicationError as exc:
            raise AuthorizeError("invalid_scope", exc.message) from exc
        return settings.SITE_URL + reverse("ui:oauth-consent", args=[req.pk])

    async def load_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: str
    ) -> AuthorizationCode | None:
        def load() -> AuthorizationCode | None:
            row = (
                CodeRow.objects.select_related("request")
                .filter(code_hash=keys.key_hash(authorization_code))
                .first()
            )
            if row is None:
                return None
            req = row.request
            return AuthorizationCode(
                code=authorization_code,
                scopes=list(req.scopes),
                expires_at=row.expires_at.timestamp(),
                client_id=client.client_id or "",
                code_challenge=req.code_challenge,
                redirect_uri=req.redirect_uri,  # type: ignore[arg-type]  # pydantic validates
                redirect_uri_provided_explicitly=req.redirect_uri_explicit,
                resource=req.resource,
            )

        return await sync_to_async(load)()

    async def exchange_authorization_code(
        self, client: OAuthClientInformationFull, authorization_code: AuthorizationCode
    ) -> OAuthToken:
        _resource_matches(authorization_code.resource)
        try:
            issued = await sync_to_async(services.code_exchange)(
                client_id=client.client_id or "", code=authorization_code.code
            )
        except ApplicationError as exc:
            raise TokenError("invalid_grant", exc.message) from exc
        return _tokens(issued)

    async def load_refresh_token(
        self, client: OAuthClientInformationFull, refresh_token: str
    ) -> RefreshToken | None:
        if not keys.oauth_token_is_well_formed(refresh_token, keys.REFRESH_TOKEN_PREFIX):
            return None

        def load() -> RefreshToken | None:
            row = (
                RefreshRow.objects.select_related("connection")
                .filter(token_hash=keys.key_hash(refresh_token))
                .first()
            )
            if row is None:
                return None
            return RefreshToken(
                token=refresh_token,
                client_id=client.client_id or "",
                scopes=list(row.connection.scopes),
                expires_at=int(row.expires_at.timestamp()),
                resource=row.connection.resource,
            )

        return await sync_to_async(load)()

    async def exchange_refresh_token(
        self,
        client: OAuthClientInformationFull,
        refresh_token: RefreshToken,
        scopes: list[str],
    ) -> OAuthToken:
        _resource_matches(refresh_token.resource)
        try:
            issued = await sync_to_async(services.refresh_exchange)(
                client_id=client.client_id or "", refresh_token=refresh_token.token
            )
        except ApplicationError as exc:
            raise TokenError("invalid_grant", exc.message) from exc
        return _tokens(issued)

    async def load_access_token(self, token: str) -> AccessToken | None:
        """For revocation only (the gateway admits access tokens itself, by hash in Redis)."""
        if not keys.oauth_token_is_well_formed(token, keys.ACCESS_TOKEN_PREFIX):
            return None

        def load() -> AccessToken | None:
            from billing.selectors import access_token_key_id

            key_id = access_token_key_id(token_hash=keys.key_hash(token))
            row = Connection.objects.select_related("client").filter(key_id=key_id).first()
            if key_id is None or row is None:
                return None
            return AccessToken(token=token, client_id=row.client.client_id, scopes=row.scopes)

        return await sync_to_async(load)()

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        await sync_to_async(services.token_revoke)(client_id=token.client_id, token=token.token)

    async def exchange_identity_assertion(self, client: Any, params: Any) -> OAuthToken:
        raise TokenError("unsupported_grant_type", "Not supported.")


class HashedSecretAuthenticator(ClientAuthenticator):
    """The SDK's authenticator compares a stored plain secret; we store only its HMAC, so the
    presented secret is hashed and compared in constant time. Same rules otherwise: the
    registered method decides where the secret comes from, and `none` needs none."""

    async def authenticate_request(self, request: Request) -> OAuthClientInformationFull:
        form = await request.form()
        client_id = form.get("client_id")
        header = request.headers.get("Authorization", "")
        if not client_id and header.startswith("Basic "):
            client_id = _basic(header)[0]
        if not isinstance(client_id, str) or not client_id:
            raise AuthenticationError("Missing client_id")
        info = await self.provider.get_client(client_id)
        row = await sync_to_async(_client_get_sync)(client_id)
        if info is None or row is None:
            raise AuthenticationError("Invalid client_id")
        method = info.token_endpoint_auth_method or "client_secret_post"
        presented: str | None = None
        if method == "client_secret_basic":
            basic_id, presented = _basic(header)
            if basic_id != client_id:
                raise AuthenticationError("Missing or invalid Basic authentication")
        elif method == "client_secret_post":
            value = form.get("client_secret")
            presented = value if isinstance(value, str) else None
        elif method != "none":
            raise AuthenticationError("Unsupported client authentication method")
        if method != "none":
            if not row.secret_hash or not presented:
                raise AuthenticationError("Client secret is required")
            if not hmac.compare_digest(row.secret_hash, keys.key_hash(presented)):
                raise AuthenticationError("Invalid client_secret")
            expires = info.client_secret_expires_at
            if expires and expires < int(time.time()):
                raise AuthenticationError("Client secret has expired")
        return info


def _basic(header: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(header[6:]).decode()
        client_id, secret = decoded.split(":", 1)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuthenticationError("Invalid Basic authentication header") from exc
    return unquote(client_id), unquote(secret)

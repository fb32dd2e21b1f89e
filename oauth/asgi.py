"""The authorization server's protocol endpoints, in front of Django (config/asgi.py).

The `mcp` SDK's Starlette handlers serve RFC 8414 metadata, /oauth/authorize, /oauth/token,
/oauth/register (RFC 7591) and /oauth/revoke (RFC 7009); we add Protected Resource Metadata
(RFC 9728) per hosted listing. The consent page, which needs a signed-in person, is Django
(`oauth.views`). Every other path goes to `fallback`.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from mcp.server.auth.handlers.authorize import AuthorizationHandler
from mcp.server.auth.handlers.metadata import MetadataHandler
from mcp.server.auth.handlers.register import RegistrationHandler
from mcp.server.auth.handlers.token import TokenHandler
from mcp.server.auth.middleware.client_auth import AuthenticationError
from mcp.server.auth.routes import build_metadata, cors_middleware
from mcp.server.auth.settings import ClientRegistrationOptions, RevocationOptions
from mcp.server.transport_security import (
    DEFAULT_MAX_REQUEST_BODY_SIZE,
    RequestBodyLimitMiddleware,
)
from mcp.shared.auth import ProtectedResourceMetadata
from pydantic import AnyHttpUrl
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router, request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.clientaddr import client_address, trusted_networks
from oauth import services
from oauth.provider import HashedSecretAuthenticator, TollboothProvider, requested_resource

PRM_PREFIX = "/.well-known/oauth-protected-resource"
AS_METADATA = "/.well-known/oauth-authorization-server"
PATHS = ("/oauth/authorize", "/oauth/token", "/oauth/register", "/oauth/revoke")


def resource_metadata_url(listing_name: str) -> str:
    """RFC 9728 §3.1: the well-known path inserted before the resource's path."""
    return f"{settings.SITE_URL}{PRM_PREFIX}/mcp/{listing_name}"


def _cors(app: ASGIApp, methods: list[str]) -> ASGIApp:
    # Browser-based clients (the MCP Inspector) call these from another origin; they carry no
    # cookies, so a wildcard origin exposes nothing.
    return CORSMiddleware(app, allow_origins="*", allow_methods=methods, allow_headers=["*"])


def _limited(app: ASGIApp) -> ASGIApp:
    return RequestBodyLimitMiddleware(app, DEFAULT_MAX_REQUEST_BODY_SIZE)


async def _revoke(request: Request) -> Response:
    """RFC 7009 revocation. Ours rather than the SDK's handler, which requires a
    `client_secret` field even from public clients (`token_endpoint_auth_method` none, what MCP
    clients register), so they could not revoke. Revoking either token disconnects the client;
    an unknown token is not an error (§2.2)."""
    provider: Any = TollboothProvider()
    try:
        client = await HashedSecretAuthenticator(provider).authenticate_request(request)
    except AuthenticationError as exc:
        return JSONResponse({"error": "invalid_client", "error_description": exc.message}, 401)
    form = await request.form()
    token = form.get("token")
    if not isinstance(token, str) or not token:
        return JSONResponse({"error": "invalid_request", "error_description": "token missing"}, 400)
    await sync_to_async(services.token_revoke)(client_id=client.client_id or "", token=token)
    return JSONResponse({}, headers={"Cache-Control": "no-store"})


class _TokenResource:
    """Reads `resource` from a token request before the SDK's handler does, for the provider to
    compare with the resource the code or refresh token was issued for (RFC 8707 §2.2; the
    handler does not pass it on). The body is replayed to the handler unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        size = 0
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > DEFAULT_MAX_REQUEST_BODY_SIZE:
                too_large = JSONResponse({"error": "invalid_request"}, status_code=413)
                await too_large(scope, receive, send)
                return
        body = b"".join(chunks)
        values = parse_qs(body.decode("latin-1"), keep_blank_values=True).get("resource")
        token = requested_resource.set(values[0] if values else None)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            await self.app(scope, replay, send)
        finally:
            requested_resource.reset(token)


def _registration_throttled(app: ASGIApp) -> ASGIApp:
    """Registration is open to anyone (RFC 7591, as MCP clients expect), so each client address
    may register `OAUTH_REGISTRATIONS_PER_HOUR` clients an hour (a client registers once per
    person and site); past it, 429 with Retry-After. Counted in the cache (Redis in
    production), so all web processes share the count."""

    async def throttled(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "POST":
            address = client_address(dict(scope), trusted_networks(settings.TRUSTED_PROXIES))
            window = int(time.time()) // 3600
            name = f"tb:oauth:reg:{address}:{window}"
            try:
                await cache.aadd(name, 0, timeout=3600)
                count = await cache.aincr(name)
            except Exception:  # the cache being down must not stop registration
                count = 0
            if count > settings.OAUTH_REGISTRATIONS_PER_HOUR:
                retry = 3600 - int(time.time()) % 3600
                body = {
                    "error": "too_many_requests",
                    "error_description": "Too many client registrations from this address.",
                }
                response = JSONResponse(body, 429, headers={"Retry-After": str(retry)})
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    return throttled


async def _protected_resource(request: Request) -> Response:
    name = request.path_params["name"]
    try:
        await sync_to_async(services.resource_listing)(
            resource=services.resource_url(listing_name=name)
        )
    except services.InvalidTarget:
        return JSONResponse({"error": "not_found"}, status_code=404)
    meta = ProtectedResourceMetadata(
        resource=AnyHttpUrl(services.resource_url(listing_name=name)),
        authorization_servers=[AnyHttpUrl(settings.SITE_URL)],
        scopes_supported=list(settings.OAUTH_SCOPES),
        resource_name=name,
        resource_documentation=AnyHttpUrl(f"{settings.SITE_URL}/servers/{name}"),
    )
    return JSONResponse(
        meta.model_dump(mode="json", exclude_none=True),
        headers={"Cache-Control": "public, max-age=300"},
    )


def build_router() -> Router:
    provider: Any = TollboothProvider()
    issuer = AnyHttpUrl(settings.SITE_URL)
    registration = ClientRegistrationOptions(
        enabled=True, valid_scopes=list(settings.OAUTH_SCOPES), default_scopes=["mcp"]
    )
    metadata = build_metadata(issuer, None, registration, RevocationOptions(enabled=True))
    base = settings.SITE_URL
    metadata.authorization_endpoint = AnyHttpUrl(base + "/oauth/authorize")
    metadata.token_endpoint = AnyHttpUrl(base + "/oauth/token")
    metadata.registration_endpoint = AnyHttpUrl(base + "/oauth/register")
    metadata.revocation_endpoint = AnyHttpUrl(base + "/oauth/revoke")
    metadata.token_endpoint_auth_methods_supported = [
        "none",
        "client_secret_post",
        "client_secret_basic",
    ]
    metadata.client_id_metadata_document_supported = True
    metadata.service_documentation = AnyHttpUrl(base + "/llms.txt")
    authenticator = HashedSecretAuthenticator(provider)
    routes = [
        Route(
            AS_METADATA,
            cors_middleware(MetadataHandler(metadata).handle, ["GET", "OPTIONS"]),
            methods=["GET", "OPTIONS"],
        ),
        Route(
            PRM_PREFIX + "/mcp/{name:path}",
            _cors(request_response(_protected_resource), ["GET", "OPTIONS"]),
            methods=["GET", "OPTIONS"],
        ),
        Route(
            "/oauth/authorize",
            _limited(request_response(AuthorizationHandler(provider).handle)),
            methods=["GET", "POST"],
        ),
        Route(
            "/oauth/token",
            _cors(
                _TokenResource(
                    _limited(request_response(TokenHandler(provider, authenticator).handle))
                ),
                ["POST", "OPTIONS"],
            ),
            methods=["POST", "OPTIONS"],
        ),
        Route(
            "/oauth/register",
            _cors(
                _registration_throttled(
                    _limited(request_response(RegistrationHandler(provider, registration).handle))
                ),
                ["POST", "OPTIONS"],
            ),
            methods=["POST", "OPTIONS"],
        ),
        Route(
            "/oauth/revoke",
            _cors(_limited(request_response(_revoke)), ["POST", "OPTIONS"]),
            methods=["POST", "OPTIONS"],
        ),
    ]
    return Router(routes=routes)


def oauth_asgi_app(fallback: ASGIApp) -> ASGIApp:
    """Route the OAuth paths to the SDK's handlers; everything else to `fallback`."""
    router: Router | None = None

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal router
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == AS_METADATA or path in PATHS or path.startswith(PRM_PREFIX + "/"):
            if router is None:
                router = build_router()
            await router(scope, receive, send)
            return
        await fallback(scope, receive, send)

    return app

"""Client ID Metadata Documents (MCP authorization 2025-11-25; draft-ietf-oauth-client-id-
metadata-document): a client whose `client_id` is an https URL publishes its metadata there.

The URL is the client's choice, so it is fetched like a creator's upstream: through the SSRF
guard at connect time (`gateway.discovery.GuardedTransport`; loopback only for the
`GATEWAY_UPSTREAM_ALLOWLIST` of tests and the demo), no redirects, a size and a time bound.
A document is trusted only if its own `client_id` equals its URL. Fetched documents are kept
for `OAUTH_CLIENT_METADATA_MAX_AGE` seconds.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx2
from django.conf import settings
from django.utils import timezone
from mcp.shared.auth import OAuthClientMetadata
from pydantic import ValidationError

from gateway.discovery import GuardedTransport  # the same SSRF guard as upstreams
from gateway.ssrf import UnsafeUpstreamError, is_allowlisted
from oauth.models import Client, ClientKind

logger = logging.getLogger(__name__)


class ClientDocumentError(ValueError):
    """The document could not be used; the message is safe to show."""


# Schemes a browser would run or read rather than hand to an app (RFC 8252 §8.6, OAuth 2.1 §7.12).
_REFUSED_SCHEMES = frozenset(
    {"javascript", "data", "vbscript", "file", "blob", "about", "ftp", "ws", "wss"}
)
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def redirect_uri_error(uri: str) -> str | None:
    """Why `uri` may not be a redirect URI, or None. MCP authorization (Communication security):
    https, or http on a loopback host; a native app's private-use scheme (cursor://, vscode://,
    RFC 8252 §7.1) is allowed too. Nothing with a fragment (RFC 6749 §3.1.2)."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if parts.fragment:
        return f"{uri!r} has a fragment."
    if scheme == "https":
        return None if parts.hostname else f"{uri!r} has no host."
    if scheme == "http":
        if parts.hostname in _LOOPBACK_HOSTS:
            return None
        return f"{uri!r} is plain http; use https, or http on localhost for a local app."
    if not scheme or scheme in _REFUSED_SCHEMES:
        return f"{uri!r} is not a redirect URI an app can receive."
    return None


def redirect_uris_error(uris: list[str]) -> str | None:
    """The first reason one of `uris` is refused, or None."""
    for uri in uris:
        if (error := redirect_uri_error(uri)) is not None:
            return error
    return None


def is_document_client_id(client_id: str) -> bool:
    """A URL-shaped client_id: https with a path, or http on an allowlisted loopback host:port."""
    parts = urlsplit(client_id)
    if not parts.hostname or parts.path in ("", "/") or parts.fragment or parts.username:
        return False
    if parts.scheme == "https":
        return True
    port = parts.port or 80
    return parts.scheme == "http" and is_allowlisted(parts.hostname, port)


async def document_fetch(url: str) -> dict[str, Any]:
    """GET the document (bounded); its JSON, validated as client metadata with a matching id."""
    limit = settings.OAUTH_CLIENT_METADATA_MAX_BYTES
    try:
        async with (
            httpx2.AsyncClient(
                transport=GuardedTransport(),
                timeout=httpx2.Timeout(settings.OAUTH_CLIENT_METADATA_TIMEOUT),
                follow_redirects=False,
                trust_env=False,
            ) as http,
            http.stream("GET", url, headers={"Accept": "application/json"}) as resp,
        ):
            if resp.status_code != 200:
                raise ClientDocumentError(f"The client's metadata URL answered {resp.status_code}.")
            body = b""
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    raise ClientDocumentError("The client's metadata document is too large.")
    except (httpx2.HTTPError, UnsafeUpstreamError, OSError) as exc:
        logger.info("oauth.client_document_unreachable", extra={"error": type(exc).__name__})
        raise ClientDocumentError("The client's metadata URL could not be fetched.") from exc
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ClientDocumentError("The client's metadata document is not JSON.") from exc
    if not isinstance(data, dict) or data.get("client_id") != url:
        raise ClientDocumentError("The client's metadata document names another client_id.")
    method = data.get("token_endpoint_auth_method", "none")
    if method != "none":
        # We hold no key to check a private_key_jwt assertion, and a document cannot carry a
        # shared secret: such a client is public (PKCE protects its code).
        raise ClientDocumentError(
            "Only public clients (token_endpoint_auth_method none) are supported."
        )
    try:
        meta = OAuthClientMetadata.model_validate({**data, "token_endpoint_auth_method": "none"})
    except ValidationError as exc:
        raise ClientDocumentError("The client's metadata document is not valid.") from exc
    if not meta.redirect_uris:
        raise ClientDocumentError("The client's metadata document lists no redirect_uris.")
    if (error := redirect_uris_error([str(u) for u in meta.redirect_uris])) is not None:
        raise ClientDocumentError(error)
    if not meta.scope:  # like a registration without one: the default scope
        meta.scope = " ".join(settings.OAUTH_SCOPES)
    return {**meta.model_dump(mode="json", exclude_none=True), "client_id": url}


def document_is_fresh(client: Client) -> bool:
    if client.kind != ClientKind.METADATA_DOCUMENT or client.fetched_at is None:
        return False
    age = timedelta(seconds=settings.OAUTH_CLIENT_METADATA_MAX_AGE)
    return client.fetched_at > timezone.now() - age

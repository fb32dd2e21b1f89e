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
    if not meta.scope:  # like a registration without one: the default scope
        meta.scope = " ".join(settings.OAUTH_SCOPES)
    return {**meta.model_dump(mode="json", exclude_none=True), "client_id": url}


def document_is_fresh(client: Client) -> bool:
    if client.kind != ClientKind.METADATA_DOCUMENT or client.fetched_at is None:
        return False
    age = timedelta(seconds=settings.OAUTH_CLIENT_METADATA_MAX_AGE)
    return client.fetched_at > timezone.now() - age

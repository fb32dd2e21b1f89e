"""Gateway reads."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.crypto import identity_key, secret_decrypt
from gateway.models import HostedUpstream


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """What the proxy needs for one listing (cached per process, GATEWAY_UPSTREAM_CACHE_SECONDS)."""

    listing_id: int
    listing_name: str
    url: str
    secret: str  # decrypted creator credential ("" = none)
    identity_key: bytes


def upstream_config_get(*, listing_name: str) -> UpstreamConfig | None:
    """The enabled upstream of a listing, or None. One query (join to the listing)."""
    row = (
        HostedUpstream.objects.select_related("listing")
        .filter(listing__name=listing_name, enabled=True)
        .only("url", "secret_encrypted", "listing__id", "listing__name")
        .first()
    )
    if row is None:
        return None
    return UpstreamConfig(
        listing_id=row.listing.pk,
        listing_name=row.listing.name,
        url=row.url,
        secret=secret_decrypt(row.secret_encrypted),
        identity_key=identity_key(row.listing.name),
    )

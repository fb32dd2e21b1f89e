"""Claiming a mirrored listing by proving control of its registry namespace.

The registry only lets a namespace's owner publish under it, so we reuse that proof: we issue a
token, the creator publishes a version whose server.json carries it in publisher-provided
metadata under our own key, and the next sync (through `claims_verify_from_registry`, a
`REGISTRY_NAMES_CHANGED_HOOKS` entry) transfers ownership.

Where the token goes (our key is `dev.toolbooth/claim`):

    {"name": "io.github.alice/weather", ...,
     "_meta": {"io.modelcontextprotocol.registry/publisher-provided":
                 {"dev.toolbooth/claim": "tbclaim_..."}}}
"""

import logging
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.lock_objects import claims_lock_pending
from billing.models import ClaimStatus, Creator, ListingClaim
from common.exceptions import ApplicationError
from marketplace.models import Listing
from registry_sync import selectors as registry_selectors

logger = logging.getLogger(__name__)

PUBLISHER_META_KEY = "io.modelcontextprotocol.registry/publisher-provided"
CLAIM_META_KEY = "dev.toolbooth/claim"
SERVER_SCHEMA_URL = "https://static.modelcontextprotocol.io/schemas/2025-09-29/server.schema.json"


def claim_start(*, creator: Creator, listing: Listing, registry_name: str = "") -> ListingClaim:
    """Issue (or return the pending) claim token for `registry_name` (default: the listing's name).

    Idempotent: one pending claim per (registry name, creator), enforced by a partial unique
    constraint; asking again returns the same unexpired token.
    """
    registry_name = registry_name or listing.name
    if "/" not in registry_name or len(registry_name) > 200:
        raise ApplicationError("A registry name looks like `io.github.you/server`.")
    if registry_name != listing.name and listing.owner_id != creator.user_id:
        raise ApplicationError("You can only link a listing you own to another registry name.")
    now = timezone.now()
    existing = ListingClaim.objects.filter(
        registry_name=registry_name, creator=creator, status=ClaimStatus.PENDING
    ).first()
    if existing is not None:
        if existing.expires_at > now and existing.listing_id == listing.pk:
            return existing
        ListingClaim.objects.filter(pk=existing.pk).update(
            status=ClaimStatus.CANCELLED if existing.expires_at > now else ClaimStatus.EXPIRED
        )
    claim = ListingClaim(
        listing=listing,
        registry_name=registry_name,
        creator=creator,
        token="tbclaim_" + secrets.token_urlsafe(24),
        expires_at=now + timedelta(days=settings.BILLING_CLAIM_TOKEN_TTL_DAYS),
    )
    claim.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            claim.save()
    except IntegrityError:
        again = ListingClaim.objects.filter(
            registry_name=registry_name, creator=creator, status=ClaimStatus.PENDING
        ).first()
        if again is None:
            raise
        return again
    logger.info("billing.claim_started", extra={"claim_id": claim.pk, "listing_id": listing.pk})
    return claim


def claim_meta_snippet(*, claim: ListingClaim) -> dict[str, Any]:
    """The `_meta` block the creator adds to server.json before publishing."""
    return {PUBLISHER_META_KEY: {CLAIM_META_KEY: claim.token}}


def server_json_for_listing(
    *, listing: Listing, claim: ListingClaim, version: str = "1.0.0"
) -> dict[str, Any]:
    """A minimal server.json for a creator-published listing, carrying the claim token, that the
    creator can publish to the official registry under `claim.registry_name`."""
    return {
        "$schema": SERVER_SCHEMA_URL,
        "name": claim.registry_name,
        "description": (listing.description or listing.display_title)[:100],
        "version": version,
        "_meta": claim_meta_snippet(claim=claim),
    }


def _token_in(raw: object) -> str | None:
    """Registry text is data: read our key defensively, never trust its type."""
    if not isinstance(raw, dict):
        return None
    server = raw.get("server")
    meta = server.get("_meta") if isinstance(server, dict) else None
    provided = meta.get(PUBLISHER_META_KEY) if isinstance(meta, dict) else None
    token = provided.get(CLAIM_META_KEY) if isinstance(provided, dict) else None
    return token if isinstance(token, str) else None


def claims_verify_from_registry(*, names: list[str]) -> int:
    """Registry hook: verify pending claims on the changed names; returns how many verified.

    A pending, unexpired claim whose token appears in any mirrored version of its registry name
    transfers `Listing.owner` (of the listing named `registry_name`, and of the creator-published
    listing it links, if different) to the claiming creator. Runs in one transaction holding
    the pending claims' row locks, so a concurrent sync cannot verify a claim twice; verified
    claims are no longer pending, so re-running is a no-op.
    """
    if not names:
        return 0
    now = timezone.now()
    verified = 0
    done: set[str] = set()
    with transaction.atomic():
        for claim in claims_lock_pending(registry_names=list(names)):
            if claim.registry_name in done:
                continue  # another creator's claim on this name verified above (now cancelled)
            if claim.expires_at <= now:
                claim.status = ClaimStatus.EXPIRED
                claim.save(update_fields=["status", "updated_at"])
                continue
            match = None
            for version in registry_selectors.server_versions_for_name(name=claim.registry_name):
                token = _token_in(version.raw)
                if token is not None and secrets.compare_digest(token, claim.token):
                    match = version
                    break
            if match is None:
                continue
            user = claim.creator.user
            previous = (
                Listing.objects.filter(name=claim.registry_name)
                .values_list("owner_id", flat=True)
                .first()
            )
            # Listing has no owner service in marketplace; ownership is billing's concern.
            Listing.objects.filter(name=claim.registry_name).update(owner=user)
            Listing.objects.filter(pk=claim.listing_id).update(owner=user)
            claim.status = ClaimStatus.VERIFIED
            claim.verified_at = now
            claim.verified_version = match.version
            claim.save(update_fields=["status", "verified_at", "verified_version", "updated_at"])
            # Other creators' pending claims on the same name lost the race for good.
            ListingClaim.objects.filter(
                registry_name=claim.registry_name, status=ClaimStatus.PENDING
            ).exclude(pk=claim.pk).update(status=ClaimStatus.CANCELLED)
            verified += 1
            done.add(claim.registry_name)
            logger.info(
                "billing.claim_verified",
                extra={
                    "claim_id": claim.pk,
                    "listing_id": claim.listing_id,
                    "previous_owner_id": previous,
                },
            )
    return verified

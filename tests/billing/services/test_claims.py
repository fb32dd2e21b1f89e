"""Claiming a listing by publishing a token in server.json `_meta`, verified by the sync hook."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from billing.models import ClaimStatus
from billing.services.claims import (
    claim_start,
    claims_verify_from_registry,
    server_json_for_listing,
)
from billing.services.creators import creator_become, listing_publish_for_creator
from tests.billing.factories import CreatorFactory
from tests.factories import ListingFactory, ServerVersionFactory, UserFactory

pytestmark = pytest.mark.django_db


def _publish(name: str, token: str | None, version: str = "1.1.0") -> None:
    meta = {"io.modelcontextprotocol.registry/publisher-provided": {"dev.toolbooth/claim": token}}
    ServerVersionFactory(name=name, version=version, extra_server={"_meta": meta} if token else {})


def test_hook_is_registered_after_the_catalogue_refresh():
    hooks = settings.REGISTRY_NAMES_CHANGED_HOOKS
    assert hooks[-1] == "billing.services.claims.claims_verify_from_registry"
    assert (
        settings.REGISTRY_PROTECTED_NAMES_PROVIDER == "billing.selectors.listing_names_with_buyers"
    )


def test_published_token_transfers_ownership_once():
    listing = ListingFactory(name="io.github.alice/weather")
    creator = CreatorFactory()
    claim = claim_start(creator=creator, listing=listing)
    assert claim_start(creator=creator, listing=listing).pk == claim.pk  # same pending token
    _publish(listing.name, "tbclaim_somebody_else")
    assert claims_verify_from_registry(names=[listing.name]) == 0
    listing.refresh_from_db()
    assert listing.owner_id is None

    _publish(listing.name, claim.token, version="1.2.0")
    assert claims_verify_from_registry(names=[listing.name]) == 1
    assert claims_verify_from_registry(names=[listing.name]) == 0
    listing.refresh_from_db()
    claim.refresh_from_db()
    assert listing.owner_id == creator.user_id
    assert (claim.status, claim.verified_version) == (ClaimStatus.VERIFIED, "1.2.0")


def test_expired_claim_does_not_transfer():
    listing = ListingFactory()
    claim = claim_start(creator=CreatorFactory(), listing=listing)
    claim.expires_at = timezone.now() - timedelta(seconds=1)
    claim.save(update_fields=["expires_at"])
    _publish(listing.name, claim.token)
    assert claims_verify_from_registry(names=[listing.name]) == 0
    claim.refresh_from_db()
    listing.refresh_from_db()
    assert claim.status == ClaimStatus.EXPIRED
    assert listing.owner_id is None


def test_competing_claim_is_cancelled_when_one_verifies():
    listing = ListingFactory()
    winner, loser = CreatorFactory(), CreatorFactory()
    loser_claim = claim_start(creator=loser, listing=listing)
    win_claim = claim_start(creator=winner, listing=listing)
    _publish(listing.name, win_claim.token)
    assert claims_verify_from_registry(names=[listing.name]) == 1
    loser_claim.refresh_from_db()
    listing.refresh_from_db()
    assert loser_claim.status == ClaimStatus.CANCELLED
    assert listing.owner_id == winner.user_id


def test_creator_listing_links_to_its_registry_name():
    user = UserFactory()
    creator = creator_become(user=user, handle="alice")
    own = listing_publish_for_creator(creator=creator, slug="weather", title="Weather")
    assert own.name == "dev.toolbooth.alice/weather"
    assert own.owner_id == user.pk
    claim = claim_start(creator=creator, listing=own, registry_name="io.github.alice/weather")
    server_json = server_json_for_listing(listing=own, claim=claim)
    assert server_json["name"] == "io.github.alice/weather"
    token = server_json["_meta"]["io.modelcontextprotocol.registry/publisher-provided"][
        "dev.toolbooth/claim"
    ]
    assert token == claim.token
    mirrored = ListingFactory(name="io.github.alice/weather")
    ServerVersionFactory(name=mirrored.name, extra_server={"_meta": server_json["_meta"]})
    assert claims_verify_from_registry(names=[mirrored.name]) == 1
    mirrored.refresh_from_db()
    assert mirrored.owner_id == user.pk

"""The claim flow through the real registry sync against the loopback fake registry."""

import pytest

from billing.services.claims import claim_start, server_json_for_listing
from billing.services.creators import creator_become
from fakes.registry import FakeRegistry
from marketplace.models import Listing
from registry_sync.services import registry_sync_run
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

NAME = "io.github.alice/weather"


@pytest.fixture
def registry(settings):
    settings.REGISTRY_MAX_REQUESTS_PER_MINUTE = 0
    fake = FakeRegistry()
    fake.publish({"name": NAME, "description": "Weather tools.", "version": "1.0.0"})
    url = fake.start()
    settings.REGISTRY_URL = url
    yield fake
    fake.stop()


def test_publishing_the_token_and_syncing_transfers_the_listing(registry):
    registry_sync_run(kind="full")
    listing = Listing.objects.get(name=NAME)
    assert listing.owner_id is None

    user = UserFactory()
    creator = creator_become(user=user, handle="alice")
    claim = claim_start(creator=creator, listing=listing)
    server = server_json_for_listing(listing=listing, claim=claim, version="1.0.1")
    registry.publish(server)  # what the creator does with the registry's publisher CLI

    registry_sync_run()
    listing.refresh_from_db()
    claim.refresh_from_db()
    assert listing.owner_id == user.pk
    assert (claim.status, claim.verified_version) == ("verified", "1.0.1")

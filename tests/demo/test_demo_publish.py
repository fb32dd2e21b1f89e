"""The demo's creator tour can verify a claim: `demo_publish` puts a version carrying the pending
claim token into the mirror through the sync's snapshot path and its hooks, as the registry and
the hourly sync would."""

import pytest
from django.core.management import call_command

from billing.models import ClaimStatus
from billing.services.claims import claim_start
from marketplace.models import Listing
from marketplace.services import listings_refresh_from_registry
from registry_sync.models import ServerVersion
from tests.billing.factories import CreatorFactory
from tests.factories import ServerVersionFactory

pytestmark = pytest.mark.django_db


def test_demo_publish_verifies_the_pending_claim(capsys):
    name = "io.github.someone/forecast"
    ServerVersionFactory(name=name, version="1.0.0")
    listings_refresh_from_registry(names=[name])
    listing = Listing.objects.get(name=name)
    assert listing.owner_id is None
    creator = CreatorFactory()
    claim = claim_start(creator=creator, listing=listing)

    call_command("demo_publish", name)

    claim.refresh_from_db()
    assert claim.status == ClaimStatus.VERIFIED
    assert claim.verified_version == "1.0.0-claim.2"
    listing.refresh_from_db()
    assert listing.owner_id == creator.user_id
    assert ServerVersion.objects.filter(name=name).count() == 2
    assert "Claim verified" in capsys.readouterr().out

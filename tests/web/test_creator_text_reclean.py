"""The data migration web 0002 cleans creator text stored before cleaning existed (a bidi
override in a title, control characters in a plan name): its operations run for real on
PostgreSQL as `migrate` runs them, on rows written the way old code wrote them (straight to the
table), then seen through the API and full-text search."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from billing.models import Creator, Plan
from marketplace.models import Listing, ListingSource
from marketplace.selectors import listing_search
from tests.billing.factories import CreatorFactory, PlanFactory
from tests.factories import ListingFactory

pytestmark = pytest.mark.django_db(transaction=True)  # the migration runs its own transaction

RLO, LRI, PDI, BEL = "\u202e", "\u2066", "\u2069", "\x07"


MIGRATION = ("web", "0002_creator_text_reclean")


def _migrate_again() -> None:
    """Run the migration's operations as `migrate` does on a deploy: on the historical models
    of the state just before it (whatever later migrations add)."""
    executor = MigrationExecutor(connection)
    migration = executor.loader.get_migration(*MIGRATION)
    state = executor.loader.project_state(MIGRATION, at_end=False)
    with connection.schema_editor(atomic=True) as editor:
        migration.apply(state, editor)


def test_old_creator_text_is_cleaned_by_the_migration_and_clean_text_is_left_alone() -> None:
    creator = CreatorFactory()
    listing = ListingFactory(name="io.example/weather", owner=creator.user)
    clean_listing = ListingFactory(name="io.example/clean", owner=creator.user)
    registry = ListingFactory(name="io.github.other/mirror")
    plan = PlanFactory(listing=listing)
    blank = PlanFactory(listing=listing, kind="per_call")
    # What the services stored before they cleaned (update() bypasses them, as old rows were).
    Creator.objects.filter(pk=creator.pk).update(display_name=f"Ada{RLO}  Tools{BEL}")
    Listing.objects.filter(pk=listing.pk).update(
        source=ListingSource.CREATOR,
        title=f"Weather {RLO}gnp.exe",
        description=f"Forecasts.\n{LRI}Hidden{PDI} text{BEL}.",
    )
    Listing.objects.filter(pk=clean_listing.pk).update(
        source=ListingSource.CREATOR, title="Clean", description="Already\nclean."
    )
    Listing.objects.filter(pk=registry.pk).update(title=f"Mirror{RLO}")  # not creator text
    Plan.objects.filter(pk=plan.pk).update(name=f"Pro{RLO}\tplan")
    Plan.objects.filter(pk=blank.pk).update(name=f"{RLO}{BEL}")

    _migrate_again()

    assert Creator.objects.get(pk=creator.pk).display_name == "Ada Tools"
    cleaned = Listing.objects.get(pk=listing.pk)
    assert cleaned.title == "Weather gnp.exe"
    assert cleaned.description == "Forecasts.\nHidden text."  # newlines kept, like on publish
    assert Plan.objects.get(pk=plan.pk).name == "Pro plan"
    assert Plan.objects.get(pk=blank.pk).name == "Pay per call"  # the kind's label, as on create
    assert Listing.objects.get(pk=registry.pk).title == f"Mirror{RLO}"  # the sync's to clean
    assert Listing.objects.get(pk=clean_listing.pk).description == "Already\nclean."

    # The API and the search read the cleaned text (the full-text vector followed it).
    body = Client().get(f"/api/v1/listings/{listing.name}").content.decode()
    assert "Weather gnp.exe" in body
    assert "\\u202e" not in body.lower()
    assert RLO not in body
    assert listing.name in [row.name for row in listing_search(q="hidden")]

    _migrate_again()  # idempotent: a second run changes nothing
    assert Listing.objects.get(pk=listing.pk).title == "Weather gnp.exe"

"""What creators type and others see is cleaned like registry text (common.text.clean_text): a
bidi override (U+202E) or an isolate (U+2066) can make a page or an agent read text in another
order than it is stored, so it never reaches the database, the API or the page."""

import pytest

from billing.models import Plan
from billing.services.creators import creator_become, listing_publish_for_creator
from billing.services.plans import plan_create, plan_update
from tests.billing.factories import CreatorFactory
from tests.factories import ListingFactory, UserFactory

pytestmark = pytest.mark.django_db

RLO, LRI, PDI = "\u202e", "\u2066", "\u2069"
TRICK = f"Free {RLO}exe.tsil{PDI} plan\x07"


def _owned_listing():
    creator = CreatorFactory()
    return creator, ListingFactory(owner=creator.user)


def test_services_clean_names_titles_and_descriptions():
    creator = creator_become(user=UserFactory(), handle="acme", display_name=f"Acme {RLO}Corp")
    assert creator.display_name == "Acme Corp"

    listing = listing_publish_for_creator(
        creator=creator,
        slug="weather",
        title=f"Weather{LRI} now",
        description=f"Line one {RLO}evil\nLine two\x00 " + "x" * 3000,
    )
    listing.refresh_from_db()
    assert listing.title == "Weather now"
    assert listing.description.startswith("Line one evil\nLine two x")  # newlines kept
    assert len(listing.description) == 2000

    owner, mine = _owned_listing()
    plan = plan_create(user=owner.user, listing=mine, kind="free", name=TRICK)
    assert plan.name == "Free exe.tsil plan"
    plan_update(user=owner.user, plan=plan, name=f"{RLO}Renamed")
    plan.refresh_from_db()
    assert plan.name == "Renamed"


def test_a_bidi_override_reaches_neither_the_api_nor_the_page(client):
    owner, listing = _owned_listing()
    client.force_login(owner.user)
    created = client.post(
        "/api/v1/billing/plans",
        {"listing": listing.name, "kind": "free", "name": TRICK},
        content_type="application/json",
    )
    assert created.status_code == 201
    assert created.json()["name"] == "Free exe.tsil plan"
    assert Plan.objects.get().name == "Free exe.tsil plan"

    page = client.get(f"/servers/{listing.name}")
    assert page.status_code == 200
    assert "Free exe.tsil plan" in page.content.decode()

    # A listing the creator published (title and description typed by them), API and page.
    published = listing_publish_for_creator(
        creator=owner, slug="notes", title=f"Notes{RLO}", description=f"Keeps {LRI}notes{PDI}."
    )
    detail = client.get(f"/api/v1/listings/{published.name}")
    assert detail.status_code == 200
    assert detail.json()["description"] == "Keeps notes."
    assert detail.json()["title"] == "Notes"
    shown = client.get(f"/servers/{published.name}")
    assert shown.status_code == 200
    assert "Keeps notes." in shown.content.decode()
    for response in (created, page, detail, shown):
        text = response.content.decode()
        assert RLO not in text
        assert "\\u202e" not in text.lower()
        assert LRI not in text

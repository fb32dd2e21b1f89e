"""Creator profile pages: their offered listings (most used first), since when, and only the
namespaces a claim proved through the registry (plus their own once they publish in it)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from billing.models import ClaimStatus, ListingClaim
from tests.billing.factories import CreatorFactory
from tests.factories import ListingFactory
from tests.marketplace.test_pages import XSS, assert_no_inline_script_or_style

pytestmark = pytest.mark.django_db


def _claim(creator: Any, listing: Any, status: str) -> ListingClaim:
    return ListingClaim.objects.create(
        listing=listing,
        registry_name=listing.name,
        creator=creator,
        token=f"tok-{listing.pk}-{status}",
        status=status,
        expires_at=timezone.now() + timedelta(days=7),
    )


def test_profile_lists_offered_listings_since_and_verified_namespaces_only(
    django_assert_max_num_queries: Any,
) -> None:
    creator = CreatorFactory(handle="acme", display_name=f"Acme {XSS}")
    weather = ListingFactory(name="io.github.acme/weather", owner=creator.user, calls_30d=5)
    own = ListingFactory(name="dev.toolbooth.acme/notes", owner=creator.user, calls_30d=9)
    ListingFactory(name="io.github.acme/old", owner=creator.user, status="gone")
    pending = ListingFactory(name="com.example/other")
    _claim(creator, weather, ClaimStatus.VERIFIED)
    _claim(creator, pending, ClaimStatus.PENDING)
    ListingFactory(name="io.github.someone/else")  # not theirs

    client = Client()
    with django_assert_max_num_queries(6):
        response = client.get("/creators/acme")
    html = response.content.decode()
    assert response.status_code == 200
    assert XSS not in html
    assert "Acme &lt;script&gt;" in html
    assert_no_inline_script_or_style(html)
    namespaces = html.split('id="namespaces">', 1)[1].split("</dd>", 1)[0]
    assert namespaces == "<code>dev.toolbooth.acme</code>, <code>io.github.acme</code>"
    assert "Servers (2)" in html
    assert html.index("dev.toolbooth.acme/notes") < html.index("io.github.acme/weather")
    assert "io.github.acme/old" not in html
    assert "io.github.someone/else" not in html
    assert creator.created_at.strftime("%B %Y") in html

    assert client.get("/creators/nobody").status_code == 404
    page = client.get(f"/servers/{own.name}").content.decode()
    assert 'href="/creators/acme"' in page

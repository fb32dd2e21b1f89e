"""Creator profile pages (`/creators/<handle>`): who sells, since when, what, under which
verified namespaces.

A namespace counts as verified when a claim on a name in it was proven through the registry
(billing's `ListingClaim`, status verified), plus the creator's own `dev.toolbooth.<handle>`
namespace once they publish under it. Three queries, whatever the number of listings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from billing.models import ClaimStatus, Creator, ListingClaim
from marketplace.models import Listing, ListingStatus
from web.selectors import ListingCard, listing_cards

CREATOR_MAX_LISTINGS = 200  # a page, not an export; the search has the rest


@dataclass(frozen=True, slots=True)
class CreatorProfile:
    creator: Creator
    since: datetime
    listings: list[ListingCard]
    namespaces: list[str]

    @property
    def name(self) -> str:
        return self.creator.display_name or self.creator.handle


def _namespace(name: str) -> str:
    return name.split("/", 1)[0]


def creator_listings(*, user_id: int) -> QuerySet[Listing]:
    """Their listings still offered, the most used first."""
    return (
        Listing.objects.filter(
            owner_id=user_id, status__in=[ListingStatus.ACTIVE, ListingStatus.DEPRECATED]
        )
        .defer("search_vector")
        .order_by("-calls_30d", "name")
    )


def creator_profile_get(*, handle: str) -> CreatorProfile | None:
    creator = Creator.objects.filter(handle=handle).first()
    if creator is None:
        return None
    listings = list(creator_listings(user_id=creator.user_id)[:CREATOR_MAX_LISTINGS])
    verified = set(
        ListingClaim.objects.filter(creator=creator, status=ClaimStatus.VERIFIED).values_list(
            "registry_name", flat=True
        )
    )
    namespaces = {_namespace(name) for name in verified}
    if any(_namespace(listing.name) == creator.namespace for listing in listings):
        namespaces.add(creator.namespace)
    return CreatorProfile(
        creator=creator,
        since=creator.created_at,
        listings=listing_cards(listings),
        namespaces=sorted(namespaces),
    )


def creator_handle_for_owner(*, user_id: int | None) -> str:
    """The handle of a listing's owner, for the "by" link on its page ('' when none)."""
    if user_id is None:
        return ""
    return Creator.objects.filter(user_id=user_id).values_list("handle", flat=True).first() or ""


@require_safe
def creator_profile_page(request: HttpRequest, handle: str) -> HttpResponse:
    profile = creator_profile_get(handle=handle)
    if profile is None:
        raise Http404("No creator with this handle.")
    return render(request, "web/creator_profile.html", {"profile": profile})

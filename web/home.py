"""The home page: the search box, then the servers Toolbooth hosts (featured, popular, new),
then the full mirror of the Official MCP Registry as the search page lists it.

Without a query the mirror alone opened on whatever sorted first (often test servers); hosted
servers are the ones people can buy and call through the gateway, so they come first. With a
query, filters or a page number it is the plain search page. Three small indexed queries on top
of the search page's own, reading the popularity columns `web.stats` maintains.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from django.views.decorators.vary import vary_on_headers

from marketplace.models import Listing, ListingStatus
from marketplace.views import listing_search_page
from web.selectors import ListingCard, listing_cards

HOME_SECTION_SIZE = 6
HOSTED_SECTIONS_CLEARED = b'\n<div id="home-hosted" hx-swap-oob="true"></div>\n'


@dataclass(frozen=True, slots=True)
class HomeSections:
    featured: list[ListingCard]
    popular: list[ListingCard]
    new: list[ListingCard]

    @property
    def any(self) -> bool:
        return bool(self.featured or self.popular or self.new)


def _hosted() -> QuerySet[Listing]:
    """Listings we host and serve now, with at least one plan on sale."""
    return Listing.objects.filter(
        status=ListingStatus.ACTIVE, hosted_upstream__enabled=True, price_models__gt=""
    ).defer("search_vector")


def home_sections_get(*, size: int = HOME_SECTION_SIZE) -> HomeSections:
    """Featured: the best rated by verified buyers (then most bought); popular: the most calls in
    30 days; new: the newest on Toolbooth. A listing appears in one section only."""
    featured = list(
        _hosted()
        .filter(rating_count__gt=0)
        .order_by("-rating_avg", "-rating_count", "-buyers", "name")[:size]
    )
    seen = [listing.pk for listing in featured]
    popular = list(
        _hosted().exclude(pk__in=seen).filter(calls_30d__gt=0).order_by("-calls_30d", "name")[:size]
    )
    seen += [listing.pk for listing in popular]
    new = list(_hosted().exclude(pk__in=seen).order_by("-created_at", "name")[:size])
    cards = iter(listing_cards([*featured, *popular, *new]))
    return HomeSections(
        featured=[next(cards) for _ in featured],
        popular=[next(cards) for _ in popular],
        new=[next(cards) for _ in new],
    )


@require_safe
@vary_on_headers("HX-Request")
def home_page(request: HttpRequest) -> HttpResponse:
    if request.headers.get("HX-Request") == "true":
        # Search as you type swaps only the results; an out-of-band empty #home-hosted takes
        # the hosted sections away too, so a result is never shown twice on the page.
        response = listing_search_page(request)
        if response.status_code == 200:
            response.content += HOSTED_SECTIONS_CLEARED
        return response
    if request.GET:
        return listing_search_page(request)
    return listing_search_page(
        request, template="web/home.html", extra={"sections": home_sections_get()}
    )

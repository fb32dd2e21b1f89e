"""Public catalogue pages, server-rendered: search (`/`) and listing detail (`/servers/<name>`).

They call the same selectors as the API. Registry text is rendered with autoescape on and never
marked safe; links are only made from http(s) URLs.
"""

from dataclasses import dataclass
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe
from django.views.decorators.vary import vary_on_headers

from marketplace.forms import ListingSearchForm
from marketplace.models import Listing
from marketplace.pagination import paginator_class_for
from marketplace.selectors import (
    NO_OFFER,
    ListingOfferSummary,
    listing_detail_get,
    listing_offer_summaries,
    listing_search_run,
    normalise_query,
)

SEARCH_PAGE_SIZE = 20


@dataclass(frozen=True, slots=True)
class SearchResult:
    """A result with what buying it here means (hosted, "from $x"), computed by the selectors:
    the template only prints it."""

    listing: Listing
    offer: ListingOfferSummary


@require_safe
@vary_on_headers("HX-Request")
def listing_search_page(
    request: HttpRequest,
    *,
    template: str = "marketplace/search.html",
    extra: dict[str, Any] | None = None,
) -> HttpResponse:
    """The search page. A higher layer may render it in its own template with more context
    (web's home page puts hosted servers above the mirror)."""
    form = ListingSearchForm(request.GET)
    filters = form.filters()
    found = listing_search_run(**filters)
    paginator_class = paginator_class_for(query=normalise_query(filters.get("q")))
    paginator = paginator_class(found.listings, SEARCH_PAGE_SIZE, known_count=found.known_count)
    page = paginator.get_page(request.GET.get("page"))
    offers = listing_offer_summaries(listing_ids=[listing.pk for listing in page.object_list])
    context = {
        "form": form,
        "page": page,
        "results": [
            SearchResult(listing=listing, offer=offers.get(listing.pk, NO_OFFER))
            for listing in page.object_list
        ],
        "query": filters.get("q", ""),
        # "githb" found nothing as typed: the results are for "github", and the page says so.
        "corrected_query": found.corrected_query,
        "has_filters": bool(filters),
        **(extra or {}),
    }
    # htmx (search as you type) swaps only the results; without JavaScript the form submits
    # and the whole page renders, with the same URL either way.
    if request.headers.get("HX-Request") == "true":
        return render(request, "marketplace/_results.html", context)
    return render(request, template, context)


@require_safe
def listing_detail_page(request: HttpRequest, name: str) -> HttpResponse:
    detail = listing_detail_get(name=name)
    if detail is None:
        raise Http404("No listing with this name.")
    return render(request, "marketplace/detail.html", {"detail": detail, "listing": detail.listing})

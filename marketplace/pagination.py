"""Pagination for catalogue searches: a capped count, so common words stay fast.

A query like "server" matches most of the catalogue; an exact COUNT(*) then reads every match
(tens of ms at 50,000 listings) only to print a number nobody pages through. With a query we count
at most `CappedCountPaginator.cap` matches (and say so); browsing without one counts exactly.
"""

from functools import cached_property, partial
from typing import TYPE_CHECKING, Any, cast

from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from rest_framework.response import Response

from common.api.pagination import DefaultPagination

if TYPE_CHECKING:
    _PaginatorBase = Paginator[Any]
else:
    _PaginatorBase = Paginator

# Like the big code-search sites: the best 1,000 matches are reachable, refine to see others.
SEARCH_COUNT_CAP = 1000


# From this offset on a page is read as a deferred join (see CappedCountPaginator.page).
DEFERRED_JOIN_MIN_OFFSET = 1000


class CappedCountPaginator(_PaginatorBase):
    cap: int | None = SEARCH_COUNT_CAP

    def __init__(self, *args: Any, known_count: int | None = None, **kwargs: Any) -> None:
        """`known_count`: how many match, when the search already read them (capped here)."""
        super().__init__(*args, **kwargs)
        self.capped = False
        self.known_count = known_count

    def page(self, number: Any) -> Any:
        """A deep page reads the ids past the offset first (an index-only scan on
        `listing_name_cover`, migration 0007), then only those rows: OFFSET over full rows
        reads and throws away every skipped listing."""
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        if bottom < DEFERRED_JOIN_MIN_OFFSET or not isinstance(self.object_list, QuerySet):
            return super().page(number)
        top = min(bottom + self.per_page, self.count)
        if top + self.orphans >= self.count:
            top = self.count
        ids = list(self.object_list.values_list("pk", flat=True)[bottom:top])
        rows = {row.pk: row for row in self.object_list.order_by().filter(pk__in=ids)}
        return Page([rows[pk] for pk in ids if pk in rows], number, self)

    @cached_property
    def count(self) -> int:
        if self.known_count is not None:
            self.capped = self.cap is not None and self.known_count > self.cap
            return self.known_count if self.cap is None else min(self.known_count, self.cap)
        if self.cap is None:
            return int(super().count)
        # Only the keys: the ranking's annotations and ordering would be computed for nothing.
        matches = cast(QuerySet[Any], self.object_list).order_by().values("pk")
        found = matches[: self.cap + 1].count()
        self.capped = found > self.cap
        return min(found, self.cap)


class ExactCountPaginator(CappedCountPaginator):
    cap = None


def paginator_class_for(*, query: str) -> type[CappedCountPaginator]:
    """Capped counts for searches, exact counts for browsing."""
    return CappedCountPaginator if query else ExactCountPaginator


class ListingSearchPagination(DefaultPagination):
    """DRF page-number pagination with the catalogue's count policy and `count_capped`."""

    def __init__(
        self, *, query: str, known_count: int | None = None, corrected_query: str = ""
    ) -> None:
        # DRF calls this with (queryset, page_size).
        self.django_paginator_class = partial(  # type: ignore[assignment]
            paginator_class_for(query=query), known_count=known_count
        )
        self.corrected_query = corrected_query

    def get_paginated_response(self, data: Any) -> Response:
        assert self.page is not None  # noqa: S101 (set by paginate_queryset)
        paginator = cast(CappedCountPaginator, self.page.paginator)
        return Response(
            {
                "count": paginator.count,
                "count_capped": paginator.capped,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "corrected_query": self.corrected_query,
                "results": data,
            }
        )

"""Pagination for catalogue searches: a capped count, so common words stay fast.

A query like "server" matches most of the catalogue; an exact COUNT(*) then reads every match
(tens of ms at 50,000 listings) only to print a number nobody pages through. With a query we count
at most `CappedCountPaginator.cap` matches (and say so); browsing without one counts exactly.
"""

from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from django.core.paginator import Paginator
from django.db.models import QuerySet
from rest_framework.response import Response

from common.api.pagination import DefaultPagination

if TYPE_CHECKING:
    _PaginatorBase = Paginator[Any]
else:
    _PaginatorBase = Paginator

# Like the big code-search sites: the best 1,000 matches are reachable, refine to see others.
SEARCH_COUNT_CAP = 1000


class CappedCountPaginator(_PaginatorBase):
    cap: int | None = SEARCH_COUNT_CAP

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capped = False

    @cached_property
    def count(self) -> int:
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

    def __init__(self, *, query: str) -> None:
        self.django_paginator_class = paginator_class_for(query=query)

    def get_paginated_response(self, data: Any) -> Response:
        assert self.page is not None  # noqa: S101 (set by paginate_queryset)
        paginator = cast(CappedCountPaginator, self.page.paginator)
        return Response(
            {
                "count": paginator.count,
                "count_capped": paginator.capped,
                "next": self.get_next_link(),
                "previous": self.get_previous_link(),
                "results": data,
            }
        )

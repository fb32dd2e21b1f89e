"""Usage as CSV (issue 12, section 5): a buyer's calls on one license, a creator's calls on one
listing, one month at a time.

The rows are streamed: the ledger is read in chunks (`web.reports.usage_events_for_export`) and
each chunk is written out before the next is read, so a month of millions of calls costs one
chunk of memory. Under ASGI (how the site runs) the body is an async iterator, because Django
would first collect a synchronous one into a list; under WSGI (the test client) a plain one.

Only the owner gets the file; anyone else gets the same 404 as for a license or listing that
does not exist.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, date, datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.http import Http404, HttpRequest, StreamingHttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from billing import selectors as billing_selectors
from common.exceptions import ApplicationError
from common.money import amount_decimal
from marketplace.selectors import listing_get
from web.reports import usage_events_for_export

if TYPE_CHECKING:
    from django.db.models import QuerySet

CSV_HEADER = ("time", "tool", "outcome", "billed_amount", "currency", "call_id")
# Rows fetched per round trip: large enough to keep the query count low on a big month,
# small enough that a chunk is a few hundred kilobytes.
CHUNK_ROWS = 2000
# Cells a spreadsheet would run as a formula (OWASP "CSV injection"); tool names come from
# the creator's upstream, so they are untrusted text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def month_bounds_utc(month: str | None, *, today: date | None = None) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) in UTC for "YYYY-MM" (this month if
    empty). A malformed month is a 404: the URL names nothing."""
    today = today or datetime.now(tz=UTC).date()
    if month:
        try:
            year, mon = (int(part) for part in month.split("-", 1))
            start = datetime(year, mon, 1, tzinfo=UTC)
        except ValueError as exc:
            raise Http404("Month is YYYY-MM.") from exc
        if not 2000 <= year <= 2999:
            raise Http404("Month is YYYY-MM.")
    else:
        start = datetime(today.year, today.month, 1, tzinfo=UTC)
    end = datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def previous_month(today: date | None = None) -> date:
    """The first day of last month (UTC), for the pages' "last month" export link."""
    today = today or datetime.now(tz=UTC).date()
    year, month = (today.year, today.month - 1) if today.month > 1 else (today.year - 1, 12)
    return date(year, month, 1)


def _cell(text: str) -> str:
    return f"'{text}" if text.startswith(_FORMULA_START) else text


class _Line:
    """A file-like object whose write returns the line: csv.writer formats, we stream."""

    def write(self, value: str) -> str:
        return value


def _csv_line(row: tuple[Any, ...]) -> str:
    occurred_at, tool, outcome, unit_amount, currency, call_id = row
    writer = csv.writer(_Line())
    return str(
        writer.writerow(
            (
                occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                _cell(str(tool)),
                outcome,
                amount_decimal(amount=unit_amount, currency=currency),
                currency.upper(),
                str(call_id),
            )
        )
    )


def _header() -> str:
    return str(csv.writer(_Line()).writerow(CSV_HEADER))


def _sync_lines(rows: Iterable[tuple[Any, ...]]) -> Iterator[str]:
    yield _header()
    for row in rows:
        yield _csv_line(row)


def _open(events: QuerySet[Any, tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    return events.iterator(chunk_size=CHUNK_ROWS)


def _take(rows: Iterator[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return list(islice(rows, CHUNK_ROWS))


def _close(rows: Iterator[tuple[Any, ...]]) -> None:
    close = getattr(rows, "close", None)
    if close is not None:
        close()


async def _async_lines(events: QuerySet[Any, tuple[Any, ...]]) -> AsyncIterator[str]:
    """The rows read a chunk at a time on the request's database thread (`sync_to_async` is
    thread-sensitive, so the chunked cursor stays on one connection). Not `aiterator()`: for
    `values_list` querysets Django 5.2 runs the query on the event loop and refuses."""
    yield _header()
    rows = await sync_to_async(_open)(events)
    try:
        while chunk := await sync_to_async(_take)(rows):
            for row in chunk:
                yield _csv_line(row)
    finally:
        await sync_to_async(_close)(rows)  # a client that left early frees the cursor


def _csv_response(
    request: HttpRequest, events: QuerySet[Any, tuple[Any, ...]], filename: str
) -> StreamingHttpResponse:
    if hasattr(request, "scope"):  # ASGI: an async body is streamed as it is produced
        body: Any = _async_lines(events)
    else:
        body = _sync_lines(events.iterator(chunk_size=CHUNK_ROWS))
    response = StreamingHttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _file_slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:80]


@never_cache
@require_safe
def license_usage_csv(request: HttpRequest, license_id: int) -> StreamingHttpResponse:
    """The buyer's calls on one of their licenses in one month (`?month=YYYY-MM`)."""
    if not request.user.is_authenticated:
        raise Http404("Not found.")
    try:
        lic = billing_selectors.license_get_for_buyer(buyer=request.user, license_id=license_id)
    except ApplicationError as exc:
        raise Http404("Not found.") from exc
    start, end = month_bounds_utc(request.GET.get("month"))
    events = usage_events_for_export(start=start, end=end, license_id=lic.pk)
    filename = f"usage-{_file_slug(lic.listing.name)}-license-{lic.pk}-{start:%Y-%m}.csv"
    return _csv_response(request, events, filename)


@never_cache
@require_safe
def listing_usage_csv(request: HttpRequest, name: str) -> StreamingHttpResponse:
    """Every buyer's calls on a listing the creator owns, in one month (`?month=YYYY-MM`)."""
    listing = listing_get(name=name) if request.user.is_authenticated else None
    if listing is None or listing.owner_id != request.user.pk:
        raise Http404("Not found.")
    start, end = month_bounds_utc(request.GET.get("month"))
    events = usage_events_for_export(start=start, end=end, listing_id=listing.pk)
    filename = f"usage-{_file_slug(listing.name)}-{start:%Y-%m}.csv"
    return _csv_response(request, events, filename)

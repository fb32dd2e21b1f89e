"""Reads for the people pages: usage from the gateway's ledger, earnings from billing's sales.

Every function is a constant number of grouped queries over indexed columns
(`UsageEvent(license_id, occurred_at)`, `UsageEvent.listing_id`, `Sale.creator_id`), so a page's
cost does not grow with the number of calls, only with the days and tools it shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Aggregate, Avg, Count, FloatField, Max, Q, QuerySet, Sum
from django.db.models.functions import TruncDate, TruncMonth
from django.utils import timezone

from billing.models import Sale
from gateway.health import UNHEALTHY_AFTER
from gateway.health import error_text as health_error_text
from gateway.models import HostedUpstream, UsageEvent, UsageOutcome
from web.formatting import count_format

USAGE_DAYS = 30
HEALTH_WINDOW = timedelta(hours=24)
# Outcomes that say the upstream (not the caller, not a tool's own isError) misbehaved.
UPSTREAM_FAILURES = (UsageOutcome.UPSTREAM_ERROR, UsageOutcome.TIMEOUT)
# A page shows at most this many tools; a hostile upstream could invent thousands.
MAX_TOOLS = 50


class _Percentile(Aggregate):
    """PostgreSQL's percentile_cont (an ordered-set aggregate); the demo's SQLite has none."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, fraction: float) -> None:
        super().__init__(expression, fraction=float(fraction))


@dataclass(frozen=True, slots=True)
class DayUsage:
    day: date
    calls: int
    billable: int
    spend: int  # minor units of the license's currency


@dataclass(frozen=True, slots=True)
class ToolUsage:
    tool: str
    calls: int
    errors: int
    billable: int
    spend: int
    avg_ms: float
    p95_ms: float | None


@dataclass(frozen=True, slots=True)
class UsageReport:
    days: list[DayUsage]
    tools: list[ToolUsage]
    currency: str
    total_calls: int
    total_spend: int
    since: date


def _days_since(days: int, now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    start = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return start


def _per_tool(events: QuerySet[UsageEvent], *, p95: bool) -> list[ToolUsage]:
    aggregates = {
        "calls": Count("id"),
        "errors": Count("id", filter=~Q(outcome=UsageOutcome.SUCCESS)),
        "n_billable": Count("id", filter=Q(billable=True)),
        "spend": Sum("unit_amount", filter=Q(billable=True)),
        "avg_ms": Avg("latency_ms"),
    }
    # The percentile sorts every row of a group: only the creator's page, which needs it, pays.
    if p95 and connection.vendor == "postgresql":
        aggregates["p95_ms"] = _Percentile("latency_ms", 0.95)
    # Annotations built from a dict: django-stubs cannot type them, so the rows are plain dicts.
    grouped: Any = events.values("tool")
    rows: list[dict[str, Any]] = list(
        grouped.annotate(**aggregates).order_by("-calls", "tool")[:MAX_TOOLS]
    )
    return [
        ToolUsage(
            tool=row["tool"],
            calls=row["calls"],
            errors=row["errors"],
            billable=row["n_billable"],
            spend=row["spend"] or 0,
            avg_ms=round(row["avg_ms"] or 0.0, 1),
            p95_ms=round(row["p95_ms"], 1) if row.get("p95_ms") is not None else None,
        )
        for row in rows
    ]


def usage_report_for_license(
    *, license_id: int, currency: str, days: int = USAGE_DAYS, now: datetime | None = None
) -> UsageReport:
    """Calls and spend per day (every day of the window, zeros included) and per tool.

    Two grouped queries on the (license_id, occurred_at) index.
    """
    start = _days_since(days, now)
    events = UsageEvent.objects.filter(license_id=license_id, occurred_at__gte=start)
    by_day = {
        row["day"]: row
        for row in events.annotate(day=TruncDate("occurred_at"))
        .values("day")
        .annotate(
            calls=Count("id"),
            n_billable=Count("id", filter=Q(billable=True)),
            spend=Sum("unit_amount", filter=Q(billable=True)),
        )
        .order_by("day")
    }
    first = start.date()
    day_list = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        row = by_day.get(day)
        day_list.append(
            DayUsage(
                day=day,
                calls=row["calls"] if row else 0,
                billable=row["n_billable"] if row else 0,
                spend=(row["spend"] or 0) if row else 0,
            )
        )
    return UsageReport(
        days=day_list,
        tools=_per_tool(events, p95=False),
        currency=currency,
        total_calls=sum(d.calls for d in day_list),
        total_spend=sum(d.spend for d in day_list),
        since=first,
    )


def tool_stats_for_listing(
    *, listing_id: int, days: int = USAGE_DAYS, now: datetime | None = None
) -> list[ToolUsage]:
    """Calls, errors (anything but a billable result) and latency per tool, for its creator."""
    start = _days_since(days, now)
    return _per_tool(
        UsageEvent.objects.filter(listing_id=listing_id, occurred_at__gte=start), p95=True
    )


@dataclass(frozen=True, slots=True)
class Health:
    """What the badge on the listing page, the creator's pages and the catalogue say about an
    upstream we host: one figure from one selector, `upstream_health_get`."""

    state: str  # "ok" | "degraded" | "down" | "unknown" | "disabled"
    label: str
    calls: int = 0
    failures: int = 0
    last_ok_at: datetime | None = None
    reason: str = ""  # the last failure, in words (calls, discovery or Test connection)

    @property
    def title(self) -> str:
        return HEALTH_TITLES[self.state]


HEALTH_TITLES = {
    "ok": "Healthy",
    "degraded": "Degraded",
    "down": "Failing",
    "disabled": "Paused",
    "unknown": "No recent calls",
}


def upstream_health_get(*, listing_id: int, now: datetime | None = None) -> Health | None:
    """None when we do not host the listing; otherwise its health from two sources: the last
    24 h of calls in the ledger, and the upstream's own health fields, which also count tool
    discovery and "Test connection" (gateway.health). An upstream whose last
    `UNHEALTHY_AFTER` calls or checks failed is failing whatever its 24 h share says, and one
    nobody called is only "no recent calls" while its last check passed.

    Only upstream failures count: anything that is not an MCP answer (HTTP errors, HTML or
    plain text, timeouts, refused connections; the gateway records those as upstream_error),
    not a tool's own isError. Two queries (the upstream row, one aggregate).
    """
    upstream = (
        HostedUpstream.objects.filter(listing_id=listing_id)
        .only("enabled", "last_ok_at", "last_error_at", "last_error", "consecutive_failures")
        .first()
    )
    if upstream is None:
        return None
    if not upstream.enabled:
        return Health(state="disabled", label="Paused by its creator")
    now = now or timezone.now()
    stats = UsageEvent.objects.filter(
        listing_id=listing_id, occurred_at__gte=now - HEALTH_WINDOW
    ).aggregate(
        calls=Count("id"),
        failures=Count("id", filter=Q(outcome__in=UPSTREAM_FAILURES)),
        last_ok=Max("occurred_at", filter=~Q(outcome__in=UPSTREAM_FAILURES)),
    )
    calls, failures = stats["calls"], stats["failures"]
    last_ok = max((d for d in (stats["last_ok"], upstream.last_ok_at) if d), default=None)
    last_failed = upstream.last_error_at is not None and (
        last_ok is None or upstream.last_error_at > last_ok
    )
    reason = health_error_text(upstream.last_error) if last_failed else ""
    failing = upstream.consecutive_failures >= UNHEALTHY_AFTER and last_failed
    if calls == 0:
        if failing:
            label = f"{upstream.consecutive_failures} checks or calls failed in a row"
            return Health(state="down", label=label, last_ok_at=last_ok, reason=reason)
        if last_failed:
            return Health(
                state="degraded", label="Its last check failed", last_ok_at=last_ok, reason=reason
            )
        return Health(state="unknown", label="No calls in the last 24 hours", last_ok_at=last_ok)
    ok_share = (calls - failures) / calls
    percent = f"{ok_share * 100:.1f}".rstrip("0").rstrip(".")
    label = f"{percent}% of {count_format(calls)} call{'s' if calls != 1 else ''} answered in 24 h"
    state = "ok" if ok_share >= 0.99 else "degraded" if ok_share >= 0.5 else "down"
    if failing:
        state = "down"
    elif last_failed and state == "ok":
        state = "degraded"
    return Health(
        state=state,
        label=label,
        calls=calls,
        failures=failures,
        last_ok_at=last_ok,
        reason=reason,
    )


@dataclass(frozen=True, slots=True)
class MonthEarnings:
    month: date
    currency: str
    sales: int
    gross: int
    fee: int
    net: int


@dataclass(frozen=True, slots=True)
class Earnings:
    months: list[MonthEarnings] = field(default_factory=list)
    totals: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # currency -> g, f, n


def earnings_for_creator(
    *, creator_id: int, listing_id: int | None = None, months: int = 12
) -> Earnings:
    """Gross, platform fee and net per month and currency from the append-only Sale ledger
    (refunds are negative rows, so they net out in the month they happened). One query."""
    sales = Sale.objects.filter(creator_id=creator_id)
    if listing_id is not None:
        sales = sales.filter(listing_id=listing_id)
    rows = (
        sales.annotate(month=TruncMonth("created_at"))
        .values("month", "currency")
        .annotate(
            count=Count("id"),
            gross=Sum("gross_amount"),
            fee=Sum("platform_fee_amount"),
            net=Sum("net_amount"),
        )
        .order_by("-month", "currency")[: months * 3]
    )
    out = Earnings()
    for row in rows:
        month = row["month"]
        month_day = month.date() if isinstance(month, datetime) else month
        out.months.append(
            MonthEarnings(
                month=month_day,
                currency=row["currency"],
                sales=row["count"],
                gross=row["gross"] or 0,
                fee=row["fee"] or 0,
                net=row["net"] or 0,
            )
        )
        g, f, n = out.totals.get(row["currency"], (0, 0, 0))
        out.totals[row["currency"]] = (
            g + (row["gross"] or 0),
            f + (row["fee"] or 0),
            n + (row["net"] or 0),
        )
    return out


def sales_for_buyer(*, buyer_id: int, limit: int = 50) -> QuerySet[Sale]:
    """The buyer's payments and refunds, newest first: their invoices and receipts."""
    return (
        Sale.objects.filter(buyer_id=buyer_id)
        .select_related("listing")
        .order_by("-created_at")[:limit]
    )


def sales_recent_for_creator(
    *, creator_id: int, listing_id: int | None = None, limit: int = 20
) -> QuerySet[Sale]:
    sales = Sale.objects.filter(creator_id=creator_id)
    if listing_id is not None:
        sales = sales.filter(listing_id=listing_id)
    return sales.select_related("listing").order_by("-created_at")[:limit]


# Columns of a usage export, in order (web.exports writes the header from these).
USAGE_EXPORT_FIELDS = ("occurred_at", "tool", "outcome", "unit_amount", "currency", "call_id")


def usage_events_for_export(
    *,
    start: datetime,
    end: datetime,
    license_id: int | None = None,
    listing_id: int | None = None,
) -> QuerySet[UsageEvent, tuple[Any, ...]]:
    """One license's or one listing's calls in [start, end), oldest first, as tuples of
    `USAGE_EXPORT_FIELDS`, for a CSV export that reads it in chunks (a chunked cursor), so
    a large month is never held in memory. The caller checks ownership."""
    if (license_id is None) == (listing_id is None):
        raise ValueError("Give exactly one of license_id and listing_id.")
    events = UsageEvent.objects.filter(occurred_at__gte=start, occurred_at__lt=end)
    if license_id is not None:
        events = events.filter(license_id=license_id)  # the (license_id, occurred_at) index
    elif listing_id is not None:
        events = events.filter(listing_id=listing_id)
    return events.order_by("occurred_at", "id").values_list(*USAGE_EXPORT_FIELDS)

"""Writes to the catalogue. Listings are derived from the registry mirror in batches.

Registry text is untrusted: everything that reaches a listing column goes through
`common.text.clean_text` (capped, no control characters) or a strict http(s) URL check.
"""

import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.contrib.postgres.search import SearchVector
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import connection, transaction
from django.db.models.expressions import CombinedExpression

from common.text import clean_text
from marketplace.models import Listing, ListingSource, ListingStatus
from registry_sync.selectors import server_versions_for_names

logger = logging.getLogger(__name__)

# Names per round trip: large enough that 50,000 names take a few dozen queries, small enough
# that the rows (with their raw JSON) of one batch stay a few MB in memory.
REFRESH_BATCH_SIZE = 1000

_LIVE = {ListingStatus.ACTIVE.value, ListingStatus.DEPRECATED.value}
_KNOWN_STATUSES = {choice.value for choice in ListingStatus}
_NAME_SPLIT = re.compile(r"[^0-9A-Za-z]+")
_CAMEL_SPLIT = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_TOKEN_STRIP = re.compile(r"[^a-z0-9._+-]")
_URL_VALIDATOR = URLValidator(schemes=["http", "https"])
_NEVER = datetime.min.replace(tzinfo=UTC)

# Columns the mirror owns. Anything else (owner, source, price_models) belongs to people.
MIRRORED_FIELDS = [
    "title",
    "description",
    "latest_version",
    "version_count",
    "status",
    "status_message",
    "website_url",
    "repository_url",
    "published_at",
    "upstream_updated_at",
    "has_remote",
    "has_package",
    "package_types",
    "transports",
    "name_words",
]


@dataclass(frozen=True, slots=True)
class _VersionRow:
    pk: int
    name: str
    version: str
    status: str
    status_message: str
    published_at: datetime | None
    upstream_updated_at: datetime | None
    is_latest: bool


def name_to_words(name: str) -> str:
    """`io.github.AcmeCo/weather-api` -> `io github AcmeCo Acme Co weather api` (for search)."""
    words: list[str] = []
    for part in _NAME_SPLIT.split(name):
        if not part:
            continue
        words.append(part)
        pieces = _CAMEL_SPLIT.split(part)
        if len(pieces) > 1:
            words.extend(pieces)
    return " ".join(words)[:300].strip()


def http_url_or_empty(value: object, *, max_length: int = 500) -> str:
    """The URL if it is a well-formed http(s) URL that fits the column, else ""."""
    if not isinstance(value, str):
        return ""
    url = value.strip()
    if not url or len(url) > max_length or url != clean_text(url, max_length=max_length):
        return ""
    try:
        _URL_VALIDATOR(url)
    except ValidationError:
        return ""
    return url


def facet_token(value: object, *, max_length: int = 32) -> str:
    """A registry enum value (registryType, transport type) as a safe lower-case token."""
    if not isinstance(value, str):
        return ""
    return _TOKEN_STRIP.sub("", value.strip().lower())[:max_length]


def facet_string(values: Iterable[str], *, max_length: int) -> str:
    """`{"npm", "pypi"}` -> `",npm,pypi,"` (sorted, capped at whole tokens)."""
    out = ","
    for token in sorted({v for v in values if v}):
        if len(out) + len(token) + 1 > max_length:
            break
        out += token + ","
    return "" if out == "," else out


def _list_of_dicts(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _newest(rows: Sequence[_VersionRow]) -> _VersionRow:
    return max(
        rows,
        key=lambda r: (r.published_at or _NEVER, r.version),
    )


def _display_row(rows: Sequence[_VersionRow]) -> _VersionRow:
    """The version a listing shows: the flagged latest unless it is dead while others live.

    The mirror re-derives `is_latest` (which upstream points at the highest non-deleted
    version), so the fallbacks only matter between a status change and that re-derivation.
    """
    live = [r for r in rows if r.status in _LIVE]
    flagged = [r for r in rows if r.is_latest]
    flagged_live = [r for r in flagged if r.status in _LIVE]
    return _newest(flagged_live or live or flagged or rows)


def _listing_status(rows: Sequence[_VersionRow], display: _VersionRow) -> str:
    statuses = {r.status for r in rows}
    if statuses <= {ListingStatus.GONE.value}:
        return ListingStatus.GONE.value
    if statuses <= {ListingStatus.DELETED.value, ListingStatus.GONE.value}:
        return ListingStatus.DELETED.value
    # Unknown upstream statuses are kept raw by the mirror; the catalogue treats them as active.
    return display.status if display.status in _KNOWN_STATUSES else ListingStatus.ACTIVE.value


def listing_fields_from_versions(
    *, name: str, rows: Sequence[_VersionRow], server: dict[str, Any]
) -> dict[str, Any]:
    """Everything the mirror decides about one listing, from its versions and the shown one."""
    display = _display_row(rows)
    status = _listing_status(rows, display)
    # The registry never sets a message on active versions; don't show a stale one either.
    message = (
        "" if status == ListingStatus.ACTIVE else clean_text(display.status_message, max_length=500)
    )
    repository = server.get("repository")
    remotes = _list_of_dicts(server.get("remotes"))
    packages = _list_of_dicts(server.get("packages"))
    transports = {facet_token(r.get("type")) for r in remotes}
    for package in packages:
        transport = package.get("transport")
        if isinstance(transport, dict):
            transports.add(facet_token(transport.get("type")))
    published = [r.published_at for r in rows if r.published_at is not None]
    updated = [r.upstream_updated_at for r in rows if r.upstream_updated_at is not None]
    return {
        "title": clean_text(server.get("title"), max_length=100),
        "description": clean_text(server.get("description"), max_length=2000),
        "latest_version": clean_text(display.version, max_length=255),
        "version_count": len(rows),
        "status": status,
        "status_message": message,
        "website_url": http_url_or_empty(server.get("websiteUrl")),
        "repository_url": (
            http_url_or_empty(repository.get("url")) if isinstance(repository, dict) else ""
        ),
        "published_at": min(published) if published else None,
        "upstream_updated_at": max(updated) if updated else None,
        "has_remote": bool(remotes),
        "has_package": bool(packages),
        "package_types": facet_string(
            (facet_token(p.get("registryType")) for p in packages), max_length=200
        ),
        "transports": facet_string(transports, max_length=200),
        "name_words": name_to_words(name),
    }


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _read_versions(names: list[str]) -> tuple[dict[str, list[_VersionRow]], dict[int, Any]]:
    """Two queries per batch: every version's summary, then the raw JSON of the shown ones."""
    by_name: dict[str, list[_VersionRow]] = defaultdict(list)
    summary = server_versions_for_names(names=names).values_list(
        "pk",
        "name",
        "version",
        "status",
        "status_message",
        "published_at",
        "upstream_updated_at",
        "is_latest",
    )
    for row in summary.order_by():
        by_name[row[1]].append(_VersionRow(*row))
    display_pks = [_display_row(rows).pk for rows in by_name.values()]
    raws = dict(
        server_versions_for_names(names=names)
        .filter(pk__in=display_pks)
        .order_by()
        .values_list("pk", "raw")
    )
    return by_name, raws


def _search_vector() -> CombinedExpression:
    # name_words uses 'simple' (no stemming of identifiers); title and description 'english'.
    return (
        SearchVector("name_words", config="simple", weight="A")
        + SearchVector("title", config="english", weight="A")
        + SearchVector("description", config="english", weight="B")
    )


def listings_search_vector_update(*, names: list[str]) -> None:
    """Recompute the full-text vector of these listings in one UPDATE (PostgreSQL only)."""
    if connection.vendor != "postgresql" or not names:
        return
    Listing.objects.filter(name__in=names).update(search_vector=_search_vector())


def _refresh_batch(names: list[str]) -> int:
    by_name, raws = _read_versions(names)
    existing = {
        row["name"]: row
        for row in Listing.objects.filter(name__in=names)
        .order_by()
        .values("name", "source", *MIRRORED_FIELDS)
    }
    to_write: list[Listing] = []
    for name in names:
        rows = by_name.get(name)
        current = existing.get(name)
        if not rows:
            # No mirror rows: creator listings are theirs to keep; a registry listing whose rows
            # are all gone from the mirror is shown as gone, never silently dropped.
            if current is None or current["source"] != ListingSource.REGISTRY:
                continue
            fields = {**current, "status": ListingStatus.GONE.value, "version_count": 0}
            fields.pop("source")
            fields.pop("name")
        else:
            raw = raws.get(_display_row(rows).pk)
            server = raw.get("server") if isinstance(raw, dict) else None
            fields = listing_fields_from_versions(
                name=name, rows=rows, server=server if isinstance(server, dict) else {}
            )
        if current is not None and all(current[f] == fields[f] for f in MIRRORED_FIELDS):
            continue
        to_write.append(Listing(name=name, **fields))
    if not to_write:
        return 0
    # One upsert plus one vector UPDATE; atomic so no reader sees a listing without its vector.
    with transaction.atomic():
        Listing.objects.bulk_create(
            to_write,
            update_conflicts=True,
            unique_fields=["name"],
            update_fields=[*MIRRORED_FIELDS, "updated_at"],
        )
        listings_search_vector_update(names=[listing.name for listing in to_write])
    return len(to_write)


def listings_refresh_from_registry(*, names: list[str]) -> int:
    """Upsert the listings of these registry names from the mirror; returns how many changed.

    Called by the registry sync (settings.REGISTRY_NAMES_CHANGED_HOOKS) with the names whose
    rows changed. Idempotent: a second call with the same mirror writes nothing. Creator-made
    listings keep owner, source and prices; registry text wins once the registry has the name.
    """
    unique = sorted({n for n in names if isinstance(n, str) and n})
    changed = 0
    for batch in _chunks(unique, REFRESH_BATCH_SIZE):
        changed += _refresh_batch(batch)
    if changed:
        search_words_refresh()
    logger.info("listings_refreshed", extra={"names": len(unique), "changed": changed})
    return changed


def search_words_refresh() -> None:
    """Recompute the catalogue's word list that search corrects typos against (migration 0006).

    Off the hot path: after a registry refresh that changed listings (about a second at 50,000
    listings). CONCURRENTLY, so searches keep reading the old list meanwhile. A no-op on SQLite
    and where pg_trgm was unavailable (no view)."""
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('marketplace_search_word') IS NOT NULL")
        row = cursor.fetchone()
        if row and row[0]:
            cursor.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY marketplace_search_word")
            # Fresh statistics, or the planner scans all the words instead of the index.
            cursor.execute("ANALYZE marketplace_search_word")


@dataclass(frozen=True, slots=True)
class ListingStats:
    """Popularity and trust of one listing, as the aggregation in `web.stats` computed them."""

    calls_30d: int = 0
    buyers: int = 0
    uptime: float | None = None
    health_state: str = ""
    rating_avg: float | None = None
    rating_count: int = 0


LISTING_STATS_FIELDS = (
    "calls_30d",
    "buyers",
    "uptime",
    "health_state",
    "rating_avg",
    "rating_count",
    "stats_updated_at",
)


def listing_stats_set(*, stats: dict[int, ListingStats], at: datetime) -> int:
    """Write the aggregated figures onto the listings (one bulk UPDATE per 500), so search and
    pages read columns instead of the ledger. A listing that had figures and is not in `stats`
    any more is reset to zeros, so a listing whose calls aged out stops looking popular.
    Returns how many rows were written."""
    stale = Listing.objects.filter(stats_updated_at__isnull=False).exclude(pk__in=list(stats))
    stats = {**dict.fromkeys(stale.values_list("pk", flat=True), ListingStats()), **stats}
    listings = list(Listing.objects.filter(pk__in=list(stats)).only("pk"))
    for listing in listings:
        figures = stats[listing.pk]
        listing.calls_30d = figures.calls_30d
        listing.buyers = figures.buyers
        listing.uptime = figures.uptime
        listing.health_state = figures.health_state
        listing.rating_avg = figures.rating_avg
        listing.rating_count = figures.rating_count
        listing.stats_updated_at = at
    Listing.objects.bulk_update(listings, LISTING_STATS_FIELDS, batch_size=500)
    return len(listings)


def listing_rating_set(*, listing_id: int, rating_avg: float | None, rating_count: int) -> None:
    """Update only the rating figures, right after a review changes, so the page that follows
    shows them without waiting for the next stats run."""
    Listing.objects.filter(pk=listing_id).update(rating_avg=rating_avg, rating_count=rating_count)

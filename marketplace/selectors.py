"""Reads of the catalogue: search, detail, and the names people pay for.

Search runs PostgreSQL full-text search (GIN index on `search_vector`) with ranking; SQLite (the
demo) falls back to a plain substring scan. Every list read is a constant number of queries.
"""

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.postgres.search import SearchQuery, SearchRank
from django.db import connection, transaction
from django.db.models import (
    BooleanField,
    Case,
    ExpressionWrapper,
    F,
    FloatField,
    IntegerField,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, Ln
from django.utils.module_loading import import_string

from common.text import clean_text
from marketplace.models import Listing, ListingStatus
from marketplace.services import facet_token
from registry_sync.selectors import server_versions_for_name

MAX_QUERY_LENGTH = 200
# A name has up to 10,000 versions upstream; a detail shows the newest ones and the count.
DETAIL_MAX_VERSIONS = 100
# Caps on what a detail shows of the latest server.json (registry text is untrusted).
DETAIL_MAX_REMOTES = 20
DETAIL_MAX_PACKAGES = 20
DETAIL_MAX_NAMES = 50

HIDDEN_BY_DEFAULT = (ListingStatus.DELETED.value, ListingStatus.GONE.value)
STATUS_ANY = "any"
TRANSPORT_CHOICES = ("remote", "local")
PRICE_MODEL_CHOICES = ("free", "one_time", "subscription", "per_call")
ORDERING_CHOICES = ("relevance", "name", "-updated", "-published")
# Known registryType values; the facet itself is open (any token the registry sends).
KNOWN_PACKAGE_TYPES = ("npm", "pypi", "oci", "nuget", "mcpb")
NAME_MAX_LENGTH = 200
# Above this many matches search ranks a bounded window (see _ranked_window); the API and
# page count up to the same number (marketplace.pagination.SEARCH_COUNT_CAP).
SEARCH_CANDIDATES = 1000
# How many of the newest matches a common word ranks (see _ranked_window); at most
# SEARCH_CANDIDATES (that many are read).
SEARCH_WINDOW = SEARCH_CANDIDATES
# A buyable listing beats a mirror entry matching the same way: ts_rank gives about 0.61 for one
# name/title hit and 0.24 for one description hit, so +0.3 lifts a buyable title match over a
# mirror name match, but not a buyable description-only match over it.
BUYABLE_BOOST = 0.3
# Typo correction looks up at most this many words of a query.
MAX_CORRECTED_WORDS = 8
# At most this much for a million calls plus buyers in 30 days (log scale): use breaks ties
# among similar matches, never outweighs a name match.
POPULARITY_WEIGHT = 0.2

# Punctuation inside a token ("io.github.acme/weather-api") becomes a space for the 'simple'
# query, so a pasted name matches the name words the index holds.
_INNER_PUNCT = re.compile(r"(?<=\w)[-./:@_+]+(?=\w)")
_WORD = re.compile(r"\w+")
_SAFE_NAME = re.compile(r"\A[^\x00-\x1f\x7f]{1,200}\Z")

_LIST_COLUMNS = (
    "id",
    "name",
    "source",
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
    "price_models",
    "owner_id",
    "calls_30d",
    "buyers",
    "uptime",
    "rating_avg",
    "rating_count",
)


def normalise_query(q: str | None) -> str:
    """The user's query as safe text (no control characters, capped)."""
    return clean_text(q or "", max_length=MAX_QUERY_LENGTH)


def _full_text_query(q: str) -> SearchQuery:
    english = SearchQuery(q, search_type="websearch", config="english")
    simple = SearchQuery(_INNER_PUNCT.sub(" ", q), search_type="websearch", config="simple")
    return english | simple


def _apply_filters(
    qs: QuerySet[Listing],
    *,
    transport: str | None,
    package_type: str | None,
    status: str | None,
    price_model: str | None,
    free_tier: bool = False,
) -> QuerySet[Listing]:
    if status == STATUS_ANY:
        pass
    elif status:
        qs = qs.filter(status=status)
    else:
        qs = qs.exclude(status__in=HIDDEN_BY_DEFAULT)
    if transport == "remote":
        qs = qs.filter(has_remote=True)
    elif transport == "local":
        qs = qs.filter(has_package=True)
    token = facet_token(package_type)
    if token:
        qs = qs.filter(package_types__contains=f",{token},")
    if price_model:
        qs = qs.filter(price_models__contains=f",{price_model},")
    if free_tier and price_model != "free":
        # "Has a free plan" next to a paid price model: listings that offer both.
        qs = qs.filter(price_models__contains=",free,")
    return qs


def _order(qs: QuerySet[Listing], ordering: str) -> QuerySet[Listing]:
    if ordering == "-updated":
        return qs.order_by(F("upstream_updated_at").desc(nulls_last=True), "name")
    if ordering == "-published":
        return qs.order_by(F("published_at").desc(nulls_last=True), "name")
    return qs.order_by("name")


def _buyable() -> Q:
    """Someone sells it here: an owner and at least one plan (billing keeps `price_models`)."""
    return Q(owner__isnull=False) & ~Q(price_models__in=["", ","])


def _buyable_flag() -> Case:
    return Case(When(_buyable(), then=Value(1.0)), default=Value(0.0), output_field=FloatField())


def _popularity_score() -> Ln:
    """Real use as a bounded bonus: ln(1 + calls in 30 days + buyers) over ln(1,000,001), so a
    million calls and buyers is 1.0. The figures are written off the hot path
    (`marketplace.services.listing_stats_set`), so ranking reads two columns."""
    return Ln(Cast(F("calls_30d") + F("buyers") + Value(1), FloatField()))


def _recent_first() -> list[Any]:
    # The order of the `listing_updated` index, so picking candidates walks it and stops early.
    return [F("upstream_updated_at").desc(nulls_last=True)]


def _id_in(ids: list[int]) -> RawSQL:
    # One array parameter, not a thousand placeholders; a list, as a subquery the planner
    # hash-joins it against the whole table.
    return RawSQL('"marketplace_listing"."id" = ANY(%s)', (ids,), output_field=BooleanField())


def _ranked(candidates: QuerySet[Listing], ts_query: SearchQuery) -> QuerySet[Listing]:
    """Text relevance plus buyability plus use, best first."""
    score = (
        SearchRank(F("search_vector"), ts_query)
        + _buyable_flag() * Value(BUYABLE_BOOST)
        + _popularity_score() * Value(POPULARITY_WEIGHT / math.log(1_000_001))
    )
    return candidates.annotate(rank=ExpressionWrapper(score, output_field=FloatField())).order_by(
        "-rank", "name"
    )


def _ranked_window(
    base: QuerySet[Listing], matches: QuerySet[Listing], ts_query: SearchQuery, newest: list[int]
) -> QuerySet[Listing]:
    """Matches of a common word ranked by relevance, buyability and use, over a bounded set.

    Ranking every match of a common word ("server" is in 80% of the catalogue) reads the whole
    table (~50 ms at 50,000 listings). Only the best SEARCH_CANDIDATES are reachable anyway
    (the count is capped the same way), so past that we rank the union of every buyable match
    (few, and the ones people can use here) and the newest SEARCH_WINDOW matches (a
    maintained server beats an abandoned one; `newest`, read by walking the `listing_updated`
    index). An old mirror entry can fall out of a common word's results; a second word brings
    it back.
    """
    buyable = matches.filter(_buyable()).order_by().values_list("pk", flat=True)[:SEARCH_WINDOW]
    ids = list(dict.fromkeys([*newest[:SEARCH_WINDOW], *buyable]))
    return _ranked(base.filter(_id_in(ids)), ts_query)


def _name_contains(base: QuerySet[Listing], query: str) -> QuerySet[Listing]:
    """Names containing the query (0004's trigram index on UPPER(name)), prefixes first."""
    prefix_first = Case(
        When(name__istartswith=query, then=Value(0)), default=Value(1), output_field=IntegerField()
    )
    return (
        base.filter(name__icontains=query).annotate(prefix=prefix_first).order_by("prefix", "name")
    )


# Set once the word table is known to exist (it only goes away with a migration backwards).
_search_words_ready = False


def _corrected_query(query: str) -> str | None:
    """The query with each word replaced by the closest word of the catalogue, or None if no
    word changed.

    One query over `marketplace_search_word` (migration 0006: every lexeme of the listings,
    trigram-indexed): "githb" -> "github". Among equally close words the more common wins.
    """
    words = _WORD.findall(_INNER_PUNCT.sub(" ", query.lower()))[:MAX_CORRECTED_WORDS]
    if not words:
        return None
    global _search_words_ready
    with transaction.atomic(), connection.cursor() as cursor:
        if not _search_words_ready:
            cursor.execute("SELECT to_regclass('marketplace_search_word') IS NOT NULL")
            row = cursor.fetchone()
            if not row or not row[0]:
                return None  # pg_trgm was unavailable when migrating
            _search_words_ready = True
        # The planner guesses 1% of the words match and may prefer scanning all of them (80 ms
        # at 55,000 words) to the trigram index (1-3 ms); for this statement only.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "SELECT w.q, (SELECT s.word FROM marketplace_search_word s WHERE s.word %% w.q "
            "ORDER BY similarity(s.word, w.q) DESC, s.ndoc DESC, s.word LIMIT 1) "
            "FROM unnest(%s::text[]) WITH ORDINALITY AS w(q, n) ORDER BY w.n",
            [words],
        )
        corrected = [best or word for word, best in cursor.fetchall()]
    return " ".join(corrected) if corrected != words else None


@dataclass(frozen=True, slots=True)
class ListingSearchResult:
    """A search's listings (lazy, the caller pages them) and what the search already knows."""

    listings: QuerySet[Listing]
    # How many match, when the search read the matching ids anyway (up to one past
    # SEARCH_CANDIDATES): the paginator caps this instead of counting again. None: count them.
    known_count: int | None = None
    # The query with its words corrected, when the results are for it ("githb" -> "github").
    corrected_query: str = ""


def _full_text(
    base: QuerySet[Listing], text: str, *, ordering: str | None
) -> ListingSearchResult | None:
    """Full-text matches of `text`, ranked or in `ordering`; None if nothing matches.

    The matching ids are read once, up to one past SEARCH_CANDIDATES: their number is the count
    (capped like the paginator's) and the page works on that list instead of matching again.
    Ranked, they are the newest matches (`_recent_first`; for a rare word the GIN index finds
    them and they are sorted, for a common one the planner walks the date index and stops), so
    a common word needs no second pass to pick its window (`_ranked_window`).
    """
    ts_query = _full_text_query(text)
    matches = base.filter(search_vector=ts_query)
    if ordering and ordering != "relevance":
        ids = list(matches.order_by().values_list("pk", flat=True)[: SEARCH_CANDIDATES + 1])
        if not ids:
            return None
        return ListingSearchResult(_order(matches, ordering), known_count=len(ids))
    newest = list(
        matches.order_by(*_recent_first()).values_list("pk", flat=True)[: SEARCH_CANDIDATES + 1]
    )
    if not newest:
        return None
    if len(newest) > SEARCH_CANDIDATES:
        ranked = _ranked_window(base, matches, ts_query, newest)
    else:
        ranked = _ranked(base.filter(_id_in(newest)), ts_query)
    return ListingSearchResult(ranked, known_count=len(newest))


def listing_search(
    *,
    q: str | None = None,
    transport: str | None = None,
    package_type: str | None = None,
    status: str | None = None,
    price_model: str | None = None,
    free_tier: bool = False,
    ordering: str | None = None,
) -> QuerySet[Listing]:
    """Listings matching a search, filtered and ordered; lazy, so the caller paginates it."""
    return listing_search_run(
        q=q,
        transport=transport,
        package_type=package_type,
        status=status,
        price_model=price_model,
        free_tier=free_tier,
        ordering=ordering,
    ).listings


def listing_search_run(
    *,
    q: str | None = None,
    transport: str | None = None,
    package_type: str | None = None,
    status: str | None = None,
    price_model: str | None = None,
    free_tier: bool = False,
    ordering: str | None = None,
) -> ListingSearchResult:
    """A search with what it learnt on the way: how many match and the corrected query.

    On PostgreSQL a full-text search runs one or two queries itself (the matching ids, capped;
    for a common word the candidate ids) and knows the count, so the page makes two or three.
    When no word matches: names containing the query, else the query with its words corrected
    (`_corrected_query`).
    """
    query = normalise_query(q)
    base = _apply_filters(
        Listing.objects.only(*_LIST_COLUMNS),
        transport=transport,
        package_type=package_type,
        status=status,
        price_model=price_model,
        free_tier=free_tier,
    )
    if not query:
        return ListingSearchResult(
            _order(base, ordering if ordering and ordering != "relevance" else "name")
        )

    if connection.vendor == "postgresql":
        found = _full_text(base, query, ordering=ordering)
        if found is not None:
            return found
        # Nothing in the index: people paste names ("io.github.user/weather", "weath"), and
        # they mistype words ("githb").
        by_name = _name_contains(base, query)
        if not by_name.exists():
            corrected = _corrected_query(query)
            found = _full_text(base, corrected, ordering=ordering) if corrected else None
            if found is not None:
                return ListingSearchResult(
                    found.listings, known_count=found.known_count, corrected_query=corrected or ""
                )
            # Nothing at all: no count and no page to read.
            return ListingSearchResult(by_name.none(), known_count=0)
        if ordering and ordering != "relevance":
            return ListingSearchResult(_order(by_name, ordering))
        return ListingSearchResult(by_name)
    # SQLite (the demo): no full-text index, a plain scan is fine at demo sizes; buyable first.
    fallback = base.filter(
        Q(name__icontains=query) | Q(title__icontains=query) | Q(description__icontains=query)
    )
    if ordering and ordering != "relevance":
        return ListingSearchResult(_order(fallback, ordering))
    prefix_first = Case(
        When(name__istartswith=query, then=Value(0)), default=Value(1), output_field=IntegerField()
    )
    return ListingSearchResult(
        fallback.annotate(prefix=prefix_first, buyable=_buyable_flag()).order_by(
            "-buyable", "prefix", "name"
        )
    )


@dataclass(frozen=True, slots=True)
class ListingOfferSummary:
    """What a search result says about buying a listing. Filled by the provider in
    settings.MARKETPLACE_OFFER_SUMMARY_PROVIDER (`web.selectors.listing_offer_summaries`: the
    gateway's hosting flag and billing's plans and prices), as marketplace imports neither."""

    hosted: bool = False
    free_plan: bool = False
    # "from $5.00 per month" (the cheapest paid plan, billing.pricing.starting_price), "Free"
    # with only free plans, "" with no plans.
    price_from: str = ""
    price_from_amount: int | None = None  # minor units of `currency`
    currency: str = ""


NO_OFFER = ListingOfferSummary()


def listing_offer_summaries(*, listing_ids: list[int]) -> dict[int, ListingOfferSummary]:
    """Offer summaries of a page of results (a constant number of queries, in the provider)."""
    path = settings.MARKETPLACE_OFFER_SUMMARY_PROVIDER
    if not path or not listing_ids:
        return {}
    provider = import_string(path)
    return dict(provider(listing_ids=list(listing_ids)))


def listing_get(*, name: str) -> Listing | None:
    """One listing by its exact, case-sensitive name (None for unknown or unusable names)."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        return None
    return Listing.objects.defer("search_vector").filter(name=name).first()


@dataclass(frozen=True, slots=True)
class VersionSummary:
    version: str
    status: str
    is_latest: bool
    published_at: datetime | None
    status_message: str


@dataclass(frozen=True, slots=True)
class RemoteSummary:
    type: str
    url: str
    header_names: list[str]


@dataclass(frozen=True, slots=True)
class PackageSummary:
    registry_type: str
    identifier: str
    version: str
    transport_type: str
    runtime_hint: str
    env_var_names: list[str]


@dataclass(frozen=True, slots=True)
class ListingDetail:
    listing: Listing
    versions: list[VersionSummary] = field(default_factory=list)
    versions_truncated: bool = False
    remotes: list[RemoteSummary] = field(default_factory=list)
    packages: list[PackageSummary] = field(default_factory=list)


def _list_of_dicts(value: object, *, cap: int) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)][:cap]


def _names(items: object) -> list[str]:
    names = (clean_text(i.get("name"), max_length=100) for i in _list_of_dicts(items, cap=500))
    return [n for n in names if n][:DETAIL_MAX_NAMES]


def _remotes(server: dict[str, Any]) -> list[RemoteSummary]:
    return [
        RemoteSummary(
            type=facet_token(remote.get("type")),
            # Kept as text, not a link: remote URLs may be templates ("https://{tenant}.x/mcp").
            url=clean_text(remote.get("url"), max_length=500),
            # Header names only: values can be secrets or templates for them.
            header_names=_names(remote.get("headers")),
        )
        for remote in _list_of_dicts(server.get("remotes"), cap=DETAIL_MAX_REMOTES)
    ]


def _packages(server: dict[str, Any]) -> list[PackageSummary]:
    out = []
    for package in _list_of_dicts(server.get("packages"), cap=DETAIL_MAX_PACKAGES):
        transport = package.get("transport")
        out.append(
            PackageSummary(
                registry_type=facet_token(package.get("registryType")),
                identifier=clean_text(package.get("identifier"), max_length=300),
                version=clean_text(package.get("version"), max_length=255),
                transport_type=(
                    facet_token(transport.get("type")) if isinstance(transport, dict) else ""
                ),
                runtime_hint=clean_text(package.get("runtimeHint"), max_length=100),
                env_var_names=_names(package.get("environmentVariables")),
            )
        )
    return out


def listing_detail_get(*, name: str) -> ListingDetail | None:
    """A listing with its newest versions and the latest version's remotes and packages.

    Three queries whatever the number of versions: the listing, up to DETAIL_MAX_VERSIONS
    version summaries (no raw JSON), and the latest version's raw JSON.
    """
    listing = listing_get(name=name)
    if listing is None:
        return None
    rows = list(
        server_versions_for_name(name=listing.name)
        .order_by(F("published_at").desc(nulls_last=True), "-version")
        .values_list("version", "status", "is_latest", "published_at", "status_message")[
            : DETAIL_MAX_VERSIONS + 1
        ]
    )
    versions = [
        VersionSummary(
            version=clean_text(version, max_length=255),
            status=status,
            is_latest=is_latest,
            published_at=published_at,
            status_message=clean_text(message, max_length=500),
        )
        for version, status, is_latest, published_at, message in rows[:DETAIL_MAX_VERSIONS]
    ]
    server: dict[str, Any] = {}
    if versions:
        # The version the listing shows (the mirror's pick); the flagged latest as a fallback.
        shown_first = Case(
            When(version=listing.latest_version, then=Value(0)),
            default=Value(1),
            output_field=IntegerField(),
        )
        raw = (
            server_versions_for_name(name=listing.name)
            .filter(Q(version=listing.latest_version) | Q(is_latest=True))
            .order_by(shown_first)
            .values_list("raw", flat=True)
            .first()
        )
        candidate = raw.get("server") if isinstance(raw, dict) else None
        server = candidate if isinstance(candidate, dict) else {}
    return ListingDetail(
        listing=listing,
        versions=versions,
        versions_truncated=len(rows) > DETAIL_MAX_VERSIONS,
        remotes=_remotes(server),
        packages=_packages(server),
    )


def listing_names_with_buyers(*, names: list[str]) -> set[str]:
    """Names (of these) that people pay for: an owner and at least one price model.

    The registry sync raises an alert instead of silently unlisting these. Billing may replace
    this provider (settings.REGISTRY_PROTECTED_NAMES_PROVIDER) with a license-based one.
    """
    if not names:
        return set()
    return set(
        Listing.objects.filter(name__in=names, owner__isnull=False)
        .exclude(price_models__in=["", ","])
        .values_list("name", flat=True)
    )

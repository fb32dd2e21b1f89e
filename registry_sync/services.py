"""Mirror the Official MCP Registry: full walks with reconcile, incremental walks, the snapshot.

The algorithm is ../shared/registry/README.md, "Sync algorithm the mirror must implement":
- full: walk `/v0.1/servers?include_deleted=true` to the end, upsert by (name, version), then
  reconcile (rows not served any more become `gone`) — only after a walk that completed;
- incremental: walk `updated_since = watermark - margin`, upsert, then re-read
  `/versions?include_deleted=true` of every touched name, because the registry does not bump
  `updatedAt` on the rows whose isLatest flips as a side effect;
- the watermark is the max `updatedAt` seen in the data (never our clock), advanced only when a
  walk completes;
- upserts compare a hash of the canonical raw JSON, so an unchanged re-sync writes nothing.

Decisions (documented for the lead and the admin):
- An unknown upstream status (e.g. `archived`) keeps its row: `status` becomes `deprecated`
  (still listed, shown with a warning, because the only hiding status upstream knows is
  `deleted`) and `upstream_status` keeps the raw string. A missing status means `active`, as the
  registry's own migrations treat it.
- Quarantined (counted, recorded, its page still syncs): a non-object item (null, a string), no
  `server` object, a missing/empty/non-string name or version, a non-object `_meta`, text that
  PostgreSQL cannot store (NUL, lone surrogates). Over-long text and unparseable timestamps are
  kept (raw JSON keeps everything; the timestamp columns stay empty).
- A name people pay for (settings.REGISTRY_PROTECTED_NAMES_PROVIDER) is never silently unlisted:
  if its rows vanish upstream they are NOT marked gone and a PAID_LISTING_VANISHED alert is raised
  for a person to decide (a registry data reset must not unlist paid listings); if a version is
  deleted upstream (moderation) the status is applied and a PAID_LISTING_DELETED alert is raised.
"""

import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Case, Count, Q, Value, When
from django.utils import timezone
from django.utils.module_loading import import_string

from registry_sync.client import CursorLoopError, RegistryClient, RegistryPage
from registry_sync.models import (
    AlertKind,
    QuarantinedItem,
    ServerVersion,
    SyncAlert,
    SyncCursor,
    SyncKind,
    SyncRun,
    SyncStatus,
    VersionStatus,
)
from registry_sync.snapshot import BUNDLED_SNAPSHOT, load_server_list
from registry_sync.versioning import VersionFacts, pick_latest

logger = logging.getLogger(__name__)

OFFICIAL = "io.modelcontextprotocol.registry/official"
_KNOWN_STATUSES = {VersionStatus.ACTIVE, VersionStatus.DEPRECATED, VersionStatus.DELETED}
# The snapshot is applied in chunks the size of one registry page, through the same code.
SNAPSHOT_CHUNK = 100
# Hooks get at most this many names per call, so a 20k first sync stays bounded in memory.
HOOK_BATCH = 1000
# A quarantined item's text is kept for a person to read, not whole megabytes of it.
QUARANTINE_TEXT_MAX = 64_000
# The lock outlives any sane sync (a 20k walk at 120 req/min takes minutes) but frees itself
# within two beat ticks if a worker dies holding it.
SYNC_LOCK_TTL_SECONDS = 2 * 60 * 60

_UPDATE_FIELDS = [
    "status",
    "upstream_status",
    "status_message",
    "status_changed_at",
    "published_at",
    "upstream_updated_at",
    "is_latest",
    "raw",
    "content_hash",
    "gone_at",
    "updated_at",
]


# -- parsing -------------------------------------------------------------------------------


@dataclass(slots=True)
class ParsedItem:
    name: str
    version: str
    status: str
    upstream_status: str
    status_message: str
    status_changed_at: datetime | None
    published_at: datetime | None
    upstream_updated_at: datetime | None
    is_latest: bool
    raw: Any
    content_hash: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.version)


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def server_item_parse(item: Any) -> ParsedItem | str:
    """Validate one response item leniently; a string return is the quarantine reason."""
    if item is None:
        return "item is null"
    if not isinstance(item, dict):
        return f"item is a JSON {type(item).__name__}, not an object"
    server = item.get("server")
    if not isinstance(server, dict):
        return "item has no 'server' object"
    name = server.get("name")
    if not isinstance(name, str) or not name.strip():
        return "server.name is missing, empty or not a string"
    if len(name) > 200:
        return "server.name is longer than 200 characters"
    version = server.get("version")
    if not isinstance(version, str) or not version.strip():
        return "server.version is missing, empty or not a string"
    if len(version) > 255:
        return "server.version is longer than 255 characters"
    meta = item.get("_meta")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        return "_meta is not an object"
    official = meta.get(OFFICIAL)
    if official is None:
        official = {}
    if not isinstance(official, dict):
        return f"_meta[{OFFICIAL!r}] is not an object"
    canonical = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if "\\u0000" in canonical:
        return "item contains NUL characters (PostgreSQL cannot store them)"
    try:
        encoded = canonical.encode("utf-8")
    except UnicodeEncodeError:
        return "item contains invalid Unicode (lone surrogates)"
    # The hash is of the item as served, so an unchanged oversize item re-syncs as unchanged.
    digest = hashlib.sha256(encoded).hexdigest()
    raw: Any = item
    size = len(encoded)
    if size > settings.REGISTRY_MAX_RAW_STRING_CHARS:  # else no string can be too long
        shorter, cut = _cut_long_strings(item, settings.REGISTRY_MAX_RAW_STRING_CHARS)
        if cut:
            raw = shorter
            size = len(json.dumps(raw, separators=(",", ":"), ensure_ascii=False).encode())
            logger.info(
                "registry_sync.item_cut", extra={"server": name, "version": version, "cut": cut}
            )
    if size > settings.REGISTRY_MAX_ITEM_BYTES:
        after = " after cutting long strings" if raw is not item else ""
        return f"item is {size} bytes{after} (limit {settings.REGISTRY_MAX_ITEM_BYTES})"

    raw_status = official.get("status", VersionStatus.ACTIVE)
    if raw_status in _KNOWN_STATUSES:
        status, upstream_status = str(raw_status), ""
    else:
        # Unknown upstream status: keep the row listed with a warning, remember the string.
        status, upstream_status = VersionStatus.DEPRECATED, str(raw_status)[:32]
    message = official.get("statusMessage")
    return ParsedItem(
        name=name,
        version=version,
        status=status,
        upstream_status=upstream_status,
        status_message=message[:500] if isinstance(message, str) else "",
        status_changed_at=_timestamp(official.get("statusChangedAt")),
        published_at=_timestamp(official.get("publishedAt")),
        upstream_updated_at=_timestamp(official.get("updatedAt")),
        is_latest=official.get("isLatest") is True,
        raw=raw,
        content_hash=digest,
    )


def _cut_long_strings(value: Any, limit: int) -> tuple[Any, int]:
    """(a copy of `value` with every string and key longer than `limit` cut, how many were).

    Why cut rather than quarantine: the row stays listed with everything we show (the shown
    fields are cut far shorter anyway), and one bloated field (a 1 MB description) must not
    hide a server version, or keep a stale copy of it, or fill the table. Each cut string ends
    with a marker saying how long it was, so the stored JSON never passes for the original.
    """
    if isinstance(value, str):
        if len(value) <= limit:
            return value, 0
        return f"{value[:limit]}…[cut by Toolbooth: {len(value)} characters]", 1
    if isinstance(value, list):
        out_list, total = [], 0
        for element in value:
            cut_element, n = _cut_long_strings(element, limit)
            out_list.append(cut_element)
            total += n
        return out_list, total
    if isinstance(value, dict):
        out_dict: dict[str, Any] = {}
        total = 0
        for key, element in value.items():
            cut_key, n_key = _cut_long_strings(key, limit)
            cut_element, n = _cut_long_strings(element, limit)
            out_dict[cut_key] = cut_element
            total += n + n_key
        return out_dict, total
    return value, 0


def _item_version_hint(item: Any) -> str | None:
    """The version string of an item even if it is otherwise malformed (None if absent)."""
    if isinstance(item, dict):
        server = item.get("server")
        if isinstance(server, dict):
            version = server.get("version")
            if isinstance(version, str):
                return version
    return None


# -- run state -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncProgress:
    """What a command shows while a sync runs."""

    kind: str
    phase: str
    pages: int
    seen: int
    created: int
    updated: int
    unchanged: int
    quarantined: int
    gone: int


@dataclass
class _RunState:
    run: SyncRun
    client: RegistryClient | None
    progress: Callable[[SyncProgress], None] | None
    requests_before: int = 0
    outcomes: dict[tuple[str, str], str] = field(default_factory=dict)
    names_changed: set[str] = field(default_factory=set)
    touched_names: set[str] = field(default_factory=set)
    newly_deleted: dict[str, list[str]] = field(default_factory=dict)
    max_updated: datetime | None = None
    phase: str = "walk"

    def record(self, key: tuple[str, str], outcome: str) -> None:
        """Count each (name, version) once per run; a later change upgrades 'unchanged'."""
        run = self.run
        previous = self.outcomes.get(key)
        if previous is None:
            self.outcomes[key] = outcome
            setattr(run, outcome, getattr(run, outcome) + 1)
        elif previous == "unchanged" and outcome == "updated":
            self.outcomes[key] = "updated"
            run.unchanged -= 1
            run.updated += 1

    def save(self) -> None:
        run = self.run
        if self.client is not None:
            run.requests = self.client.requests - self.requests_before
        run.save(
            update_fields=[
                "pages",
                "requests",
                "seen",
                "created",
                "updated",
                "unchanged",
                "quarantined",
                "latest_flips",
                "gone",
                "held",
            ]
        )
        if self.progress is not None:
            self.progress(
                SyncProgress(
                    kind=run.kind,
                    phase=self.phase,
                    pages=run.pages,
                    seen=run.seen,
                    created=run.created,
                    updated=run.updated,
                    unchanged=run.unchanged,
                    quarantined=run.quarantined,
                    gone=run.gone,
                )
            )


# -- upsert --------------------------------------------------------------------------------


def _apply_items(state: _RunState, items: list[Any], *, label: str, count_seen: bool) -> None:
    """Upsert one page of items; bad items are quarantined, the rest of the page still lands."""
    run = state.run
    parsed: dict[tuple[str, str], ParsedItem] = {}
    bad: list[tuple[int, str, Any]] = []
    for position, item in enumerate(items):
        result = server_item_parse(item)
        if isinstance(result, str):
            bad.append((position, result, item))
        else:
            parsed[result.key] = result  # a duplicate within one page: the later one wins
    if count_seen:
        run.seen += len(items)
    now = timezone.now()
    names = {p.name for p in parsed.values()}
    versions = {p.version for p in parsed.values()}
    # One page lands whole: its rows and its quarantine records, or nothing (then the run fails
    # and the watermark stays put, so the next run re-reads the page).
    with transaction.atomic():
        existing: dict[tuple[str, str], ServerVersion] = {}
        if parsed:
            for row in ServerVersion.objects.filter(name__in=names, version__in=versions).only(
                "id", "name", "version", "status", "is_latest", "content_hash"
            ):
                existing[(row.name, row.version)] = row
        to_create: list[ServerVersion] = []
        to_update: list[ServerVersion] = []
        for key, p in parsed.items():
            state.touched_names.add(p.name)
            if p.upstream_updated_at is not None and (
                state.max_updated is None or p.upstream_updated_at > state.max_updated
            ):
                state.max_updated = p.upstream_updated_at
            found = existing.get(key)
            if found is None:
                to_create.append(
                    ServerVersion(
                        name=p.name,
                        version=p.version,
                        status=p.status,
                        upstream_status=p.upstream_status,
                        status_message=p.status_message,
                        status_changed_at=p.status_changed_at,
                        published_at=p.published_at,
                        upstream_updated_at=p.upstream_updated_at,
                        is_latest=p.is_latest,
                        raw=p.raw,
                        content_hash=p.content_hash,
                    )
                )
                state.names_changed.add(p.name)
                state.record(key, "created")
                continue
            row = found
            if row.content_hash == p.content_hash and row.status != VersionStatus.GONE:
                state.record(key, "unchanged")
                continue
            if row.is_latest != p.is_latest:
                run.latest_flips += 1
            if row.status != VersionStatus.DELETED and p.status == VersionStatus.DELETED:
                state.newly_deleted.setdefault(p.name, []).append(p.version)
            row.status = p.status
            row.upstream_status = p.upstream_status
            row.status_message = p.status_message
            row.status_changed_at = p.status_changed_at
            row.published_at = p.published_at
            row.upstream_updated_at = p.upstream_updated_at
            row.is_latest = p.is_latest
            row.raw = p.raw
            row.content_hash = p.content_hash
            row.gone_at = None
            row.updated_at = now
            to_update.append(row)
            state.names_changed.add(p.name)
            state.record(key, "updated")
        if to_create:
            ServerVersion.objects.bulk_create(to_create)
        if to_update:
            ServerVersion.objects.bulk_update(to_update, _UPDATE_FIELDS)
        if bad:
            QuarantinedItem.objects.bulk_create(
                [
                    QuarantinedItem(
                        run=run,
                        page_cursor=label[:500],
                        position=position,
                        reason=reason[:500],
                        raw_text=json.dumps(item, ensure_ascii=False)[:QUARANTINE_TEXT_MAX],
                    )
                    for position, reason, item in bad
                ]
            )
    for position, reason, _ in bad:
        logger.warning(
            "registry_sync.item_quarantined",
            extra={"run_id": run.pk, "page": label, "position": position, "reason": reason},
        )
    run.quarantined += len(bad)


def _walk(state: _RunState, pages: Iterable[RegistryPage]) -> None:
    for page in pages:
        state.run.pages += 1
        _apply_items(state, page.items, label=page.cursor or "", count_seen=True)
        state.save()


# -- latest flags, reconcile, alerts -------------------------------------------------------


def _protected_names(names: list[str]) -> set[str]:
    """The subset of `names` people pay for, from the marketplace (imports flow upward only)."""
    if not names:
        return set()
    path = settings.REGISTRY_PROTECTED_NAMES_PROVIDER
    if not path:
        return set()
    provider = import_string(path)
    return set(provider(names=list(names))) & set(names)


def _open_alert(*, kind: str, name: str, message: str, run: SyncRun) -> None:
    """One unresolved alert per (kind, name): a daily reconcile must not pile up duplicates."""
    if SyncAlert.objects.filter(kind=kind, name=name, resolved_at__isnull=True).exists():
        return
    SyncAlert.objects.create(kind=kind, name=name, message=message, run=run)
    logger.warning("registry_sync.alert", extra={"kind": kind, "run_id": run.pk})


def _mark_vanished(state: _RunState, rows: list[tuple[int, str, str]]) -> None:
    """Rows the registry no longer serves become `gone`, except those of paid listings."""
    if not rows:
        return
    names = sorted({name for _, name, _ in rows})
    protected = _protected_names(names)
    for name in sorted(protected):
        versions = sorted(v for _, n, v in rows if n == name)
        _open_alert(
            kind=AlertKind.PAID_LISTING_VANISHED,
            name=name,
            message=(
                f"{len(versions)} version(s) of {name} vanished from the registry "
                f"({', '.join(versions[:10])}). People pay for this listing, so the rows were "
                "kept listed; decide whether to unlist it."
            ),
            run=state.run,
        )
    ids = [pk for pk, name, _ in rows if name not in protected]
    if not ids:
        return
    now = timezone.now()
    updated = ServerVersion.objects.filter(pk__in=ids).update(
        status=VersionStatus.GONE, gone_at=now, is_latest=False, updated_at=now
    )
    state.run.gone += updated
    state.names_changed.update(name for _, name, _ in rows if name not in protected)


def _reconcile_full(state: _RunState) -> None:
    """After a COMPLETE full walk: every live row the walk did not see has vanished upstream.

    Unless that would unlist a large share of the catalogue at once: a registry answer that is
    empty or cut short looks exactly like a mass removal, so such a reconcile is held for a
    person (MASS_UNLIST_HELD alert, applied by `sync_alert_apply_held_unlisting`)."""
    state.phase = "reconcile"
    seen = state.outcomes
    listed: set[str] = set()
    served: set[str] = set()
    vanished: list[tuple[int, str, str]] = []
    for pk, name, version in (
        ServerVersion.objects.exclude(status=VersionStatus.GONE)
        .values_list("pk", "name", "version")
        .iterator(chunk_size=5000)
    ):
        listed.add(name)
        if (name, version) in seen:
            served.add(name)
        else:
            vanished.append((pk, name, version))
    leaving = {name for _, name, _ in vanished} - served
    protected = _protected_names(sorted(leaving))
    unlisting = leaving - protected
    if _mass_unlisting(len(unlisting), len(listed)):
        held = [row for row in vanished if row[1] not in protected]
        _hold_unlisting(state, held, unlisting, len(listed))
        _mark_vanished(state, [row for row in vanished if row[1] in protected])  # alerts only
    else:
        _mark_vanished(state, vanished)
        # This reconcile applied its own view of the registry: an older held one is outdated.
        SyncAlert.objects.filter(kind=AlertKind.MASS_UNLIST_HELD, resolved_at__isnull=True).update(
            resolved_at=timezone.now()
        )
    state.save()


def _mass_unlisting(unlisting: int, listed: int) -> bool:
    """More than REGISTRY_MASS_UNLIST_MIN_LISTINGS and more than the share, both."""
    share: float = settings.REGISTRY_MASS_UNLIST_MAX_SHARE
    least: int = settings.REGISTRY_MASS_UNLIST_MIN_LISTINGS
    return unlisting > least and unlisting > share * listed


def _hold_unlisting(
    state: _RunState, rows: list[tuple[int, str, str]], names: set[str], listed: int
) -> None:
    """Keep every row listed and ask a person: one open alert, holding this run's view."""
    examples = ", ".join(sorted(names)[:10])
    message = (
        f"This full sync would have unlisted {len(names)} of {listed} listings at once "
        f"({len(rows)} versions; e.g. {examples}). An empty or truncated registry answer looks "
        "like this, so nothing was unlisted. If the registry really removed them, apply the "
        "held unlisting (admin action); otherwise resolve this alert."
    )
    ids = sorted(pk for pk, _, _ in rows)
    alert = SyncAlert.objects.filter(
        kind=AlertKind.MASS_UNLIST_HELD, resolved_at__isnull=True
    ).first()
    if alert is None:
        SyncAlert.objects.create(
            kind=AlertKind.MASS_UNLIST_HELD,
            message=message,
            run=state.run,
            held_version_ids=ids,
        )
    else:  # the newest full sync's view replaces the one waiting
        alert.message, alert.run, alert.held_version_ids = message, state.run, ids
        alert.save(update_fields=["message", "run", "held_version_ids"])
    state.run.held += len(ids)
    logger.warning(
        "registry_sync.mass_unlist_held",
        extra={"run_id": state.run.pk, "names": len(names), "listed": listed},
    )


def _rederive_latest_from_upstream(state: _RunState, client: RegistryClient) -> None:
    """Re-read `/versions?include_deleted=true` of each touched name: flips are not in the walk."""
    state.phase = "versions"
    for name in sorted(state.touched_names):
        items = client.versions(name, include_deleted=True)
        _apply_items(state, items, label=f"versions:{name}", count_seen=False)
        served = {v for v in (_item_version_hint(i) for i in items) if v is not None}
        local = (
            ServerVersion.objects.filter(name=name)
            .exclude(status=VersionStatus.GONE)
            .values_list("pk", "name", "version")
        )
        _mark_vanished(state, [row for row in local if row[2] not in served])
        state.save()


def _refetch_max_names() -> int:
    """Above this many touched names an incremental re-walks the listing instead of /versions."""
    configured: int = settings.REGISTRY_REFETCH_MAX_NAMES
    if configured > 0:
        return configured
    live = ServerVersion.objects.exclude(status=VersionStatus.GONE).count()
    return max(50, live // 100)


def _settle_latest_flags(state: _RunState) -> None:
    """Exactly one latest per name among live rows, by the registry's own rule when unsure."""
    names = list(
        ServerVersion.objects.exclude(status=VersionStatus.GONE)
        .values("name")
        .annotate(latest=Count("pk", filter=Q(is_latest=True)))
        .exclude(latest=1)
        .values_list("name", flat=True)
    )
    for name in names:
        rows = list(
            ServerVersion.objects.filter(name=name)
            .exclude(status=VersionStatus.GONE)
            .only("pk", "version", "published_at", "status", "is_latest")
        )
        winner = pick_latest(
            VersionFacts(r.version, r.published_at, r.status == VersionStatus.DELETED) for r in rows
        )
        flips = [r.pk for r in rows if r.is_latest != (r.version == winner)]
        if not flips:
            continue
        ServerVersion.objects.filter(pk__in=flips).update(
            is_latest=Case(When(version=winner, then=Value(True)), default=Value(False)),
            updated_at=timezone.now(),
        )
        state.run.latest_flips += len(flips)
        state.names_changed.add(name)


def _raise_deleted_alerts(state: _RunState) -> None:
    protected = _protected_names(sorted(state.newly_deleted))
    for name in sorted(protected):
        versions = sorted(state.newly_deleted[name])
        _open_alert(
            kind=AlertKind.PAID_LISTING_DELETED,
            name=name,
            message=(
                f"The registry deleted {name} version(s) {', '.join(versions[:10])}. People pay "
                "for this listing; the deletion is mirrored (hidden from buyers), please review."
            ),
            run=state.run,
        )


def _call_names_changed_hooks(names: set[str]) -> None:
    """Tell the apps above which names changed (settings.REGISTRY_NAMES_CHANGED_HOOKS)."""
    if not names:
        return
    ordered = sorted(names)
    for path in settings.REGISTRY_NAMES_CHANGED_HOOKS:
        try:
            hook = import_string(path)
            for start in range(0, len(ordered), HOOK_BATCH):
                hook(names=ordered[start : start + HOOK_BATCH])
        except Exception:
            # The mirror is correct either way; the hook's owner re-derives on the next sync.
            logger.exception("registry_sync.names_changed_hook_failed", extra={"hook": path})


# -- entry points --------------------------------------------------------------------------


def registry_sync_kind_for(*, cursor: SyncCursor, requested: str | None) -> str:
    """Full on request, on the first run, or when the last full reconcile is too old."""
    if requested == SyncKind.FULL or cursor.watermark is None or cursor.last_full_at is None:
        return SyncKind.FULL
    if requested == SyncKind.INCREMENTAL:
        return SyncKind.INCREMENTAL
    max_age = timedelta(hours=settings.REGISTRY_FULL_RECONCILE_HOURS)
    if timezone.now() - cursor.last_full_at >= max_age:
        return SyncKind.FULL
    return SyncKind.INCREMENTAL


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000] if str(exc) else type(exc).__name__


def registry_sync_run(
    *,
    kind: str | None = None,
    url: str | None = None,
    client: RegistryClient | None = None,
    snapshot_path: str | Path | None = None,
    progress: Callable[[SyncProgress], None] | None = None,
) -> SyncRun:
    """Run one sync and record it. `kind` None = decide (full or incremental).

    The SyncRun row is always finished (succeeded or failed with its error); on failure the
    exception is re-raised after recording, the watermark is not advanced and no reconcile runs.
    """
    if kind == SyncKind.SNAPSHOT:
        return registry_snapshot_load(path=snapshot_path, progress=progress)
    source_url = (url or settings.REGISTRY_URL).rstrip("/")
    cursor, _ = SyncCursor.objects.get_or_create(source_url=source_url)
    resolved = registry_sync_kind_for(cursor=cursor, requested=kind)
    run = SyncRun.objects.create(
        kind=resolved,
        source_url=source_url,
        started_at=timezone.now(),
        watermark_before=cursor.watermark,
    )
    own_client = client is None
    client = client or RegistryClient(base_url=source_url)
    state = _RunState(run=run, client=client, progress=progress, requests_before=client.requests)
    logger.info("registry_sync.started", extra={"run_id": run.pk, "kind": resolved})
    try:
        if resolved == SyncKind.FULL:
            _walk(state, client.iter_pages(include_deleted=True))
            _reconcile_full(state)
            new_watermark = state.max_updated or cursor.watermark
        else:
            if cursor.watermark is None:  # registry_sync_kind_for never lets this happen
                raise RuntimeError("incremental sync without a watermark")
            margin = timedelta(seconds=settings.REGISTRY_WATERMARK_MARGIN_SECONDS)
            _walk(state, client.iter_pages(updated_since=cursor.watermark - margin))
            if len(state.touched_names) <= _refetch_max_names():
                _rederive_latest_from_upstream(state, client)
            else:
                # Cheaper than one /versions request per name: the whole listing, 100 rows a
                # request, carries every current flag. No reconcile: that stays the full kind's.
                state.phase = "flags walk"
                _walk(state, client.iter_pages(include_deleted=True))
            new_watermark = max(filter(None, [cursor.watermark, state.max_updated]))
        _settle_latest_flags(state)
        # The walk completed: only now may the watermark (and the reconcile time) advance.
        cursor.watermark = new_watermark
        fields = ["watermark"]
        if resolved == SyncKind.FULL:
            cursor.last_full_at = run.started_at
            fields.append("last_full_at")
        cursor.save(update_fields=fields)
        run.watermark_after = new_watermark
        run.status = SyncStatus.SUCCEEDED
    except BaseException as exc:
        run.status = SyncStatus.FAILED
        run.error = _describe(exc)
        run.watermark_after = cursor.watermark
        if isinstance(exc, CursorLoopError):
            SyncAlert.objects.create(
                kind=AlertKind.CURSOR_LOOP, message=run.error, run=run, name=""
            )
        logger.warning(
            "registry_sync.failed",
            extra={"run_id": run.pk, "error_type": type(exc).__name__},
        )
        raise
    finally:
        _finish(state, own_client=own_client)
    return run


def _finish(state: _RunState, *, own_client: bool) -> None:
    """Close the run whatever happened; alerts and hooks cover pages that did commit."""
    run = state.run
    try:
        _raise_deleted_alerts(state)
    except Exception:
        logger.exception("registry_sync.deleted_alerts_failed", extra={"run_id": run.pk})
    run.finished_at = timezone.now()
    state.phase = "done"
    state.save()
    run.save(update_fields=["status", "error", "finished_at", "watermark_after"])
    if own_client and state.client is not None:
        state.client.close()
    _call_names_changed_hooks(state.names_changed)
    logger.info(
        "registry_sync.finished",
        extra={
            "run_id": run.pk,
            "kind": run.kind,
            "status": run.status,
            "rows_created": run.created,
            "rows_updated": run.updated,
            "rows_quarantined": run.quarantined,
            "rows_gone": run.gone,
        },
    )


def registry_snapshot_load(
    *, path: str | Path | None = None, progress: Callable[[SyncProgress], None] | None = None
) -> SyncRun:
    """Load an offline ServerList (the bundled snapshot by default) through the same upserts.

    No reconcile (a file is not the registry) and no watermark: a later online sync decides.
    """
    snapshot = Path(path or settings.REGISTRY_SNAPSHOT_PATH or BUNDLED_SNAPSHOT)
    run = SyncRun.objects.create(
        kind=SyncKind.SNAPSHOT, source_url=f"file://{snapshot}"[:500], started_at=timezone.now()
    )
    state = _RunState(run=run, client=None, progress=progress)
    try:
        items = load_server_list(snapshot)
        for start in range(0, len(items), SNAPSHOT_CHUNK):
            run.pages += 1
            _apply_items(
                state,
                items[start : start + SNAPSHOT_CHUNK],
                label=f"snapshot:{start}",
                count_seen=True,
            )
            state.save()
        _settle_latest_flags(state)
        run.status = SyncStatus.SUCCEEDED
    except BaseException as exc:
        run.status = SyncStatus.FAILED
        run.error = _describe(exc)
        raise
    finally:
        _finish(state, own_client=False)
    return run


@contextmanager
def registry_sync_lock(*, url: str | None = None) -> Iterator[bool]:
    """Yields True when this process may sync `url` now; two syncs of one URL never overlap.

    `cache.add` is atomic (SET NX on Redis). The release compares the token first; the small
    get/delete window only matters if the TTL expired mid-run, which it is sized never to do.
    """
    source_url = (url or settings.REGISTRY_URL).rstrip("/")
    key = "registry_sync:lock:" + hashlib.sha256(source_url.encode()).hexdigest()[:32]
    token = secrets.token_hex(16)
    acquired = cache.add(key, token, timeout=SYNC_LOCK_TTL_SECONDS)
    try:
        yield bool(acquired)
    finally:
        if acquired and cache.get(key) == token:
            cache.delete(key)


def sync_alert_apply_held_unlisting(*, alert: SyncAlert) -> int:
    """An admin confirmed a held mass unlisting (MASS_UNLIST_HELD): mark its rows gone, as the
    reconcile would have, and resolve the alert. Rows since marked gone, changed upstream after
    the held sync began (so the registry still serves them), or now paid for are left alone.
    Returns how many rows were marked gone."""
    if alert.kind != AlertKind.MASS_UNLIST_HELD or alert.resolved_at is not None:
        return 0
    since = alert.run.started_at if alert.run is not None else alert.created_at
    rows = list(
        ServerVersion.objects.filter(pk__in=alert.held_version_ids)
        .exclude(status=VersionStatus.GONE)
        .exclude(upstream_updated_at__gt=since)
        .values_list("pk", "name", "version")
    )
    protected = _protected_names(sorted({name for _, name, _ in rows}))
    rows = [row for row in rows if row[1] not in protected]
    now = timezone.now()
    # The rows and the alert together: a crash must not leave the alert open with rows gone.
    with transaction.atomic():
        marked = ServerVersion.objects.filter(pk__in=[pk for pk, _, _ in rows]).update(
            status=VersionStatus.GONE, gone_at=now, is_latest=False, updated_at=now
        )
        alert.resolved_at = now
        alert.save(update_fields=["resolved_at"])
    logger.warning(
        "registry_sync.mass_unlist_applied", extra={"alert_id": alert.pk, "rows": marked}
    )
    # A name that kept other versions needs its latest flag again (counted on no run).
    scratch = SyncRun(kind=SyncKind.FULL, source_url="", started_at=now)
    state = _RunState(run=scratch, client=None, progress=None)
    _settle_latest_flags(state)
    _call_names_changed_hooks({name for _, name, _ in rows} | state.names_changed)
    return marked


def sync_alert_resolve(*, alert: SyncAlert) -> SyncAlert:
    """A person looked at the alert (admin action)."""
    if alert.resolved_at is None:
        alert.resolved_at = timezone.now()
        alert.save(update_fields=["resolved_at"])
    return alert

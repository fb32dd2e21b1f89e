"""registry_sync_run against the loopback fake: the issue's done-means and the edge cases."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Count, Q
from django.utils import timezone

from fakes.registry import FakeRegistry
from registry_sync.client import CursorLoopError, RegistryError
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
from registry_sync.services import registry_sync_run
from tests.registry_sync.conftest import FIXTURES, SHARED_PAGES
from tests.registry_sync.factories import ServerVersionFactory

pytestmark = pytest.mark.django_db

OFFICIAL = "io.modelcontextprotocol.registry/official"
SHARED_WATERMARK = datetime(2025, 9, 30, 14, 42, 48, 239932, tzinfo=UTC)
APPLE = "com.apple-rag/mcp-server"
TEAMWORK = "com.teamwork/mcp"
BRAVE = "io.github.brave/brave-search-mcp-server"
KIRBAH = "io.github.kirbah/mcp-youtube"

# Test-local stand-ins for the marketplace's hook and paid-names provider.
HOOK_CALLS: list[list[str]] = []
PROTECTED: set[str] = set()


def record_names_changed(*, names: list[str]) -> int:
    HOOK_CALLS.append(list(names))
    return len(names)


def protected_names(*, names: list[str]) -> set[str]:
    return {n for n in names if n in PROTECTED}


@pytest.fixture
def hooks(settings):
    HOOK_CALLS.clear()
    PROTECTED.clear()
    settings.REGISTRY_NAMES_CHANGED_HOOKS = [f"{__name__}.record_names_changed"]
    settings.REGISTRY_PROTECTED_NAMES_PROVIDER = f"{__name__}.protected_names"
    yield HOOK_CALLS
    HOOK_CALLS.clear()
    PROTECTED.clear()


def _latest_per_name() -> dict[str, int]:
    rows = (
        ServerVersion.objects.exclude(status=VersionStatus.GONE)
        .values("name")
        .annotate(n=Count("pk", filter=Q(is_latest=True)))
    )
    return {r["name"]: r["n"] for r in rows}


def _row(name: str, version: str) -> ServerVersion:
    return ServerVersion.objects.get(name=name, version=version)


def test_full_sync_of_the_shared_pages(shared_fake):
    run = registry_sync_run(url=shared_fake.url)

    assert run.kind == SyncKind.FULL
    assert run.status == SyncStatus.SUCCEEDED
    assert ServerVersion.objects.count() == 247
    assert ServerVersion.objects.values("name").distinct().count() == 121
    assert set(_latest_per_name().values()) == {1}
    assert len(_latest_per_name()) == 121
    assert (run.pages, run.requests, run.seen) == (3, 3, 247)
    assert (run.created, run.updated, run.unchanged, run.quarantined, run.gone) == (
        247,
        0,
        0,
        0,
        0,
    )
    assert run.finished_at is not None
    assert run.error == ""
    cursor = SyncCursor.objects.get(source_url=shared_fake.url)
    assert cursor.watermark == SHARED_WATERMARK == run.watermark_after
    assert cursor.last_full_at == run.started_at
    # Rows keep the served item verbatim.
    page1 = json.loads(SHARED_PAGES[0].read_text())["servers"]
    first = page1[0]
    assert _row(first["server"]["name"], first["server"]["version"]).raw == first
    odd = _row("ai.smithery/Nekzus-npm-sentinel-mcp", "{{VERSION}}")
    assert odd.status == VersionStatus.ACTIVE


def test_running_the_same_sync_again_changes_nothing(shared_fake):
    registry_sync_run(url=shared_fake.url)
    stamps = dict(ServerVersion.objects.values_list("pk", "updated_at"))

    again = registry_sync_run(url=shared_fake.url, kind=SyncKind.FULL)
    assert (again.created, again.updated, again.unchanged, again.gone) == (0, 0, 247, 0)
    assert again.latest_flips == 0
    incremental = registry_sync_run(url=shared_fake.url)
    assert incremental.kind == SyncKind.INCREMENTAL
    assert incremental.status == SyncStatus.SUCCEEDED
    assert (incremental.created, incremental.updated, incremental.gone) == (0, 0, 0)
    assert incremental.latest_flips == 0
    assert dict(ServerVersion.objects.values_list("pk", "updated_at")) == stamps


def test_incremental_scenario_reaches_the_documented_end_state(shared_fake, hooks):
    registry_sync_run(url=shared_fake.url)
    HOOK_CALLS.clear()
    shared_fake.load_scenario(FIXTURES / "scenario-updated-since-2025-10-01.json")

    run = registry_sync_run(url=shared_fake.url)

    assert run.kind == SyncKind.INCREMENTAL
    assert run.status == SyncStatus.SUCCEEDED
    since = shared_fake.request_paths.index(
        next(p for p in shared_fake.request_paths if "updated_since=" in p)
    )
    assert "updated_since=2025-09-30T14%3A37%3A48.239932Z" in shared_fake.request_paths[since]
    # apple-rag: 2.9.0 deleted, 2.8.0 silently promoted (only /versions shows it).
    assert _row(APPLE, "2.9.0").status == VersionStatus.DELETED
    assert _row(APPLE, "2.9.0").is_latest is False
    assert _row(APPLE, "2.9.0").status_message == "Version withdrawn by publisher; use 2.8.0"
    assert _row(APPLE, "2.8.0").is_latest is True
    expected = json.loads((FIXTURES / "scenario-versions-com.apple-rag.json").read_text())
    mirrored = {r.version: r.raw for r in ServerVersion.objects.filter(name=APPLE)}
    assert mirrored == {i["server"]["version"]: i for i in expected["servers"]}
    # teamwork: 1.5.6 deprecated with its message, still latest.
    tw = _row(TEAMWORK, "1.5.6")
    assert (tw.status, tw.is_latest) == (VersionStatus.DEPRECATED, True)
    assert tw.status_message.startswith("Local OCI package is deprecated")
    # brave: the new 2.0.25 is latest, 2.0.24's flip was derived.
    assert _row(BRAVE, "2.0.25").is_latest is True
    assert _row(BRAVE, "2.0.24").is_latest is False
    # kirbah: deleted but still latest (its only version).
    yt = _row(KIRBAH, "0.2.6")
    assert (yt.status, yt.is_latest) == (VersionStatus.DELETED, True)

    assert ServerVersion.objects.count() == 248
    assert set(_latest_per_name().values()) == {1}
    assert run.created == 1
    assert run.updated == 5  # 3 status changes + 2 silent flips
    assert run.latest_flips == 3  # apple 2.9.0 off, 2.8.0 on; brave 2.0.24 off
    assert run.watermark_after == datetime(2025, 10, 2, 13, 27, 40, 6100, tzinfo=UTC)
    assert [sorted([APPLE, TEAMWORK, BRAVE, KIRBAH])] == HOOK_CALLS

    again = registry_sync_run(url=shared_fake.url)
    assert (again.created, again.updated, again.latest_flips, again.gone) == (0, 0, 0, 0)


def test_malformed_items_are_quarantined_and_the_rest_kept(shared_fake):
    malformed = json.loads((FIXTURES / "scenario-malformed.json").read_text())["servers"]
    shared_fake.add_opaque(malformed)

    run = registry_sync_run(url=shared_fake.url)

    assert run.status == SyncStatus.SUCCEEDED
    assert run.seen == 255
    assert run.quarantined == 4
    assert ServerVersion.objects.count() == 247 + 4
    reasons = sorted(QuarantinedItem.objects.filter(run=run).values_list("reason", flat=True))
    assert reasons == sorted(
        [
            "item is null",
            "item is a JSON str, not an object",
            "server.name is missing, empty or not a string",
            "server.version is missing, empty or not a string",
        ]
    )
    assert QuarantinedItem.objects.filter(raw_text='"not-an-object"').exists()
    unknown = _row("io.github.example/unknown-fields", "0.3.1")
    assert unknown.raw["server"]["futureField"] == {"a": 1}
    assert unknown.raw["_meta"]["com.example.subregistry/custom"] == {"rating": 4.5}
    archived = _row("io.github.example/unknown-status", "0.3.1")
    assert (archived.status, archived.upstream_status) == (VersionStatus.DEPRECATED, "archived")
    long_text = _row("io.github.example/long-text", "0.3.1")
    assert len(long_text.raw["server"]["description"]) > 4000
    no_meta = _row("io.github.example/no-official-meta", "0.3.1")
    assert (no_meta.status, no_meta.published_at, no_meta.is_latest) == (
        VersionStatus.ACTIVE,
        None,
        True,  # settled: it is the name's only version
    )
    assert set(_latest_per_name().values()) == {1}

    again = registry_sync_run(url=shared_fake.url, kind=SyncKind.FULL)
    assert (again.created, again.updated, again.quarantined) == (0, 0, 4)


def test_names_differing_only_by_case_stay_apart():
    fake = FakeRegistry()
    fake.publish({"name": "io.github.Foo/x", "description": "upper", "version": "1.0.0"})
    fake.publish({"name": "io.github.foo/x", "description": "lower", "version": "1.0.0"})
    fake.publish({"name": "io.github.foo/x", "description": "lower", "version": "1.1.0"})
    with fake.serve() as url:
        registry_sync_run(url=url)
    assert ServerVersion.objects.filter(name="io.github.Foo/x").count() == 1
    assert ServerVersion.objects.filter(name="io.github.foo/x").count() == 2
    assert _row("io.github.Foo/x", "1.0.0").is_latest is True
    assert _row("io.github.foo/x", "1.1.0").is_latest is True
    assert _row("io.github.foo/x", "1.0.0").is_latest is False


def test_delete_then_restore(shared_fake):
    registry_sync_run(url=shared_fake.url)
    shared_fake.set_status(BRAVE, "2.0.24", "deleted", "malware report")
    run = registry_sync_run(url=shared_fake.url)
    assert _row(BRAVE, "2.0.24").status == VersionStatus.DELETED
    assert _row(BRAVE, "2.0.10").is_latest is True  # 2.0.10 > 2.0.9 > 2.0.8 as semver
    assert run.latest_flips == 2

    shared_fake.set_status(BRAVE, "2.0.24", "active")
    restored = registry_sync_run(url=shared_fake.url)
    row = _row(BRAVE, "2.0.24")
    assert (row.status, row.status_message, row.is_latest) == (VersionStatus.ACTIVE, "", True)
    assert _row(BRAVE, "2.0.10").is_latest is False
    assert restored.updated == 2
    assert set(_latest_per_name().values()) == {1}


def test_full_reconcile_marks_vanished_rows_gone_and_alerts_for_paid_ones(shared_fake, hooks):
    registry_sync_run(url=shared_fake.url)
    PROTECTED.add(TEAMWORK)
    shared_fake.erase(APPLE, "1.1.3")
    shared_fake.erase(TEAMWORK, "1.2.4")
    shared_fake.erase(KIRBAH, "0.2.6")
    HOOK_CALLS.clear()

    run = registry_sync_run(url=shared_fake.url, kind=SyncKind.FULL)

    assert run.gone == 2
    gone = _row(APPLE, "1.1.3")
    assert gone.status == VersionStatus.GONE
    assert gone.gone_at is not None
    assert _row(KIRBAH, "0.2.6").status == VersionStatus.GONE
    assert _row(KIRBAH, "0.2.6").is_latest is False
    kept = _row(TEAMWORK, "1.2.4")
    assert kept.status == VersionStatus.ACTIVE
    assert kept.gone_at is None
    alert = SyncAlert.objects.get()
    assert (alert.kind, alert.name, alert.run_id) == (
        AlertKind.PAID_LISTING_VANISHED,
        TEAMWORK,
        run.pk,
    )
    assert "1.2.4" in alert.message
    assert [sorted([APPLE, KIRBAH])] == HOOK_CALLS

    # The next reconcile neither re-marks nor piles up alerts; a returning row comes back.
    shared_fake.upsert_item(gone.raw)
    again = registry_sync_run(url=shared_fake.url, kind=SyncKind.FULL)
    assert again.gone == 0
    assert SyncAlert.objects.count() == 1
    back = _row(APPLE, "1.1.3")
    assert back.status == VersionStatus.ACTIVE
    assert back.gone_at is None


def test_a_paid_listing_deleted_upstream_is_mirrored_with_an_alert(shared_fake, hooks):
    registry_sync_run(url=shared_fake.url)
    PROTECTED.add(TEAMWORK)
    shared_fake.set_status(TEAMWORK, "1.5.6", "deleted", "Spam report upheld")
    run = registry_sync_run(url=shared_fake.url)
    assert _row(TEAMWORK, "1.5.6").status == VersionStatus.DELETED
    assert _row(TEAMWORK, "1.5.5").is_latest is True
    alert = SyncAlert.objects.get(kind=AlertKind.PAID_LISTING_DELETED)
    assert alert.name == TEAMWORK
    assert alert.run_id == run.pk
    assert "1.5.6" in alert.message


def test_a_failed_walk_is_recorded_and_neither_advances_nor_reconciles(shared_fake):
    stale = ServerVersionFactory(name="io.github.old/vanished")
    shared_fake.cursor_loop = "repeat"

    with pytest.raises(CursorLoopError):
        registry_sync_run(url=shared_fake.url)

    run = SyncRun.objects.get()
    assert run.status == SyncStatus.FAILED
    assert "CursorLoopError" in run.error
    assert run.finished_at is not None
    assert run.pages == 1
    assert run.created == 100
    cursor = SyncCursor.objects.get(source_url=shared_fake.url)
    assert cursor.watermark is None
    assert cursor.last_full_at is None
    stale.refresh_from_db()
    assert stale.status == VersionStatus.ACTIVE  # a partial walk never reconciles
    assert SyncAlert.objects.filter(kind=AlertKind.CURSOR_LOOP, run=run).exists()

    # Fixed upstream: the next run is still a full one and completes.
    shared_fake.cursor_loop = None
    fixed = registry_sync_run(url=shared_fake.url)
    assert fixed.kind == SyncKind.FULL
    assert fixed.status == SyncStatus.SUCCEEDED
    assert (fixed.created, fixed.unchanged) == (147, 100)
    stale.refresh_from_db()
    assert stale.status == VersionStatus.GONE


def test_a_failed_incremental_keeps_the_watermark(shared_fake, settings):
    registry_sync_run(url=shared_fake.url)
    shared_fake.publish({"name": BRAVE, "description": "new", "version": "2.1.0"})
    settings.REGISTRY_MAX_RETRIES = 1
    # The updated_since page succeeds, then /versions keeps failing.
    original = shared_fake.list_versions

    def broken(name, params):
        return 500, {"title": "Internal Server Error", "status": 500, "detail": "boom"}

    shared_fake.list_versions = broken
    with pytest.raises(RegistryError):
        registry_sync_run(url=shared_fake.url)
    failed = SyncRun.objects.order_by("-pk").first()
    assert failed.status == SyncStatus.FAILED
    assert "HTTP 500" in failed.error
    assert failed.watermark_after == SHARED_WATERMARK
    assert SyncCursor.objects.get(source_url=shared_fake.url).watermark == SHARED_WATERMARK
    assert _row(BRAVE, "2.1.0").is_latest is True  # the page itself landed

    shared_fake.list_versions = original
    ok = registry_sync_run(url=shared_fake.url)
    assert ok.status == SyncStatus.SUCCEEDED
    assert _row(BRAVE, "2.0.24").is_latest is False  # the flip arrives with /versions
    assert ok.watermark_after > SHARED_WATERMARK


def test_kind_is_full_first_then_incremental_until_the_reconcile_is_due(shared_fake, settings):
    assert registry_sync_run(url=shared_fake.url).kind == SyncKind.FULL
    assert registry_sync_run(url=shared_fake.url).kind == SyncKind.INCREMENTAL
    SyncCursor.objects.filter(source_url=shared_fake.url).update(
        last_full_at=timezone.now() - timedelta(hours=settings.REGISTRY_FULL_RECONCILE_HOURS + 1)
    )
    assert registry_sync_run(url=shared_fake.url).kind == SyncKind.FULL


def test_offline_snapshot_loads_the_bundled_file():
    run = registry_sync_run(kind=SyncKind.SNAPSHOT)
    assert run.status == SyncStatus.SUCCEEDED
    assert (run.created, run.pages, run.requests) == (247, 3, 0)
    assert ServerVersion.objects.values("name").distinct().count() == 121
    assert set(_latest_per_name().values()) == {1}
    again = registry_sync_run(kind=SyncKind.SNAPSHOT)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 247)
    assert not SyncCursor.objects.exists()


def test_a_broken_hook_does_not_fail_the_sync(shared_fake, settings):
    settings.REGISTRY_NAMES_CHANGED_HOOKS = ["registry_sync.no_such_module.hook"]
    run = registry_sync_run(url=shared_fake.url)
    assert run.status == SyncStatus.SUCCEEDED


def test_an_incremental_touching_many_names_rewalks_the_listing(shared_fake, settings):
    registry_sync_run(url=shared_fake.url)
    shared_fake.load_scenario(FIXTURES / "scenario-updated-since-2025-10-01.json")
    settings.REGISTRY_REFETCH_MAX_NAMES = 2
    shared_fake.request_paths.clear()

    run = registry_sync_run(url=shared_fake.url)

    assert run.kind == SyncKind.INCREMENTAL
    assert not any("/versions" in p for p in shared_fake.request_paths)
    assert run.requests == 1 + 3  # the updated_since page, then the 3-page listing
    assert _row(APPLE, "2.8.0").is_latest is True
    assert _row(BRAVE, "2.0.24").is_latest is False
    assert (run.created, run.updated, run.latest_flips) == (1, 5, 3)
    assert set(_latest_per_name().values()) == {1}


def test_progress_is_reported_per_page(shared_fake):
    seen = []
    registry_sync_run(url=shared_fake.url, progress=seen.append)
    walk = [(p.phase, p.pages, p.seen) for p in seen if p.phase == "walk"]
    assert walk == [("walk", 1, 100), ("walk", 2, 200), ("walk", 3, 247)]
    assert seen[-1].phase == "done"
    assert seen[-1].created == 247

"""What the registry sends is bounded before we keep it: oversize raw JSON is cut or
quarantined, and a reconcile that would unlist a large share of the catalogue is held for an
admin. Both through the loopback fake registry and the real client."""

from __future__ import annotations

import copy
import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from fakes.registry import FakeRegistry
from marketplace.models import Listing, ListingStatus
from registry_sync.models import (
    AlertKind,
    QuarantinedItem,
    ServerVersion,
    SyncAlert,
    SyncKind,
    VersionStatus,
)
from registry_sync.services import registry_sync_run

pytestmark = pytest.mark.django_db

BRAVE = "io.github.brave/brave-search-mcp-server"


def _item_like(fake: FakeRegistry, name: str, version: str, **server: object) -> dict:
    base = next(i for i in fake.items() if i["server"]["name"] == BRAVE and i["_meta"] is not None)
    item = copy.deepcopy(base)
    item["server"].update({"name": name, "version": version, **server})
    item["_meta"]["io.modelcontextprotocol.registry/official"]["isLatest"] = True
    return item


def test_a_1_mb_description_is_cut_in_the_raw_json_and_the_row_kept(shared_fake, settings):
    huge = "A" * 1_000_000
    shared_fake.upsert_item(
        _item_like(shared_fake, "io.github.big/desc", "1.0.0", description=huge)
    )

    run = registry_sync_run(url=shared_fake.url)

    row = ServerVersion.objects.get(name="io.github.big/desc")
    stored = row.raw["server"]["description"]
    limit = settings.REGISTRY_MAX_RAW_STRING_CHARS
    assert stored == "A" * limit + "…[cut by Toolbooth: 1000000 characters]"
    assert len(json.dumps(row.raw)) < 20_000
    assert row.status == VersionStatus.ACTIVE  # still listed
    assert run.quarantined == 0
    # The hash is of what the registry served: the same oversize item re-syncs as unchanged.
    again = registry_sync_run(url=shared_fake.url, kind=SyncKind.FULL)
    assert again.updated == 0
    assert again.unchanged == again.seen


def test_an_item_too_big_even_after_cutting_is_quarantined(shared_fake, settings):
    packages = [
        {"registryType": "npm", "identifier": f"pkg-{i}", "transport": {"type": "stdio"}}
        for i in range(3000)
    ]
    shared_fake.upsert_item(
        _item_like(shared_fake, "io.github.big/pkgs", "1.0.0", packages=packages)
    )

    run = registry_sync_run(url=shared_fake.url)

    assert not ServerVersion.objects.filter(name="io.github.big/pkgs").exists()
    assert run.quarantined == 1
    reason = QuarantinedItem.objects.get().reason
    assert reason.startswith("item is ")
    assert f"(limit {settings.REGISTRY_MAX_ITEM_BYTES})" in reason
    assert ServerVersion.objects.count() == 247  # the rest of the page landed


@pytest.fixture
def catalogue(settings, shared_fake):
    """The shared 121-name catalogue mirrored, with the real marketplace hook deriving listings."""
    settings.REGISTRY_NAMES_CHANGED_HOOKS = ["marketplace.services.listings_refresh_from_registry"]
    registry_sync_run(url=shared_fake.url)
    return shared_fake


def _listed() -> int:
    return Listing.objects.exclude(status=ListingStatus.GONE).count()


def _erase_names(fake: FakeRegistry, count: int) -> list[str]:
    names = sorted({i["server"]["name"] for i in fake.items()})[:count]
    for item in list(fake.items()):
        if item["server"]["name"] in names:
            fake.erase(item["server"]["name"], item["server"]["version"])
    return names


def test_a_truncated_answer_unlists_nothing_until_an_admin_applies_it(catalogue, client):
    listed = _listed()
    assert listed == 121
    erased = _erase_names(catalogue, 30)  # 30 of 121 names: > 20 and > 10 %

    run = registry_sync_run(url=catalogue.url, kind=SyncKind.FULL)

    assert run.gone == 0
    assert not ServerVersion.objects.filter(status=VersionStatus.GONE).exists()
    assert _listed() == listed  # nothing unlisted
    alert = SyncAlert.objects.get(kind=AlertKind.MASS_UNLIST_HELD, resolved_at__isnull=True)
    held = ServerVersion.objects.filter(name__in=erased)
    assert sorted(alert.held_version_ids) == sorted(held.values_list("pk", flat=True))
    assert run.held == held.count()
    assert "30 of 121 listings" in alert.message

    # An admin confirms in the admin: the held rows are marked gone and the listings follow.
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    page = client.post(
        reverse("admin:registry_sync_syncalert_changelist"),
        {"action": "apply_held_unlisting", "_selected_action": [alert.pk]},
        follow=True,
    )
    assert page.status_code == 200
    assert f"{held.count()} version(s) marked gone." in page.content.decode()
    assert set(held.values_list("status", flat=True)) == {VersionStatus.GONE}
    assert _listed() == listed - 30
    assert set(
        Listing.objects.filter(status=ListingStatus.GONE).values_list("name", flat=True)
    ) == set(erased)
    alert.refresh_from_db()
    assert alert.resolved_at is not None


def test_an_empty_answer_is_held_and_a_later_good_sync_supersedes_it(catalogue):
    empty = FakeRegistry()
    empty.start()
    try:
        run = registry_sync_run(url=empty.url, kind=SyncKind.FULL)
    finally:
        empty.stop()
    assert run.gone == 0
    assert _listed() == 121
    alert = SyncAlert.objects.get(kind=AlertKind.MASS_UNLIST_HELD)
    assert "121 of 121 listings" in alert.message

    # The registry answers properly again (two names really removed): applied directly, and
    # the held alert, now outdated, is closed.
    erased = _erase_names(catalogue, 2)
    again = registry_sync_run(url=catalogue.url, kind=SyncKind.FULL)
    assert again.gone == ServerVersion.objects.filter(name__in=erased).count() > 0
    assert _listed() == 119
    alert.refresh_from_db()
    assert alert.resolved_at is not None


def test_the_threshold_is_a_setting(catalogue, settings):
    settings.REGISTRY_MASS_UNLIST_MIN_LISTINGS = 50
    _erase_names(catalogue, 30)  # 30 is not more than 50: applied as before
    run = registry_sync_run(url=catalogue.url, kind=SyncKind.FULL)
    assert run.gone > 0
    assert run.held == 0
    assert _listed() == 91
    assert not SyncAlert.objects.filter(kind=AlertKind.MASS_UNLIST_HELD).exists()

"""listings_refresh_from_registry: the catalogue derived from mirror rows, in batches."""

from datetime import timedelta

import factory
import pytest
from django.db import connection

from marketplace import services
from marketplace.models import Listing, ListingSource, ListingStatus
from marketplace.selectors import listing_search
from marketplace.services import listings_refresh_from_registry
from registry_sync.models import VersionStatus
from tests.factories import (
    BASE_TIME,
    ListingFactory,
    ServerVersionFactory,
    UserFactory,
    http_remote,
    npm_package,
)

pytestmark = pytest.mark.django_db


def test_creates_listing_from_latest_version_with_cleaned_text_and_facets():
    name = "io.github.acme/weather-api"
    ServerVersionFactory(
        name=name,
        version="1.0.0",
        is_latest=False,
        published_at=BASE_TIME,
        description="Old description",
    )
    ServerVersionFactory(
        name=name,
        version="1.1.0",
        published_at=BASE_TIME + timedelta(days=3),
        title="Weather\x01 API\u202e",
        description="Forecasts\x07 for\n\nany city",
        website_url="https://acme.example/weather",
        repository={"url": "javascript:alert(1)", "source": "github"},
        packages=[npm_package(), npm_package(registryType="PyPI", transport={"type": "sse"})],
        remotes=[http_remote()],
    )

    changed = listings_refresh_from_registry(names=[name])

    listing = Listing.objects.get(name=name)
    assert changed == 1
    assert listing.title == "Weather API"
    assert listing.description == "Forecasts for any city"
    assert listing.latest_version == "1.1.0"
    assert listing.version_count == 2
    assert listing.status == ListingStatus.ACTIVE
    assert listing.website_url == "https://acme.example/weather"
    assert listing.repository_url == ""  # never a javascript: link
    assert listing.has_remote is True
    assert listing.has_package is True
    assert listing.package_types == ",npm,pypi,"
    assert listing.transports == ",sse,stdio,streamable-http,"
    assert listing.name_words == "io github acme weather api"
    assert listing.published_at == BASE_TIME
    assert listing.upstream_updated_at == BASE_TIME + timedelta(days=3)
    assert listing.source == ListingSource.REGISTRY


def test_search_vector_is_computed_for_written_listings():
    if connection.vendor != "postgresql":
        pytest.skip("full-text search is PostgreSQL only")
    ServerVersionFactory(name="io.github.acme/tides", description="Tide tables for harbours")
    listings_refresh_from_registry(names=["io.github.acme/tides"])

    assert Listing.objects.get(name="io.github.acme/tides").search_vector is not None
    assert [x.name for x in listing_search(q="harbour")] == ["io.github.acme/tides"]
    assert [x.name for x in listing_search(q="tides")] == ["io.github.acme/tides"]


def test_long_and_malformed_registry_text_is_capped_and_tolerated():
    ServerVersionFactory(
        name="io.github.acme/huge",
        title="T" * 300,
        description="d" * 5000,
        extra_server={"remotes": "not-a-list", "packages": [None, "x", {"registryType": 5}]},
    )
    ServerVersionFactory(name="io.github.acme/broken", raw={"server": "nope"})

    listings_refresh_from_registry(names=["io.github.acme/huge", "io.github.acme/broken"])

    huge = Listing.objects.get(name="io.github.acme/huge")
    assert len(huge.title) == 100
    assert huge.title.endswith("…")
    assert len(huge.description) == 2000
    assert huge.has_remote is False
    assert huge.has_package is True
    assert huge.package_types == ""
    broken = Listing.objects.get(name="io.github.acme/broken")
    assert broken.title == ""
    assert broken.description == ""
    assert broken.latest_version == "1.0.0"


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([VersionStatus.ACTIVE, VersionStatus.DEPRECATED], ListingStatus.DEPRECATED),
        ([VersionStatus.DELETED, VersionStatus.DELETED], ListingStatus.DELETED),
        ([VersionStatus.GONE, VersionStatus.GONE], ListingStatus.GONE),
        ([VersionStatus.GONE, VersionStatus.DELETED], ListingStatus.DELETED),
        ([VersionStatus.ACTIVE, VersionStatus.ACTIVE], ListingStatus.ACTIVE),
    ],
)
def test_status_is_the_latest_versions_or_deleted_or_gone_when_all_are(statuses, expected):
    name = "io.github.acme/status"
    for index, status in enumerate(statuses):
        ServerVersionFactory(
            name=name,
            version=f"1.{index}.0",
            status=status,
            status_message="" if status == VersionStatus.ACTIVE else f"msg {index}",
            is_latest=index == len(statuses) - 1,
            published_at=BASE_TIME + timedelta(days=index),
        )

    listings_refresh_from_registry(names=[name])

    listing = Listing.objects.get(name=name)
    assert listing.status == expected
    if expected == ListingStatus.ACTIVE:
        assert listing.status_message == ""
    else:
        assert listing.status_message == f"msg {len(statuses) - 1}"


def test_a_dead_flagged_latest_gives_way_to_a_live_version():
    # Between a delete and the mirror re-deriving is_latest, the listing still shows a live one.
    name = "io.github.acme/promoted"
    ServerVersionFactory(name=name, version="2.8.0", is_latest=False, published_at=BASE_TIME)
    ServerVersionFactory(
        name=name,
        version="2.9.0",
        status=VersionStatus.DELETED,
        status_message="malware",
        published_at=BASE_TIME + timedelta(days=1),
    )

    listings_refresh_from_registry(names=[name])

    listing = Listing.objects.get(name=name)
    assert listing.status == ListingStatus.ACTIVE
    assert listing.latest_version == "2.8.0"


def test_second_refresh_writes_nothing_and_a_change_is_picked_up():
    version = ServerVersionFactory(name="io.github.acme/idem", description="first")
    assert listings_refresh_from_registry(names=["io.github.acme/idem"]) == 1
    before = Listing.objects.get(name="io.github.acme/idem").updated_at

    assert listings_refresh_from_registry(names=["io.github.acme/idem"]) == 0
    assert Listing.objects.get(name="io.github.acme/idem").updated_at == before

    version.raw["server"]["description"] = "second"
    version.status = VersionStatus.DEPRECATED
    version.status_message = "use io.github.acme/idem2"
    version.save()
    assert listings_refresh_from_registry(names=["io.github.acme/idem"]) == 1
    listing = Listing.objects.get(name="io.github.acme/idem")
    assert listing.description == "second"
    assert listing.status == ListingStatus.DEPRECATED
    assert listing.status_message == "use io.github.acme/idem2"


def test_creator_listing_is_untouched_without_registry_rows_and_keeps_owner_when_they_appear():
    owner = UserFactory()
    ListingFactory(
        name="com.maker/tool",
        source=ListingSource.CREATOR,
        owner=owner,
        title="Maker's tool",
        description="Made here",
        price_models=",per_call,",
    )

    assert listings_refresh_from_registry(names=["com.maker/tool"]) == 0
    assert Listing.objects.get(name="com.maker/tool").title == "Maker's tool"

    ServerVersionFactory(name="com.maker/tool", title="Registry title", description="From upstream")
    assert listings_refresh_from_registry(names=["com.maker/tool"]) == 1

    listing = Listing.objects.get(name="com.maker/tool")
    assert listing.title == "Registry title"
    assert listing.description == "From upstream"
    assert listing.owner == owner
    assert listing.source == ListingSource.CREATOR
    assert listing.price_models == ",per_call,"


def test_registry_listing_without_rows_is_marked_gone_not_dropped():
    ListingFactory(name="io.github.acme/vanished", status=ListingStatus.ACTIVE)

    assert listings_refresh_from_registry(names=["io.github.acme/vanished"]) == 1

    listing = Listing.objects.get(name="io.github.acme/vanished")
    assert listing.status == ListingStatus.GONE
    assert listing.version_count == 0


def test_names_are_case_sensitive():
    ServerVersionFactory(name="io.github.Foo/x", description="upper")
    ServerVersionFactory(name="io.github.foo/x", description="lower")

    listings_refresh_from_registry(names=["io.github.Foo/x", "io.github.foo/x"])

    assert Listing.objects.get(name="io.github.Foo/x").description == "upper"
    assert Listing.objects.get(name="io.github.foo/x").description == "lower"


def test_query_count_is_per_batch_not_per_name(monkeypatch, django_assert_max_num_queries):
    monkeypatch.setattr(services, "REFRESH_BATCH_SIZE", 40)
    names = [f"io.github.bulk/server-{i:03d}" for i in range(100)]  # 3 batches
    ServerVersionFactory.create_batch(100, name=factory.Iterator(names))
    for name in names[:50]:
        ServerVersionFactory(name=name, version="0.9.0", is_latest=False)

    # per batch: versions, raws, existing listings, savepoint, upsert, vector update, release;
    # once: the search word list (does it exist? refresh it, analyze it)
    with django_assert_max_num_queries(3 * 7 + 3):
        assert listings_refresh_from_registry(names=names) == 100

    assert Listing.objects.filter(name__in=names, version_count=2).count() == 50

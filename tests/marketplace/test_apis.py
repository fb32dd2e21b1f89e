"""The read API: /api/v1/listings (search) and /api/v1/listings/<name> (detail)."""

from datetime import timedelta

import factory
import pytest
from django.test import Client

from marketplace.models import ListingStatus
from marketplace.services import listings_refresh_from_registry
from registry_sync.models import VersionStatus
from tests.factories import (
    BASE_TIME,
    ListingFactory,
    ServerVersionFactory,
    http_remote,
    npm_package,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def client() -> Client:
    return Client()


def test_list_searches_and_pages(client):
    ListingFactory.create_batch(5, description="weather station")
    ListingFactory(name="io.github.x/unrelated", description="calendar")

    response = client.get("/api/v1/listings", {"q": "weather", "page_size": 2})

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 5
    assert len(body["results"]) == 2
    assert "page=2" in body["next"]
    assert "q=weather" in body["next"]
    assert body["previous"] is None
    first = body["results"][0]
    assert set(first) >= {"name", "title", "description", "status", "package_types", "api_url"}
    assert first["api_url"] == f"/api/v1/listings/{first['name']}"


def test_list_facets_are_lists(client):
    ListingFactory(
        name="io.github.a/both", has_remote=True, package_types=",npm,pypi,", price_models=""
    )

    result = client.get("/api/v1/listings").json()["results"][0]

    assert result["package_types"] == ["npm", "pypi"]
    assert result["price_models"] == []


@pytest.mark.parametrize(
    "params",
    [
        {"page_size": 101},
        {"page_size": 0},
        {"transport": "carrier-pigeon"},
        {"status": "archived"},
        {"ordering": "price"},
        {"package_type": "<script>"},
        {"q": "x" * 201},
        {"q": "bad\x00null"},
        {"page": "abc"},
    ],
)
def test_list_rejects_bad_parameters_with_400_json(client, params):
    response = client.get("/api/v1/listings", params)

    assert response.status_code == 400
    assert response.json()["message"] == "Validation error"


def test_list_page_past_the_end_is_404_json(client):
    ListingFactory()

    response = client.get("/api/v1/listings", {"page": 5})

    assert response.status_code == 404
    assert "message" in response.json()


def test_list_is_a_constant_number_of_queries(client, django_assert_max_num_queries):
    ListingFactory.create_batch(40, description="weather station", has_remote=True)

    # + 2 for the page's offers (hosting, plan prices), whatever the page size
    with django_assert_max_num_queries(3 + 2):
        assert client.get("/api/v1/listings", {"q": "weather", "page_size": 100}).status_code == 200
    with django_assert_max_num_queries(2 + 2):
        assert client.get("/api/v1/listings", {"transport": "remote"}).status_code == 200


def test_detail_keeps_the_slash_and_is_case_sensitive(client):
    name = "io.github.Acme/weather"
    for index in range(3):
        ServerVersionFactory(
            name=name,
            version=f"1.{index}.0",
            is_latest=index == 2,
            published_at=BASE_TIME + timedelta(days=index),
            status=VersionStatus.DEPRECATED if index == 0 else VersionStatus.ACTIVE,
            status_message="too old" if index == 0 else "",
            remotes=[http_remote("https://{tenant}.acme.example/mcp")],
            packages=[npm_package("@acme/weather")],
        )
    listings_refresh_from_registry(names=[name])

    response = client.get(f"/api/v1/listings/{name}")

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == name
    assert [v["version"] for v in body["versions"]] == ["1.2.0", "1.1.0", "1.0.0"]
    assert body["versions"][0]["is_latest"] is True
    assert body["versions"][2]["status"] == "deprecated"
    assert body["versions"][2]["status_message"] == "too old"
    assert body["versions_truncated"] is False
    assert body["remotes"] == [
        {
            "type": "streamable-http",
            "url": "https://{tenant}.acme.example/mcp",
            "header_names": ["Authorization"],
        }
    ]
    assert body["packages"] == [
        {
            "registry_type": "npm",
            "identifier": "@acme/weather",
            "version": "1.0.0",
            "transport_type": "stdio",
            "runtime_hint": "npx",
            "env_var_names": ["WEATHER_API_KEY"],
        }
    ]
    assert "Bearer" not in response.content.decode()  # header values never leave
    assert client.get("/api/v1/listings/io.github.acme/weather").status_code == 404
    assert client.get("/api/v1/listings/io.github.Acme%2Fweather").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/listings/io.github.nobody/nothing",
        "/api/v1/listings/bad%00name",
        "/api/v1/listings/" + "x" * 300,
    ],
)
def test_detail_unknown_is_404_json(client, path):
    response = client.get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["message"] == "No listing with this name."


def test_detail_lists_the_newest_hundred_versions_in_constant_queries(
    client, django_assert_max_num_queries
):
    name = "io.github.acme/many"
    ServerVersionFactory.create_batch(
        105,
        name=name,
        version=factory.Sequence(lambda n: f"0.{n}.0"),
        is_latest=False,
    )
    ServerVersionFactory(name=name, version="9.9.9", published_at=BASE_TIME + timedelta(days=900))
    listings_refresh_from_registry(names=[name])

    # listing, versions, raw JSON; + the offer (hosting, plan prices)
    with django_assert_max_num_queries(3 + 2):
        body = client.get(f"/api/v1/listings/{name}").json()

    assert len(body["versions"]) == 100
    assert body["versions_truncated"] is True
    assert body["version_count"] == 106
    assert body["versions"][0]["version"] == "9.9.9"


def test_detail_of_deleted_listing_is_served_with_its_status(client):
    ServerVersionFactory(
        name="io.github.acme/removed",
        status=VersionStatus.DELETED,
        status_message="Spam",
    )
    listings_refresh_from_registry(names=["io.github.acme/removed"])

    body = client.get("/api/v1/listings/io.github.acme/removed").json()

    assert body["status"] == ListingStatus.DELETED
    assert body["status_message"] == "Spam"


def test_schema_and_docs_are_served_without_inline_script(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    assert "/api/v1/listings/{name}:" in text
    assert "listings_list" in text

    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "cdn" not in html.lower()
    assert "<style" not in html
    assert html.count("<script") == html.count("<script src=")
    assert "Content-Security-Policy" in docs.headers
    init = client.get("/api/docs/?script=")
    assert init.status_code == 200
    assert init["Content-Type"].startswith("application/javascript")
    assert "/api/schema/" in init.content.decode()
    bundle = client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert bundle.status_code == 200


def test_count_is_capped_with_a_query_and_exact_without(client, monkeypatch):
    from marketplace.pagination import CappedCountPaginator

    monkeypatch.setattr(CappedCountPaginator, "cap", 5)
    ListingFactory.create_batch(7, description="weather station")

    searched = client.get("/api/v1/listings", {"q": "weather", "page_size": 2}).json()
    last = client.get("/api/v1/listings", {"q": "weather", "page_size": 2, "page": 3}).json()
    browsed = client.get("/api/v1/listings", {"page_size": 2}).json()

    assert (searched["count"], searched["count_capped"]) == (5, True)
    assert len(last["results"]) == 1
    assert last["next"] is None
    assert (browsed["count"], browsed["count_capped"]) == (7, False)


def test_deep_pages_read_ids_first_and_keep_the_order(client, monkeypatch):
    """Past DEFERRED_JOIN_MIN_OFFSET a page is ids (index-only) then rows; same results."""
    from marketplace import pagination

    names = [f"io.github.deep/s{n:02d}" for n in range(7)]
    for name in reversed(names):
        ListingFactory(name=name)
    shallow = [
        [
            r["name"]
            for r in client.get("/api/v1/listings", {"page": p, "page_size": 3}).json()["results"]
        ]
        for p in (1, 2, 3)
    ]
    monkeypatch.setattr(pagination, "DEFERRED_JOIN_MIN_OFFSET", 1)
    deep = [
        [
            r["name"]
            for r in client.get("/api/v1/listings", {"page": p, "page_size": 3}).json()["results"]
        ]
        for p in (1, 2, 3)
    ]

    assert shallow == deep == [names[0:3], names[3:6], names[6:7]]
    ordered = client.get("/api/v1/listings", {"page": 2, "page_size": 3, "ordering": "-published"})
    # Created in reverse, so the newest first is name order again.
    assert [r["name"] for r in ordered.json()["results"]] == names[3:6]

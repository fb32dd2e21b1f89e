"""Public pages: search (/) and detail (/servers/<name>) are real, escaped and CSP-clean."""

import re

import pytest
from django.test import Client

from marketplace.models import Listing, ListingStatus
from marketplace.services import listings_refresh_from_registry
from registry_sync.models import VersionStatus
from tests.factories import ListingFactory, ServerVersionFactory, http_remote, npm_package

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.marketplace.urls_pages")]

XSS = "<script>alert(1)</script>"


@pytest.fixture
def client() -> Client:
    return Client()


def assert_no_inline_script_or_style(html: str) -> None:
    scripts = re.findall(r"<script\b[^>]*>", html, flags=re.IGNORECASE)
    assert all(" src=" in tag for tag in scripts), scripts
    assert "<style" not in html.lower()
    for tag in re.findall(r"<[a-zA-Z][^>]*>", html):  # real tags only; escaped text has &lt;
        assert not re.search(r"\son[a-z]+\s*=", tag, flags=re.IGNORECASE), tag
        assert " style=" not in tag, tag


def test_search_page_escapes_registry_text_and_sends_csp(client):
    ServerVersionFactory(
        name="io.github.evil/xss",
        title=f"Title {XSS}",
        description=f"Weather {XSS} and <img src=x onerror=alert(2)>",
    )
    listings_refresh_from_registry(names=["io.github.evil/xss"])

    response = client.get("/", {"q": "weather"})

    assert response.status_code == 200
    html = response.content.decode()
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert "io.github.evil/xss" in html
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert_no_inline_script_or_style(html)


def test_search_query_is_escaped_when_echoed(client):
    response = client.get("/", {"q": XSS})

    html = response.content.decode()
    assert response.status_code == 200
    assert XSS not in html
    assert "&lt;script&gt;" in html


def test_search_page_has_form_labels_and_results(client):
    ListingFactory(name="io.github.a/weather", title="Weather", has_remote=True)
    ListingFactory(name="io.github.a/deleted", title="Weather gone", status=ListingStatus.DELETED)

    response = client.get("/", {"q": "weather", "transport": "remote"})

    html = response.content.decode()
    assert response.status_code == 200
    assert '<label for="id_q">' in html
    assert '<label for="id_transport">' in html
    assert 'href="/servers/io.github.a/weather"' in html
    assert "Weather gone" not in html
    assert "1 server " in html
    assert '<html lang="en">' in html
    assert 'name="viewport"' in html


def test_search_page_pages_and_ignores_bad_filters(client):
    ListingFactory.create_batch(25, description="weather station")

    first = client.get("/", {"q": "weather"}).content.decode()
    second = client.get("/", {"q": "weather", "page": 2}).content.decode()
    bad = client.get("/", {"transport": "teleport", "page": "x"})

    assert 'rel="next" href="?q=weather&amp;page=2"' in first
    assert "Page 2 of 2" in second
    assert bad.status_code == 200
    assert "were not understood" in bad.content.decode()


def test_search_page_is_a_constant_number_of_queries(client, django_assert_max_num_queries):
    ListingFactory.create_batch(30, description="weather station")

    # search (3) + the page's offers (hosting, plan prices)
    with django_assert_max_num_queries(3 + 2):
        assert client.get("/", {"q": "weather"}).status_code == 200


def test_detail_page_escapes_and_shows_status_banner_versions_remotes_packages(client):
    name = "io.github.evil/detail"
    ServerVersionFactory(
        name=name,
        version="1.0.0",
        is_latest=True,
        status=VersionStatus.DEPRECATED,
        status_message=f"Use the other one {XSS}",
        title=f"Evil {XSS}",
        description=f"Desc {XSS}",
        website_url="https://evil.example/home",
        remotes=[http_remote(f"https://evil.example/{XSS}")],
        packages=[npm_package(f"evil-{XSS}")],
    )
    listings_refresh_from_registry(names=[name])

    response = client.get(f"/servers/{name}")

    html = response.content.decode()
    assert response.status_code == 200
    assert XSS not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4
    assert 'class="banner banner--deprecated"' in html
    assert "Use the other one" in html
    assert 'href="https://evil.example/home"' in html
    assert "WEATHER_API_KEY" in html
    assert "Bearer" not in html
    assert f'href="/api/v1/listings/{name}"' in html
    assert "Content-Security-Policy" in response.headers
    assert_no_inline_script_or_style(html)


def test_detail_page_never_links_a_non_http_url(client):
    listing = ListingFactory(name="io.github.evil/js")
    Listing.objects.filter(pk=listing.pk).update(
        website_url="javascript:alert(1)", repository_url="data:text/html,hi"
    )

    html = client.get("/servers/io.github.evil/js").content.decode()

    assert "javascript:" not in html
    assert "data:text" not in html


@pytest.mark.parametrize("status", [ListingStatus.DELETED, ListingStatus.GONE])
def test_detail_page_banners_deleted_and_gone(client, status):
    ListingFactory(name="io.github.a/dead", status=status, status_message="Removed by moderators")

    html = client.get("/servers/io.github.a/dead").content.decode()

    assert f"banner--{status}" in html
    assert "Removed by moderators" in html


def test_detail_page_unknown_is_404(client):
    response = client.get("/servers/io.github.nobody/nothing")

    assert response.status_code == 404
    assert "Not found" in response.content.decode()


def test_stylesheet_is_served(client):
    response = client.get("/static/marketplace/site.css")

    assert response.status_code == 200
    assert b"@media" in b"".join(response.streaming_content)


def test_search_page_says_when_the_count_is_capped(client, monkeypatch):
    from marketplace.pagination import CappedCountPaginator

    monkeypatch.setattr(CappedCountPaginator, "cap", 3)
    ListingFactory.create_batch(4, description="weather station")

    assert "3+ servers" in client.get("/", {"q": "weather"}).content.decode()
    assert "4 servers" in client.get("/").content.decode()

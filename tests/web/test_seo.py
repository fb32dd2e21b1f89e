"""robots.txt and the sitemap index: public pages only, URLs on SITE_URL, pages bounded."""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.test import Client

from tests.billing.factories import CreatorFactory
from tests.factories import ListingFactory
from web.seo import ListingSitemap

pytestmark = pytest.mark.django_db


def _locs(xml: str) -> list[str]:
    return re.findall(r"<loc>([^<]+)</loc>", xml)


def test_robots_keeps_crawlers_off_private_pages_and_names_the_sitemap() -> None:
    response = Client().get("/robots.txt")
    text = response.content.decode()
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    for path in ("/me/", "/creator/", "/admin/", "/api/", "/mcp/", "/reviews/"):
        assert f"Disallow: {path}\n" in text
    assert f"Sitemap: {settings.SITE_URL}/sitemap.xml\n" in text
    assert "Disallow: /servers" not in text


def test_sitemap_index_pages_listings_and_creators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ListingSitemap, "limit", 2)  # five listings: three pages of two
    creator = CreatorFactory(handle="acme")
    for n in range(4):
        ListingFactory(name=f"io.github.acme/tool-{n}", owner=creator.user if n == 0 else None)
    ListingFactory(name="io.github.acme/deprecated", status="deprecated")
    ListingFactory(name="io.github.acme/gone", status="gone")
    CreatorFactory(handle="idle")  # no listing: no page worth indexing

    client = Client()
    index = client.get("/sitemap.xml")
    assert index.status_code == 200
    sections = _locs(index.content.decode())
    listing_pages = [loc for loc in sections if "sitemap-listings.xml" in loc]
    assert len(listing_pages) == 3
    assert any(loc.endswith("sitemap-creators.xml") for loc in sections)

    urls: list[str] = []
    for page in (1, 2, 3):
        xml = client.get("/sitemap-listings.xml", {"p": page}).content.decode()
        assert len(_locs(xml)) <= 2
        assert "<lastmod>" in xml
        urls += _locs(xml)
    assert client.get("/sitemap-listings.xml", {"p": 4}).status_code == 404
    assert len(urls) == 5
    assert f"{settings.SITE_URL}/servers/io.github.acme/tool-0" in urls
    assert f"{settings.SITE_URL}/servers/io.github.acme/deprecated" in urls
    assert not any("gone" in url for url in urls)

    creators = _locs(client.get("/sitemap-creators.xml").content.decode())
    assert creators == [f"{settings.SITE_URL}/creators/acme"]
    pages = _locs(client.get("/sitemap-pages.xml").content.decode())
    assert pages == [f"{settings.SITE_URL}/"]

"""robots.txt and sitemap.xml for search engines.

The sitemap is always an index (`/sitemap.xml`) of bounded pages (`/sitemap-<section>.xml?p=N`,
`SITEMAP_PAGE_SIZE` URLs each, under the protocol's 50,000), so its size never grows with the
catalogue. URLs are built from `SITE_URL`, not the request's Host header. Only public pages are
listed: the home page, every active or deprecated listing, and creators with a listing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.sitemaps import Sitemap
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe

from billing.models import Creator
from marketplace.models import Listing, ListingStatus

# 10,000 URLs is about 1 MB of XML: one page stays fast to render at 50,000 listings.
SITEMAP_PAGE_SIZE = 10_000
OFFERED = (ListingStatus.ACTIVE, ListingStatus.DEPRECATED)


class _SiteSitemap(Sitemap):  # type: ignore[type-arg]
    limit = SITEMAP_PAGE_SIZE

    def get_domain(self, site: Any = None) -> str:
        return urlsplit(settings.SITE_URL).netloc

    def get_protocol(self, protocol: str | None = None) -> str:
        return urlsplit(settings.SITE_URL).scheme or "https"


class HomeSitemap(_SiteSitemap):
    changefreq = "daily"

    def items(self) -> list[str]:
        return ["ui:home"]

    def location(self, item: str) -> str:
        return reverse(item)


class ListingSitemap(_SiteSitemap):
    changefreq = "daily"

    def items(self) -> QuerySet[Listing]:
        return (
            Listing.objects.filter(status__in=OFFERED)
            .only("name", "upstream_updated_at", "updated_at")
            .order_by("pk")
        )

    def location(self, item: Listing) -> str:
        return reverse("ui:listing", kwargs={"name": item.name})

    def lastmod(self, item: Listing) -> datetime:
        return max(d for d in (item.upstream_updated_at, item.updated_at) if d is not None)


class CreatorSitemap(_SiteSitemap):
    changefreq = "weekly"

    def items(self) -> QuerySet[Creator]:
        offered = Listing.objects.filter(owner_id=OuterRef("user_id"), status__in=OFFERED)
        return Creator.objects.filter(Exists(offered)).only("handle").order_by("pk")

    def location(self, item: Creator) -> str:
        return reverse("ui:creator-profile", kwargs={"handle": item.handle})


SITEMAPS: dict[str, type[Sitemap]] = {  # type: ignore[type-arg]
    "pages": HomeSitemap,
    "listings": ListingSitemap,
    "creators": CreatorSitemap,
}

# People's own pages, forms and machine endpoints: nothing a search engine should index.
ROBOTS_DISALLOW = (
    "/me/",
    "/creator/",
    "/reviews/",
    "/accounts/",
    "/billing/",
    "/admin/",
    "/api/",
    "/mcp/",
    "/mcp-catalog",
)


def robots_txt() -> str:
    lines = ["User-agent: *", *(f"Disallow: {path}" for path in ROBOTS_DISALLOW), "Allow: /"]
    lines += ["", f"Sitemap: {settings.SITE_URL}{reverse('sitemap-index')}"]
    return "\n".join(lines) + "\n"


@require_safe
@cache_control(public=True, max_age=3600)
def robots_txt_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(robots_txt(), content_type="text/plain; charset=utf-8")

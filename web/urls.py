"""Routes for agents. Included before the people pages, so `/servers/<name>.md` is the markdown
of listing `<name>`; `listing_markdown_view` hands a listing really named "<name>.md" back to the
HTML detail route."""

from django.contrib.sitemaps import views as sitemap_views
from django.urls import path
from django.views.decorators.cache import cache_control

from web.agents import listing_markdown_view, listings_markdown_view, llms_txt_view
from web.seo import SITEMAPS, robots_txt_view

# Sitemaps change with the hourly registry sync: crawlers and proxies may keep them an hour.
_hour = cache_control(public=True, max_age=3600)

urlpatterns = [
    path("robots.txt", robots_txt_view, name="robots-txt"),
    path(
        "sitemap.xml",
        _hour(sitemap_views.index),
        {"sitemaps": SITEMAPS, "sitemap_url_name": "sitemap-section"},
        name="sitemap-index",
    ),
    path(
        "sitemap-<section>.xml",
        _hour(sitemap_views.sitemap),
        {"sitemaps": SITEMAPS},
        name="sitemap-section",
    ),
    path("llms.txt", llms_txt_view, name="llms-txt"),
    path("servers.md", listings_markdown_view, name="listings-markdown"),
    path("servers/<path:name>.md", listing_markdown_view, name="listing-markdown"),
]

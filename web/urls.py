"""Routes for agents. Included before the people pages, so `/servers/<name>.md` is the markdown
of listing `<name>`; `listing_markdown_view` hands a listing really named "<name>.md" back to the
HTML detail route."""

from django.urls import path

from web.agents import listing_markdown_view, listings_markdown_view, llms_txt_view

urlpatterns = [
    path("llms.txt", llms_txt_view, name="llms-txt"),
    path("servers.md", listings_markdown_view, name="listings-markdown"),
    path("servers/<path:name>.md", listing_markdown_view, name="listing-markdown"),
]

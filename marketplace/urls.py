"""Public catalogue pages."""

from django.urls import path

from marketplace.views import listing_detail_page, listing_search_page

urlpatterns = [
    path("", listing_search_page, name="catalogue-search"),
    # <path:…> because registry names keep their slash (io.github.acme/weather).
    path("servers/<path:name>", listing_detail_page, name="catalogue-detail"),
]

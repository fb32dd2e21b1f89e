"""REST API of the catalogue (mounted under /api/v1/)."""

from django.urls import path, re_path

from marketplace.apis import ListingDetailApi, ListingListApi

urlpatterns = [
    path("listings", ListingListApi.as_view(), name="listing-list"),
    # Registry names keep their slash (io.github.acme/weather). `(?s:…)` so any name, even one
    # with a newline, reaches the view and gets the API's JSON 404 rather than an HTML page.
    re_path(r"^listings/(?P<name>(?s:.+))$", ListingDetailApi.as_view(), name="listing-detail"),
]

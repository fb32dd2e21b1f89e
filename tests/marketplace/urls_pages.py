"""URLs for the catalogue page tests: marketplace's own pages first, then the whole project.

The project mounts richer pages over some of the same paths (the web UI extends the detail
page); these tests pin the marketplace views themselves, while every other route (that the
shared base template links to) still resolves.
"""

from django.urls import include, path

urlpatterns = [
    path("", include("marketplace.urls")),
    path("", include("config.urls")),
]

"""The site's URLs plus two views that crash, to see what a 500 answers (test only)."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from config.urls import handler400, handler403, handler404, handler500, urlpatterns

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]


class Boom(Exception):
    pass


def crash(request: HttpRequest) -> HttpResponse:
    raise Boom("an uncaught error with a secret-looking detail: sk_live_123")


urlpatterns = [
    path("api/v1/test-crash", crash),
    path("test-crash", crash),
    *urlpatterns,
]

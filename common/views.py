"""Liveness/readiness for load balancers, and the error pages of the whole site.

The error handlers answer JSON under `/api/` (an API client parses every answer, even a
404 for a route that never matched or a 500 from a crash) and the site's HTML elsewhere.
DRF's exception handler (common.api.exceptions) covers errors its views raise; these cover
what happens before or outside a DRF view: no URL matched, a converter refused the path, an
uncaught exception.
"""

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

API_PREFIX = "/api/"


def healthz(request: HttpRequest) -> JsonResponse:
    """Ready when the database answers; says nothing about secrets or versions."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:
        return JsonResponse({"status": "unavailable"}, status=503)
    return JsonResponse({"status": "ok"})


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def _api_error(message: str, status: int) -> JsonResponse:
    """The API's error shape (common.api.exceptions): `message` plus `extra`."""
    return JsonResponse({"message": message, "extra": {}}, status=status)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _api_error("Bad request.", 400)
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _api_error("You do not have permission to perform this action.", 403)
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _api_error("Not found.", 404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """Says nothing about the error: the traceback goes to the log (django.request)."""
    if _is_api(request):
        return _api_error("Server error.", 500)
    return defaults.server_error(request)

"""Errors answer JSON under /api/ and HTML pages elsewhere, with DEBUG off (the test settings)."""

import pytest
from django.conf import settings
from django.test import Client


@pytest.fixture
def client_no_raise() -> Client:
    """The test client re-raises view exceptions by default; a real server answers 500."""
    return Client(raise_request_exception=False)


def _json_error(response, status: int) -> dict:
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"message", "extra"}
    return body


def test_debug_is_off():
    assert settings.DEBUG is False


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nope",
        "/api/v1/me/licenses/not-a-number",
        "/api/v1/me/licenses/1/keys/x/rotate",
        "/api/nope",
        "/api/v1/listings/io.github.nobody/nothing",  # the view's own 404 (DRF)
    ],
)
def test_api_404_is_json(client_no_raise, path):
    body = _json_error(client_no_raise.get(path), 404)
    assert body["message"]


@pytest.mark.django_db
def test_page_404_is_html(client_no_raise):
    response = client_no_raise.get("/no-such-page/at/all")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    assert b"Not found" in response.content


@pytest.mark.urls("tests.common.urls_errors")
def test_api_500_is_json_and_says_nothing_about_the_error(client_no_raise):
    response = client_no_raise.get("/api/v1/test-crash")
    assert _json_error(response, 500) == {"message": "Server error.", "extra": {}}
    assert b"sk_live_123" not in response.content


@pytest.mark.urls("tests.common.urls_errors")
def test_page_500_is_html(client_no_raise):
    response = client_no_raise.get("/test-crash")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    assert b"Something went wrong" in response.content
    assert b"sk_live_123" not in response.content

"""The redirect-URI policy shared by registration and Client ID Metadata Documents."""

from __future__ import annotations

import pytest

from oauth.clientmeta import redirect_uri_error, redirect_uris_error


@pytest.mark.parametrize(
    "uri",
    [
        "https://claude.ai/api/mcp/auth_callback",
        "https://chatgpt.com/connector_platform_oauth_redirect",
        "http://localhost:33418/oauth/callback",
        "http://127.0.0.1:6274/oauth/callback",
        "http://[::1]:8080/cb",
        "cursor://anysphere.cursor-mcp/oauth/callback",
        "com.example.app:/oauth2redirect",
    ],
)
def test_allowed(uri: str) -> None:
    assert redirect_uri_error(uri) is None


@pytest.mark.parametrize(
    "uri",
    [
        "http://evil.example/callback",
        "http://localhost.evil.example/cb",
        "javascript:alert(1)//",
        "JavaScript:alert(1)",
        "data:text/html,hi",
        "file:///etc/passwd",
        "https://claude.ai/cb#fragment",
        "https:///no-host",
        "/relative/path",
    ],
)
def test_refused(uri: str) -> None:
    assert redirect_uri_error(uri)


def test_one_bad_uri_refuses_the_list() -> None:
    assert redirect_uris_error(["https://ok.example/cb"]) is None
    error = redirect_uris_error(["https://ok.example/cb", "http://evil.example/cb"])
    assert error
    assert "evil.example" in error

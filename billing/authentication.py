"""DRF authentication by personal API token, for the `/api/v1/me/...` views only.

`Authorization: Bearer tbp_...` (or `Token tbp_...`). A request without such a header falls
through to the session (the browser); a bad, revoked or unknown token is a 401 with the same
message whatever the reason, and `WWW-Authenticate: Bearer` so clients know what to send.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import (
    BaseAuthentication,
    SessionAuthentication,
    get_authorization_header,
)
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from billing.models import PersonalToken
from billing.services.tokens import personal_token_authenticate

_KEYWORDS = (b"bearer", b"token")
_FAILED = "Invalid or revoked API token. Create one on your API tokens page."


class PersonalTokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, PersonalToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() not in _KEYWORDS:
            return None
        if len(parts) != 2:
            raise AuthenticationFailed(_FAILED)
        token = personal_token_authenticate(raw_token=parts[1].decode("latin-1"))
        if token is None:
            raise AuthenticationFailed(_FAILED)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


# The /api/v1/me/ views: a token first, then the browser session.
ME_AUTHENTICATION: list[type[BaseAuthentication]] = [
    PersonalTokenAuthentication,
    SessionAuthentication,
]


class PersonalTokenScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """The OpenAPI schema's name for it (drf-spectacular)."""

    target_class = "billing.authentication.PersonalTokenAuthentication"
    name = "personalToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token (tbp_...) from the API tokens page.",
        }

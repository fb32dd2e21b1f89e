"""Anonymous client registration is bounded per client address (oauth.asgi), in-process over
ASGI with the real cache (Redis in tests)."""

from __future__ import annotations

import httpx
import pytest
from asgiref.sync import async_to_sync

from oauth.asgi import oauth_asgi_app
from oauth.models import Client

pytestmark = pytest.mark.django_db(transaction=True)

CLIENT = {
    "client_name": "Flood",
    "redirect_uris": ["http://127.0.0.1:9/cb"],
    "token_endpoint_auth_method": "none",
    "grant_types": ["authorization_code", "refresh_token"],
    "response_types": ["code"],
}


async def _not_found(scope, receive, send):  # the fallback: nothing else is asked here
    raise AssertionError(scope["path"])


async def _register(client: httpx.AsyncClient) -> httpx.Response:
    return await client.post("/oauth/register", json=CLIENT)


def test_registrations_past_the_hourly_limit_get_429(settings, redis_client):
    settings.OAUTH_REGISTRATIONS_PER_HOUR = 2
    app = oauth_asgi_app(_not_found)

    async def flood() -> tuple[list[httpx.Response], httpx.Response]:
        near = httpx.ASGITransport(app=app, client=("203.0.113.7", 5000))
        far = httpx.ASGITransport(app=app, client=("203.0.113.8", 5000))
        async with httpx.AsyncClient(transport=near, base_url="http://testserver") as one:
            answers = [await _register(one) for _ in range(3)]
        async with httpx.AsyncClient(transport=far, base_url="http://testserver") as other:
            return answers, await _register(other)

    answers, elsewhere = async_to_sync(flood)()  # DB calls run in this thread
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert answers[2].json()["error"] == "too_many_requests"
    assert 0 < int(answers[2].headers["retry-after"]) <= 3600
    assert elsewhere.status_code == 201  # another address is not affected
    assert Client.objects.count() == 3

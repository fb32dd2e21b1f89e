"""Personal API tokens: made on the tokens page and shown once, stored as an HMAC only, accepted
as `Authorization: Bearer` or `Token` by the `/api/v1/me/...` views (and no other), revocable
with a confirmation, last use recorded, never written to the logs."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from django.test import Client

from billing import keys
from billing.models import ApiKey, PersonalToken
from billing.services.tokens import personal_token_create, personal_token_revoke
from tests.billing.factories import LicenseFactory, PlanFactory
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _bearer(raw: str, scheme: str = "Bearer") -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"{scheme} {raw}"}


def test_token_from_the_page_is_shown_once_and_stored_as_a_hash(client: Client) -> None:
    user = UserFactory()
    client.force_login(user)
    response = client.post("/me/tokens/", {"action": "create", "name": "nightly report"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    raw = re.search(r'<code id="raw-token">([^<]+)</code>', html)[1]  # type: ignore[index]
    assert raw.startswith("tbp_")
    assert keys.token_is_well_formed(raw)
    token = PersonalToken.objects.get(user=user)
    assert token.token_hash == keys.key_hash(raw)
    assert token.name == "nightly report"
    assert raw not in str(PersonalToken.objects.values().get())
    again = client.get("/me/tokens/").content.decode()
    assert raw not in again
    assert token.display_prefix in again
    assert "never" in again  # not used yet


def test_api_accepts_the_token_on_me_views_only(client: Client) -> None:
    lic = LicenseFactory()
    other = LicenseFactory()
    token, raw = personal_token_create(user=lic.buyer, name="agent")
    listed = client.get("/api/v1/me/licenses", **_bearer(raw))
    assert listed.status_code == 200
    assert [row["id"] for row in listed.json()["results"]] == [lic.pk]
    assert client.get(f"/api/v1/me/licenses/{other.pk}", **_bearer(raw)).status_code == 404
    # Keys can be made with it (a script rotating its own keys), and "Token" works too.
    made = client.post(
        f"/api/v1/me/licenses/{lic.pk}/keys",
        {"name": "ci"},
        content_type="application/json",
        **_bearer(raw, "Token"),
    )
    assert made.status_code == 201
    assert ApiKey.objects.filter(license=lic, name="ci").exists()
    token.refresh_from_db()
    assert token.last_used_at is not None
    # Outside /api/v1/me/ a token is not a credential.
    plan = PlanFactory(listing__owner=lic.buyer)
    outside = client.post(
        "/api/v1/billing/plans",
        {"listing": plan.listing.name, "kind": "free", "name": "x"},
        content_type="application/json",
        **_bearer(raw),
    )
    assert outside.status_code in (401, 403)


@pytest.mark.parametrize(
    "header",
    [
        "Bearer tbp_nope",
        "Bearer " + keys.key_generate(live=False),  # a license key is not an API token
        "Bearer " + keys.token_generate(),  # well formed, never issued
        "Bearer",
        "Bearer a b",
    ],
)
def test_bad_tokens_get_the_same_401(client: Client, header: str) -> None:
    response = client.get("/api/v1/me/licenses", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["message"] == (
        "Invalid or revoked API token. Create one on your API tokens page."
    )


def test_revoke_needs_confirmation_and_stops_the_token(client: Client) -> None:
    user = UserFactory()
    token, raw = personal_token_create(user=user)
    client.force_login(user)
    unconfirmed = client.post("/me/tokens/", {"action": "revoke", "token": token.pk})
    assert unconfirmed.status_code == 400
    assert "Tick the box" in unconfirmed.content.decode()
    token.refresh_from_db()
    assert token.revoked_at is None
    done = client.post("/me/tokens/", {"action": "revoke", "token": token.pk, "confirm": "on"})
    assert done.status_code == 200
    token.refresh_from_db()
    assert token.revoked_at is not None
    client.logout()
    assert client.get("/api/v1/me/licenses", **_bearer(raw)).status_code == 401
    # Someone else's token cannot be revoked through your account.
    theirs, _ = personal_token_create(user=UserFactory())
    client.force_login(user)
    bad = client.post("/me/tokens/", {"action": "revoke", "token": theirs.pk, "confirm": "on"})
    assert bad.status_code == 400
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    assert personal_token_revoke(user=user, token_id=token.pk).revoked_at == token.revoked_at


def test_tokens_never_reach_the_logs(client: Client, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    user = UserFactory()
    client.force_login(user)
    html = client.post("/me/tokens/", {"action": "create"}).content.decode()
    raw = re.search(r'<code id="raw-token">([^<]+)</code>', html)[1]  # type: ignore[index]
    client.logout()
    client.get("/api/v1/me/licenses", **_bearer(raw))
    client.get("/api/v1/me/licenses", **_bearer(raw[:-1] + "x"))
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "personal_token_created" in logged
    assert raw not in logged
    assert raw[:-1] not in logged

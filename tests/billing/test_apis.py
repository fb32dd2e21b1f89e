"""Buyer and creator REST APIs: own objects only (404 for others'), raw keys shown once."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from billing import keys
from billing.models import ApiKey, License, LicenseSource, Plan
from billing.selectors import entitlement_get_by_key_hash
from tests.billing.factories import ConnectAccountFactory, LicenseFactory, PlanPriceFactory
from tests.factories import ListingFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def buyer_client(client):
    lic = LicenseFactory()
    client.force_login(lic.buyer)
    return client, lic


def test_anonymous_is_refused(client):
    """401 with a challenge: the /me API takes a personal token as well as a session."""
    refused = client.get("/api/v1/me/licenses")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")


def test_list_and_create_keys_raw_key_only_in_the_201(buyer_client):
    client, lic = buyer_client
    listed = client.get("/api/v1/me/licenses").json()["results"]
    assert [row["id"] for row in listed] == [lic.pk]
    created = client.post(
        f"/api/v1/me/licenses/{lic.pk}/keys", {"name": "ci"}, content_type="application/json"
    )
    assert created.status_code == 201
    raw = created.json()["key"]
    assert keys.key_is_well_formed(raw)
    assert entitlement_get_by_key_hash(key_hash=keys.key_hash(raw)).license_id == lic.pk
    again = client.get(f"/api/v1/me/licenses/{lic.pk}/keys").json()["results"]
    assert "key" not in again[0]
    assert raw not in str(again)
    assert again[0]["display_prefix"] == raw[:14]


def test_other_peoples_licenses_and_keys_are_404_not_403(buyer_client):
    client, _mine = buyer_client
    theirs = LicenseFactory()
    their_key = ApiKey.objects.create(
        license=theirs, key_hash="0" * 64, display_prefix="tb_test_xxxxxx"
    )
    urls_get = [f"/api/v1/me/licenses/{theirs.pk}", f"/api/v1/me/licenses/{theirs.pk}/keys"]
    urls_post = [
        f"/api/v1/me/licenses/{theirs.pk}/keys",
        f"/api/v1/me/licenses/{theirs.pk}/keys/{their_key.pk}/rotate",
        f"/api/v1/me/licenses/{theirs.pk}/keys/{their_key.pk}/revoke",
        f"/api/v1/me/licenses/{_mine.pk}/keys/{their_key.pk}/revoke",  # my license, their key
    ]
    for url in urls_get:
        assert client.get(url).status_code == 404, url
    for url in urls_post:
        assert client.post(url, {}, content_type="application/json").status_code == 404, url
    their_key.refresh_from_db()
    assert their_key.revoked_at is None
    assert ApiKey.objects.filter(license=theirs).count() == 1


def test_only_the_owner_can_add_plans(client):
    listing = ListingFactory()
    client.force_login(UserFactory())
    client.post("/api/v1/billing/creator", {"handle": "someone"}, content_type="application/json")
    response = client.post(
        "/api/v1/billing/plans",
        {"listing": listing.name, "kind": "per_call", "per_call_amount": 3},
        content_type="application/json",
    )
    assert response.status_code == 404
    assert not Plan.objects.exists()


def test_checkout_api_refuses_when_creator_not_payable(client, stripe_fake):
    account = ConnectAccountFactory(payable=False)
    price = PlanPriceFactory(
        plan__kind="one_time", plan__listing__owner=account.creator.user, unit_amount=900
    )
    client.force_login(UserFactory())
    response = client.post(
        "/api/v1/billing/checkout", {"plan": price.plan_id}, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["extra"]["code"] == "creator_not_payable"
    assert stripe_fake.state.all("checkout_sessions") == []


def test_grant_license_command_prints_the_key_once():
    price = PlanPriceFactory()
    buyer = UserFactory()
    out = StringIO()
    call_command(
        "grant_license", "--user", buyer.email, "--listing", price.plan.listing.name,
        "--plan", str(price.plan_id), "--days", "30", stdout=out,
    )  # fmt: skip
    raw = out.getvalue().split("key (shown once): ")[1].strip()
    lic = License.objects.get(buyer=buyer)
    assert lic.source == LicenseSource.GRANT
    assert lic.expires_at is not None
    ent = entitlement_get_by_key_hash(key_hash=keys.key_hash(raw))
    assert ent.license_id == lic.pk
    with pytest.raises(CommandError):  # a second live license for the same plan
        call_command(
            "grant_license", "--user", buyer.email, "--listing", price.plan.listing.name,
            "--plan", str(price.plan_id), stdout=StringIO(),
        )  # fmt: skip


def test_assign_owner_command():
    listing = ListingFactory()
    user = UserFactory()
    call_command(
        "billing_assign_owner", "--listing", listing.name, "--user", user.email, stdout=StringIO()
    )
    listing.refresh_from_db()
    assert listing.owner_id == user.pk
    call_command("billing_assign_owner", "--listing", listing.name, "--clear", stdout=StringIO())
    listing.refresh_from_db()
    assert listing.owner_id is None

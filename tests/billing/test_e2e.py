"""End to end over loopback HTTP: our site under the live server, the fake Stripe on its own
port sending real signed webhooks to it, and browsers played by httpx clients.

A creator claims a mirrored listing and onboards with Connect, sets plans, all on the people
pages (`ui:`); a buyer checks out on billing's buy page in payment mode and in subscription mode
through the fake hosted page; the webhooks and the success page both fulfil (one license each);
keys are rotated and revoked; a refund revokes a license.
"""

import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.test import Client

from billing import keys
from billing.models import (
    ApiKey,
    CheckoutOrder,
    License,
    LicenseEvent,
    LicenseStatus,
    Plan,
    Sale,
    StripeEvent,
    StripeEventStatus,
)
from billing.selectors import entitlement_get_by_key_hash
from billing.services.claims import claims_verify_from_registry
from fakes.stripe.server import FakeStripeServer
from tests.billing.conftest import CONNECT_SECRET, WEBHOOK_SECRET, post_event
from tests.factories import ListingFactory, ServerVersionFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)

CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture
def live_fake(
    live_server: Any, stripe_settings: Any, eager_celery: None
) -> Iterator[FakeStripeServer]:
    with FakeStripeServer(
        webhook_url=f"{live_server.url}/billing/webhooks/stripe",
        webhook_secret=WEBHOOK_SECRET,
        connect_webhook_secret=CONNECT_SECRET,
        webhook_backoff_seconds=0.05,
    ) as fake:
        stripe_settings.STRIPE_API_BASE = fake.base_url
        yield fake


class Browser:
    """A logged-in user's browser: session cookie, CSRF token from the last form."""

    def __init__(self, base: str, user: Any) -> None:
        django_client = Client()
        django_client.force_login(user)
        self.http = httpx.Client(base_url=base, timeout=10, follow_redirects=False)
        self.http.cookies.set("sessionid", django_client.cookies["sessionid"].value)
        self.csrf = ""

    def get(self, url: str) -> httpx.Response:
        response = self.http.get(url)
        if m := CSRF_RE.search(response.text):
            self.csrf = m[1]
        return response

    def post_form(self, url: str, data: dict[str, Any]) -> httpx.Response:
        return self.http.post(url, data={"csrfmiddlewaretoken": self.csrf, **data})

    def post_api(self, url: str, data: dict[str, Any] | None = None) -> httpx.Response:
        return self.http.post(
            url, json=data or {}, headers={"X-CSRFToken": self.http.cookies["csrftoken"]}
        )


def _pay(browser: Browser, fake: FakeStripeServer, plan: Plan) -> tuple[str, str]:
    """Buy through our buy page and the fake hosted checkout; return (session id, raw key)."""
    browser.get(f"/billing/buy/{plan.pk}")
    to_checkout = browser.post_form(f"/billing/buy/{plan.pk}", {})
    assert to_checkout.status_code == 302, to_checkout.text
    checkout_url = to_checkout.headers["location"]
    assert checkout_url.startswith(fake.base_url + "/checkout/cs_test_")
    page = httpx.get(checkout_url)
    assert 'id="pay"' in page.text
    paid = httpx.post(checkout_url + "/pay", data={"email": "buyer@example.com"})
    assert paid.status_code in (302, 303)
    success = paid.headers["location"]
    session_id = success.rsplit("session_id=", 1)[1]
    # The success page races the webhook: both fulfil, one license.
    shown = browser.get(success.replace(browser.http.base_url.__str__().rstrip("/"), ""))
    assert shown.status_code == 200
    raw = re.search(r'<pre id="raw-key">([^<]+)</pre>', shown.text)
    assert raw is not None, shown.text
    again = browser.get(success.replace(str(browser.http.base_url).rstrip("/"), ""))
    assert "raw-key" not in again.text  # shown exactly once
    return session_id, raw[1]


def test_creator_to_buyer_end_to_end(live_server, live_fake):
    base = live_server.url
    creator_user, buyer_user = UserFactory(), UserFactory()
    creator = Browser(base, creator_user)
    buyer = Browser(base, buyer_user)

    # 1. Become a creator and claim a mirrored listing through the registry.
    listing = ListingFactory(name="io.github.maker/weather")
    creator.get("/creator/")
    assert creator.post_form("/creator/", {"handle": "maker"}).status_code == 302
    creator.get("/creator/claim/")
    claim_page = creator.post_form("/creator/claim/", {"listing": listing.name})
    token = re.search(r'<code id="claim-token">([^<]+)</code>', claim_page.text)[1]
    assert "dev.toolbooth/claim" in claim_page.text
    meta = {"io.modelcontextprotocol.registry/publisher-provided": {"dev.toolbooth/claim": token}}
    ServerVersionFactory(name=listing.name, version="1.1.0", extra_server={"_meta": meta})
    assert claims_verify_from_registry(names=[listing.name]) == 1  # the sync's hook

    # 2. Not payable yet: buying is refused without calling Stripe.
    listing_page = f"/creator/listings/{listing.name}/"
    creator.get(listing_page)
    made = creator.post_form(
        listing_page,
        {
            "section": "plan",
            "kind": "one_time",
            "name": "Lifetime",
            "unit_amount": "49.00",
            "rate_limit_per_minute": "60",
        },
    )
    assert made.status_code == 302, made.text
    made = creator.post_form(
        listing_page,
        {
            "section": "plan",
            "kind": "per_call",
            "name": "PAYG",
            "per_call_amount": "0.03",
            "rate_limit_per_minute": "120",
        },
    )
    assert made.status_code == 302, made.text
    one_time = Plan.objects.get(listing=listing, kind="one_time")
    per_call = Plan.objects.get(listing=listing, kind="per_call")
    sessions_before = len(live_fake.state.all("checkout_sessions"))
    buyer.get(f"/billing/buy/{one_time.pk}")
    refused = buyer.post_form(f"/billing/buy/{one_time.pk}", {})
    assert refused.headers["location"] == f"/billing/buy/{one_time.pk}"
    assert len(live_fake.state.all("checkout_sessions")) == sessions_before

    # 3. Connect onboarding through the fake's hosted page; account.updated makes it payable.
    creator.get("/creator/")
    onboard = creator.post_form("/creator/onboard/", {})
    assert onboard.status_code == 302
    link = onboard.headers["location"]
    assert "/connect/onboard/acct_" in link
    done = httpx.post(link.split("?")[0], data={"return_url": f"{base}/creator/"})
    assert done.status_code in (302, 303)
    assert live_fake.wait_for_webhooks(10)
    assert "Stripe payouts ready." in creator.get("/creator/").text

    # 4. Payment mode (one-time license) and subscription mode (pay per call).
    session_one, raw_one = _pay(buyer, live_fake, one_time)
    _session_sub, raw_sub = _pay(buyer, live_fake, per_call)
    assert live_fake.wait_for_webhooks(15)
    licenses = {lic.plan_id: lic for lic in License.objects.filter(buyer=buyer_user)}
    assert set(licenses) == {one_time.pk, per_call.pk}
    assert all(lic.status == LicenseStatus.ACTIVE for lic in licenses.values())
    assert CheckoutOrder.objects.filter(status="completed").count() == 2
    ent_one = entitlement_get_by_key_hash(key_hash=keys.key_hash(raw_one))
    ent_sub = entitlement_get_by_key_hash(key_hash=keys.key_hash(raw_sub))
    assert ent_one.plan_kind == "one_time"
    assert ent_one.listing_name == listing.name
    assert ent_sub.plan_kind == "per_call"
    assert ent_sub.rate_limit_per_minute == 120
    assert ent_sub.meter_event_name == per_call.meter_event_name
    assert ent_sub.stripe_customer_id.startswith("cus_")
    sale = Sale.objects.get(kind="one_time")
    assert (sale.gross_amount, sale.platform_fee_amount) == (4900, 735)

    # 5. Keys through the REST API: list, rotate (overlap), revoke; others get 404.
    lic_one = licenses[one_time.pk]
    assert f'href="/me/licenses/{lic_one.pk}/"' in buyer.get("/me/licenses/").text
    moved = buyer.http.get("/billing/licenses/")  # the old address
    assert (moved.status_code, moved.headers["location"]) == (301, "/me/licenses/")
    listed = buyer.http.get(f"/api/v1/me/licenses/{lic_one.pk}/keys").json()["results"]
    (first,) = listed
    assert first["display_prefix"] == raw_one[:14]
    assert "key" not in first
    rotated = buyer.post_api(f"/api/v1/me/licenses/{lic_one.pk}/keys/{first['id']}/rotate")
    assert rotated.status_code == 201
    new_raw = rotated.json()["key"]
    assert entitlement_get_by_key_hash(key_hash=keys.key_hash(new_raw)) is not None
    assert entitlement_get_by_key_hash(key_hash=keys.key_hash(raw_one)).expires_at is not None
    stranger = Browser(base, UserFactory())
    stranger.get("/creator/")  # any page with a form sets the CSRF cookie
    assert stranger.http.get(f"/api/v1/me/licenses/{lic_one.pk}/keys").status_code == 404
    assert (
        stranger.post_api(f"/api/v1/me/licenses/{lic_one.pk}/keys/{first['id']}/revoke").status_code
        == 404
    )
    revoked = buyer.post_api(f"/api/v1/me/licenses/{lic_one.pk}/keys/{first['id']}/revoke")
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"]
    assert entitlement_get_by_key_hash(key_hash=keys.key_hash(raw_one)) is None

    # 6. A refund (at Stripe) revokes the one-time license; its keys stop working.
    pi = CheckoutOrder.objects.get(stripe_session_id=session_one).stripe_payment_intent_id
    assert (
        httpx.post(f"{live_fake.base_url}/control/payment_intents/{pi}/refund").status_code == 200
    )
    assert live_fake.wait_for_webhooks(10)
    lic_one.refresh_from_db()
    assert lic_one.status == LicenseStatus.REVOKED
    assert entitlement_get_by_key_hash(key_hash=keys.key_hash(new_raw)) is None
    assert licenses[per_call.pk].keys.count() == 1

    # Every delivered event was stored once and processed without error.
    assert not StripeEvent.objects.filter(status=StripeEventStatus.FAILED).exists()
    assert StripeEvent.objects.filter(type="charge.refunded").count() == 1
    assert ApiKey.objects.filter(license__buyer=buyer_user).count() == 3


def test_same_webhook_five_times_concurrently_changes_state_once(live_server, live_fake):
    """Five concurrent deliveries of one event, then five concurrent copies under new ids (same
    session), all racing the success page's fulfilment: one license, one sale, one history row."""
    from tests.billing.conftest import Shop, sign

    shop = Shop(live_fake)
    live_fake.pause_webhooks()  # we deliver by hand, all at once
    from billing.services.checkout import checkout_start

    checkout_start(
        buyer=shop.buyer,
        plan=shop.one_time,
        success_url=f"{live_server.url}/s",
        cancel_url=f"{live_server.url}/c",
    )
    order = CheckoutOrder.objects.get()
    live_fake.complete_checkout(order.stripe_session_id)
    (completed,) = live_fake.events("checkout.session.completed")
    import json

    def deliver(event: dict[str, Any], results: list[int]) -> None:
        body = json.dumps(event).encode()
        response = httpx.post(
            f"{live_server.url}/billing/webhooks/stripe",
            content=body,
            headers={"Stripe-Signature": sign(body), "Content-Type": "application/json"},
            timeout=20,
        )
        results.append(response.status_code)

    results: list[int] = []
    barrier_events = [completed] * 5 + [{**completed, "id": f"evt_copy_{i}"} for i in range(5)]
    threads = [threading.Thread(target=deliver, args=(e, results)) for e in barrier_events]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200] * 10
    assert StripeEvent.objects.filter(type="checkout.session.completed").count() == 6
    assert License.objects.count() == 1
    assert Sale.objects.count() == 1
    assert LicenseEvent.objects.count() == 1
    assert set(StripeEvent.objects.values_list("status", flat=True)) == {"processed"}


def test_signed_post_helper_matches_the_view(client, stripe_settings):
    """Guard for the helpers above: an event signed by them is accepted by the real view."""
    event = {"id": "evt_helper", "object": "event", "type": "ping", "data": {"object": {}}}
    assert post_event(client, event).status_code == 200


@pytest.mark.django_db
def test_free_plan_on_the_buy_page_goes_to_the_license_page(client, shop):
    """A free plan needs no Checkout: the license is granted and the buyer lands where keys are
    created (the people pages' license page), with no session opened at Stripe."""
    client.force_login(shop.buyer)
    response = client.post(f"/billing/buy/{shop.free.pk}")
    lic = License.objects.get(buyer=shop.buyer, plan=shop.free)
    assert response.status_code == 302
    assert response["Location"] == f"/me/licenses/{lic.pk}/"
    assert "Free license granted" in client.get(response["Location"]).content.decode()
    assert CheckoutOrder.objects.count() == 0

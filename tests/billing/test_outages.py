"""Stripe outages get a clear answer: the buy page, the checkout API and the onboarding API say
"payments are unavailable right now" with 503 + Retry-After (never a 500), leave nothing
half-written, and the same request works once Stripe is back. Also the onboarding idempotency
key covers its parameters (a link asked for from another page within the minute is not
Stripe's idempotency error)."""

import socket
import time
from collections.abc import Iterator

import pytest
import stripe

from billing import stripe_client
from billing.models import CheckoutOrder, ConnectAccount, License, OrderStatus, StripeCustomer
from billing.services.creators import creator_become
from tests.billing.factories import OwnedListingFactory

pytestmark = pytest.mark.django_db

UNAVAILABLE = "Payments are unavailable right now"


@pytest.fixture
def closed_port() -> Iterator[str]:
    """A loopback address where nothing listens: bound (so no one else takes the port) but
    not listening, so every connect is refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.fixture
def silent_port() -> Iterator[str]:
    """A loopback address that accepts connections (the kernel's backlog) and never answers:
    what a hung Stripe or a black-holed network path looks like to the client."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def _fail_after_retries(fake, path: str) -> None:
    """Stripe answers 500 to the first try and both of the library's retries."""
    for _ in range(stripe_client.MAX_NETWORK_RETRIES + 1):
        fake.fail_next(path, "500")


def _assert_unavailable_page(response) -> None:
    assert response.status_code == 503
    assert response["Retry-After"] == str(stripe_client.PAYMENTS_RETRY_AFTER_SECONDS)
    assert UNAVAILABLE in response.content.decode()


def _assert_unavailable_api(response) -> None:
    assert response.status_code == 503
    assert response["Retry-After"] == str(stripe_client.PAYMENTS_RETRY_AFTER_SECONDS)
    body = response.json()
    assert UNAVAILABLE in body["message"]
    assert body["extra"] == {"code": "payments_unavailable"}


def test_buy_page_with_stripe_unreachable_is_a_503_and_writes_nothing(
    shop, stripe_fake, client, settings, closed_port
):
    client.force_login(shop.buyer)
    settings.STRIPE_API_BASE = closed_port
    _assert_unavailable_page(client.post(f"/billing/buy/{shop.one_time.pk}"))
    assert not CheckoutOrder.objects.exists()
    assert not StripeCustomer.objects.filter(user_id=shop.buyer.pk).exists()
    assert not License.objects.filter(buyer=shop.buyer).exists()

    settings.STRIPE_API_BASE = stripe_fake.base_url  # Stripe is back: the same click works
    again = client.post(f"/billing/buy/{shop.one_time.pk}")
    assert again.status_code == 302
    assert again["Location"].startswith(stripe_fake.base_url)
    assert CheckoutOrder.objects.get().status == OrderStatus.PENDING


def test_buy_page_with_stripe_failing_500_is_a_503_and_the_retry_opens_one_session(
    shop, stripe_fake, client
):
    client.force_login(shop.buyer)
    _fail_after_retries(stripe_fake, "/v1/checkout/sessions")
    _assert_unavailable_page(client.post(f"/billing/buy/{shop.one_time.pk}"))
    # The order is the retry's anchor (same idempotency key); it has no session and no license.
    order = CheckoutOrder.objects.get()
    assert (order.status, order.stripe_session_id, order.checkout_url) == ("pending", None, "")
    assert not License.objects.filter(buyer=shop.buyer).exists()
    assert stripe_fake.state.all("checkout_sessions") == []

    again = client.post(f"/billing/buy/{shop.one_time.pk}")
    assert again.status_code == 302
    order.refresh_from_db()
    assert again["Location"] == order.checkout_url
    assert CheckoutOrder.objects.count() == 1
    assert len(stripe_fake.state.all("checkout_sessions")) == 1


def test_buy_page_with_stripe_timing_out_is_a_503_within_the_timeouts(
    shop, stripe_fake, client, settings, silent_port
):
    client.force_login(shop.buyer)
    settings.STRIPE_API_BASE = silent_port
    settings.STRIPE_TIMEOUT_SECONDS = 0.3
    started = time.monotonic()
    _assert_unavailable_page(client.post(f"/billing/buy/{shop.one_time.pk}"))
    assert time.monotonic() - started < 5  # three 0.3 s tries and the library's backoff
    assert not CheckoutOrder.objects.exists()


def test_checkout_api_with_stripe_unreachable_is_a_json_503(
    shop, stripe_fake, client, settings, closed_port
):
    client.force_login(shop.buyer)
    settings.STRIPE_API_BASE = closed_port
    response = client.post(
        "/api/v1/billing/checkout", {"plan": shop.subscription.pk}, content_type="application/json"
    )
    _assert_unavailable_api(response)
    assert not CheckoutOrder.objects.exists()


def _creator_client(client):
    listing = OwnedListingFactory()
    creator = creator_become(user=listing.owner, handle=f"maker-{listing.pk}")
    client.force_login(listing.owner)
    return creator


def _onboard(client, page: str = "creator"):
    return client.post(
        "/api/v1/billing/creator/onboard",
        {
            "return_url": f"http://127.0.0.1/{page}/done",
            "refresh_url": f"http://127.0.0.1/{page}/again",
        },
        content_type="application/json",
    )


def test_onboarding_api_with_stripe_unreachable_is_a_json_503(
    stripe_fake, client, settings, closed_port
):
    creator = _creator_client(client)
    settings.STRIPE_API_BASE = closed_port
    _assert_unavailable_api(_onboard(client))
    assert not ConnectAccount.objects.filter(creator=creator).exists()

    settings.STRIPE_API_BASE = stripe_fake.base_url
    assert _onboard(client).status_code == 200
    assert ConnectAccount.objects.filter(creator=creator).count() == 1


def test_onboarding_api_with_stripe_failing_500_is_a_json_503(stripe_fake, client):
    creator = _creator_client(client)
    _fail_after_retries(stripe_fake, "/v1/account_links")
    _assert_unavailable_api(_onboard(client))
    # The account exists at Stripe and here (created before the link failed); the retry reuses it.
    account = ConnectAccount.objects.get(creator=creator)
    assert _onboard(client).status_code == 200
    assert len(stripe_fake.state.all("accounts")) == 1
    assert ConnectAccount.objects.get(creator=creator) == account


def test_onboarding_link_from_another_page_within_the_minute_gets_its_own_key(stripe_fake, client):
    """The key covers the URLs: another page's request is a new link (before: Stripe's
    idempotency error, a 500), and an identical retry replays the same link."""
    _creator_client(client)
    if time.time() % 60 > 55:  # keep the three requests inside one minute
        time.sleep(60 - time.time() % 60 + 0.1)
    first = _onboard(client, "creator")
    other = _onboard(client, "settings")
    replay = _onboard(client, "creator")
    assert [first.status_code, other.status_code, replay.status_code] == [200, 200, 200]
    assert first.json()["url"] != other.json()["url"]
    assert replay.json()["url"] == first.json()["url"]
    links = [r for r in stripe_fake.state.requests if r["path"] == "/v1/account_links"]
    assert len({r["idempotency_key"] for r in links}) == 2


def test_the_fake_refuses_an_onboarding_key_reused_with_other_urls(stripe_fake, settings):
    """What the old key made happen: Stripe's answer to a reused key with other parameters."""
    client = stripe_client.get_client()
    account = client.v1.accounts.create(
        params={"type": "express", "capabilities": {"transfers": {"requested": True}}}
    )
    key = stripe_client.idempotency_key("account_link", account.id, 1)

    def link(url: str) -> object:
        return client.v1.account_links.create(
            params={
                "account": account.id,
                "type": "account_onboarding",
                "return_url": url,
                "refresh_url": url,
            },
            options={"idempotency_key": key},
        )

    link("http://127.0.0.1/a")
    with pytest.raises(stripe.IdempotencyError):
        link("http://127.0.0.1/b")

"""Billing test wiring: the in-project fake Stripe on a loopback port, signed webhook posts,
and Celery run eagerly for tests that go through the webhook view."""

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from django.test import Client

from config.celery import app as celery_app
from fakes.stripe.server import FakeStripeServer

WEBHOOK_SECRET = "whsec_test_billing"
CONNECT_SECRET = "whsec_test_billing_connect"


@pytest.fixture
def stripe_settings(settings: Any) -> Any:
    settings.STRIPE_SECRET_KEY = "sk_test_billing_tests"
    settings.STRIPE_WEBHOOK_SECRETS = [WEBHOOK_SECRET, CONNECT_SECRET]
    return settings


@pytest.fixture
def stripe_fake(stripe_settings: Any) -> Iterator[FakeStripeServer]:
    """A fake Stripe that sends no webhooks: tests take its events and post them themselves."""
    with FakeStripeServer(webhook_url=None, webhook_secret=WEBHOOK_SECRET) as server:
        stripe_settings.STRIPE_API_BASE = server.base_url
        yield server


@pytest.fixture
def eager_celery() -> Iterator[None]:
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = before


def sign(payload: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(
        payload.decode(), secret, timestamp=timestamp or int(time.time())
    )


def post_event(
    client: Client,
    event: dict[str, Any],
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
) -> Any:
    body = json.dumps(event).encode()
    return client.post(
        "/billing/webhooks/stripe",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(body, secret=secret, timestamp=timestamp),
    )


class Shop:
    """A payable creator with one listing and a plan of every kind (objects in the fake)."""

    def __init__(self, fake: FakeStripeServer) -> None:
        from billing.services.creators import (
            connect_account_ensure,
            connect_account_sync,
            creator_become,
        )
        from billing.services.plans import plan_create
        from tests.billing.factories import OwnedListingFactory
        from tests.factories import UserFactory

        self.listing = OwnedListingFactory()
        self.owner = self.listing.owner
        self.creator = creator_become(user=self.owner, handle=f"shop-{self.listing.pk}")
        self.account = connect_account_ensure(creator=self.creator)
        fake.complete_onboarding(self.account.stripe_account_id)
        connect_account_sync(stripe_account_id=self.account.stripe_account_id)
        make = lambda **kw: plan_create(user=self.owner, listing=self.listing, **kw)  # noqa: E731
        self.free = make(kind="free", name="Free", included_calls=100)
        self.one_time = make(kind="one_time", name="Lifetime", unit_amount=4900)
        self.subscription = make(
            kind="subscription",
            name="Pro",
            unit_amount=900,
            included_calls=1000,
            overage_amount=2,
        )
        self.per_call = make(kind="per_call", name="PAYG", per_call_amount=3)
        self.buyer = UserFactory()


@pytest.fixture
def shop(stripe_fake: FakeStripeServer) -> Shop:
    return Shop(stripe_fake)


def events_of(fake: FakeStripeServer, *types: str) -> list[dict[str, Any]]:
    return [e for e in fake.events() if e["type"] in types]

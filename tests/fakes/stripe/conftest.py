"""A live fake Stripe on a loopback port, a webhook receiver, and the project's real client."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe

from billing import stripe_client
from fakes.stripe.server import FakeStripeServer

WEBHOOK_SECRET = "whsec_test_platform"
CONNECT_SECRET = "whsec_test_connect"


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """Collects webhook POSTs; answers with `statuses` in turn (then 200)."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def types(self) -> list[str]:
        return [r.event["type"] for r in self.received]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.received)


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with receiver.lock:
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.received.append(Received(body, dict(self.headers.items())))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{httpd.server_address[1]}/billing/webhooks/stripe"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield receiver
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def fake_stripe(webhook_receiver: WebhookReceiver) -> Iterator[FakeStripeServer]:
    with FakeStripeServer(
        webhook_url=webhook_receiver.url,
        webhook_secret=WEBHOOK_SECRET,
        connect_webhook_secret=CONNECT_SECRET,
        webhook_backoff_seconds=0.01,
    ) as server:
        yield server


@pytest.fixture
def client(fake_stripe: FakeStripeServer, settings: Any) -> stripe.StripeClient:
    """The project's real client (`get_client()`) pointed at the live fake."""
    settings.STRIPE_API_BASE = fake_stripe.base_url
    settings.STRIPE_SECRET_KEY = "sk_test_fake_stripe_tests"
    settings.STRIPE_WEBHOOK_SECRETS = [WEBHOOK_SECRET, CONNECT_SECRET]
    return stripe_client.get_client()


@dataclass
class Catalogue:
    customer: Any
    product: Any
    meter: Any
    metered_price: Any
    licensed_price: Any
    one_time_price: Any
    account: Any


@pytest.fixture
def catalogue(client: stripe.StripeClient, fake_stripe: FakeStripeServer) -> Catalogue:
    """What billing sets up for one listing: customer, product, meter, prices, a payable creator."""
    v1 = client.v1
    customer = v1.customers.create({"email": "buyer@example.com", "name": "Buyer"})
    product = v1.products.create({"name": "Weather MCP", "metadata": {"listing": "42"}})
    meter = v1.billing.meters.create(
        {
            "display_name": "Weather tool calls",
            "event_name": "tb_calls_weather",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )
    metered = v1.prices.create(
        {
            "currency": "usd",
            "product": product.id,
            "unit_amount": 2,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
        }
    )
    licensed = v1.prices.create(
        {
            "currency": "usd",
            "product": product.id,
            "unit_amount": 900,
            "recurring": {"interval": "month", "usage_type": "licensed"},
        }
    )
    one_time = v1.prices.create({"currency": "usd", "product": product.id, "unit_amount": 4900})
    account = v1.accounts.create(
        {
            "controller": {
                "fees": {"payer": "application"},
                "losses": {"payments": "application"},
                "requirement_collection": "stripe",
                "stripe_dashboard": {"type": "express"},
            },
            "country": "US",
            "email": "creator@example.com",
            "capabilities": {"transfers": {"requested": True}},
        }
    )
    fake_stripe.complete_onboarding(account.id)
    return Catalogue(customer, product, meter, metered, licensed, one_time, account)

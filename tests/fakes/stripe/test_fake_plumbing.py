"""The fake's plumbing: bracket parsing, persistence across restarts, the socketless transport,
a WSGI mount under a path prefix, lazy expiry, and the client factory's guard rails."""

from __future__ import annotations

import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.util import shift_path_info

import httpx
import pytest
import stripe
from django.core.exceptions import ImproperlyConfigured

from billing import stripe_client
from fakes.stripe.app import FakeStripeApp
from fakes.stripe.forms import FormError, parse_form, parse_query
from fakes.stripe.server import FakeStripeServer
from fakes.stripe.state import FakeStripeState
from fakes.stripe.transport import FakeStripeHTTPClient
from fakes.stripe.webhooks import WebhookSender


def test_bracket_notation_parses_into_nested_lists_and_dicts():
    body = (
        "line_items[0][price]=price_lic&line_items[0][quantity]=1&line_items[1][price]=price_m"
        "&subscription_data[transfer_data][destination]=acct_1&metadata[listing]=42&mode=subscription"
    )
    assert parse_form(body) == {
        "line_items": [{"price": "price_lic", "quantity": "1"}, {"price": "price_m"}],
        "subscription_data": {"transfer_data": {"destination": "acct_1"}},
        "metadata": {"listing": "42"},
        "mode": "subscription",
    }
    assert parse_query("expand%5B0%5D=items.data.price&expand%5B1%5D=latest_invoice") == {
        "expand": ["items.data.price", "latest_invoice"]
    }
    assert parse_query("expand[]=a&expand[]=b") == {"expand": ["a", "b"]}
    assert parse_form("metadata=") == {"metadata": ""}
    with pytest.raises(FormError):
        parse_form("a]b[=1")


def test_state_survives_a_restart(tmp_path, settings):
    path = tmp_path / "fake_stripe.json"
    settings.STRIPE_SECRET_KEY = "sk_test_restart"
    with FakeStripeServer(state_path=path) as first:
        settings.STRIPE_API_BASE = first.base_url
        customer = stripe_client.get_client().v1.customers.create({"email": "keep@example.com"})
    assert path.exists()
    with FakeStripeServer(state_path=path) as second:
        settings.STRIPE_API_BASE = second.base_url
        again = stripe_client.get_client().v1.customers.retrieve(customer.id)
        assert again["email"] == "keep@example.com"


def test_socketless_transport_speaks_the_same_api():
    app = FakeStripeApp(FakeStripeState(), WebhookSender(url=None, secret="whsec_x"))
    base = "http://fake-stripe.invalid/_fake_stripe"
    client = stripe.StripeClient(
        "sk_test_socketless",
        http_client=FakeStripeHTTPClient(app, base),
        base_addresses={"api": base, "connect": base, "files": base, "meter_events": base},
        max_network_retries=2,
    )
    product = client.v1.products.create({"name": "No sockets"})
    price = client.v1.prices.create({"currency": "usd", "product": product.id, "unit_amount": 500})
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "line_items": [{"price": price.id, "quantity": 3}],
            "success_url": "http://127.0.0.1:1/ok",
        }
    )
    assert session["amount_total"] == 1500
    assert session["url"] == f"{base}/checkout/{session.id}"
    app.fail_next("/v1/customers", "drop_response")
    client.v1.customers.create({"email": "x@example.com"})
    assert app.state.count("customers") == 1


def test_wsgi_mount_under_a_path_prefix():
    app = FakeStripeApp(FakeStripeState(), WebhookSender(url=None, secret="whsec_x"))

    def mounted(environ, start_response):
        if shift_path_info(environ) != "_fake_stripe":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not here"]
        return app(environ, start_response)

    class Quiet(WSGIRequestHandler):
        def log_message(self, format, *args):
            pass

    httpd: WSGIServer = make_server("127.0.0.1", 0, mounted, handler_class=Quiet)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}/_fake_stripe"
        client = stripe.StripeClient("sk_test_wsgi", base_addresses={"api": base})
        product = client.v1.products.create({"name": "Mounted"})
        price = client.v1.prices.create(
            {"currency": "usd", "product": product.id, "unit_amount": 5}
        )
        session = client.v1.checkout.sessions.create(
            {"mode": "payment", "line_items": [{"price": price.id, "quantity": 1}]}
        )
        assert session["url"] == f"{base}/checkout/{session.id}"
        page = httpx.get(session["url"])
        assert page.status_code == 200
        assert f'action="{base}/checkout/{session.id}/pay"' in page.text
        with pytest.raises(stripe.InvalidRequestError, match="Unrecognized request URL"):
            client.v1.coupons.create({"percent_off": 5})
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_open_sessions_expire_when_expires_at_passes(
    client, catalogue, fake_stripe, webhook_receiver
):
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "line_items": [{"price": catalogue.one_time_price.id, "quantity": 1}],
            "expires_at": int(time.time()) + 1800,
        }
    )
    with fake_stripe.state.lock:  # stand-in for 30 minutes passing
        fake_stripe.state.get("checkout_sessions", session.id)["expires_at"] = int(time.time()) - 1
    assert client.v1.checkout.sessions.retrieve(session.id)["status"] == "expired"
    assert fake_stripe.wait_for_webhooks(5)
    assert webhook_receiver.types()[-1] == "checkout.session.expired"
    with pytest.raises(stripe.InvalidRequestError, match="expires_at"):
        client.v1.checkout.sessions.create(
            {
                "mode": "payment",
                "line_items": [{"price": catalogue.one_time_price.id, "quantity": 1}],
                "expires_at": int(time.time()) + 60,
            }
        )


def test_control_page_lists_objects_and_its_forms_work(client, catalogue, fake_stripe):
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": catalogue.customer.id,
            "line_items": [{"price": catalogue.licensed_price.id, "quantity": 1}],
        }
    )
    fake_stripe.complete_checkout(session.id)
    sub_id = client.v1.checkout.sessions.retrieve(session.id)["subscription"]
    with httpx.Client() as http:
        page = http.get(f"{fake_stripe.base_url}/control")
        assert page.status_code == 200
        assert sub_id in page.text
        assert "<script" not in page.text
        back = http.post(
            f"{fake_stripe.base_url}/control/subscriptions/{sub_id}/advance",
            data={"return_to": "control"},
        )
        assert back.status_code == 303
        assert back.headers["Location"] == f"{fake_stripe.base_url}/control"
        assert http.get(f"{fake_stripe.base_url}/nowhere").status_code == 404
    invoices = [
        i for i in fake_stripe.state.all("invoices") if i["billing_reason"] == "subscription_cycle"
    ]
    assert len(invoices) == 1


def test_get_client_is_cached_per_settings_and_refuses_live_keys_on_a_fake(settings):
    settings.STRIPE_SECRET_KEY = "sk_test_one"
    settings.STRIPE_API_BASE = "http://127.0.0.1:18300"
    first = stripe_client.get_client()
    assert stripe_client.get_client() is first
    settings.STRIPE_API_BASE = "http://127.0.0.1:18301"
    second = stripe_client.get_client()
    assert second is not first
    assert second._requestor._options.base_addresses["api"] == "http://127.0.0.1:18301"
    assert second._requestor._options.base_addresses["meter_events"] == "http://127.0.0.1:18301"
    assert second._requestor._options.stripe_version == stripe_client.API_VERSION
    assert second._requestor._options.max_network_retries == 2
    settings.STRIPE_SECRET_KEY = "sk_live_oops"
    with pytest.raises(ImproperlyConfigured):
        stripe_client.get_client()
    settings.STRIPE_API_BASE = ""
    real = stripe_client.get_client()
    assert real._requestor._options.base_addresses["api"] == "https://api.stripe.com"
    assert stripe.api_key is None  # module-level state untouched

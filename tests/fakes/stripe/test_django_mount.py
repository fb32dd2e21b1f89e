"""The fake mounted inside the Django site (the demo's STRIPE_API_BASE=<site>/_fake_stripe)."""

from __future__ import annotations

import httpx
import pytest

from billing import stripe_client
from fakes.stripe import views


@pytest.mark.urls("tests.fakes.stripe.urls_mount")
@pytest.mark.django_db
def test_the_real_client_talks_to_the_fake_mounted_in_the_site(live_server, settings, tmp_path):
    settings.FAKE_STRIPE_WEBHOOK_URL = ""
    settings.FAKE_STRIPE_STATE_PATH = str(tmp_path / "mounted.json")
    settings.STRIPE_SECRET_KEY = "sk_test_mounted"
    settings.STRIPE_API_BASE = f"{live_server.url}/_fake_stripe"
    client = stripe_client.get_client()
    product = client.v1.products.create({"name": "Mounted"})
    price = client.v1.prices.create({"currency": "usd", "product": product.id, "unit_amount": 700})
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "line_items": [{"price": price.id, "quantity": 1}],
            "success_url": f"{live_server.url}/done?cs={{CHECKOUT_SESSION_ID}}",
        }
    )
    assert session["url"] == f"{live_server.url}/_fake_stripe/checkout/{session.id}"
    with httpx.Client() as http:
        page = http.get(session["url"])
        assert page.status_code == 200
        paid = http.post(f"{session['url']}/pay")
    assert paid.status_code == 303
    assert paid.headers["Location"] == f"{live_server.url}/done?cs={session.id}"
    done = client.v1.checkout.sessions.retrieve(session.id)
    assert done["status"] == "complete"
    assert views.get_app().state.count("payment_intents") == 1
    assert (tmp_path / "mounted.json").exists()

"""The customer portal in the fake: configurations and sessions with Stripe's shapes and
refusals, and the hosted page, where cancelling, renewing and switching a plan arrive as
ordinary `customer.subscription.updated` events. Over HTTP with the real client."""

from __future__ import annotations

import re

import httpx
import pytest
import stripe

from tests.fakes.stripe.test_subscription_changes import _licensed, _subscribe

SESSION_FIELDS = {
    "id", "object", "configuration", "created", "customer", "flow", "livemode", "locale",
    "on_behalf_of", "return_url", "url",
}  # fmt: skip


def _configuration(client, catalogue, *prices):
    return client.v1.billing_portal.configurations.create(
        {
            "features": {
                "invoice_history": {"enabled": True},
                "payment_method_update": {"enabled": True},
                "subscription_cancel": {"enabled": True, "mode": "at_period_end"},
                "subscription_update": {
                    "enabled": True,
                    "default_allowed_updates": ["price"],
                    "proration_behavior": "always_invoice",
                    "products": [{"product": catalogue.product.id, "prices": list(prices)}],
                },
            }
        }
    )


def test_a_session_has_stripes_shape_and_refuses_what_stripe_refuses(client, catalogue):
    session = client.v1.billing_portal.sessions.create(
        {"customer": catalogue.customer.id, "return_url": "http://127.0.0.1:1/back"}
    )
    assert set(session.to_dict()) >= SESSION_FIELDS
    assert session.id.startswith("bps_")
    assert session.object == "billing_portal.session"
    assert (session.customer, session.return_url) == (
        catalogue.customer.id,
        "http://127.0.0.1:1/back",
    )
    assert session.configuration.startswith("bpc_")  # the default configuration
    assert session.url.endswith(f"/p/session/{session.id}")
    for params, param in [
        ({"return_url": "http://127.0.0.1:1/back"}, "customer"),
        ({"customer": "cus_nobody", "return_url": "http://x"}, "customer"),
        ({"customer": catalogue.customer.id}, "return_url"),
        (
            {"customer": catalogue.customer.id, "return_url": "http://x", "configuration": "bpc_x"},
            "configuration",
        ),
    ]:
        with pytest.raises(stripe.InvalidRequestError) as exc:
            client.v1.billing_portal.sessions.create(params)
        assert exc.value.error.param == param  # type: ignore[union-attr]
    with pytest.raises(stripe.InvalidRequestError):  # switching needs products listed
        client.v1.billing_portal.configurations.create(
            {"features": {"subscription_update": {"enabled": True}}}
        )


def test_the_hosted_page_cancels_renews_and_switches(client, fake_stripe, catalogue):
    sub_id, si, _ = _subscribe(client, fake_stripe, catalogue)
    team = _licensed(client, catalogue, 2900)
    conf = _configuration(client, catalogue, catalogue.licensed_price.id, team.id)
    assert conf.features.subscription_update.products[0].prices == [
        catalogue.licensed_price.id,
        team.id,
    ]
    session = client.v1.billing_portal.sessions.create(
        {
            "customer": catalogue.customer.id,
            "return_url": "http://127.0.0.1:1/back",
            "configuration": conf.id,
        }
    )
    with httpx.Client(follow_redirects=True, timeout=5) as http:
        page = http.get(session.url).text
        assert "Renews on" in page
        assert "Visa •••• 4242" in page
        assert 'href="http://127.0.0.1:1/back"' in page

        def press(label: str) -> str:
            current = http.get(session.url).text
            form = re.search(
                r'<form method="post" action="([^"]+)"[^>]*>((?:<input[^>]+>)*)<button type=submit>'
                + re.escape(label),
                current,
            )
            assert form, f"no {label!r} button"
            fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form[2]))
            return http.post(form[1].replace("&amp;", "&"), data=fields).text

        assert "Cancels on" in press("Cancel subscription")
        assert client.v1.subscriptions.retrieve(sub_id)["cancel_at_period_end"] is True
        assert "Renews on" in press("Renew subscription")
        assert client.v1.subscriptions.retrieve(sub_id)["cancel_at_period_end"] is False
        press("Switch to Weather MCP (29.00 USD)")
    sub = client.v1.subscriptions.retrieve(sub_id)
    item = next(i for i in sub["items"]["data"] if i["id"] == si)
    assert item["price"]["id"] == team.id
    updates = fake_stripe.events("customer.subscription.updated")
    assert len(updates) == 3
    assert updates[-1]["data"]["previous_attributes"]["items"]
    # always_invoice, as configured: the difference was billed at once.
    latest = client.v1.invoices.retrieve(sub["latest_invoice"])
    assert latest["billing_reason"] == "subscription_update"
    assert latest["amount_paid"] > 0

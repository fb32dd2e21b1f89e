"""Idempotency keys replay: a dropped Stripe response followed by the client's own retry, or by
a task retry with the same derived key, creates one Stripe object, not two."""

from __future__ import annotations

import httpx
import pytest
import stripe

from billing import stripe_client


def test_idempotency_key_is_deterministic_and_short():
    key = stripe_client.idempotency_key("checkout", 17, "v1")
    assert key == stripe_client.idempotency_key("checkout", 17, "v1")
    assert key != stripe_client.idempotency_key("checkout", 18, "v1")
    assert key.startswith("tb:")
    assert len(key) == 43
    with pytest.raises(ValueError, match="at least one part"):
        stripe_client.idempotency_key()


def test_dropped_response_then_client_retry_creates_one_object(client, fake_stripe):
    fake_stripe.fail_next("/v1/customers", "drop_response")
    customer = client.v1.customers.create({"email": "once@example.com"})
    stored = fake_stripe.state.all("customers")
    assert [c["id"] for c in stored] == [customer.id]
    attempts = [r for r in fake_stripe.state.requests if r["path"] == "/v1/customers"]
    assert len(attempts) == 2  # the dropped one and the library's retry
    assert attempts[0]["idempotency_key"] == attempts[1]["idempotency_key"]


def test_dropped_responses_then_task_retry_with_derived_key_creates_one_object(
    client, catalogue, fake_stripe
):
    key = stripe_client.idempotency_key("license-checkout", 99)
    params = {
        "mode": "payment",
        "line_items": [{"price": catalogue.one_time_price.id, "quantity": 1}],
        "success_url": "http://127.0.0.1:1/ok",
        "client_reference_id": "99",
    }
    for _ in range(3):  # the first try and both library retries lose their responses
        fake_stripe.fail_next("/v1/checkout/sessions", "drop_response")
    with pytest.raises(stripe.APIConnectionError):
        client.v1.checkout.sessions.create(params, {"idempotency_key": key})
    assert fake_stripe.state.count("checkout_sessions") == 1
    # The task runs again with the same row, hence the same key: Stripe replays.
    session = client.v1.checkout.sessions.create(params, {"idempotency_key": key})
    assert fake_stripe.state.count("checkout_sessions") == 1
    assert fake_stripe.state.all("checkout_sessions")[0]["id"] == session.id
    replayed = session.last_response.headers.get("Idempotent-Replayed")
    assert replayed == "true"


def test_500_is_retried_and_the_object_is_created_once(client, fake_stripe):
    fake_stripe.fail_next("/v1/products", "500")
    product = client.v1.products.create({"name": "Retry me"})
    assert [p["id"] for p in fake_stripe.state.all("products")] == [product.id]


def test_same_key_different_params_is_an_idempotency_error(client, fake_stripe):
    key = stripe_client.idempotency_key("customer", 1)
    first = client.v1.customers.create({"email": "a@example.com"}, {"idempotency_key": key})
    again = client.v1.customers.create({"email": "a@example.com"}, {"idempotency_key": key})
    assert again.id == first.id
    with pytest.raises(stripe.IdempotencyError) as exc:
        client.v1.customers.create({"email": "b@example.com"}, {"idempotency_key": key})
    assert exc.value.http_status == 400
    assert fake_stripe.state.count("customers") == 1
    # Refused requests are not saved: the key stays usable once the params are fixed.
    bad_key = stripe_client.idempotency_key("product", 1)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.products.create({"description": "no name"}, {"idempotency_key": bad_key})
    assert client.v1.products.create({"name": "Fixed"}, {"idempotency_key": bad_key}).id


def test_stripe_account_header_is_recorded_and_scopes_keys(client, catalogue, fake_stripe):
    acct = catalogue.account.id
    key = "same-key"
    on_platform = client.v1.customers.create({"email": "p@example.com"}, {"idempotency_key": key})
    on_connected = client.v1.customers.create(
        {"email": "p@example.com"}, {"idempotency_key": key, "stripe_account": acct}
    )
    assert on_platform.id != on_connected.id
    last = fake_stripe.state.requests[-1]
    assert (last["stripe_account"], last["idempotency_key"]) == (acct, key)
    raw = httpx.post(
        f"{fake_stripe.base_url}/v1/customers",
        headers={"Authorization": "Bearer sk_test_x", "Idempotency-Key": key},
        data={"email": "p@example.com"},
    )
    assert raw.headers["Idempotent-Replayed"] == "true"
    assert raw.json()["id"] == on_platform.id
    assert raw.headers["Request-Id"].startswith("req_")

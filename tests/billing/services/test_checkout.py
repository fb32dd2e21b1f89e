"""Checkout in both modes against the fake Stripe, fulfilled by the signed webhooks it emits."""

import pytest

from billing.models import (
    CheckoutOrder,
    CreatorSubscription,
    License,
    LicenseSource,
    LicenseStatus,
    OrderStatus,
    Sale,
)
from billing.services.checkout import (
    checkout_fulfil,
    checkout_start,
    checkout_success_key_reveal,
)
from common.exceptions import ApplicationError
from tests.billing.conftest import events_of, post_event
from tests.billing.factories import ConnectAccountFactory, PlanFactory, PlanPriceFactory

pytestmark = pytest.mark.django_db

URLS = {
    "success_url": "http://127.0.0.1/s?session_id={CHECKOUT_SESSION_ID}",
    "cancel_url": "http://127.0.0.1/c",
}


def test_not_payable_creator_cannot_sell_and_stripe_is_not_called(stripe_fake):
    account = ConnectAccountFactory(payable=False)
    plan = PlanFactory(kind="one_time", listing__owner=account.creator.user)
    PlanPriceFactory(plan=plan, unit_amount=900)
    before = len(stripe_fake.state.requests)
    with pytest.raises(ApplicationError) as err:
        checkout_start(buyer=plan.listing.owner, plan=plan, **URLS)
    assert err.value.extra["code"] == "creator_not_payable"
    assert len(stripe_fake.state.requests) == before
    assert not CheckoutOrder.objects.exists()


def test_free_plan_needs_no_checkout(shop, stripe_fake):
    before = len(stripe_fake.state.requests)
    url, lic = checkout_start(buyer=shop.buyer, plan=shop.free, **URLS)
    assert url is None
    assert (lic.status, lic.source) == (LicenseStatus.ACTIVE, LicenseSource.FREE)
    assert len(stripe_fake.state.requests) == before
    with pytest.raises(ApplicationError):
        checkout_start(buyer=shop.buyer, plan=shop.free, **URLS)


def test_payment_mode_destination_charge_and_fulfilment(
    shop, stripe_fake, client, eager_celery, django_capture_on_commit_callbacks
):
    url, _ = checkout_start(buyer=shop.buyer, plan=shop.one_time, **URLS)
    # A second click reuses the pending order and its open session.
    assert checkout_start(buyer=shop.buyer, plan=shop.one_time, **URLS) == (url, None)
    assert len(stripe_fake.state.all("checkout_sessions")) == 1
    order = CheckoutOrder.objects.get()
    assert url == f"{stripe_fake.base_url}/checkout/{order.stripe_session_id}"
    session = stripe_fake.state.get("checkout_sessions", order.stripe_session_id)
    assert session["mode"] == "payment"
    stripe_fake.complete_checkout(order.stripe_session_id)
    pi = stripe_fake.state.all("payment_intents")[0]
    assert pi["application_fee_amount"] == 735  # 15 % of 4900
    assert pi["transfer_data"]["destination"] == shop.account.stripe_account_id

    (completed,) = events_of(stripe_fake, "checkout.session.completed")
    with django_capture_on_commit_callbacks(execute=True):
        assert post_event(client, completed).status_code == 200
    lic = License.objects.get()
    assert (lic.buyer, lic.plan, lic.source) == (shop.buyer, shop.one_time, LicenseSource.PURCHASE)
    sale = Sale.objects.get()
    assert (sale.gross_amount, sale.platform_fee_amount, sale.net_amount) == (4900, 735, 4165)
    assert sale.platform_fee_bps == 1500
    order.refresh_from_db()
    assert order.status == OrderStatus.COMPLETED

    # The success page runs the same fulfilment: still one license; the key is shown once.
    assert checkout_fulfil(session_id=order.stripe_session_id) == lic
    lic2, raw = checkout_success_key_reveal(buyer=shop.buyer, session_id=order.stripe_session_id)
    assert lic2 == lic
    assert raw.startswith("tb_test_")
    assert checkout_success_key_reveal(buyer=shop.buyer, session_id=order.stripe_session_id) == (
        lic,
        None,
    )
    assert License.objects.count() == 1
    assert Sale.objects.count() == 1


def test_subscription_mode_with_fee_percent_and_metered_item(
    shop, stripe_fake, client, eager_celery, django_capture_on_commit_callbacks
):
    checkout_start(buyer=shop.buyer, plan=shop.subscription, **URLS)
    order = CheckoutOrder.objects.get()
    stripe_fake.complete_checkout(order.stripe_session_id)
    with django_capture_on_commit_callbacks(execute=True):
        for event in stripe_fake.events():
            assert post_event(client, event).status_code == 200
    sub = CreatorSubscription.objects.get()
    fake_sub = stripe_fake.state.get("subscriptions", sub.stripe_subscription_id)
    assert fake_sub["application_fee_percent"] == 15
    assert fake_sub["transfer_data"]["destination"] == shop.account.stripe_account_id
    assert len(fake_sub["items"]["data"]) == 2  # monthly price + metered overage
    lic = License.objects.get()
    assert (lic.status, lic.creator_subscription) == (LicenseStatus.ACTIVE, sub)
    invoice_sale = Sale.objects.get(kind="invoice")
    assert (invoice_sale.gross_amount, invoice_sale.platform_fee_amount) == (900, 135)
    assert invoice_sale.listing_id == shop.listing.pk
    assert sub.status == "active"
    assert sub.current_period_start is not None

    # One subscription per creator: the per-call plan of the same creator joins it, with no
    # second Checkout, as its own license.
    url, added = checkout_start(buyer=shop.buyer, plan=shop.per_call, **URLS)
    assert url is None
    assert added is not None
    assert (added.plan, added.creator_subscription) == (shop.per_call, sub)
    assert CreatorSubscription.objects.count() == CheckoutOrder.objects.count() == 1
    fake_sub = stripe_fake.state.get("subscriptions", sub.stripe_subscription_id)
    assert len(fake_sub["items"]["data"]) == 3

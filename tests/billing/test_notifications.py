"""Billing's emails arrive through a real SMTP server on loopback, once per event and person:
a duplicate webhook, a second run of the send task and a replayed event send nothing more, and
no mail carries key material."""

from __future__ import annotations

from typing import Any

import pytest

from billing.models import CheckoutOrder, CreatorSubscription
from billing.services.checkout import checkout_start, checkout_success_key_reveal
from billing.services.creators import connect_account_ensure, connect_account_sync, creator_become
from billing.services.licenses import api_key_rotate
from billing.services.plans import plan_price_change
from billing.stripe_client import get_client
from notifications.models import Notification, NotificationKind, NotificationStatus
from notifications.tasks import notification_send_task
from tests.billing.conftest import events_of, post_event
from tests.factories import UserFactory
from tests.smtp import parts

pytestmark = pytest.mark.django_db(transaction=True)
URLS = {"success_url": "http://127.0.0.1/s", "cancel_url": "http://127.0.0.1/c"}


def _subjects(inbox: Any, address: str) -> list[str]:
    return sorted(str(m["Subject"]) for m in inbox.to(address))


def _resend_all() -> None:
    """Every send task again, as a redelivered Celery message would run it."""
    for pk in Notification.objects.values_list("pk", flat=True):
        notification_send_task.apply(args=[pk])


def test_a_purchase_mails_receipt_sale_and_key_once_without_key_material(
    shop, stripe_fake, client, eager_celery, smtp_inbox
):
    checkout_start(buyer=shop.buyer, plan=shop.one_time, **URLS)
    order = CheckoutOrder.objects.get(plan=shop.one_time)
    stripe_fake.complete_checkout(order.stripe_session_id)
    (completed,) = events_of(stripe_fake, "checkout.session.completed")
    for _ in range(2):  # Stripe delivers the same event twice
        assert post_event(client, completed).status_code == 200
    session_id = order.stripe_session_id
    lic, raw_key = checkout_success_key_reveal(buyer=shop.buyer, session_id=session_id)
    assert raw_key

    smtp_inbox.wait_for(3)
    _resend_all()
    checkout_success_key_reveal(buyer=shop.buyer, session_id=order.stripe_session_id)

    assert len(smtp_inbox.messages) == 3
    buyer_mail = smtp_inbox.to(shop.buyer.email)
    assert len(buyer_mail) == 2
    assert _subjects(smtp_inbox, shop.buyer.email) == [
        f"A new key was created for {shop.listing.name}",
        f"Your receipt: {shop.listing.name} (Lifetime)",
    ]
    (sale,) = smtp_inbox.to(shop.owner.email)
    assert str(sale["Subject"]) == f"New sale: {shop.listing.name} (Lifetime)"
    text, html = parts(sale)
    assert "$49.00" in text
    assert "$49.00" in html
    for message in smtp_inbox.messages:
        text, html = parts(message)
        whole = message.as_string()
        assert raw_key not in whole
        assert raw_key[8:20] not in whole
        assert "Hello" in text
        assert "<html" in html
        assert str(message["Message-ID"]).startswith("<notification-")
    receipt = next(m for m in buyer_mail if "receipt" in str(m["Subject"]))
    text, html = parts(receipt)
    assert "Amount: $49.00" in text
    assert f"/me/licenses/{lic.pk}/" in html
    assert set(Notification.objects.values_list("status", flat=True)) == {NotificationStatus.SENT}


def test_rotation_mails_once_and_price_increase_reaches_every_buyer(
    shop, stripe_fake, client, eager_celery, smtp_inbox
):
    from billing.services.licenses import license_grant

    other = UserFactory()
    lic, _ = license_grant(buyer=shop.buyer, plan=shop.per_call)
    license_grant(buyer=other, plan=shop.per_call)
    key = lic.keys.get()
    api_key_rotate(key_id=key.pk)
    plan_price_change(user=shop.owner, plan=shop.per_call, per_call_amount=5)

    smtp_inbox.wait_for(5)  # 2 created + 1 rotated + 2 price notices
    _resend_all()
    assert len(smtp_inbox.messages) == 5
    rotated = [m for m in smtp_inbox.to(shop.buyer.email) if "rotated" in str(m["Subject"])]
    assert len(rotated) == 1
    for address in (shop.buyer.email, other.email):
        (notice,) = [m for m in smtp_inbox.to(address) if "new prices" in str(m["Subject"])]
        text, _html = parts(notice)
        assert "Now: $0.03 per call" in text
        assert "$0.05 per call" in text
    client.force_login(shop.buyer)  # the license page says it too, with the same date
    page = client.get(f"/me/licenses/{lic.pk}/").content.decode()
    assert 'id="price-notice"' in page
    assert "$0.05 per call (now $0.03 per call)" in page


def test_subscription_payment_failure_and_cancellation_mail_once_each(
    shop, stripe_fake, client, eager_celery, smtp_inbox
):
    checkout_start(buyer=shop.buyer, plan=shop.subscription, **URLS)
    order = CheckoutOrder.objects.get(plan=shop.subscription)
    stripe_fake.complete_checkout(order.stripe_session_id)
    for event in stripe_fake.events():
        post_event(client, event)
    sub = CreatorSubscription.objects.get()

    seen = {e["id"] for e in stripe_fake.events()}
    stripe_fake.advance_subscription(sub.stripe_subscription_id, fail=True)
    get_client().v1.subscriptions.update(
        sub.stripe_subscription_id, params={"cancel_at_period_end": True}
    )
    new = [e for e in stripe_fake.events() if e["id"] not in seen]
    assert any(e["type"] == "invoice.payment_failed" for e in new)
    for event in new + new:  # every event delivered twice
        post_event(client, event)

    kinds = sorted(Notification.objects.filter(recipient=shop.buyer).values_list("kind", flat=True))
    assert kinds == sorted(
        [
            NotificationKind.RECEIPT,
            NotificationKind.PAYMENT_FAILED,
            NotificationKind.SUBSCRIPTION_ENDING,
        ]
    )
    smtp_inbox.wait_for(4)  # + the creator's new sale
    _resend_all()
    subjects = _subjects(smtp_inbox, shop.buyer.email)
    assert len(subjects) == 3
    assert f"Your payment for {shop.listing.name} failed" in subjects
    assert any(s.startswith("Your subscription ends on ") for s in subjects)


def test_payouts_need_attention_once_per_set_of_requirements(stripe_fake, eager_celery, smtp_inbox):
    from tests.billing.factories import OwnedListingFactory

    listing = OwnedListingFactory()
    creator = creator_become(user=listing.owner, handle="needs-info")
    account = connect_account_ensure(creator=creator)
    for _ in range(2):  # account.updated twice, nothing new: one email
        connect_account_sync(stripe_account_id=account.stripe_account_id)
    (mail,) = smtp_inbox.wait_for(1)
    text, _html = parts(mail)
    assert "external_account" in text
    assert str(mail["To"]) == listing.owner.email
    stripe_fake.complete_onboarding(account.stripe_account_id)
    connect_account_sync(stripe_account_id=account.stripe_account_id)  # all done: silence
    assert Notification.objects.filter(kind=NotificationKind.PAYOUTS_ATTENTION).count() == 1


def test_an_opted_out_buyer_gets_no_optional_mail_but_still_gets_receipts(
    shop, stripe_fake, client, eager_celery, smtp_inbox
):
    from billing.services.licenses import license_grant
    from billing.services.notices import api_keys_expiring_notify
    from notifications.services import notification_preferences_set

    notification_preferences_set(user=shop.buyer, enabled_kinds=set())
    license_grant(buyer=shop.buyer, plan=shop.per_call, days=2)  # key expires in 2 days
    assert api_keys_expiring_notify() == 1  # recorded, as skipped
    assert api_keys_expiring_notify() == 0  # and only once
    (mail,) = smtp_inbox.wait_for(1)
    assert "new key" in str(mail["Subject"])  # security mail: always sent
    row = Notification.objects.get(kind=NotificationKind.KEY_EXPIRING)
    assert row.status == NotificationStatus.SKIPPED

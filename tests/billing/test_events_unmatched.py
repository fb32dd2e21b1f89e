"""A `checkout.session.completed` that wins the race with our own write (no order row for its
session yet) is retried by a real Celery worker with backoff, not marked done and dropped;
once the row exists the retry grants the license, exactly once."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from billing.models import CheckoutOrder, License, Sale, StripeEvent, StripeEventStatus
from billing.services.checkout import checkout_start
from tests.billing.conftest import WEBHOOK_SECRET, events_of, post_event

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
URLS = {"success_url": "http://127.0.0.1/s", "cancel_url": "http://127.0.0.1/c"}


@pytest.fixture
def worker(stripe_fake, stripe_settings) -> Iterator[None]:
    """A real worker on the test broker and database, talking to the same fake Stripe."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "STRIPE_API_BASE": stripe_fake.base_url,
        "STRIPE_SECRET_KEY": stripe_settings.STRIPE_SECRET_KEY,
        "STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
        "LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo"]
    cmd += ["--loglevel", "WARNING", "--without-heartbeat", "--without-gossip", "--without-mingle"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    yield
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_an_event_before_our_row_is_retried_and_grants_once(shop, stripe_fake, client, worker):
    checkout_start(buyer=shop.buyer, plan=shop.one_time, **URLS)
    order = CheckoutOrder.objects.get(plan=shop.one_time)
    session_id = order.stripe_session_id
    stripe_fake.complete_checkout(session_id)
    (completed,) = events_of(stripe_fake, "checkout.session.completed")
    # Our write of the session id has not landed yet when Stripe's event arrives.
    CheckoutOrder.objects.filter(pk=order.pk).update(stripe_session_id=None)

    assert post_event(client, completed).status_code == 200
    row = StripeEvent.objects.get()
    _wait(lambda: StripeEvent.objects.get(pk=row.pk).attempts >= 1)
    row.refresh_from_db()
    assert row.status == StripeEventStatus.FAILED  # retryable, not done
    assert f"no checkout order for session {session_id} yet" in row.last_error
    assert not License.objects.exists()

    CheckoutOrder.objects.filter(pk=order.pk).update(stripe_session_id=session_id)  # it lands
    _wait(lambda: StripeEvent.objects.get(pk=row.pk).status == StripeEventStatus.PROCESSED)
    row.refresh_from_db()
    assert row.attempts == 2  # the Celery retry, not a redelivery
    assert License.objects.filter(order=order).count() == 1
    assert Sale.objects.filter(order=order).count() == 1

    # Stripe delivers it again: acknowledged as a duplicate, nothing granted twice.
    assert post_event(client, completed).json() == {"received": True, "duplicate": True}
    time.sleep(1.0)
    assert License.objects.count() == 1
    assert StripeEvent.objects.get().attempts == 2

"""Notifications through a real Celery worker to a real SMTP server, once; and the settings
page that turns the optional ones off."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, transaction

from notifications.models import Notification, NotificationKind, NotificationStatus
from notifications.services import NotificationSendFailed, notification_queue, notification_send
from notifications.tasks import notification_send_task
from tests.factories import UserFactory
from tests.smtp import free_port, parts

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mail_worker(smtp_server, redis_client) -> Iterator[None]:
    """A real worker on the test broker and database whose Django sends through the loopback
    SMTP server."""
    _inbox, port = smtp_server
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(port),
        "EMAIL_USE_TLS": "0",
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


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_sends_each_notification_once(smtp_server, mail_worker):
    inbox, _port = smtp_server
    buyer = UserFactory(email="buyer@example.com")
    context = {
        "listing_name": "io.github.acme/weather",
        "key_name": "<b>laptop</b>",
        "created_at": "now",
    }
    with transaction.atomic():
        row = notification_queue(
            recipient_id=buyer.pk,
            kind=NotificationKind.KEY_CREATED,
            event_key="key:1",
            context=context,
        )
        assert row is not None
        assert not inbox.messages  # nothing leaves before commit
    again = notification_queue(
        recipient_id=buyer.pk, kind=NotificationKind.KEY_CREATED, event_key="key:1", context=context
    )
    assert again is None  # the same event twice: one row

    (message,) = inbox.wait_for(1)
    for _ in range(2):  # the task delivered twice (a redelivered message, a retry)
        notification_send_task.delay(row.pk)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(inbox.messages) == 1
    assert str(message["To"]) == "buyer@example.com"
    assert str(message["Subject"]) == "A new key was created for io.github.acme/weather"
    text, html = parts(message)
    assert 'named "<b>laptop</b>"' in text  # text is not HTML: as written
    assert "&lt;b&gt;laptop&lt;/b&gt;" in html  # HTML escapes it
    assert "<b>laptop" not in html
    assert "cannot be turned off" in text
    row.refresh_from_db()
    assert row.status == NotificationStatus.SENT
    assert row.attempts == 1


@pytest.mark.django_db
def test_a_mail_server_that_refuses_leaves_it_pending_for_a_retry(smtp_inbox, settings):
    settings.EMAIL_PORT = free_port()  # nothing listens there
    user = UserFactory()
    row = notification_queue(
        recipient_id=user.pk, kind=NotificationKind.NEW_SALE, event_key="order:9", context={}
    )
    assert row is not None
    with pytest.raises(NotificationSendFailed):
        notification_send(notification_id=row.pk)
    row.refresh_from_db()
    assert row.status == NotificationStatus.PENDING  # the worker's task retries it
    assert row.attempts == 1
    assert "ConnectionRefusedError" in row.last_error
    # Run eagerly (the demo) there is nobody to retry later: it is marked failed at once.
    assert notification_send_task.apply(args=[row.pk]).result == "failed"
    row.refresh_from_db()
    assert row.status == NotificationStatus.FAILED
    assert not smtp_inbox.messages


@pytest.mark.django_db
def test_the_settings_page_turns_optional_mails_off_and_keeps_the_rest(client):
    user = UserFactory()
    client.force_login(user)
    page = client.get("/me/notifications/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'value="quota_80" checked' in html
    assert 'value="receipt" checked disabled' in html
    assert "As a creator" not in html  # not a creator
    keep = ["key_expiring"]
    resp = client.post("/me/notifications/", {"kinds": [*keep, "receipt"]})
    assert resp.status_code == 302
    html = client.get("/me/notifications/").content.decode()
    assert 'value="key_expiring" checked' in html
    assert 'value="quota_80">' in html  # off now
    for kind, expect in (
        (NotificationKind.QUOTA_80, "skipped"),
        (NotificationKind.RECEIPT, "pending"),
    ):
        row = notification_queue(recipient_id=user.pk, kind=kind, event_key="e1", context={})
        assert row is not None
        assert row.status == expect
    assert Notification.objects.filter(recipient=user).count() == 2

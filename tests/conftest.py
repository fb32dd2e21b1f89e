"""Test wiring: a guard that refuses non-loopback connections, and a clean Redis DB per test."""

import ipaddress
import socket

import pytest

# A loopback SMTP server (aiosmtpd) for tests that read the mail we send.
pytest_plugins = ["tests.smtp"]

_real_connect = socket.socket.connect
_real_create_connection = socket.create_connection


def _is_loopback(address: object) -> bool:
    if isinstance(address, tuple) and address:
        host = address[0]
    else:
        return True  # unix sockets
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: object) -> None:
    if not _is_loopback(address):
        raise RuntimeError(f"tests may only connect to loopback, not {address!r}")
    return _real_connect(self, address)  # type: ignore[arg-type]


@pytest.fixture(autouse=True, scope="session")
def _loopback_only():
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]


@pytest.fixture(autouse=True, scope="session")
def _fresh_redis_test_db():
    """Empty the test Redis once per session: ids restart at 1 in each new test database, so a
    counter or cache entry an earlier session left under the same id would leak into this one."""
    import redis
    from django.conf import settings

    if settings.REDIS_URL:
        client = redis.Redis.from_url(settings.REDIS_URL)
        client.flushdb()
        client.close()


@pytest.fixture
def redis_client():
    """The real Redis test database, emptied before and after the test."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def eager_celery():
    """Celery runs tasks in-process when they are queued (as in the demo): a notification
    queued on commit is sent at once, to whatever EMAIL_BACKEND points at (`smtp_inbox`)."""
    from config.celery import app as celery_app

    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = before

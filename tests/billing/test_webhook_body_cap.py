"""The webhook's size cap counts the bytes that arrive, over real HTTP against the production
ASGI app (uvicorn `config.asgi:application`): a chunked 2 MB event, correctly signed, is refused
with 413 while its body is still arriving, and nothing is stored; a normal event still works."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection
from django.urls import reverse

from billing.models import StripeEvent, StripeEventStatus
from billing.webhooks import MAX_BODY_BYTES, WEBHOOK_PATH
from tests.billing.conftest import WEBHOOK_SECRET, sign

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def site(transactional_db: None) -> Iterator[str]:
    """The whole site under uvicorn, on the pytest database, processing events in-process."""
    db = connection.settings_dict
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
        "ALLOWED_HOSTS": "127.0.0.1",
        "STRIPE_SECRET_KEY": "sk_test_body_cap",
        "STRIPE_WEBHOOK_SECRETS": WEBHOOK_SECRET,
        "CELERY_TASK_ALWAYS_EAGER": "1",
        "LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(port)]
    cmd += ["--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "uvicorn exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _event(event_id: str, padding: int = 0) -> bytes:
    """A correctly signable event of a type we do not handle, padded to any size."""
    event = {
        "id": event_id,
        "object": "event",
        "type": "radar.early_fraud_warning.created",
        "livemode": False,
        "created": int(time.time()),
        "data": {"object": {"id": "issfr_1", "note": "x" * padding}},
    }
    return json.dumps(event).encode()


def _answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (headers and body may come apart)."""
    answer = b""
    try:
        while part := sock.recv(4096):
            answer += part
    except ConnectionResetError:
        pass  # it closed with our unread body still arriving: what it sent first is kept
    return answer


def _headers(payload: bytes) -> bytes:
    return (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nStripe-Signature: {sign(payload)}\r\n"
    ).encode()


def test_the_cap_guards_the_path_the_view_is_mounted_at():
    assert reverse("billing:stripe-webhook") == WEBHOOK_PATH


def test_a_chunked_2mb_event_is_refused_while_it_is_still_arriving(site):
    payload = _event("evt_huge", padding=2 * 1024 * 1024)
    chunk = 16 * 1024
    with socket.create_connection(tuple(site.split(":")), timeout=10) as sock:  # type: ignore[arg-type]
        sock.sendall(_headers(payload) + b"Transfer-Encoding: chunked\r\n\r\n")
        sent = 0
        # A little past the cap, and never the final chunk: a server that buffers the whole
        # body before deciding would wait here for the rest and never answer.
        while sent < MAX_BODY_BYTES + 4 * chunk:
            part = payload[sent : sent + chunk]
            sock.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
            sent += len(part)
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    assert b'"request too large"' in answer
    assert not StripeEvent.objects.exists()


def test_a_declared_2mb_body_is_refused_before_it_is_read(site):
    payload = _event("evt_declared", padding=2 * 1024 * 1024)
    with socket.create_connection(tuple(site.split(":")), timeout=10) as sock:  # type: ignore[arg-type]
        sock.sendall(_headers(payload) + f"Content-Length: {len(payload)}\r\n\r\n".encode())
        answer = _answer(sock)  # nothing of the body was sent
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]
    assert not StripeEvent.objects.exists()


def test_a_normal_event_is_stored_once(site):
    payload = _event("evt_normal", padding=100_000)  # well under the cap, more than one read
    headers = {"Content-Type": "application/json", "Stripe-Signature": sign(payload)}
    first = httpx.post(f"http://{site}{WEBHOOK_PATH}", content=payload, headers=headers)
    chunked = httpx.post(f"http://{site}{WEBHOOK_PATH}", content=iter([payload]), headers=headers)
    assert first.status_code == 200, first.text
    assert first.json() == {"received": True, "duplicate": False}
    assert chunked.status_code == 200, chunked.text
    assert chunked.json() == {"received": True, "duplicate": True}
    row = StripeEvent.objects.get()
    assert (row.stripe_event_id, row.status) == ("evt_normal", StripeEventStatus.IGNORED)


def test_the_view_itself_refuses_a_body_past_the_cap(stripe_settings, client):
    """Without the ASGI guard in front (WSGI, the test client) the view counts too."""
    payload = _event("evt_view", padding=MAX_BODY_BYTES)
    response = client.post(
        WEBHOOK_PATH,
        data=payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign(payload),
    )
    assert response.status_code == 413
    assert not StripeEvent.objects.exists()

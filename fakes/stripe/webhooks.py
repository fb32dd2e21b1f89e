"""Outgoing webhooks: events are stored, then POSTed by one background thread, signed like Stripe.

One sender thread keeps delivery in creation order (tests that want disorder pause the sender
and release the queue reversed, or resend an old event). Each send is retried a bounded number
of times with exponential backoff on non-2xx answers and connection errors.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from fakes.stripe.state import JSON

logger = logging.getLogger(__name__)

# The event types the project's endpoint subscribes to (../shared/stripe/README.md); like a real
# webhook endpoint's `enabled_events`, other events are stored (GET /v1/events) but not sent.
PROJECT_EVENT_TYPES = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.expired",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_failed",
        "payment_intent.succeeded",
        "account.updated",
        "transfer.created",
        "charge.refunded",
        "charge.dispute.created",
    }
)


def signature_header(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256(secret, "t.payload")>`, exactly Stripe's scheme."""
    t = int(time.time()) if timestamp is None else timestamp
    signed = f"{t}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


@dataclass(frozen=True, slots=True)
class Delivery:
    event_id: str
    type: str
    status: int  # HTTP status; 0 = connection error


class WebhookSender:
    """Delivers events to `url` from a daemon thread, after the API response has gone out."""

    def __init__(
        self,
        *,
        url: str | None,
        secret: str,
        connect_secret: str | None = None,
        max_attempts: int = 4,
        backoff_seconds: float = 0.2,
        timeout_seconds: float = 10.0,
        enabled_events: frozenset[str] | None = PROJECT_EVENT_TYPES,
    ) -> None:
        self.url = url
        self.enabled_events = enabled_events  # None = every event type
        self.secret = secret
        self.connect_secret = connect_secret
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds
        self.deliveries: list[tuple[str, str, int]] = []
        self._queue: deque[JSON] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._paused = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.on_delivered: Callable[[JSON, int], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run, name="fake-stripe-webhooks", daemon=True
            )
            self._thread.start()

    def stop(self, drain_timeout: float = 2.0) -> None:
        self.wait(drain_timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- queue -------------------------------------------------------------------------------

    def wants(self, event_type: str) -> bool:
        """Whether an event of this type goes out (a URL is set and the type is enabled)."""
        return bool(self.url) and (self.enabled_events is None or event_type in self.enabled_events)

    def enqueue(self, event: JSON) -> None:
        if not self.wants(event["type"]):
            return
        with self._cond:
            self._queue.append(event)
            self._cond.notify_all()

    def pause(self) -> None:
        """Hold deliveries (queued events wait) until `resume`."""
        with self._cond:
            self._paused = True

    def resume(self, *, reverse: bool = False) -> None:
        """Release held deliveries, optionally newest first (to test out-of-order handling)."""
        with self._cond:
            if reverse:
                self._queue.reverse()
            self._paused = False
            self._cond.notify_all()

    def wait(self, timeout: float = 10.0) -> bool:
        """Block until the queue is empty and nothing is in flight; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                if self._paused and not self._busy:
                    return not self._queue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_seconds) as client:
            while True:
                with self._cond:
                    while not self._stopping and (self._paused or not self._queue):
                        self._cond.wait()
                    if self._stopping:
                        return
                    event = self._queue.popleft()
                    self._busy = True
                try:
                    self._deliver(client, event)
                except Exception:  # a sender bug must not kill the thread
                    logger.exception("fake_stripe.webhook_crashed", extra={"event_id": event["id"]})
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()

    def _secret_for(self, event: JSON) -> str:
        if event.get("account") and self.connect_secret:
            return self.connect_secret
        return self.secret

    def _deliver(self, client: httpx.Client, event: JSON) -> None:
        if self.url is None:
            return
        payload = json.dumps(event, indent=2).encode()
        secret = self._secret_for(event)
        status = 0
        for attempt in range(self.max_attempts):
            if self._stopping:
                return
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                "Stripe-Signature": signature_header(payload, secret),
            }
            try:
                status = client.post(self.url, content=payload, headers=headers).status_code
            except httpx.HTTPError:
                status = 0
            self.deliveries.append((event["id"], event["type"], status))
            logger.info(
                "fake_stripe.webhook_sent",
                extra={"event_id": event["id"], "type": event["type"], "status": status},
            )
            if 200 <= status < 300:
                break
            if attempt + 1 < self.max_attempts:
                time.sleep(self.backoff_seconds * (2**attempt))
        if self.on_delivered is not None:
            self.on_delivered(event, status)

"""The one place the project builds Stripe clients, derives idempotency keys and verifies webhooks.

`get_client()` points the real `stripe` library at real Stripe, or at the in-project fake when
`STRIPE_API_BASE` is set. Library code never touches the module-level `stripe.api_key`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from typing import Final

import stripe
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from common.exceptions import ServiceUnavailableError

# What stripe 16.1 pins (`stripe._api_version._ApiVersion.CURRENT`); a test keeps them equal, so a
# library upgrade that moves the API version fails loudly instead of changing shapes silently.
API_VERSION: Final = "2026-10-28.endive"
MAX_NETWORK_RETRIES: Final = 2
# Stripe's own tolerance for old signatures; we apply the same bound to future timestamps.
WEBHOOK_TOLERANCE_SECONDS: Final = 300


# What a buyer or creator is told when Stripe cannot be reached, and when to try again.
PAYMENTS_UNAVAILABLE_MESSAGE: Final = "Payments are unavailable right now; please try again."
PAYMENTS_RETRY_AFTER_SECONDS: Final = 30


class WebhookSignatureError(Exception):
    """The webhook's signature, timestamp or payload is not acceptable; answer 400."""


class PaymentsUnavailable(ServiceUnavailableError):
    """Stripe could not be reached, timed out or failed on its side (after the library's own
    retries). Our idempotency keys make the same request safe to send again."""

    def __init__(self) -> None:
        super().__init__(
            PAYMENTS_UNAVAILABLE_MESSAGE,
            retry_after=PAYMENTS_RETRY_AFTER_SECONDS,
            extra={"code": "payments_unavailable"},
        )


@contextmanager
def unavailable_as_error() -> Iterator[None]:
    """Turn "Stripe cannot answer" into `PaymentsUnavailable` (503 + Retry-After) for calls a
    person is waiting on, instead of a 500. Refusals (4xx: bad params, idempotency) stay what
    they are: retrying them would not help. Usable as a decorator."""
    try:
        yield
    except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
        raise PaymentsUnavailable from exc
    except stripe.APIError as exc:  # 5xx (after the library's retries)
        if exc.http_status is not None and exc.http_status < 500:
            raise
        raise PaymentsUnavailable from exc


def get_client() -> stripe.StripeClient:
    """The shared client for the current settings (cached per settings tuple)."""
    key: str = settings.STRIPE_SECRET_KEY
    base: str = (settings.STRIPE_API_BASE or "").rstrip("/")
    timeout = float(settings.STRIPE_TIMEOUT_SECONDS)
    if not key:
        raise ImproperlyConfigured("STRIPE_SECRET_KEY is not set")
    if base and not key.startswith("sk_test_"):
        raise ImproperlyConfigured("STRIPE_API_BASE points at a fake Stripe: use an sk_test_ key")
    return _build_client(key, base, timeout)


@lru_cache(maxsize=8)
def _build_client(key: str, base: str, timeout: float) -> stripe.StripeClient:
    http_client = stripe.new_default_http_client(
        timeout=timeout,
        async_fallback_client=stripe.HTTPXClient(timeout=timeout),
    )
    if base:
        return stripe.StripeClient(
            key,
            stripe_version=API_VERSION,
            max_network_retries=MAX_NETWORK_RETRIES,
            http_client=http_client,
            base_addresses={"api": base, "connect": base, "files": base, "meter_events": base},
        )
    return stripe.StripeClient(
        key,
        stripe_version=API_VERSION,
        max_network_retries=MAX_NETWORK_RETRIES,
        http_client=http_client,
    )


def idempotency_key(*parts: object, params: Mapping[str, object] | None = None) -> str:
    """A deterministic Idempotency-Key from our own row ids, so a retried task cannot create a
    second Stripe object: `idempotency_key("checkout", order.pk)`.

    Stripe refuses a key reused with other parameters (400 `idempotency_error`). Pass `params`
    when the same ids may legitimately be sent with different parameters (an onboarding link
    asked for from another page): they are part of the key, so a different request gets a
    different key and an identical retry still replays.
    """
    if not parts:
        raise ValueError("idempotency_key needs at least one part")
    text = "|".join(str(p) for p in parts)
    if params is not None:
        text += "|" + json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return "tb:" + digest[:40]


def _timestamp(sig_header: str) -> int:
    for item in sig_header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            try:
                return int(value)
            except ValueError:
                break
    raise WebhookSignatureError("Unable to extract timestamp from the signature header")


def construct_event(payload: bytes, sig_header: str | None) -> stripe.Event:
    """Verify a webhook against every secret in STRIPE_WEBHOOK_SECRETS (rotation) and parse it.

    Rejects signatures older than 300 s (the library's tolerance) and timestamps more than 300 s
    in the future (which the library lets through). Every failure is a `WebhookSignatureError`.
    """
    if not sig_header:
        raise WebhookSignatureError("Missing Stripe-Signature header")
    secrets: list[str] = [s for s in settings.STRIPE_WEBHOOK_SECRETS if s]
    if not secrets:
        raise WebhookSignatureError("No webhook secret is configured")
    if _timestamp(sig_header) > time.time() + WEBHOOK_TOLERANCE_SECONDS:
        raise WebhookSignatureError("Timestamp is too far in the future")
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    except UnicodeDecodeError as exc:
        raise WebhookSignatureError("Webhook payload is not UTF-8") from exc
    last_error: Exception | None = None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(
                text, sig_header, secret, WEBHOOK_TOLERANCE_SECONDS
            )
        except stripe.SignatureVerificationError as exc:
            last_error = exc
            continue
        try:
            event: stripe.Event = stripe.Webhook.construct_event_without_verification(text)
            return event
        except (ValueError, KeyError, TypeError) as exc:
            raise WebhookSignatureError("Webhook payload is not a valid event") from exc
    raise WebhookSignatureError(
        str(getattr(last_error, "user_message", None) or "No valid signature found")
    )

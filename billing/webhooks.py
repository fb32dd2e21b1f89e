"""`POST /billing/webhooks/stripe`: verify the raw body, store the event, acknowledge fast.

Processing happens in `stripe_event_process_task`, enqueued on commit. A duplicate delivery is
acknowledged with 200 and not re-enqueued once processed. A bad, stale or future signature gets
a 400 whose body says nothing about why (no oracle for forgers), and nothing is stored.

Stripe events are small, so the body is capped at `MAX_BODY_BYTES` counted as it is read, not
as the `Content-Length` header claims: a chunked or lying request is refused with 413 once the
cap is passed. Django's ASGI handler reads a whole body before any view runs, so over ASGI the
cap is enforced in front of Django by `WebhookBodyLimit` (config/asgi.py); the view counts
again for WSGI and the test client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import IO, Any, Final

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing import stripe_client
from billing.services.events import stripe_event_receive

logger = logging.getLogger(__name__)

# Stripe events are small; anything bigger is not from Stripe.
MAX_BODY_BYTES: Final = 512 * 1024
READ_CHUNK_BYTES: Final = 64 * 1024
# Where `billing.urls` mounts the view (a test checks it against `reverse`).
WEBHOOK_PATH: Final = "/billing/webhooks/stripe"
TOO_LARGE_BODY: Final = b'{"error": "request too large"}'

Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _declared_length(value: str | bytes | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def read_capped(stream: IO[bytes] | HttpRequest, limit: int) -> bytes | None:
    """Read a body in chunks; None as soon as more than `limit` bytes have arrived."""
    chunks: list[bytes] = []
    total = 0
    while chunk := stream.read(READ_CHUNK_BYTES):
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> HttpResponse:
    logger.warning("billing.webhook_too_large")
    return JsonResponse({"error": "request too large"}, status=413)


@csrf_exempt
@require_POST
def stripe_webhook_view(request: HttpRequest) -> HttpResponse:
    if _declared_length(request.META.get("CONTENT_LENGTH")) > MAX_BODY_BYTES:
        return _too_large()
    payload = read_capped(request, MAX_BODY_BYTES)
    if payload is None:
        return _too_large()
    sig_header = request.headers.get("Stripe-Signature", "")
    try:
        event = stripe_client.construct_event(payload, sig_header)
    except stripe_client.WebhookSignatureError:
        logger.warning("billing.webhook_bad_signature")
        return JsonResponse({"error": "invalid signature"}, status=400)
    except ValueError:
        logger.warning("billing.webhook_bad_payload")
        return JsonResponse({"error": "invalid request"}, status=400)
    _, created = stripe_event_receive(payload=payload)
    logger.info(
        "billing.webhook_received",
        extra={"event": event["id"], "duplicate": not created},
    )
    return JsonResponse({"received": True, "duplicate": not created})


class WebhookBodyLimit:
    """ASGI middleware: the webhook's body, counted as it arrives, never passes the cap.

    Everything but `POST WEBHOOK_PATH` goes straight through. For the webhook, the body is
    received here (at most `max_bytes` of it held), then replayed to Django; past the cap the
    client gets 413 and Django never sees the request.
    """

    def __init__(
        self, app: ASGIApp, *, path: str = WEBHOOK_PATH, max_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self.app = app
        self.path = path
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if _declared_length(headers.get(b"content-length")) > self.max_bytes:
            await self._refuse(send)
            return
        held: list[Message] = []
        total = 0
        while True:
            message = await receive()
            held.append(message)
            if message["type"] != "http.request":
                break  # a disconnect: Django sees it and gives up
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        replay = iter(held)

        async def replayed() -> Message:
            for message in replay:
                return message
            return await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, send: Send) -> None:
        logger.warning("billing.webhook_too_large")
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(TOO_LARGE_BODY)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": TOO_LARGE_BODY})

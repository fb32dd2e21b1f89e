"""Mount the fake inside the Django site (the demo: `STRIPE_API_BASE=<site>/_fake_stripe`).

    path("_fake_stripe/", include("fakes.stripe.urls"))   # only when the fake is wanted

The view is async and runs the fake in a worker thread: a sync view would share Django's one
thread-sensitive executor with the page that is calling Stripe, and the in-process call would
deadlock. One process-wide fake per settings; its state lives in FAKE_STRIPE_STATE_PATH.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from fakes.stripe.app import FakeStripeApp
from fakes.stripe.core import Request
from fakes.stripe.state import FakeStripeState
from fakes.stripe.webhooks import WebhookSender

_lock = threading.Lock()
_apps: dict[tuple[Any, ...], FakeStripeApp] = {}


def get_app() -> FakeStripeApp:
    """The process-wide in-site fake for the current settings (started on first use)."""
    webhook_url = getattr(
        settings, "FAKE_STRIPE_WEBHOOK_URL", f"{settings.SITE_URL}/billing/webhooks/stripe"
    )
    state_path = getattr(settings, "FAKE_STRIPE_STATE_PATH", None)
    secrets = list(settings.STRIPE_WEBHOOK_SECRETS)
    key = (webhook_url, str(state_path), secrets[0] if secrets else "")
    with _lock:
        app = _apps.get(key)
        if app is None:
            sender = WebhookSender(url=webhook_url or None, secret=key[2])
            sender.start()
            app = FakeStripeApp(FakeStripeState(state_path), sender)
            _apps[key] = app
        return app


def _to_request(request: HttpRequest, path: str) -> Request:
    full = request.get_full_path()
    suffix = "/" + path
    prefix = (
        request.path[: len(request.path) - len(suffix)] if request.path.endswith(suffix) else ""
    )
    headers = {k.lower(): v for k, v in request.headers.items()}
    return Request(
        method=request.method or "GET",
        path=suffix,
        query=full.partition("?")[2],
        headers=headers,
        body=request.body,
        base_url=request.build_absolute_uri(prefix or "/").rstrip("/"),
    )


@csrf_exempt
async def fake_stripe_view(request: HttpRequest, path: str = "") -> HttpResponse:
    """Hand the request to the fake and copy its answer back."""
    req = _to_request(request, path)
    app = get_app()
    response = await asyncio.to_thread(app.handle, req)
    out = HttpResponse(response.body, status=response.status)
    for name, value in response.headers.items():
        out[name] = value
    return out

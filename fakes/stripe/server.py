"""`FakeStripeServer`: the fake on a loopback port (stdlib ThreadingHTTPServer), with webhooks.

with FakeStripeServer(webhook_url="http://127.0.0.1:8000/billing/webhooks/stripe") as fake:
    settings.STRIPE_API_BASE = fake.base_url
"""

from __future__ import annotations

import copy
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from fakes.stripe.app import FakeStripeApp
from fakes.stripe.core import Request, strip_private
from fakes.stripe.state import JSON, FakeStripeState
from fakes.stripe.webhooks import PROJECT_EVENT_TYPES, WebhookSender

logger = logging.getLogger(__name__)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # one write per response (no Nagle/delayed-ACK stalls)
    disable_nagle_algorithm = True
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        req = Request(
            method=self.command,
            path=path,
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            base_url=self.server.base_url,
        )
        try:
            response = self.server.app.handle(req)
        except Exception:
            logger.exception("fake_stripe.crashed", extra={"path": path})
            self.send_error(500)
            return
        if response.drop:
            self.close_connection = True
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    do_GET = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("fake_stripe.request " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: FakeStripeApp
    base_url: str


class FakeStripeServer:
    """A stateful fake Stripe on `host:port` (0 = any free port) that sends signed webhooks."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        webhook_url: str | None = None,
        webhook_secret: str = "whsec_toolbooth_local",  # noqa: S107 - the local default secret
        connect_webhook_secret: str | None = None,
        state_path: str | os.PathLike[str] | None = None,
        *,
        enabled_events: frozenset[str] | None = PROJECT_EVENT_TYPES,
        webhook_max_attempts: int = 4,
        webhook_backoff_seconds: float = 0.2,
    ) -> None:
        self.host = host
        self.port = port
        self.state = FakeStripeState(state_path)
        self.sender = WebhookSender(
            url=webhook_url,
            secret=webhook_secret,
            connect_secret=connect_webhook_secret,
            max_attempts=webhook_max_attempts,
            backoff_seconds=webhook_backoff_seconds,
            enabled_events=enabled_events,
        )
        self.app = FakeStripeApp(self.state, self.sender)
        self.engine = self.app.engine
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeStripeServer:
        httpd = _Server((self.host, self.port), _Handler)
        self.port = httpd.server_address[1]
        httpd.app = self.app
        httpd.base_url = self.base_url
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True,
            name="fake-stripe-http",
        )  # fmt: skip
        self._thread.start()
        self.sender.start()
        logger.info("fake_stripe.started", extra={"base_url": self.base_url})
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.sender.stop()
        self.state.save()

    def __enter__(self) -> FakeStripeServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- test hooks ----------------------------------------------------------------------------

    @property
    def deliveries(self) -> list[tuple[str, str, int]]:
        """(event id, type, HTTP status or 0) for every webhook send attempt, in order."""
        return self.sender.deliveries

    def wait_for_webhooks(self, timeout: float = 10.0) -> bool:
        """Block until every queued webhook was sent (or gave up); False on timeout."""
        return self.sender.wait(timeout)

    def fail_next(self, path_prefix: str, mode: str = "drop_response") -> None:
        self.app.fail_next(path_prefix, mode)

    def pause_webhooks(self) -> None:
        self.sender.pause()

    def resume_webhooks(self, *, reverse: bool = False) -> None:
        self.sender.resume(reverse=reverse)

    def events(self, event_type: str | None = None) -> list[JSON]:
        """Copies of the stored events as sent on the wire, oldest first (optionally one type)."""
        found = list(reversed(self.state.all("events")))
        return [
            strip_private(copy.deepcopy(e))
            for e in found
            if event_type is None or e["type"] == event_type
        ]

    # Direct versions of the page/control actions, for tests that don't need the HTML.

    def complete_checkout(self, cs_id: str, *, email: str | None = None) -> JSON:
        return self._saving(self.engine.complete_checkout, cs_id, email=email)

    def complete_onboarding(self, acct_id: str) -> JSON:
        return self._saving(self.engine.complete_onboarding, acct_id)

    def advance_subscription(self, sub_id: str, *, fail: bool = False) -> JSON:
        return self._saving(
            self.engine.advance_subscription, sub_id, fail=fail, base_url=self.base_url
        )

    def refund(
        self,
        pi_id: str,
        *,
        amount: int | None = None,
        reverse_transfer: bool = False,
        refund_application_fee: bool = False,
    ) -> JSON:
        return self._saving(
            self.engine.refund,
            pi_id,
            amount=amount,
            reverse_transfer=reverse_transfer,
            refund_application_fee=refund_application_fee,
        )

    def dispute(self, pi_id: str, *, reason: str = "fraudulent") -> JSON:
        return self._saving(self.engine.dispute, pi_id, reason=reason)

    def close_dispute(self, dp_id: str, *, won: bool) -> JSON:
        return self._saving(self.engine.close_dispute, dp_id, won=won)

    def expire_checkout(self, cs_id: str) -> JSON:
        return self._saving(self.engine.expire_checkout, cs_id)

    def resend_event(self, event_id: str) -> JSON:
        return self.engine.resend(event_id)

    def _saving(self, action: Any, *args: Any, **kwargs: Any) -> JSON:
        with self.state.lock:
            result: JSON = action(*args, **kwargs)
            self.state.save()
        return result

"""The fake's front door: auth, parsing, idempotency, faults, persistence; also a WSGI app.

`FakeStripeApp.handle(Request) -> Response` is transport-free: the loopback HTTP server, the
socketless `stripe.HTTPClient` (transport.py) and a WSGI mount all call it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from fakes.stripe.api import StripeApi
from fakes.stripe.core import API_VERSION, ApiError, FakeStripe, Request, Response
from fakes.stripe.forms import FormError, parse_form, parse_query
from fakes.stripe.money_api import MoneyApi
from fakes.stripe.pages import Pages
from fakes.stripe.portal import PortalApi
from fakes.stripe.state import FakeStripeState, now
from fakes.stripe.webhooks import WebhookSender

logger = logging.getLogger(__name__)

FAULT_MODES = ("drop_response", "500")


class FakeStripeApp:
    """Dispatches `/v1/...` to the API and everything else to the fake-only pages."""

    def __init__(self, state: FakeStripeState, sender: WebhookSender) -> None:
        self.state = state
        self.sender = sender
        self.engine = FakeStripe(state, sender)
        self.api = StripeApi(self.engine)
        self.api.routes += MoneyApi(self.api).routes()  # fees, transfers, balance, disputes
        self.portal = PortalApi(self.api)
        self.api.routes += self.portal.routes()  # billing_portal configurations, sessions
        self.pages = Pages(self.engine)
        self._faults: list[tuple[str, str]] = []
        self._faults_lock = threading.Lock()

    # -- fault injection -----------------------------------------------------------------------

    def fail_next(self, path_prefix: str, mode: str = "drop_response") -> None:
        """Make the next request under `path_prefix` fail: `drop_response` processes it and
        then closes the connection unanswered; `500` answers 500 without processing."""
        if mode not in FAULT_MODES:
            raise ValueError(f"mode must be one of {FAULT_MODES}")
        with self._faults_lock:
            self._faults.append((path_prefix, mode))

    def _take_fault(self, path: str) -> str | None:
        with self._faults_lock:
            for i, (prefix, mode) in enumerate(self._faults):
                if path.startswith(prefix):
                    del self._faults[i]
                    return mode
        return None

    # -- dispatch ------------------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        fault = self._take_fault(req.path)
        if fault == "500":
            return Response.json(
                500,
                {"error": {"type": "api_error", "message": "Injected fault: internal error."}},
                {"Request-Id": req.request_id},
            )
        try:
            self.engine.expire_due_sessions()
            if req.path.startswith("/v1/"):
                response = self._api(req)
            else:
                with self.state.lock:
                    page = self.portal.handle(req) or self.pages.handle(req)
                    if req.method == "POST":
                        self.state.save()
                response = page or Response.html("<h1>Not found</h1>", 404)
        except ApiError as exc:
            if req.path.startswith("/v1/"):
                response = Response.json(exc.status, exc.envelope(), self._headers(req))
            else:
                response = Response.json(exc.status, exc.envelope())
        except FormError as exc:
            response = Response.json(400, ApiError(400, str(exc)).envelope())
        response.drop = fault == "drop_response"
        return response

    def _headers(self, req: Request) -> dict[str, str]:
        headers = {
            "Request-Id": req.request_id,
            "Stripe-Version": req.header("stripe-version") or API_VERSION,
        }
        key = req.header("idempotency-key")
        if key:
            headers["Idempotency-Key"] = key
        return headers

    def _api(self, req: Request) -> Response:
        auth = req.header("authorization") or ""
        scheme, _, api_key = auth.partition(" ")
        if scheme.lower() != "bearer" or not api_key:
            raise ApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth "
                "(e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        if not api_key.startswith("sk_test_"):
            # Never echo the key back (it may be a real live key sent here by mistake).
            raise ApiError(401, "Invalid API Key provided: only sk_test_ keys work with this fake.")
        method = req.method.upper()
        params: dict[str, Any] = (
            parse_form(req.body) if method == "POST" else parse_query(req.query)
        )
        account = req.header("stripe-account")
        idem_key = req.header("idempotency-key")
        with self.state.lock:
            self.state.requests.append(
                {
                    "method": method,
                    "path": req.path,
                    "stripe_account": account,
                    "idempotency_key": idem_key,
                    "request_id": req.request_id,
                    "created": now(),
                }
            )
        route = self.api.route(method, req.path)
        if route is None:
            raise ApiError(
                404,
                f"Unrecognized request URL ({method}: {req.path}). Please see "
                "https://stripe.com/docs or we can help at https://support.stripe.com/.",
            )
        handler, groups = route
        headers = self._headers(req)
        if method == "GET" or not idem_key:
            with self.state.lock:
                status, body = handler(req, params, groups)
                if method != "GET":
                    self.state.save()
            return Response.json(status, body, headers)
        scope = f"{account or 'platform'}|{idem_key}"  # keys are per account, as at Stripe
        fingerprint = json.dumps([method, req.path, params], sort_keys=True)
        with self.state.lock:
            record = self.state.idempotency.get(scope)
            if record is not None:
                if record["fingerprint"] != fingerprint:
                    raise ApiError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters "
                        "they were first used with. Try using a key other than "
                        f"'{idem_key}' if you meant to execute a different request.",
                        type_="idempotency_error",
                    )
                headers.update(
                    {"Idempotent-Replayed": "true", "Original-Request": record["request_id"]}
                )
                return Response.json(record["status"], record["body"], headers)
            status, body = handler(req, params, groups)
            # Like Stripe: only requests that executed are saved; refused ones may be retried.
            self.state.idempotency[scope] = {
                "fingerprint": fingerprint,
                "status": status,
                "body": body,
                "request_id": req.request_id,
                "created": now(),
            }
            self.state.save()
        return Response.json(status, body, headers)

    # -- WSGI ----------------------------------------------------------------------------------

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """WSGI entry point; honours SCRIPT_NAME so the fake can live under a path prefix.
        (`drop_response` faults cannot drop a WSGI connection: they answer normally.)"""
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {
            key[5:].replace("_", "-").lower(): str(value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        host = environ.get("HTTP_HOST") or f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
        script = environ.get("SCRIPT_NAME", "").rstrip("/")
        req = Request(
            method=environ["REQUEST_METHOD"],
            path=environ.get("PATH_INFO") or "/",
            query=environ.get("QUERY_STRING", ""),
            headers=headers,
            body=body,
            base_url=f"{environ.get('wsgi.url_scheme', 'http')}://{host}{script}",
        )
        response = self.handle(req)
        reason = {200: "OK", 303: "See Other", 400: "Bad Request", 401: "Unauthorized"}
        start_response(
            f"{response.status} {reason.get(response.status, 'Status')}",
            [*response.headers.items(), ("Content-Length", str(len(response.body)))],
        )
        return [response.body]

"""A socketless transport: a `stripe.HTTPClient` that hands requests straight to the fake.

    client = stripe.StripeClient("sk_test_x", http_client=FakeStripeHTTPClient(app, base_url),
                                 base_addresses={"api": base_url, ...})

Webhooks still go out over HTTP if the app's sender has a URL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import stripe
from requests.structures import CaseInsensitiveDict

from fakes.stripe.app import FakeStripeApp
from fakes.stripe.core import Request


class FakeStripeHTTPClient(stripe.HTTPClient):
    name = "fake_stripe"

    def __init__(self, app: FakeStripeApp, base_url: str = "http://fake-stripe.invalid") -> None:
        super().__init__()
        self.app = app
        self.base_url = base_url.rstrip("/")
        self._prefix = urlsplit(self.base_url).path.rstrip("/")

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        **kwargs: Any,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        parts = urlsplit(url)
        path = parts.path
        if self._prefix and path.startswith(self._prefix):
            path = path[len(self._prefix) :] or "/"
        body = post_data.encode() if isinstance(post_data, str) else (post_data or b"")
        req = Request(
            method=method.upper(),
            path=path,
            query=parts.query,
            headers={k.lower(): v for k, v in (headers or {}).items()},
            body=body,
            base_url=self.base_url,
        )
        response = self.app.handle(req)
        if response.drop:
            raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
                "Injected fault: connection closed without a response.", should_retry=True
            )
        return response.body, response.status, CaseInsensitiveDict(response.headers)

    def close(self) -> None:
        pass

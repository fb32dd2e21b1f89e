"""Django under ASGI with its middleware run synchronously: one thread hop per request.

Django's own ASGIHandler builds an async middleware chain. Every middleware we use is a
`MiddlewareMixin` (or WhiteNoise, sync only), so in that chain each `process_request`,
`process_view` and `process_response` ran through its own `sync_to_async` call, and WhiteNoise
hopped back to the event loop with `async_to_sync`: ~15 hand-offs between the event loop and
the request's thread for one request, 5-10 ms of a 20 ms API search on two cores
(benchmarks/search_bench.py, py-spy). Nothing in the chain or the views is async, so this
handler runs the whole chain in the request's thread, as the WSGI handler does, in one hop.

What stays as Django does it: the request is read and the response sent on the event loop,
`request_started` and `request_finished` fire as before, and the request keeps its own
thread (ThreadSensitiveContext), so a streamed body's `sync_to_async` calls (web/exports.py)
run on the same thread and database connection as the view. An async view would still work
(Django wraps it in `async_to_sync`); it would just not save anything.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase


class SyncChainASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        response: Any = await sync_to_async(self.get_response, thread_sensitive=True)(request)
        return response  # type: ignore[no-any-return]

"""The one module that talks to the Official MCP Registry's `/v0.1` read API.

Semantics (../shared/registry/README.md): `limit` ≤ 100 keyset pages whose `nextCursor` must be
passed back verbatim and percent-encoded; `updated_since` is strict and forces deleted rows in;
path parts are percent-encoded. The ingress allows 180 requests a minute per IP and answers 429 and
502/504 as nginx HTML without `Retry-After`, so every transient failure is retried with exponential
backoff and full jitter, and requests are paced by a token bucket.
"""

import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from django.conf import settings

logger = logging.getLogger(__name__)

API_PREFIX = "/v0.1"
MAX_LIMIT = 100


class RegistryError(Exception):
    """The registry could not be read (after retries, or a non-retryable answer)."""

    def __init__(self, message: str, *, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class RegistryClientError(RegistryError):
    """A 4xx problem+json answer: our request is wrong, retrying will not help."""


class CursorLoopError(RegistryError):
    """The registry served the same cursor twice, or a cursor with an empty page."""


class _Retryable(Exception):
    pass


@dataclass(frozen=True)
class RegistryPage:
    """One `/v0.1/servers` page: its items as served (any JSON values) and the cursors."""

    items: list[Any]
    cursor: str | None
    next_cursor: str | None


def format_rfc3339(value: datetime) -> str:
    """Microsecond RFC 3339 in UTC with a `Z`, the way the registry writes timestamps."""
    if value.tzinfo is None:
        raise ValueError("updated_since must be timezone-aware")
    text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


_RFC3339 = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|z|[+-]\d{2}:\d{2})$")


def parse_rfc3339(value: str) -> datetime | None:
    """Strict RFC 3339 (what Go's time.RFC3339 accepts) as an aware datetime, or None."""
    match = _RFC3339.match(value)
    if match is None:
        return None
    base, frac, zone = match.groups()
    frac = (frac or "")[:7]  # Python keeps at most microseconds
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        return datetime.fromisoformat(base + frac + zone)
    except ValueError:
        return None


class TokenBucket:
    """Paces requests: `per_minute` tokens a minute with a small burst; 0 disables pacing."""

    def __init__(
        self,
        *,
        per_minute: int,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.rate = per_minute / 60.0
        # A few seconds' worth of burst: well under the ingress's burst x3.
        self.capacity = float(burst if burst is not None else max(1, per_minute // 12))
        self.tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until one is available; returns the seconds slept."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self.tokens = min(self.capacity, self.tokens + (now - self._last) * self.rate)
            self._last = now
            wait = 0.0
            if self.tokens < 1.0:
                wait = (1.0 - self.tokens) / self.rate
                self._sleep(wait)
                self._last = self._clock()
                self.tokens = 1.0
            self.tokens -= 1.0
            return wait


class RegistryClient:
    """A synchronous client (it runs in Celery tasks and commands). Counts every HTTP request."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        max_requests_per_minute: int | None = None,
        backoff_base: float | None = None,
        backoff_max: float | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.base_url = (base_url or settings.REGISTRY_URL).rstrip("/")
        self.timeout = settings.REGISTRY_TIMEOUT_SECONDS if timeout is None else timeout
        self.max_retries = settings.REGISTRY_MAX_RETRIES if max_retries is None else max_retries
        rpm = (
            settings.REGISTRY_MAX_REQUESTS_PER_MINUTE
            if max_requests_per_minute is None
            else max_requests_per_minute
        )
        self.backoff_base = (
            settings.REGISTRY_BACKOFF_BASE_SECONDS if backoff_base is None else backoff_base
        )
        self.backoff_max = (
            settings.REGISTRY_BACKOFF_MAX_SECONDS if backoff_max is None else backoff_max
        )
        self._sleep = sleep
        self._bucket = TokenBucket(per_minute=rpm, sleep=sleep)
        self._http = httpx.Client(
            timeout=httpx.Timeout(self.timeout),
            headers={"Accept": "application/json", "User-Agent": "toolbooth-registry-sync/1"},
            transport=transport,
            follow_redirects=False,
        )
        self.requests = 0
        self.retries = 0

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- endpoints -------------------------------------------------------------------------

    def iter_pages(
        self,
        *,
        updated_since: datetime | None = None,
        include_deleted: bool = True,
        limit: int = MAX_LIMIT,
    ) -> Iterator[RegistryPage]:
        """Walk `/v0.1/servers` to the end, one page at a time, refusing cursor loops."""
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            query = [("limit", str(limit))]
            if updated_since is not None:
                # updated_since forces deleted rows in; include_deleted=false with it is a 400.
                query.append(("updated_since", format_rfc3339(updated_since)))
            elif include_deleted:
                query.append(("include_deleted", "true"))
            if cursor is not None:
                query.append(("cursor", cursor))
            body = self._get_json(f"{API_PREFIX}/servers", query)
            items, next_cursor = _parse_server_list(body, path="/servers")
            page = RegistryPage(items=items, cursor=cursor, next_cursor=next_cursor)
            if next_cursor is not None:
                if not items:
                    raise CursorLoopError(
                        f"registry served nextCursor {next_cursor!r} with an empty page"
                    )
                if next_cursor in seen or next_cursor == cursor:
                    raise CursorLoopError(f"registry served cursor {next_cursor!r} twice")
                seen.add(next_cursor)
            yield page
            if next_cursor is None:
                return
            cursor = next_cursor

    def versions(self, name: str, *, include_deleted: bool = True) -> list[Any]:
        """Every version of one name (published_at DESC); [] when the name has none (404)."""
        query = [("include_deleted", "true")] if include_deleted else []
        path = f"{API_PREFIX}/servers/{quote(name, safe='')}/versions"
        body = self._get_json(path, query, allow_404=True)
        if body is None:
            return []
        items, _ = _parse_server_list(body, path="/versions")
        return items

    def version(self, name: str, version: str, *, include_deleted: bool = True) -> Any | None:
        """One ServerResponse (`version` may be `latest`), or None when it does not exist."""
        query = [("include_deleted", "true")] if include_deleted else []
        path = f"{API_PREFIX}/servers/{quote(name, safe='')}/versions/{quote(version, safe='')}"
        return self._get_json(path, query, allow_404=True)

    def health(self) -> Any:
        return self._get_json(f"{API_PREFIX}/health", [])

    # -- transport -------------------------------------------------------------------------

    def _get_json(self, path: str, query: list[tuple[str, str]], *, allow_404: bool = False) -> Any:
        # Query values are percent-encoded here, so a `+` in a cursor travels as %2B.
        qs = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
        url = f"{self.base_url}{path}" + (f"?{qs}" if qs else "")
        last_error = ""
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            if attempt:
                self.retries += 1
                delay = random.uniform(  # noqa: S311 - jitter, not crypto
                    0, min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
                )
                logger.warning(
                    "registry.request.retry",
                    extra={"path": path, "attempt": attempt, "reason": last_error},
                )
                self._sleep(delay)
            self._bucket.acquire()
            try:
                return self._attempt(url, allow_404=allow_404)
            except _Retryable as exc:
                last_error = str(exc)
        raise RegistryError(f"GET {path} failed after {attempts} attempts: {last_error}")

    def _attempt(self, url: str, *, allow_404: bool) -> Any:
        self.requests += 1
        try:
            response = self._http.get(url)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timeout ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise _Retryable(f"transport error ({type(exc).__name__})") from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Retryable(f"HTTP {status}")
        if status == 404 and allow_404:
            return None
        if status >= 400:
            raise RegistryClientError(_problem_message(response), status_code=status)
        if status != 200:
            raise _Retryable(f"unexpected HTTP {status}")
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            # An HTML error page with a 200 (or a truncated body): transient by assumption.
            ctype = response.headers.get("content-type", "")
            raise _Retryable(f"non-JSON body (content-type {ctype!r})") from exc


def _problem_message(response: httpx.Response) -> str:
    """A short, safe description of a problem+json (or any) error answer."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        title = str(body.get("title") or "")[:200]
        detail = str(body.get("detail") or "")[:500]
        errors = body.get("errors")
        extra = ""
        if isinstance(errors, list) and errors:
            extra = "; " + "; ".join(
                str(e.get("message", ""))[:200] for e in errors[:5] if isinstance(e, dict)
            )
        return f"registry answered {response.status_code} {title}: {detail}{extra}".strip()
    return f"registry answered {response.status_code}"


def _parse_server_list(body: Any, *, path: str) -> tuple[list[Any], str | None]:
    if not isinstance(body, dict) or not isinstance(body.get("servers"), list):
        raise RegistryError(f"unexpected response shape from {path}: no 'servers' list")
    metadata = body.get("metadata")
    next_cursor = metadata.get("nextCursor") if isinstance(metadata, dict) else None
    if next_cursor is not None and (not isinstance(next_cursor, str) or next_cursor == ""):
        next_cursor = None
    return body["servers"], next_cursor

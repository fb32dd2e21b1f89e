"""Domain errors. Services raise these; one API handler maps them to HTTP."""

from typing import Any


class ApplicationError(Exception):
    """A business rule refused the request; `message` is safe to show to the caller."""

    status_code = 400

    def __init__(
        self, message: str, *, extra: dict[str, Any] | None = None, status_code: int | None = None
    ):
        super().__init__(message)
        self.message = message
        self.extra = extra or {}
        if status_code is not None:
            self.status_code = status_code


class NotFoundError(ApplicationError):
    status_code = 404


class ServiceUnavailableError(ApplicationError):
    """An outside system we depend on cannot answer right now. What we wrote before it is safe
    to retry, so the caller may send the same request again after `retry_after` seconds
    (503 + Retry-After)."""

    status_code = 503

    def __init__(
        self, message: str, *, retry_after: int, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, extra=extra)
        self.retry_after = retry_after

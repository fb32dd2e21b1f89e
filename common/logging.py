"""Logs are event names plus ids passed in `extra`; this filter renders those ids."""

import logging
import logging.config

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {
    "message",
    "asctime",
    "extra_fields",
}


class ExtraFieldsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        record.extra_fields = " ".join(f"{k}={v}" for k, v in sorted(extras.items()))
        return True


class QueryStringRedactor(logging.Filter):
    """Cut the query string out of uvicorn's access log line.

    uvicorn logs the whole request line, and a client that puts its key in the query string
    (`/mcp/x?key=tb_live_...`, which the gateway refuses) would have it written to the log all
    the same. The record's args are (client, method, path with query, HTTP version, status).
    """

    REDACTED = "?[redacted]"

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, sep, _query = args[2].partition("?")
            if sep:
                record.args = (*args[:2], path + self.REDACTED, *args[3:])
        return True


def configure_logging(config: dict[str, object]) -> None:
    """Django's LOGGING_CONFIG: the LOGGING dict, then the access-log redactor.

    The redactor sits on the `uvicorn.access` logger itself, not on a handler, so uvicorn's own
    handlers (or a `--log-config` of the operator's) stay as they are and every one of them gets
    the redacted line. Django configures logging when the ASGI app is imported, after uvicorn
    configured its loggers, and before the first request.
    """
    logging.config.dictConfig(config)
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, QueryStringRedactor) for f in access.filters):
        access.addFilter(QueryStringRedactor())

"""Logs are event names plus ids passed in `extra`; this filter renders those ids."""

import logging

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

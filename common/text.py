"""Registry text is untrusted data: cap it and strip control characters before storing it."""

import re
import unicodedata
from collections.abc import Callable
from typing import Any

# C0/C1 controls except tab and newline, plus bidi overrides that can disguise text.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean_text(value: object, *, max_length: int, single_line: bool = True) -> str:
    """Return a safe, length-capped plain string (never markup: templates escape it)."""
    if not isinstance(value, str):
        return ""
    text = unicodedata.normalize("NFC", value)
    text = _CONTROL.sub("", text)
    if single_line:
        text = " ".join(text.split())
    text = text.strip()
    if len(text) > max_length:
        text = text[: max_length - 1].rstrip() + "…"
    return text


def text_rows_reclean(
    rows: Any,
    fields: dict[str, tuple[int, bool]],
    *,
    empty: Callable[[Any, str], str] | None = None,
    batch: int = 500,
) -> int:
    """Apply `clean_text` to text stored before it was cleaned on the way in (a data
    migration's job: common/migrations). `rows` is a queryset (a migration's historical model
    works), `fields` maps a field to its (max_length, single_line) as the writing service
    cleans it; `empty(row, field)` names a value for a field that cleans to nothing. Cleaning
    is idempotent, so only rows whose text changes are written. Returns the rows changed."""
    changed: list[Any] = []
    total = 0
    for row in rows.only("pk", *fields).order_by("pk").iterator(chunk_size=batch):
        dirty = False
        for name, (max_length, single_line) in fields.items():
            old = getattr(row, name)
            new = clean_text(old, max_length=max_length, single_line=single_line)
            if not new and old and empty is not None:
                new = empty(row, name)
            if new != old:
                setattr(row, name, new)
                dirty = True
        if dirty:
            changed.append(row)
        if len(changed) >= batch:
            rows.model.objects.bulk_update(changed, list(fields))
            total += len(changed)
            changed = []
    if changed:
        rows.model.objects.bulk_update(changed, list(fields))
        total += len(changed)
    return total

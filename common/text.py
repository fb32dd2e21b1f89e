"""Registry text is untrusted data: cap it and strip control characters before storing it."""

import re
import unicodedata

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

"""JSON on the hot path: orjson, with the standard library for what orjson refuses.

orjson parses and encodes the gateway's messages several times faster than `json`, but
refuses integers beyond 64 bits and NaN/Infinity, which upstreams may legally send (JSON-RPC
ids are arbitrary numbers; Python's `json` accepts both). Falling back keeps such messages
metered and passed through instead of turning them into parse errors.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def loads(data: bytes | str) -> Any:
    """Parse JSON; ValueError when neither parser accepts it."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON (no spaces, non-ASCII kept as is)."""
    try:
        return orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError: e.g. an integer over 64 bits
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

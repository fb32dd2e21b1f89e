"""Stripe's form encoding: `a[b][0][c]=v` bodies and `expand[0]=x` query strings, into nested data.

Stripe (and the `stripe` client) send arrays as indexed brackets, so a dict whose keys are all
decimal indexes becomes a list. Values stay strings, as on the wire; the API layer coerces them.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

_KEY_PART = re.compile(r"\[([^\[\]]*)\]")


class FormError(ValueError):
    """The body or query string is not valid bracket notation."""


def _split_key(key: str) -> list[str]:
    head, sep, rest = key.partition("[")
    if not sep:
        return [key]
    rest = "[" + rest
    parts = _KEY_PART.findall(rest)
    if "".join(f"[{p}]" for p in parts) != rest or not head:
        raise FormError(f"Invalid array notation in parameter: {key}")
    return [head, *parts]


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        converted = {k: _listify(v) for k, v in node.items()}
        if converted and all(k.isdigit() for k in converted):
            return [converted[k] for k in sorted(converted, key=int)]
        if "" in converted and len(converted) == 1:  # `expand[]=a` style
            value = converted[""]
            return value if isinstance(value, list) else [value]
        return converted
    return node


def parse_pairs(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Build nested params from (key, value) pairs in bracket notation."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = _split_key(key)
        node: dict[str, Any] = root
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None or isinstance(nxt, str):
                nxt = {}
                node[part] = nxt
            if not isinstance(nxt, dict):
                raise FormError(f"Invalid array notation in parameter: {key}")
            if parts[i + 1] == "":  # `a[]=1&a[]=2`: append with a fresh index
                parts[i + 1] = str(len(nxt))
            node = nxt
        last = parts[-1]
        existing = node.get(last)
        if isinstance(existing, dict) and value == "":
            continue  # `metadata=` after nested keys: keep the keys
        node[last] = value
    result = _listify(root)
    if not isinstance(result, dict):  # a top level of only digit keys, e.g. `0=a`
        raise FormError("Parameters must be named")
    return result


def parse_form(body: bytes | str) -> dict[str, Any]:
    """Parse an `application/x-www-form-urlencoded` body in Stripe's bracket notation."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    return parse_pairs(parse_qsl(text, keep_blank_values=True))


def parse_query(query: str) -> dict[str, Any]:
    """Parse a GET/DELETE query string (`expand%5B0%5D=items.data.price`)."""
    return parse_pairs(parse_qsl(query, keep_blank_values=True))

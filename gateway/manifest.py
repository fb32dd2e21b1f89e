"""The canonical form of an MCP tool and its hash: what the creator approves and what the gateway
compares each passing `tools/list` answer with (the rug-pull guard, gateway/README.md).

Discovery (the SDK's parsed `Tool`, dumped by alias) and the gateway (the upstream's raw JSON)
must reach the same bytes for the same tool, so only the fields an agent's model reads are kept,
each in one shape: `name`, `title`, `description`, `inputSchema`, `outputSchema`, and
`annotations` with its five known hints (the SDK drops unknown keys, so we do too). A field that
is absent and one that is null are the same. Everything else on a tool entry (`_meta`, `icons`,
`execution`) is not text for the model and is not hashed; the gateway passes those three from
the upstream and drops any other key, so nothing unhashed reaches an agent.

Hash: SHA-256 of orjson's sorted-key compact encoding (the same function on both sides).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

# Bounds on what one upstream can make us store, approve and hold in every gateway process.
MAX_TOOL_BYTES = 32 * 1024  # one tool's canonical JSON; a bigger one cannot be approved
MAX_MANIFEST_BYTES = 512 * 1024
ANNOTATION_KEYS = ("title", "readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint")
TEXT_FIELDS = ("name", "title", "description")
SCHEMA_FIELDS = ("inputSchema", "outputSchema")
# Redis hash gateway processes write the tool changes they see to (field "<listing id>:<approved
# hash>:<seen hash>", value JSON {listing_id, tool, seen_at}); gateway.services.tool_changes_drain
# records them. A hash, so every process that sees the same change writes the same field.
TOOL_CHANGES_KEY = "tb:toolchg"
# Tool entry keys passed from the upstream unhashed (not read by the model as instructions).
PASSTHROUGH_KEYS = ("_meta", "icons", "execution")


def tool_canonical(raw: Any) -> dict[str, Any] | None:
    """The hashed fields of one tool entry, or None when it is not a tool (no string name)."""
    if not isinstance(raw, dict):
        return None
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        return None
    out: dict[str, Any] = {"name": name}
    for key in ("title", "description"):
        value = raw.get(key)
        if value is not None:
            out[key] = value
    for key in SCHEMA_FIELDS:
        value = raw.get(key)
        if value is not None:
            out[key] = value
    annotations = raw.get("annotations")
    if isinstance(annotations, dict):
        kept = {k: annotations[k] for k in ANNOTATION_KEYS if annotations.get(k) is not None}
        if kept:
            out["annotations"] = kept
    elif annotations is not None:
        out["annotations"] = annotations  # not an object: hashed as sent, so it cannot match
    return out


def canonical_bytes(tool: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(tool, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer over 64 bits: still deterministic, never equal to orjson's
        import json

        return json.dumps(tool, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def tool_hash(tool: dict[str, Any]) -> str:
    """SHA-256 (hex) of a canonical tool."""
    return hashlib.sha256(canonical_bytes(tool)).hexdigest()


def manifest_hash(hashes: dict[str, str]) -> str:
    """The whole manifest's hash: over the sorted (name, tool hash) pairs."""
    return hashlib.sha256(orjson.dumps(sorted(hashes.items()))).hexdigest()


def manifest_build(raw_tools: list[Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """(canonical tools in the upstream's order, names too large to keep) from raw tool entries.

    First entry of a name wins (an upstream listing a name twice is ambiguous; the gateway
    treats the later duplicate as changed). Tools over MAX_TOOL_BYTES and those past
    MAX_MANIFEST_BYTES are left out and named, so they can never be approved; so are tools with
    a U+0000 anywhere (PostgreSQL's jsonb cannot store it, and no honest tool needs it)."""
    tools: list[dict[str, Any]] = []
    skipped: list[str] = []
    seen: set[str] = set()
    total = 0
    for raw in raw_tools:
        tool = tool_canonical(raw)
        if tool is None or tool["name"] in seen:
            continue
        seen.add(tool["name"])
        data = canonical_bytes(tool)
        size = len(data)
        if not storable(data) or size > MAX_TOOL_BYTES or total + size > MAX_MANIFEST_BYTES:
            skipped.append(tool["name"][:128].replace("\x00", ""))
            continue
        total += size
        tools.append(tool)
    return tools, skipped


def storable(data: bytes) -> bool:
    """Whether a canonical tool can be kept in PostgreSQL (jsonb refuses U+0000)."""
    return b"\\u0000" not in data


def tool_hashes(tools: list[dict[str, Any]]) -> dict[str, str]:
    return {t["name"]: tool_hash(t) for t in tools}

"""Tool-poisoning markers in an MCP tool's text, shown to the creator before they approve a
manifest and to admins with each pending change.

A model reads a tool's name, description, schemas (property names, descriptions, enums,
defaults) and annotations as instructions, and a person reviewing the tool usually sees far less
(Invariant Labs showed an `<IMPORTANT>` block telling the model to read `~/.mcp/mcp.json` and
`~/.ssh/id_rsa` and pass them in a "sidenote" argument, hidden from the user). So every string
in the canonical tool is scanned, keys included, for:

- hidden-instruction blocks and phrases: `<IMPORTANT>`, `<SYSTEM>`, `<SECRET>`-style tags,
  "ignore (all) previous instructions", "do not tell/mention ... the user";
- references to secrets and local files: `~/.ssh`, `id_rsa`, `.env`, `/etc/passwd`,
  `mcp.json`, "API key", "credentials", private keys, tokens;
- invisible or bidirectional Unicode: zero-width characters, U+202A-U+202E, U+2066-U+2069,
  the tags block U+E0000-U+E007F (text a person cannot see but a model reads);
- extreme length (a description that buries instructions past what a reviewer reads).

Findings are advice: they never block an approval by themselves (a file-system tool may rightly
mention `.env`), and a pattern list cannot prove a tool safe. What protects agents is that only
what the creator approved reaches them (gateway/README.md, "Tool manifest (rug-pull guard)").

Sources:
- OWASP MCP Top 10, MCP03:2025 Tool Poisoning (incl. "rug pull" redefinitions after approval),
  https://owasp.org/www-project-mcp-top-10/
- Invariant Labs, "MCP Security Notification: Tool Poisoning Attacks" (April 2025),
  https://invariantlabs.ai/blog/mcp-security-notification-tool-poisoning-attacks
- SlowMist, "MCP Security Checklist: A Security Guide for the AI Tool Ecosystem" (2025):
  tool description verification, hidden tags such as `<SECRET>`, secure updates ("verify
  whether the updated tools contain any malicious descriptions"), version control of tools,
  https://github.com/slowmist/MCP-Security-Checklist
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

# A description longer than this is flagged (the discovery page shows 500 characters).
LONG_DESCRIPTION = 2_000
LONG_TEXT = 10_000  # any one string (schema descriptions, enum values)
EXCERPT = 80
MAX_FINDINGS = 50  # per tool: the page and the admin show a bounded list
PER_PLACE = 4  # findings of one kind in one string

HIDDEN_INSTRUCTIONS = "hidden_instructions"
SECRETS = "secrets_or_local_files"
INVISIBLE = "invisible_unicode"
LENGTH = "extreme_length"

_TAG = re.compile(
    r"<\s*/?\s*(important|system|secret|instructions?|hidden|admin|assistant|sudo|"
    r"system[_ -]?prompt|override)\b[^>]{0,40}>",
    re.IGNORECASE,
)
_PHRASES = re.compile(
    r"ignore\s+(all\s+|any\s+|the\s+)?(previous|prior|above|earlier|other)\s+"
    r"(instructions|prompts?|rules|directions)"
    r"|disregard\s+(all\s+|any\s+|the\s+)?(previous|prior|above|earlier)\b"
    r"|(do\s+not|don'?t|never)\s+(tell|mention|inform|reveal|show|notify)\b[^.\n]{0,40}\buser"
    r"|without\s+(telling|informing|notifying)\s+the\s+user"
    r"|the\s+user\s+(must|should)\s+not\s+(know|see|be\s+told)"
    r"|before\s+using\s+this\s+tool,?\s+(you\s+must\s+)?(read|open|send|call)"
    r"|(new|updated)\s+system\s+prompt|you\s+are\s+now\s+",
    re.IGNORECASE,
)
_SECRETS = re.compile(
    r"~/\.ssh|\.ssh/|\bid_(rsa|dsa|ecdsa|ed25519)\b|(^|[\s/\"'`(])\.env\b|/etc/(passwd|shadow)"
    r"|\bmcp\.json\b|\.aws/credentials|\.netrc\b|\.npmrc\b|\.pgpass\b|\.kube/config"
    r"|\bapi[\s_-]?keys?\b|\bcredentials?\b|\bprivate[\s_-]?keys?\b|\bseed\s+phrase\b"
    r"|\b(access|auth|bearer|refresh)[\s_-]?tokens?\b|\bpasswords?\b|\bsecret[\s_-]?keys?\b",
    re.IGNORECASE,
)
# Zero-width and other invisible format characters, bidi embeddings/overrides/isolates, and the
# tags block; Unicode category Cf catches the rest of the format characters.
_INVISIBLE_RANGES = (
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x2069),
    (0xFEFF, 0xFEFF),
    (0xE0000, 0xE007F),
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One marker: which kind, where (a path into the tool), and a short visible excerpt."""

    kind: str
    where: str
    excerpt: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string in a JSON value, object keys included, with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            yield sub + " (key)", str(key)
            yield from _strings(item, sub)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{path}[{i}]")


def _visible(text: str, start: int, end: int) -> str:
    """An excerpt around [start, end) with invisible characters shown as <U+XXXX>."""
    lo = max(0, start - 20)
    piece = text[lo : min(len(text), max(end, start + 1) + 40)][:EXCERPT]
    return "".join(
        f"<U+{ord(c):04X}>" if _is_invisible(c) or unicodedata.category(c) == "Cc" else c
        for c in piece
    )


def visible_text(text: str, limit: int = 20_000) -> str:
    """`text` for a reviewer's eyes: invisible, bidi and control characters (except newlines)
    shown as <U+XXXX>, so what the page shows is what a model would read."""
    return "".join(
        f"<U+{ord(c):04X}>"
        if c != "\n" and (_is_invisible(c) or unicodedata.category(c) == "Cc")
        else c
        for c in text[:limit]
    )


def _is_invisible(ch: str) -> bool:
    code = ord(ch)
    if any(lo <= code <= hi for lo, hi in _INVISIBLE_RANGES):
        return True
    return unicodedata.category(ch) == "Cf"


def _scan_text(where: str, text: str, is_description: bool) -> Iterator[Finding]:
    for m in _TAG.finditer(text):
        yield Finding(HIDDEN_INSTRUCTIONS, where, _visible(text, m.start(), m.end()))
    for m in _PHRASES.finditer(text):
        yield Finding(HIDDEN_INSTRUCTIONS, where, _visible(text, m.start(), m.end()))
    for m in _SECRETS.finditer(text):
        yield Finding(SECRETS, where, _visible(text, m.start(), m.end()))
    invisible = [i for i, c in enumerate(text) if _is_invisible(c)]
    if invisible:
        codes = sorted({f"U+{ord(text[i]):04X}" for i in invisible})[:8]
        excerpt = f"{len(invisible)} character(s) ({', '.join(codes)}): "
        excerpt += _visible(text, invisible[0], invisible[0] + 1)
        yield Finding(INVISIBLE, where, excerpt[: EXCERPT + 60])
    limit = LONG_DESCRIPTION if is_description else LONG_TEXT
    if len(text) > limit:
        yield Finding(LENGTH, where, f"{len(text):,} characters (flagged above {limit:,})")


def tool_scan(tool: dict[str, Any]) -> list[Finding]:
    """The markers found in one canonical tool (gateway.manifest), at most MAX_FINDINGS."""
    found: list[Finding] = []
    per_place: dict[tuple[str, str], int] = {}
    for where, text in _strings(tool, ""):
        if where.endswith(" (key)") and "." not in where:
            continue  # the canonical tool's own field names
        for finding in _scan_text(where, text, where == "description"):
            place = (finding.kind, finding.where)
            if per_place.get(place, 0) >= PER_PLACE:
                continue  # enough to make the reviewer look there
            per_place[place] = per_place.get(place, 0) + 1
            found.append(finding)
            if len(found) >= MAX_FINDINGS:
                return found
    return found


def manifest_scan(tools: list[dict[str, Any]]) -> dict[str, list[dict[str, str]]]:
    """{tool name: findings as dicts} for the tools that have any."""
    out: dict[str, list[dict[str, str]]] = {}
    for tool in tools:
        findings = tool_scan(tool)
        if findings:
            out[tool["name"]] = [f.as_dict() for f in findings]
    return out

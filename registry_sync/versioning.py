"""The registry's rule for which version of a name is the latest, used by the sync and the fake.

Upstream (`internal/service/registry_service.go`): semver always beats non-semver; two semver
versions compare by precedence; two non-semver versions compare by publish time (newer wins).
After a status change the highest non-deleted version is latest; when every version is deleted
the highest deleted one keeps the flag. See ../shared/registry/README.md, "Status, latest flag".
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)

_MIN_TIME = datetime.min.replace(tzinfo=UTC)


def semver_key(version: str) -> tuple[Any, ...] | None:
    """A sort key following semver 2.0 precedence, or None when `version` is not semver."""
    match = _SEMVER.match(version)
    if match is None:
        return None
    major, minor, patch, pre, _build = match.groups()
    if pre is None:
        # A release sorts above every pre-release of the same core version.
        return (int(major), int(minor), int(patch), 1, ())
    idents = tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part) for part in pre.split(".")
    )
    return (int(major), int(minor), int(patch), 0, idents)


def is_semver(version: str) -> bool:
    return _SEMVER.match(version) is not None


def latest_rank(version: str, published_at: datetime | None) -> tuple[Any, ...]:
    """Higher rank = more 'latest'. Publish time breaks ties and orders non-semver versions."""
    when = published_at or _MIN_TIME
    key = semver_key(version)
    if key is None:
        return (0, (), when)
    return (1, key, when)


@dataclass(frozen=True)
class VersionFacts:
    version: str
    published_at: datetime | None
    deleted: bool


def pick_latest(candidates: Iterable[VersionFacts]) -> str | None:
    """The version that should carry isLatest among one name's versions (None if empty)."""
    items = list(candidates)
    if not items:
        return None
    live = [c for c in items if not c.deleted] or items
    best = max(live, key=lambda c: latest_rank(c.version, c.published_at))
    return best.version

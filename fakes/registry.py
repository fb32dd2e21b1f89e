"""A loopback fake of the Official MCP Registry's read API, for tests, the benchmark and the demo.

It speaks the real wire format and semantics of `/v0.1` (../shared/registry/README.md): keyset
cursors over the byte order of (name, version), `limit` 1..100 else 422 problem+json, strict
`updated_since` that forces deleted rows in, `version=latest`, `search`, the per-name endpoints,
and the isLatest rules, including that a side-effect flip does NOT bump `updatedAt`. Faults
(429/5xx/HTML/hangs/resets) and cursor loops can be injected. Never used against real traffic.
"""

import bisect
import copy
import json
import random
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from registry_sync.client import format_rfc3339, parse_rfc3339
from registry_sync.snapshot import BUNDLED_SNAPSHOT, load_server_list
from registry_sync.versioning import VersionFacts, is_semver, pick_latest, semver_key

OFFICIAL = "io.modelcontextprotocol.registry/official"
SCHEMA_URL = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
FAULT_KINDS = ("429", "500", "502", "504", "html200", "hang", "reset")

_NGINX_HTML = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{code} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_REASONS = {429: "Too Many Requests", 502: "Bad Gateway", 504: "Gateway Time-out"}


def _official(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        meta = item.get("_meta")
        if isinstance(meta, dict):
            off = meta.get(OFFICIAL)
            if isinstance(off, dict):
                return off
    return {}


def _ts(value: Any) -> datetime | None:
    return parse_rfc3339(value) if isinstance(value, str) else None


@dataclass
class _Record:
    key: tuple[str, str, str]  # (name, version, tiebreak); tiebreak is "" except opaque items
    item: Any
    opaque: bool = False

    @property
    def name(self) -> str:
        return self.key[0]

    @property
    def version(self) -> str:
        return self.key[1]

    @property
    def official(self) -> dict[str, Any]:
        return _official(self.item)

    @property
    def deleted(self) -> bool:
        return self.official.get("status") == "deleted"

    @property
    def is_latest(self) -> bool:
        return self.official.get("isLatest") is True

    @property
    def updated_at(self) -> datetime | None:
        return _ts(self.official.get("updatedAt"))

    @property
    def published_at(self) -> datetime | None:
        return _ts(self.official.get("publishedAt"))


class FakeRegistry:
    """Holds a dataset keyed by (name, version) and serves it over loopback HTTP."""

    def __init__(self, items: Iterable[Any] = ()):
        self._lock = threading.RLock()
        self._records: dict[tuple[str, str, str], _Record] = {}
        self._sorted: list[tuple[str, str, str]] | None = None
        self._faults: deque[str] = deque()
        self._last_now = datetime(2000, 1, 1, tzinfo=UTC)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.hang_seconds = 2.0
        # "repeat": a cursor request answers with the same cursor; "empty": an empty page that
        # still carries a nextCursor. Both are loops a client must detect.
        self.cursor_loop: str | None = None
        self.request_paths: list[str] = []
        for item in items:
            self._put(item)

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> "FakeRegistry":
        items: list[Any] = []
        for path in paths:
            items.extend(load_server_list(path))
        return cls(items)

    @classmethod
    def shared(cls) -> "FakeRegistry":
        """The 247 versions of ../shared/registry/pages, from the bundled snapshot copy."""
        return cls(load_server_list(BUNDLED_SNAPSHOT))

    @classmethod
    def generated(cls, n_versions: int, *, seed: int = 20250930) -> "FakeRegistry":
        return cls(generate_items(n_versions, seed=seed))

    def __len__(self) -> int:
        return len(self._records)

    # -- mutations (tests, scenarios) ------------------------------------------------------

    def _put(self, item: Any, *, opaque: bool = False) -> _Record:
        with self._lock:
            if opaque:
                server = item.get("server") if isinstance(item, dict) else None
                server = server if isinstance(server, dict) else {}
                name = server["name"] if isinstance(server.get("name"), str) else ""
                version = str(server.get("version", ""))
                key = (name, version, f"#{len(self._records):08d}")
            else:
                server = item["server"]
                key = (str(server["name"]), str(server["version"]), "")
            record = _Record(key=key, item=item, opaque=opaque)
            if key not in self._records:
                self._sorted = None
            self._records[key] = record
            return record

    def add_opaque(self, items: Iterable[Any]) -> None:
        """Serve items verbatim even if malformed (no name, null, a string…), never re-flagged."""
        for item in items:
            self._put(copy.deepcopy(item), opaque=True)

    def now(self) -> datetime:
        """Wall-clock UTC at microsecond precision, strictly increasing across calls."""
        with self._lock:
            current = datetime.now(UTC)
            if current <= self._last_now:
                current = self._last_now + timedelta(microseconds=1)
            self._last_now = current
            return current

    def upsert_item(self, item: Any) -> None:
        """Store a response item verbatim (a scenario row), then settle isLatest for its name.

        An item flagged isLatest wins its name; otherwise the registry's rule picks the latest.
        The other rows' `updatedAt` is not touched, exactly like upstream.
        """
        with self._lock:
            record = self._put(copy.deepcopy(item))
            self._settle_latest(record.name, winner=record.version if record.is_latest else None)

    def load_scenario(self, source: str | Path | dict[str, Any]) -> int:
        """Upsert every item of a scenario ServerList (a file path or a parsed body)."""
        items = source["servers"] if isinstance(source, dict) else load_server_list(source)
        for item in items:
            self.upsert_item(item)
        return len(items)

    def publish(self, server: dict[str, Any]) -> dict[str, Any]:
        """Publish a server.json like the registry: a new row (maybe the new latest) or an edit."""
        server = copy.deepcopy(server.get("server", server))
        server.setdefault("$schema", SCHEMA_URL)
        name, version = server["name"], server["version"]
        with self._lock:
            now = format_rfc3339(self.now())
            key = (name, version, "")
            existing = self._records.get(key)
            if existing is not None:
                # An admin edit: content replaced, updatedAt bumped, status and flag kept.
                existing.item["server"] = server
                existing.official["updatedAt"] = now
                edited: dict[str, Any] = existing.item
                return edited
            current = next((r for r in self._name_records(name) if r.is_latest), None)
            wins = current is None or current.deleted or _publish_wins(version, current.version)
            item = {
                "server": server,
                "_meta": {
                    OFFICIAL: {
                        "status": "active",
                        "statusChangedAt": now,
                        "publishedAt": now,
                        "updatedAt": now,
                        "isLatest": wins,
                    }
                },
            }
            self._put(item)
            if wins:
                self._settle_latest(name, winner=version)
            return item

    def set_status(
        self, name: str, version: str, status: str, message: str | None = None
    ) -> dict[str, Any]:
        """Change a version's status (incl. restore); the name's latest is re-derived."""
        with self._lock:
            record = self._records[(name, version, "")]
            now = format_rfc3339(self.now())
            official = record.official
            official["status"] = status
            official["statusChangedAt"] = now
            official["updatedAt"] = now
            if message and status != "active":
                official["statusMessage"] = message[:500]
            else:
                official.pop("statusMessage", None)
            _reorder_official(record.item)
            self._settle_latest(name)
            changed: dict[str, Any] = record.item
            return changed

    def erase(self, name: str, version: str) -> None:
        """Hard-erase a row (moderation); if it was latest another version is promoted."""
        with self._lock:
            del self._records[(name, version, "")]
            self._sorted = None
            self._settle_latest(name)

    def inject(self, kind: str, times: int = 1) -> None:
        """Make the next `times` requests fail with `kind` (see FAULT_KINDS)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}")
        with self._lock:
            self._faults.extend([kind] * times)

    def items(self) -> list[Any]:
        with self._lock:
            return [self._records[k].item for k in self._keys()]

    def _settle_latest(self, name: str, *, winner: str | None = None) -> None:
        """Set isLatest on exactly one version of `name` without bumping anyone's updatedAt."""
        rows = self._name_records(name)
        if not rows:
            return
        if winner is None:
            winner = pick_latest(VersionFacts(r.version, r.published_at, r.deleted) for r in rows)
        for r in rows:
            official = r.official
            if official:
                official["isLatest"] = r.version == winner

    # -- reads -----------------------------------------------------------------------------

    def _keys(self) -> list[tuple[str, str, str]]:
        if self._sorted is None:
            # Python compares str by code point, which is UTF-8 byte order (Go string order).
            self._sorted = sorted(self._records)
        return self._sorted

    def _name_records(self, name: str) -> list[_Record]:
        keys = self._keys()
        start = bisect.bisect_left(keys, (name, "", ""))
        out = []
        for key in keys[start:]:
            if key[0] != name:
                break
            record = self._records[key]
            if not record.opaque:
                out.append(record)
        return out

    def list_servers(self, params: dict[str, list[str]]) -> tuple[int, Any]:
        """`GET /v0.1/servers` semantics; returns (status, body)."""
        limit_raw = _one(params, "limit")
        limit = 30
        if limit_raw is not None:
            try:
                limit = int(limit_raw)
            except ValueError:
                return 422, _problem(
                    422, "validation failed", "limit", limit_raw, "expected integer"
                )
            if not 1 <= limit <= 100:
                message = "expected number >= 1" if limit < 1 else "expected number <= 100"
                return 422, _problem(422, "validation failed", "limit", limit, message)
        include_raw = _one(params, "include_deleted")
        include_deleted = False
        if include_raw is not None:
            if include_raw not in ("true", "false", "1", "0"):
                return 422, _problem(
                    422, "validation failed", "include_deleted", include_raw, "expected boolean"
                )
            include_deleted = include_raw in ("true", "1")
        since: datetime | None = None
        since_raw = _one(params, "updated_since")
        if since_raw is not None:
            since = parse_rfc3339(since_raw)
            if since is None:
                return 400, {
                    "title": "Bad Request",
                    "status": 400,
                    "detail": "Invalid updated_since format: expected RFC3339 timestamp "
                    "(e.g., 2025-08-07T13:15:04.280Z)",
                }
            if include_raw is not None and not include_deleted:
                return 400, {
                    "title": "Bad Request",
                    "status": 400,
                    "detail": "include_deleted=false cannot be combined with updated_since",
                }
            include_deleted = True
        version_filter = _one(params, "version")
        search = _one(params, "search")
        cursor = _one(params, "cursor")

        with self._lock:
            keys = self._keys()
            start = 0
            if cursor:
                c_name, _, c_version = cursor.partition(":")
                start = bisect.bisect_right(keys, (c_name, c_version, "\U0010ffff"))
            page: list[_Record] = []
            if not (self.cursor_loop == "empty" and cursor):
                for key in keys[start:]:
                    record = self._records[key]
                    if not record.opaque:
                        if record.deleted and not include_deleted:
                            continue
                        if since is not None:
                            updated = record.updated_at
                            if updated is None or updated <= since:
                                continue
                        if version_filter == "latest":
                            if not record.is_latest:
                                continue
                        elif version_filter is not None and record.version != version_filter:
                            continue
                        if search and search.lower() not in record.name.lower():
                            continue
                    page.append(record)
                    if len(page) == limit:
                        break
            metadata: dict[str, Any] = {}
            if len(page) == limit:
                last = page[-1]
                metadata["nextCursor"] = f"{last.name}:{last.version}"
            if self.cursor_loop == "repeat" and cursor:
                metadata["nextCursor"] = cursor
            elif self.cursor_loop == "empty" and cursor:
                metadata["nextCursor"] = cursor + "~"
            metadata["count"] = len(page)
            body = {"servers": [copy.deepcopy(r.item) for r in page], "metadata": metadata}
        return 200, body

    def list_versions(self, name: str, params: dict[str, list[str]]) -> tuple[int, Any]:
        include_deleted = _one(params, "include_deleted") in ("true", "1")
        with self._lock:
            rows = [r for r in self._name_records(name) if include_deleted or not r.deleted]
            if not rows:
                return 404, {"title": "Not Found", "status": 404, "detail": "Server not found"}
            rows.sort(
                key=lambda r: (r.published_at or datetime.min.replace(tzinfo=UTC), r.version),
                reverse=True,
            )
            items = [copy.deepcopy(r.item) for r in rows]
        return 200, {"servers": items, "metadata": {"count": len(items)}}

    def get_version(self, name: str, version: str, params: dict[str, list[str]]) -> tuple[int, Any]:
        include_deleted = _one(params, "include_deleted") in ("true", "1")
        with self._lock:
            rows = self._name_records(name)
            if version == "latest":
                match = next((r for r in rows if r.is_latest), None)
            else:
                match = next((r for r in rows if r.version == version), None)
            if match is None or (match.deleted and not include_deleted):
                return 404, {"title": "Not Found", "status": 404, "detail": "Server not found"}
            return 200, copy.deepcopy(match.item)

    # -- HTTP ------------------------------------------------------------------------------

    def _next_fault(self) -> str | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def handle(self, handler: "_Handler") -> None:
        raw_path = handler.path
        with self._lock:
            self.request_paths.append(raw_path)
        fault = self._next_fault()
        if fault is not None:
            self._serve_fault(handler, fault)
            return
        split = urlsplit(raw_path)
        params = parse_qs(split.query, keep_blank_values=True)
        path = split.path
        status: int
        body: Any
        prefix = next((p for p in ("/v0.1", "/v0") if path.startswith(p + "/")), None)
        if prefix is None:
            status, body = 404, {"title": "Not Found", "status": 404, "detail": "no such route"}
        else:
            rest = path[len(prefix) :]
            status, body = self._route(rest, params)
        ctype = "application/problem+json" if status >= 400 else "application/json"
        _write(handler, status, json.dumps(body, ensure_ascii=False).encode(), ctype)

    def _route(self, rest: str, params: dict[str, list[str]]) -> tuple[int, Any]:
        if rest == "/health":
            return 200, {"status": "ok"}
        if rest == "/ping":
            return 200, {"pong": True}
        if rest == "/version":
            return 200, {"version": "fake", "git_commit": "fake", "build_time": "fake"}
        if rest == "/servers":
            return self.list_servers(params)
        if rest.startswith("/servers/"):
            # Split before decoding: the name's own "/" must arrive as %2F.
            segments = rest[len("/servers/") :].split("/")
            if len(segments) == 2 and segments[1] == "versions":
                return self.list_versions(unquote(segments[0]), params)
            if len(segments) == 3 and segments[1] == "versions":
                return self.get_version(unquote(segments[0]), unquote(segments[2]), params)
        return 404, {"title": "Not Found", "status": 404, "detail": "no such route"}

    def _serve_fault(self, handler: "_Handler", fault: str) -> None:
        if fault == "reset":
            handler.close_connection = True
            return
        if fault == "hang":
            time.sleep(self.hang_seconds)
            fault = "504"
        if fault == "500":
            body = {"title": "Internal Server Error", "status": 500, "detail": "database error"}
            _write(handler, 500, json.dumps(body).encode(), "application/problem+json")
        elif fault == "html200":
            _write(handler, 200, b"<html><body>Maintenance</body></html>", "text/html")
        else:
            code = int(fault)
            html = _NGINX_HTML.format(code=code, reason=_REASONS[code]).encode()
            _write(handler, code, html, "text/html")

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background thread; returns the base URL (port 0 = any free port)."""
        server = ThreadingHTTPServer((host, port), _Handler)
        server.daemon_threads = True
        server.block_on_close = False  # a hanging handler must not block stop()
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("fake registry not started")
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @contextmanager
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        url = self.start(host, port)
        try:
            yield url
        finally:
            self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-registry/1"
    # Headers and body are separate writes: without this, Nagle + delayed ACK add ~40 ms each.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.server.fake.handle(self)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _write(handler: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str) -> None:
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        handler.close_connection = True


def _one(params: dict[str, list[str]], key: str) -> str | None:
    values = params.get(key)
    return values[0] if values else None


def _problem(status: int, detail: str, field: str, value: Any, message: str) -> dict[str, Any]:
    return {
        "title": "Unprocessable Entity",
        "status": status,
        "detail": detail,
        "errors": [{"message": message, "location": f"query.{field}", "value": value}],
    }


def _publish_wins(new: str, current: str) -> bool:
    new_key, cur_key = semver_key(new), semver_key(current)
    if new_key is not None and cur_key is not None:
        return new_key > cur_key
    if new_key is None and cur_key is None:
        return True  # neither is semver: the newer publish wins
    return new_key is not None  # semver always beats non-semver


def _reorder_official(item: dict[str, Any]) -> None:
    """Keep the Go struct field order (statusMessage right after statusChangedAt)."""
    official = item["_meta"][OFFICIAL]
    order = ["status", "statusChangedAt", "statusMessage", "publishedAt", "updatedAt", "isLatest"]
    rest = {k: v for k, v in official.items() if k not in order}
    ordered = {k: official[k] for k in order if k in official}
    official.clear()
    official.update(ordered)
    official.update(rest)


# -- synthetic datasets --------------------------------------------------------------------

_WORD_TEXT = (
    "weather notes github jira slack postgres files search browser calendar maps docs sheets "
    "crm billing deploy k8s docker logs metrics vector rag pdf email translate finance stocks "
    "news youtube spotify notion linear figma s3 redis sqlite mongo shopify stripe zendesk"
)
_OWNER_TEXT = (
    "acme globex initech umbrella hooli vandelay stark wayne wonka tyrell cyberdyne soylent "
    "aperture blackmesa oscorp gringotts monarch dunder pied massive"
)
_WORDS = tuple(_WORD_TEXT.split(" "))
_OWNERS = tuple(_OWNER_TEXT.split(" "))


def generate_items(n_versions: int, *, seed: int = 20250930) -> list[dict[str, Any]]:
    """A deterministic registry of exactly `n_versions` rows over ~n/4 names, realistic shapes.

    About 1 in 40 names also exists with different case, ~1 in 30 versions is non-semver,
    ~6 % are deprecated and ~4 % deleted; isLatest follows the registry's rule per name.
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    start = datetime(2025, 6, 1, tzinfo=UTC)
    items: list[dict[str, Any]] = []
    name_index = 0
    seen_names: set[str] = set()
    while len(items) < n_versions:
        owner = rng.choice(_OWNERS)
        word = rng.choice(_WORDS)
        if rng.random() < 0.7:
            name = f"io.github.{owner}{name_index % 97}/{word}-mcp-{name_index}"
        else:
            name = f"com.{owner}/{word}-{name_index}"
        if name_index % 40 == 7 and items:
            # A case-only twin of an existing name: a different server.
            name = items[-1]["server"]["name"].upper()
        name_index += 1
        if name in seen_names:
            continue
        seen_names.add(name)
        count = min(rng.choice((1, 1, 2, 3, 4, 4, 5, 6, 8, 12)), n_versions - len(items))
        published = start + timedelta(seconds=rng.randint(0, 120 * 86400))
        rows: list[dict[str, Any]] = []
        major, minor, patch = 0, rng.randint(0, 3), 0
        for i in range(count):
            if rng.random() < 1 / 30:
                version = rng.choice(("auto", "latest-build", f"v{major}.{minor}.{patch}-{i}"))
                version = f"{version}-{i}" if version == "auto" and i else version
            else:
                version = f"{major}.{minor}.{patch}"
                if rng.random() < 0.05:
                    version += f"-beta.{i}"
            if rng.random() < 0.2:
                minor, patch = minor + 1, 0
            else:
                patch += 1
            if rng.random() < 0.03:
                major, minor, patch = major + 1, 0, 0
            published = published + timedelta(seconds=rng.randint(60, 30 * 86400))
            rows.append(_generated_item(rng, name, version, published))
        _dedupe_versions(rows)
        winner = pick_latest(
            VersionFacts(
                r["server"]["version"],
                _ts(r["_meta"][OFFICIAL]["publishedAt"]),
                r["_meta"][OFFICIAL]["status"] == "deleted",
            )
            for r in rows
        )
        for r in rows:
            r["_meta"][OFFICIAL]["isLatest"] = r["server"]["version"] == winner
        items.extend(rows)
    return items[:n_versions]


def _dedupe_versions(rows: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    for r in rows:
        version = r["server"]["version"]
        while version in seen:
            version += ".1" if is_semver(version) else "-x"
        r["server"]["version"] = version
        seen.add(version)


def _generated_item(
    rng: random.Random, name: str, version: str, published: datetime
) -> dict[str, Any]:
    word = name.rsplit("/", 1)[-1]
    owner = name.split("/", 1)[0].split(".")[-1]
    server: dict[str, Any] = {
        "$schema": SCHEMA_URL,
        "name": name,
        "description": f"MCP server for {word.replace('-', ' ')}: "
        + " ".join(rng.choices(_WORDS, k=rng.randint(3, 9))),
        "repository": {"url": f"https://github.com/{owner}/{word}", "source": "github"},
        "version": version,
    }
    if rng.random() < 0.4:
        server["title"] = word.replace("-", " ").title()[:100]
    if rng.random() < 0.6:
        kind = rng.choice(("npm", "pypi", "oci"))
        identifier = {
            "npm": f"@{owner}/{word}",
            "pypi": f"{word}",
            "oci": f"docker.io/{owner}/{word}:{version}",
        }[kind]
        package: dict[str, Any] = {
            "registryType": kind,
            "identifier": identifier,
            "transport": {"type": "stdio"},
        }
        if kind != "oci":
            package["version"] = version
        if rng.random() < 0.5:
            package["environmentVariables"] = [
                {
                    "name": f"{word.upper().replace('-', '_')}_API_KEY",
                    "description": "API key",
                    "isRequired": True,
                    "isSecret": True,
                }
            ]
        server["packages"] = [package]
    if "packages" not in server or rng.random() < 0.3:
        server["remotes"] = [
            {
                "type": rng.choice(("streamable-http", "streamable-http", "sse")),
                "url": f"https://mcp.{owner}.example.com/{word}",
            }
        ]
    roll = rng.random()
    status = "active" if roll < 0.90 else ("deprecated" if roll < 0.96 else "deleted")
    official: dict[str, Any] = {"status": status}
    updated = published
    if status == "active":
        official["statusChangedAt"] = format_rfc3339(published)
    else:
        updated = published + timedelta(seconds=rng.randint(60, 10 * 86400))
        official["statusChangedAt"] = format_rfc3339(updated)
        official["statusMessage"] = (
            "Superseded; please upgrade" if status == "deprecated" else "Removed by moderation"
        )
    if rng.random() < 0.02:
        updated = updated + timedelta(seconds=rng.randint(60, 86400))  # an admin edit
    official["publishedAt"] = format_rfc3339(published)
    official["updatedAt"] = format_rfc3339(updated)
    official["isLatest"] = False
    return {"server": server, "_meta": {OFFICIAL: official}}

"""Catalogue search benchmark: p50/p95 latency of the search API and pages over 50,000 listings.

What it does, in its own PostgreSQL database (default `tb_bench_search`, dropped and re-created
unless --reuse):
  1. migrates, bulk-inserts realistic mirror rows (`registry_sync.ServerVersion`, 1-3 versions per
     name, shapes as the registry serves them) for N names (default 50,000);
  2. times `marketplace.services.listings_refresh_from_registry` over all names (the real code
     path the registry sync calls, including the batch search-vector UPDATEs);
  3. starts the real ASGI app under uvicorn on a loopback port and measures, with httpx, the
     latency of `GET /api/v1/listings?...` for a mix of queries (common words, rare words, pasted
     names, name fragments that fall back to substring matching, filters without a query, deep
     pages), the `/` search page and detail pages (`/servers/<name>`, `/api/v1/listings/<name>`).

Requests are sequential from one client (latency, not throughput). Usage:
    .venv/bin/python benchmarks/search_bench.py [--listings 50000] [--requests 60] [--reuse]
"""

import argparse
import json
import logging
import os
import random
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_DB = "tb_bench_search"
PG_BASE = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")
PORT = int(os.environ.get("BENCH_SEARCH_PORT", "18250"))

COMMON_WORDS = [
    "server",
    "mcp",
    "api",
    "data",
    "search",
    "tool",
    "tools",
    "model",
    "context",
    "protocol",
    "access",
    "query",
    "database",
    "files",
    "github",
    "git",
    "code",
    "repository",
    "issues",
    "pull",
    "request",
    "web",
    "browser",
    "fetch",
    "scrape",
    "weather",
    "forecast",
    "calendar",
    "email",
    "slack",
    "chat",
    "message",
    "notes",
    "docs",
    "documentation",
    "knowledge",
    "memory",
    "vector",
    "embedding",
    "ai",
    "agent",
    "llm",
    "assistant",
    "automation",
    "workflow",
    "integration",
    "cloud",
    "aws",
    "azure",
    "gcp",
    "kubernetes",
    "docker",
    "container",
    "deploy",
    "monitoring",
    "logs",
    "metrics",
    "analytics",
    "finance",
    "stock",
    "crypto",
    "payments",
    "invoices",
    "crm",
    "sales",
    "marketing",
    "support",
    "ticket",
    "jira",
    "linear",
    "notion",
    "figma",
    "design",
    "image",
    "video",
    "audio",
    "transcription",
    "translation",
    "maps",
    "location",
    "travel",
    "flights",
    "hotels",
    "news",
    "research",
    "papers",
    "science",
    "math",
    "python",
    "javascript",
    "typescript",
    "rust",
    "sql",
    "postgres",
    "mysql",
    "redis",
    "mongodb",
    "spreadsheet",
    "excel",
    "sheets",
    "pdf",
    "markdown",
    "html",
    "json",
    "yaml",
    "security",
    "scan",
    "secrets",
    "auth",
    "identity",
    "users",
    "teams",
    "projects",
    "tasks",
    "time",
    "tracking",
    "health",
    "fitness",
    "food",
    "recipes",
    "shopping",
    "ecommerce",
    "store",
    "inventory",
    "orders",
    "shipping",
    "real",
    "estate",
    "legal",
    "compliance",
    "education",
    "learning",
    "quiz",
    "games",
]

SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "zu",
    "ter",
    "pra",
    "vex",
    "dor",
    "qui",
    "sel",
    "bran",
    "tov",
    "nix",
    "yel",
    "oru",
    "fen",
    "gal",
    "hap",
    "ist",
    "jor",
]


def rare_words(rng: random.Random, count: int) -> list[str]:
    words: set[str] = set()
    while len(words) < count:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def fixture_words() -> list[str]:
    """Words from the real registry pages bundled with the tests (if present)."""
    words: list[str] = []
    for page in sorted((ROOT / "tests" / "fixtures" / "registry").glob("page-*.json")):
        for item in json.loads(page.read_text()).get("servers", []):
            text = str(item.get("server", {}).get("description", ""))
            words.extend(w.lower() for w in re.findall(r"[A-Za-z]{3,}", text))
    return words


def zipf_picker(rng: random.Random, vocabulary: list[str]) -> Callable[[int], list[str]]:
    weights = [1.0 / (rank + 1) ** 0.9 for rank in range(len(vocabulary))]

    def pick(k: int) -> list[str]:
        return rng.choices(vocabulary, weights=weights, k=k)

    return pick


def recreate_database(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(db_name: str) -> None:
    os.environ["DATABASE_URL"] = f"{PG_BASE}/{db_name}"
    # The test settings module only adds local-safe secrets and fast hashers to base; nothing
    # that changes how the catalogue queries or renders.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    import django

    django.setup()


def populate(count: int, seed: int) -> list[str]:
    """Bulk-insert mirror rows for `count` names; returns the names."""
    from registry_sync.models import ServerVersion

    rng = random.Random(seed)
    rare = rare_words(rng, 4000)
    vocabulary = COMMON_WORDS + sorted(set(fixture_words()) - set(COMMON_WORDS)) + rare
    pick = zipf_picker(rng, vocabulary)
    namespaces = ["io.github.{u}", "com.{u}", "ai.{u}", "io.{u}", "dev.{u}"]
    statuses = ["active"] * 92 + ["deprecated"] * 4 + ["deleted"] * 3 + ["gone"]
    registry_types = ["npm"] * 5 + ["pypi"] * 3 + ["oci"] * 2 + ["nuget", "mcpb"]
    base_time = datetime(2025, 1, 1, tzinfo=UTC)
    names: list[str] = []
    seen: set[str] = set()
    rows: list[ServerVersion] = []
    while len(names) < count:
        user = f"{rng.choice(rare)}{rng.randint(1, 9999)}"
        slug = "-".join(pick(rng.randint(1, 3))) + rng.choice(
            ["", "-mcp", "-server", "-mcp-server"]
        )
        name = f"{rng.choice(namespaces).format(u=user)}/{slug}"
        if name in seen:
            continue
        seen.add(name)
        names.append(name)
        versions = rng.choice([1, 1, 1, 2, 2, 3])
        published = base_time + timedelta(minutes=rng.randint(0, 600_000))
        title = (
            " ".join(w.capitalize() for w in pick(rng.randint(1, 3))) if rng.random() < 0.6 else ""
        )
        description = " ".join(pick(rng.randint(6, 18))).capitalize() + "."
        has_remote = rng.random() < 0.35
        has_package = not has_remote or rng.random() < 0.4
        status = rng.choice(statuses)
        for index in range(versions):
            is_latest = index == versions - 1
            version = f"{rng.randint(0, 3)}.{index}.{rng.randint(0, 20)}"
            at = published + timedelta(days=30 * index)
            server: dict[str, Any] = {
                "$schema": "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json",
                "name": name,
                "description": description,
                "version": version,
                "repository": {"url": f"https://github.com/{user}/{slug}", "source": "github"},
            }
            if title:
                server["title"] = title
            if has_package:
                kind = rng.choice(registry_types)
                server["packages"] = [
                    {
                        "registryType": kind,
                        "identifier": f"{user}/{slug}" if kind == "oci" else slug,
                        "version": version,
                        "transport": {"type": "stdio"},
                        "environmentVariables": [{"name": "API_KEY", "isSecret": True}],
                    }
                ]
            if has_remote:
                server["remotes"] = [
                    {"type": "streamable-http", "url": f"https://{slug}.example.com/mcp"}
                ]
            row_status = status if is_latest or status in ("deleted", "gone") else "active"
            meta = {
                "status": row_status,
                "publishedAt": at.isoformat(),
                "updatedAt": at.isoformat(),
                "isLatest": is_latest,
            }
            raw = {"server": server, "_meta": {"io.modelcontextprotocol.registry/official": meta}}
            rows.append(
                ServerVersion(
                    name=name,
                    version=version + ("" if index == 0 else f"-{index}"),
                    status=row_status,
                    status_message="Superseded" if row_status == "deprecated" else "",
                    published_at=at,
                    upstream_updated_at=at,
                    is_latest=is_latest,
                    raw=raw,
                    content_hash=f"{len(rows):064x}",
                )
            )
        if len(rows) >= 5000:
            ServerVersion.objects.bulk_create(rows)
            rows = []
    ServerVersion.objects.bulk_create(rows)
    return names


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def start_server(db_name: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": f"{PG_BASE}/{db_name}",
        "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"],
        # As docker-compose sets it. Under ASGI it keeps nothing (each request has a thread of its
        # own); config/asgi.py pools connections instead (DATABASE_POOL, on unless set to 0).
        "DATABASE_CONN_MAX_AGE": os.environ.get("DATABASE_CONN_MAX_AGE", "60"),
    }
    proc = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "uvicorn"),
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(PORT),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
    )
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{PORT}/api/v1/listings?page_size=1", timeout=2)
            return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("uvicorn did not start")


def measure(client: "httpx.Client", paths: list[str], repeat: int) -> list[float]:
    timings: list[float] = []
    for i in range(repeat):
        path = paths[i % len(paths)]
        started = time.perf_counter()
        response = client.get(path)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(f"{path} -> {response.status_code}")
        timings.append(elapsed)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listings", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=60, help="requests per query kind")
    parser.add_argument("--db", default=DEFAULT_DB)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="keep an already populated database")
    args = parser.parse_args()

    if not args.reuse:
        recreate_database(args.db)
    setup_django(args.db)
    from django.core.management import call_command
    from django.db import connection

    from marketplace.models import Listing
    from marketplace.services import listings_refresh_from_registry
    from registry_sync.models import ServerVersion

    call_command("migrate", verbosity=0)
    if not args.reuse or not Listing.objects.exists():
        started = time.perf_counter()
        names = populate(args.listings, args.seed)
        insert_s = time.perf_counter() - started
        versions = ServerVersion.objects.count()
        print(f"inserted {versions} mirror rows for {len(names)} names in {insert_s:.1f} s")
        started = time.perf_counter()
        changed = listings_refresh_from_registry(names=names)
        refresh_s = time.perf_counter() - started
        print(f"listings_refresh_from_registry: {changed} listings in {refresh_s:.1f} s")
        started = time.perf_counter()
        again = listings_refresh_from_registry(names=names)
        print(f"  unchanged re-run: {again} written in {time.perf_counter() - started:.1f} s")
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE marketplace_listing")
            cursor.execute("VACUUM ANALYZE registry_sync_serverversion")
    total = Listing.objects.count()
    print(f"listings in the catalogue: {total}")

    rng = random.Random(args.seed + 1)
    sample = list(Listing.objects.filter(status="active").values_list("name", flat=True)[:2000])
    picked = rng.sample(sample, 40)
    rare = rare_words(random.Random(args.seed), 4000)
    fragments = [name.split("/")[0][: max(6, len(name.split("/")[0]) - 3)] for name in picked]
    kinds: dict[str, list[str]] = {
        "api q=common word": [
            f"/api/v1/listings?q={w}" for w in ["server", "data", "api", "search", "github", "tool"]
        ],
        "api q=two common words": [
            "/api/v1/listings?q=weather+forecast",
            "/api/v1/listings?q=github+issues",
            "/api/v1/listings?q=database+query",
        ],
        "api q=rare word": [f"/api/v1/listings?q={w}" for w in rng.sample(rare, 30)],
        "api q=pasted name": [f"/api/v1/listings?q={quote(n, safe='')}" for n in picked],
        "api q=name fragment": [f"/api/v1/listings?q={quote(f, safe='')}" for f in fragments],
        "api q=nothing matches": ["/api/v1/listings?q=zzqxv", "/api/v1/listings?q=qqqqzx"],
        "api filters, no q": [
            "/api/v1/listings",
            "/api/v1/listings?transport=remote",
            "/api/v1/listings?package_type=npm&ordering=-updated",
            "/api/v1/listings?transport=local&package_type=pypi",
            "/api/v1/listings?status=deprecated",
            "/api/v1/listings?ordering=-published&page_size=100",
        ],
        "api q + filter": [
            "/api/v1/listings?q=server&transport=remote",
            "/api/v1/listings?q=data&package_type=npm&ordering=-updated",
        ],
        "api deep page": [
            "/api/v1/listings?page=400&page_size=100",
            "/api/v1/listings?q=mcp&page=50",
        ],
        "api detail": [f"/api/v1/listings/{quote(n, safe='/')}" for n in picked],
        "page / (no q)": ["/"],
        "page / q=common": ["/?q=server", "/?q=data&transport=remote", "/?q=github"],
        "page / q=rare": [f"/?q={w}" for w in rng.sample(rare, 20)],
        "page /servers/<name>": [f"/servers/{quote(n, safe='/')}" for n in picked],
    }

    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)
    server = start_server(args.db)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=30) as client:
            for paths in kinds.values():  # warm-up: connections, plans, caches
                measure(client, paths, min(len(paths), 10))
            # One client, one request at a time, one server process: what is timed is the
            # server's work on a request, never a queue. Other processes on the machine still
            # take cores from it, so the load average is printed with the table.
            print(
                f"\nlatency over {total} listings, {args.requests} sequential requests per kind "
                f"(uvicorn, 1 worker, loopback, httpx); load average before: {_load()}"
            )
            print(f"{'kind':28} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
            for kind, paths in kinds.items():
                timings = measure(client, paths, args.requests)
                print(
                    f"{kind:28} {statistics.median(timings):8.1f} "
                    f"{percentile(timings, 95):8.1f} {max(timings):8.1f}"
                )
            print(f"load average after: {_load()}")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()

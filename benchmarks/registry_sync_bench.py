"""Benchmark the registry sync: a generated 20,000-version registry over loopback HTTP.

Starts the fake registry (`manage.py run_fake_registry --dataset generated:N`) in its own
process, recreates a PostgreSQL database of its own (`tb_bench_sync` by default) and migrates
it, then runs a full sync, an incremental sync with nothing changed, and a full re-walk with
nothing changed, printing wall time, requests, rows/s and peak memory for each.

    .venv/bin/python benchmarks/registry_sync_bench.py [--versions 20000] [--tracemalloc]

Pacing is off (test settings): at the default 120 requests/minute a 200-page walk would spend
about 100 s waiting on the token bucket alone, which says nothing about our code.
"""

import argparse
import logging
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tb_bench_sync")


def recreate_database(url: str) -> None:
    """Drop and create the benchmark's own database (never the default one)."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name.startswith("tb_bench"):
        raise SystemExit(f"refusing to recreate {name!r}: the bench only owns tb_bench* databases")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def rss_mb() -> float:
    # ru_maxrss is in KiB on Linux: the peak resident size of this process so far.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def start_fake(versions: int, seed: int) -> tuple[subprocess.Popen[str], str, float]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_fake_registry",
            "--port",
            "0",
            "--dataset",
            f"generated:{versions}",
            "--seed",
            str(seed),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout is not None else ""
    if not line.startswith("fake registry serving"):
        proc.kill()
        raise SystemExit(f"fake registry did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1].strip(), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=20250930)
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also report the Python heap peak (slower)"
    )
    parser.add_argument(
        "--with-hooks",
        action="store_true",
        help="also run settings.REGISTRY_NAMES_CHANGED_HOOKS (the marketplace refresh)",
    )
    args = parser.parse_args()

    recreate_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    from registry_sync.models import ServerVersion, SyncKind
    from registry_sync.services import registry_sync_run

    if not args.with_hooks:
        settings.REGISTRY_NAMES_CHANGED_HOOKS = []
    settings.REGISTRY_MAX_REQUESTS_PER_MINUTE = 0

    proc, url, fake_seconds = start_fake(args.versions, args.seed)
    print(
        f"registry_sync bench: {args.versions} generated versions (seed {args.seed}), fake "
        f"registry in its own process at {url} (ready in {fake_seconds:.1f}s), "
        f"database {urlsplit(os.environ['DATABASE_URL']).path.lstrip('/')}, "
        f"hooks {'on' if args.with_hooks else 'off'}, pacing off"
    )
    baseline = rss_mb()
    print(f"baseline RSS after Django setup + migrate: {baseline:.0f} MB")
    try:
        for label, kind in (
            ("full (empty db)", SyncKind.FULL),
            ("incremental, nothing changed", SyncKind.INCREMENTAL),
            ("full re-walk, nothing changed", SyncKind.FULL),
        ):
            if args.tracemalloc:
                tracemalloc.start()
            started = time.perf_counter()
            run = registry_sync_run(kind=kind, url=url)
            seconds = time.perf_counter() - started
            heap = ""
            if args.tracemalloc:
                heap = f", Python heap peak {tracemalloc.get_traced_memory()[1] / 2**20:.0f} MB"
                tracemalloc.stop()
            handled = run.created + run.updated + run.unchanged
            print(
                f"{label:32s} {run.status}: wall {seconds:6.2f}s, requests {run.requests}, "
                f"pages {run.pages}, items {run.seen}, rows/s {handled / seconds:,.0f}, "
                f"created {run.created}, updated {run.updated}, unchanged {run.unchanged}, "
                f"quarantined {run.quarantined}, gone {run.gone}, flips {run.latest_flips}, "
                f"peak RSS {rss_mb():.0f} MB{heap}"
            )
        names = ServerVersion.objects.values("name").distinct().count()
        print(f"mirror: {ServerVersion.objects.count()} rows over {names} names")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()

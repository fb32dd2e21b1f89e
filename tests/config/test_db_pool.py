"""The web process reuses PostgreSQL connections (config/asgi.py turns DATABASE_POOL on).

Under ASGI each request's sync code runs in a thread of its own and Django keeps connections per
thread, so without the pool every request opened a new PostgreSQL session, whatever
CONN_MAX_AGE said. Counted here with PostgreSQL's own per-database session counter against the
real uvicorn process.
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
from django.db import connection

from tests.gateway.conftest import start, stop, test_database_url

PORT = 18983  # free among the suite's fixed ports
REQUESTS = 25


def _sessions() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def _settled_sessions() -> int:
    """The counter once the server's backends have reported their sessions (at exit)."""
    last, deadline = _sessions(), time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _sessions()
        if now == last:
            return now
        last = now
    return last


def _sessions_for_requests(extra_env: dict[str, str]) -> int:
    before = _settled_sessions()
    env = {
        "DATABASE_URL": test_database_url(),
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_CONN_MAX_AGE": "60",  # as docker-compose sets it
        "LOG_LEVEL": "WARNING",
        **extra_env,
    }
    cmd = [sys.executable, "-m", "uvicorn", "config.asgi:application"]
    cmd += ["--host", "127.0.0.1", "--port", str(PORT), "--no-access-log"]
    proc: subprocess.Popen[bytes] = start(cmd, PORT, env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=10) as client:
            for _ in range(REQUESTS):
                assert client.get("/api/v1/listings?q=weather").status_code == 200
    finally:
        stop(proc)  # its connections close, so PostgreSQL counts them
    return _settled_sessions() - before


@pytest.mark.usefixtures("transactional_db")
def test_the_web_process_reuses_connections_across_requests() -> None:
    pooled = _sessions_for_requests({"DATABASE_POOL_MAX_SIZE": "3"})
    assert 1 <= pooled <= 3, f"{pooled} sessions for {REQUESTS} requests"
    # The same server without the pool: a session per request, which is what the pool saves.
    unpooled = _sessions_for_requests({"DATABASE_POOL": "0"})
    assert unpooled >= REQUESTS, f"{unpooled} sessions for {REQUESTS} requests"

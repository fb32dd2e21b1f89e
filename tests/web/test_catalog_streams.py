"""The anonymous /mcp-catalog GET stream is bounded in time and per client address, on the
production ASGI app (config.asgi) under uvicorn, also across two web processes (the slots are
in Redis). Clients get their own loopback addresses."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.conf import settings

from tests.gateway.conftest import start, stop, test_database_url

PORT, SECOND_PORT = 18812, 18813
MAX_SECONDS = 2.0
PER_ADDRESS = 2


def _serve(port: int) -> subprocess.Popen[bytes]:
    env = {
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "LOG_LEVEL": "WARNING",
        "CATALOG_STREAM_MAX_SECONDS": str(MAX_SECONDS),
        "CATALOG_STREAMS_PER_ADDRESS": str(PER_ADDRESS),
    }
    cmd = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
    return start(cmd, port, env)


@pytest.fixture(scope="module")
def site(django_db_setup: None, django_db_blocker: Any) -> Iterator[str]:
    proc = _serve(PORT)
    yield f"http://127.0.0.1:{PORT}"
    stop(proc)


@pytest.fixture(scope="module")
def second_site(site: str) -> Iterator[int]:
    """Another web process of the same site (same database and Redis)."""
    proc = _serve(SECOND_PORT)
    yield SECOND_PORT
    stop(proc)


def open_stream(source: str, port: int = PORT) -> tuple[socket.socket, bytes]:
    """A GET stream from `source`; returns the socket and the response head."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.sendall(
        b"GET /mcp-catalog HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        b"MCP-Protocol-Version: 2025-06-18\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, "closed before the response head"
        head += chunk
    return sock, head


def read_to_end(sock: socket.socket) -> bytes:
    """Everything up to the chunked body's last chunk (or EOF)."""
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.django_db(transaction=True)
def test_streams_per_address_are_limited_and_each_ends_in_time(site: str):
    opened = time.monotonic()
    first, head1 = open_stream("127.0.0.2")
    second, head2 = open_stream("127.0.0.2")
    assert head1.startswith(b"HTTP/1.1 200")
    assert b"text/event-stream" in head1
    assert head2.startswith(b"HTTP/1.1 200")

    third, head3 = open_stream("127.0.0.2")
    assert head3.startswith(b"HTTP/1.1 429")
    assert b"retry-after: 10" in head3.lower()
    third.close()
    # Other addresses are not affected, nor is the catalogue's POST from the same address.
    elsewhere, head4 = open_stream("127.0.0.3")
    assert head4.startswith(b"HTTP/1.1 200")
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2")) as http:
        ping = http.post(
            f"{site}/mcp-catalog",
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={"Accept": "application/json, text/event-stream"},
        )
    assert ping.status_code == 200

    # Each stream ends (cleanly: the chunked body's last chunk) after the maximum duration.
    for sock in (first, second, elsewhere):
        assert read_to_end(sock).endswith(b"0\r\n\r\n")
        sock.close()
    took = time.monotonic() - opened
    assert MAX_SECONDS - 0.2 < took < MAX_SECONDS + 2

    # Ended streams no longer count against the address.
    again, head5 = open_stream("127.0.0.2")
    assert head5.startswith(b"HTTP/1.1 200")
    again.close()


@pytest.mark.django_db(transaction=True)
def test_the_limit_holds_across_web_processes(site: str, second_site: int) -> None:
    first, head1 = open_stream("127.0.0.4")
    second, head2 = open_stream("127.0.0.4", second_site)
    assert head1.startswith(b"HTTP/1.1 200")
    assert head2.startswith(b"HTTP/1.1 200")
    for port in (PORT, second_site):  # each process has one open: together they have two
        third, head3 = open_stream("127.0.0.4", port)
        assert head3.startswith(b"HTTP/1.1 429"), head3
        third.close()
    for sock in (first, second):
        read_to_end(sock)
        sock.close()
    again, head4 = open_stream("127.0.0.4", second_site)  # released when they ended
    assert head4.startswith(b"HTTP/1.1 200")
    again.close()

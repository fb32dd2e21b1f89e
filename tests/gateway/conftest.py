"""Gateway test wiring: real upstream processes and real gateway processes (uvicorn) on loopback.

Gateways run as subprocesses against the pytest database, so tests that need rows visible to
them use `transactional_db`. Entitlements are seeded into the gateway's Redis cache in its real
format (`tb:ent:<key hash>` = JSON of `asdict(Entitlement)`), or come from real billing rows.
Ports 18500-18799 belong to these tests (moved by TB_TEST_PORT_BASE).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from billing.entitlements import Entitlement, ToolPrice
from billing.keys import key_generate, key_hash

ROOT = Path(__file__).resolve().parents[2]
UPSTREAMS = Path(__file__).resolve().parent / "upstreams"
PEERS = ROOT / ".mcp-peers"
# TB_TEST_PORT_BASE moves the fixtures' ports, so two checkouts can run gateway tests at once.
PORT_BASE = int(os.environ.get("TB_TEST_PORT_BASE", "18500"))
SCRIPTED_PORT, MCP_PORT, MCP_JSON_PORT, EVERYTHING_PORT = range(PORT_BASE + 10, PORT_BASE + 14)
GATEWAY_PORT = PORT_BASE + 20
ALLOWLIST = ",".join(
    f"127.0.0.1:{p}" for p in (SCRIPTED_PORT, MCP_PORT, MCP_JSON_PORT, EVERYTHING_PORT)
)
ALLOWED_ORIGIN = "http://allowed.example"


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for port {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def start(
    cmd: list[str], port: int, env: dict[str, str] | None = None, stderr: object = None
) -> subprocess.Popen[bytes]:
    """Start a server process and wait for its port. The port must be free first: otherwise
    the wait would be answered by whatever already listens there (another fixture's server),
    and the test would run against the wrong process."""
    if not port_is_free(port):
        raise RuntimeError(f"port {port} is already taken; two fixtures share it?")
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=stderr,  # type: ignore[arg-type]
    )
    try:
        wait_port(port, proc)
    except Exception:
        stop(proc)
        raise
    return proc


@pytest.fixture(scope="session")
def upstream_processes() -> Iterator[None]:
    procs = [
        start(
            [sys.executable, str(UPSTREAMS / "scripted_upstream.py"), "--port", str(SCRIPTED_PORT)],
            SCRIPTED_PORT,
        ),
        start(
            [sys.executable, str(UPSTREAMS / "mcp_upstream.py"), "--port", str(MCP_PORT)], MCP_PORT
        ),
        start(
            [
                sys.executable,
                str(UPSTREAMS / "mcp_upstream.py"),
                "--port",
                str(MCP_JSON_PORT),
                "--stateless",
                "--json",
            ],
            MCP_JSON_PORT,
        ),
    ]
    yield
    for proc in procs:
        stop(proc)


def test_database_url() -> str:
    from django.db import connection

    db = connection.settings_dict
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


test_database_url.__test__ = False  # type: ignore[attr-defined]


def gateway_env(**extra: str) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "GATEWAY_UPSTREAM_ALLOWLIST": ALLOWLIST,
        "GATEWAY_ALLOWED_ORIGINS": ALLOWED_ORIGIN,
        "ALLOWED_HOSTS": "127.0.0.1,localhost,[::1],gw.example",
        "GATEWAY_UPSTREAM_CACHE_SECONDS": "0.5",
        "GATEWAY_UPSTREAM_READ_TIMEOUT": "1.5",
        "GATEWAY_STREAM_IDLE_TIMEOUT": "1.5",
        "LOG_LEVEL": "WARNING",
        # Many tests send bad keys from 127.0.0.1 to one session gateway: the per-address
        # throttle runs (and counts) but never answers 429 there (test_auth_throttle.py does).
        "GATEWAY_AUTH_FAILURES_PER_MINUTE": "100000",
        **extra,
    }


def start_gateway(port: int, stderr: object = None, **extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(port)]
    cmd += ["--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]
    return start(cmd, port, gateway_env(**extra), stderr=stderr)


@pytest.fixture(scope="session")
def gateway(
    django_db_setup: None, django_db_blocker: object, upstream_processes: None
) -> Iterator[str]:
    proc = start_gateway(GATEWAY_PORT)
    yield f"http://127.0.0.1:{GATEWAY_PORT}"
    stop(proc)


@pytest.fixture
def hosted(transactional_db: None) -> Callable[..., str]:
    """Create a listing served from a loopback upstream, its tools approved by its creator
    (the scripted upstream's known tools, or what discovery finds on any other running
    server); returns its name."""
    from tests.gateway.factories import SCRIPTED_TOOLS, HostedUpstreamFactory, served_tools

    def make(port: int = SCRIPTED_PORT, secret: str = "") -> str:
        url = f"http://127.0.0.1:{port}/mcp"
        tools = SCRIPTED_TOOLS if port == SCRIPTED_PORT else served_tools(url)
        up = HostedUpstreamFactory(url=url, secret=secret, approved=tools)
        return up.listing.name

    return make


def entitlement(name: str, **overrides: object) -> Entitlement:
    base = Entitlement(
        key_id=abs(hash(name)) % 10_000_000 + 1,
        license_id=abs(hash(name)) % 10_000_000 + 1,
        listing_id=1,
        listing_name=name,
        plan_id=7,
        plan_kind="per_call",
        status="active",
        currency="usd",
        rate_limit_per_minute=600,
        included_calls=None,
        hard_cap=False,
        unit_amount=5,
        overage_unit_amount=0,
        tool_prices={"secret_tool": ToolPrice(unit_amount=0, excluded=True)},
        stripe_customer_id="cus_test",
        meter_event_name="tb_calls",
        period_start=time.time() - 3600,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


_key_ids = iter(range(1_000_000, 2_000_000))


@pytest.fixture
def seed_key(redis_client: object) -> Callable[..., str]:
    """A raw key whose entitlement sits in the gateway's Redis cache (its real format)."""
    import json

    def make(name: str, ttl: int = 600, **overrides: object) -> str:
        raw = key_generate(live=False)
        from marketplace.models import Listing

        if "key_id" not in overrides:
            overrides["key_id"] = next(_key_ids)
        # A key of its own license (the plan's rate limit and quota are the license's).
        overrides.setdefault("license_id", overrides["key_id"])
        listing_id = Listing.objects.filter(name=name).values_list("pk", flat=True).first()
        overrides.setdefault("listing_id", listing_id or 1)
        ent = entitlement(name, **overrides)
        redis_client.set(f"tb:ent:{key_hash(raw)}", json.dumps(asdict(ent)), ex=ttl)  # type: ignore[attr-defined]
        return raw

    return make


def seed_private(port: int, name: str, **overrides: object) -> str:
    """`seed_key` for a test's own redis-server on `port`: a raw key whose entitlement sits in
    that Redis's cache for 10 minutes."""
    import json

    import redis

    raw = key_generate(live=False)
    key_id = next(_key_ids)
    overrides.setdefault("license_id", key_id)
    ent = entitlement(name, key_id=key_id, **overrides)
    client = redis.Redis(port=port)
    client.set(f"tb:ent:{key_hash(raw)}", json.dumps(asdict(ent)), ex=600)
    client.close()
    return raw


def rpc(method: str, params: dict[str, object] | None = None, rid: object = 1) -> dict[str, object]:
    msg: dict[str, object] = {"jsonrpc": "2.0", "method": method, "id": rid}
    if params is not None:
        msg["params"] = params
    return msg


def post(
    base: str,
    name: str,
    body: object,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    **kw: object,
) -> httpx.Response:
    h = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if key:
        h["Authorization"] = f"Bearer {key}"
    h.update(headers or {})
    content = body if isinstance(body, bytes) else __import__("json").dumps(body).encode()
    return httpx.post(f"{base}/mcp/{name}", content=content, headers=h, timeout=10, **kw)  # type: ignore[arg-type]


def drain() -> int:
    """Run the real drain once (what the Celery task does)."""
    from gateway.usage import redis_client, usage_drain

    time.sleep(0.05)  # a finished call's record reaches Redis within 2 ms of the response
    return usage_drain(client=redis_client(), consumer="pytest")

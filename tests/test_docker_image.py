"""The Docker image builds and serves, shown without a Docker daemon (none runs here).

The test reads the Dockerfile, copies exactly what its COPY lines copy (minus .dockerignore)
into an empty folder, installs the project there into a fresh venv as `pip install .` does
(dependencies come from this checkout's venv: no network), runs the build's collectstatic
line as written with the build's environment (no secrets), then, with the production
environment of .env.example: `check --deploy`, `migrate` on a fresh PostgreSQL database, the
image's CMD on a free loopback port, and a metered call through the gateway that returns a
receipt. Anything the image forgot to copy fails one of these steps.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from tests.deployenv import ROOT, production_env
from tests.gateway.conftest import stop, wait_port

pytestmark = pytest.mark.slow

UPSTREAM = ROOT / "tests" / "gateway" / "upstreams" / "scripted_upstream.py"
# A Redis database of its own (the test suite uses 15), emptied before and after.
REDIS_URL = "redis://127.0.0.1:6379/13"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


# --- reading the Dockerfile ---------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    out = []
    for line in lines:
        word, _, args = line.partition(" ")
        out.append((word.upper(), args.strip()))
    return out


def _dockerignore() -> list[str]:
    path = ROOT / ".dockerignore"
    if not path.exists():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Enough of Docker's matching for our patterns: paths, `**/name` and globs."""
    parts = rel.split("/")
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        if fnmatch.fnmatch(rel, pattern) or any(fnmatch.fnmatch(p, bare) for p in parts):
            return True
    return False


def _copy(src: Path, dest: Path, rel: str, ignore: list[str]) -> None:
    if _ignored(rel, ignore):
        return
    if src.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        for child in src.iterdir():
            _copy(child, dest / child.name, f"{rel}/{child.name}", ignore)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)


def assemble_context(dockerfile: str, target: Path) -> tuple[str, dict[str, str], list[str]]:
    """Copy what the COPY lines copy into `target` (the image's WORKDIR). Returns the WORKDIR,
    the ENV values and the RUN lines."""
    workdir = "/"
    env: dict[str, str] = {}
    runs: list[str] = []
    ignore = _dockerignore()
    for word, args in _instructions(dockerfile):
        if word == "WORKDIR":
            workdir = args
        elif word == "ENV":
            env.update(dict(item.split("=", 1) for item in shlex.split(args)))
        elif word == "RUN":
            runs.append(args)
        elif word == "COPY":
            parts = json.loads(args) if args.startswith("[") else shlex.split(args)
            parts = [p for p in parts if not p.startswith("--")]
            *sources, dest = parts
            dest_abs = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"
            assert dest_abs.startswith(workdir), f"COPY outside WORKDIR: {args}"
            dest_path = target / dest_abs[len(workdir) :].lstrip("/")
            for source in sources:
                src = ROOT / source
                assert src.exists(), f"COPY {source}: not in the build context"
                into_dir = dest.endswith("/") or len(sources) > 1
                final = dest_path / src.name if (into_dir and src.is_file()) else dest_path
                _copy(src, final, source.rstrip("/"), ignore)
    return workdir, env, runs


def _cmd(dockerfile: str) -> list[str]:
    cmds = [json.loads(args) for word, args in _instructions(dockerfile) if word == "CMD"]
    assert len(cmds) == 1, "the image has one CMD (exec form)"
    return cmds[0]


# --- processes --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(cmd: list[str] | str, *, cwd: Path, env: dict[str, str], timeout: float = 180) -> str:
    result = subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        shell=isinstance(cmd, str),
    )
    assert result.returncode == 0, f"{cmd!r} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def fresh_database() -> Iterator[str]:
    name = f"tb_image_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def own_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def upstream_port() -> Iterator[int]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(UPSTREAM), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        yield port
    finally:
        stop(proc)


_SEED = """
import json, django
django.setup()
from billing.services.licenses import api_key_create
from tests.billing.factories import LicenseFactory
from tests.gateway.factories import HostedUpstreamFactory

up = HostedUpstreamFactory(url={url!r})
lic = LicenseFactory(plan_price__plan__listing=up.listing, plan_price__per_call_amount=3)
_, raw = api_key_create(license=lic)
print(json.dumps({{"listing": up.listing.name, "key": raw}}))
"""


def test_the_image_builds_migrates_serves_and_meters_a_call(
    tmp_path: Path, fresh_database: str, own_redis: redis.Redis, upstream_port: int
) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    app = tmp_path / "app"
    app.mkdir()
    workdir, image_env, runs = assemble_context(dockerfile, app)
    assert workdir == "/app"

    # The image's venv: a fresh interpreter environment that sees this venv's packages (the
    # dependencies pip would download) but not this checkout (no editable install, no cwd).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(
        subprocess.check_output(
            [
                venv / "bin" / "python",
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            text=True,
        ).strip()
    )
    (site / "_parent_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    path = f"{venv / 'bin'}:{os.environ['PATH']}"

    # RUN pip install . (the rest of that RUN line creates the user; nothing to check here).
    assert any(run.startswith("pip install . ") for run in runs), runs
    install = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps"]
    install += ["--no-build-isolation", "--no-index", "--ignore-installed", "."]
    _run(install, cwd=app, env={"PATH": path, "HOME": str(tmp_path)}, timeout=300)
    site_dirs = {p.name for p in site.iterdir()}
    assert {"config", "gateway", "web"} <= site_dirs, sorted(site_dirs)

    # The build's collectstatic line, run as written, with only the build's environment.
    (collect,) = [run for run in runs if "collectstatic" in run]
    _run(collect, cwd=app, env={"PATH": path, "HOME": str(tmp_path), **image_env})
    assert (app / "var" / "static" / "web" / "ui.css").exists()

    python = str(venv / "bin" / "python")
    env = production_env(
        DATABASE_URL=fresh_database,
        REDIS_URL=REDIS_URL,
        CELERY_BROKER_URL=REDIS_URL,
        PATH=path,
        HOME=str(tmp_path),
        **image_env,
    )
    # What production leaves out is really out: the product starts without it.
    for absent in ("demo", "fakes", "tests"):
        probe = subprocess.run(
            [python, "-c", f"import {absent}"], cwd=app, env=env, capture_output=True
        )
        assert probe.returncode != 0, f"{absent} is importable inside the image"

    _run([python, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=app, env=env)
    _run([python, "manage.py", "migrate", "--noinput"], cwd=app, env=env)

    # Rows a creator and a buyer would have made: a hosted listing on a loopback upstream and a
    # license key (seeded from this checkout's factories, into the image's database).
    seeded = json.loads(
        _run(
            [sys.executable, "-c", _SEED.format(url=f"http://127.0.0.1:{upstream_port}/mcp")],
            cwd=ROOT,
            env=env,
        )
        .strip()
        .splitlines()[-1]
    )

    port = _free_port()
    cmd = _cmd(dockerfile)
    assert cmd[0] == "uvicorn"
    args = [{"0.0.0.0": "127.0.0.1", "8000": str(port)}.get(a, a) for a in cmd[1:]]  # noqa: S104
    server_env = {**env, "GATEWAY_UPSTREAM_ALLOWLIST": f"127.0.0.1:{upstream_port}"}
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [python, "-m", "uvicorn", *args], cwd=app, env=server_env, stdout=log, stderr=log
    )
    try:
        wait_port(port, server, timeout=30)
        base = f"http://127.0.0.1:{port}"
        host = env["ALLOWED_HOSTS"].split(",")[0]
        # The TLS proxy in front says https; without it Django redirects there.
        tls = {"Host": host, "X-Forwarded-Proto": "https"}
        with httpx.Client(base_url=base, timeout=10) as http:
            plain = http.get("/healthz", headers={"Host": host})
            assert plain.status_code == 301
            assert plain.headers["location"] == f"https://{host}/healthz"
            health = http.get("/healthz", headers=tls)
            assert (health.status_code, health.json()) == (200, {"status": "ok"})
            assert (
                "max-age=31536000; includeSubDomains; preload"
                in health.headers["strict-transport-security"]
            )
            css = http.get("/static/web/ui.css", headers=tls)
            assert css.status_code == 200
            missing = http.get("/api/v1/no-such-route", headers=tls)
            assert missing.status_code == 404
            assert missing.headers["content-type"] == "application/json"

            call = http.post(
                f"/mcp/{seeded['listing']}",
                headers={
                    **tls,
                    "Authorization": f"Bearer {seeded['key']}",
                    "Accept": "application/json, text/event-stream",
                    "Content-Type": "application/json",
                },
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "tools/call",
                    "params": {"name": "ok", "arguments": {}},
                },
            )
        assert call.status_code == 200, call.text
        receipt = call.json()["result"]["_meta"]["dev.toolbooth/receipt"]
        assert receipt["amount"] == 3
        assert receipt["call_id"]
        # The call reaches the durable usage stream the worker drains into the ledger (the
        # record is written just after the response).
        deadline = time.monotonic() + 5
        while own_redis.xlen(env["GATEWAY_USAGE_STREAM"]) < 1:
            assert time.monotonic() < deadline, "no usage record on the stream after 5 s"
            time.sleep(0.05)
        assert own_redis.xlen(env["GATEWAY_USAGE_STREAM"]) == 1
    finally:
        stop(server)
        log.close()
    output = (tmp_path / "server.log").read_text()
    assert "Traceback" not in output, output

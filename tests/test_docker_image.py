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
import re
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
import yaml

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


@pytest.fixture(scope="module")
def fresh_database() -> Iterator[str]:
    name = f"tb_image_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def own_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
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
from tests.billing.factories import MeteredLicenseFactory
from tests.gateway.factories import HostedUpstreamFactory

up = HostedUpstreamFactory(url={url!r})
lic = MeteredLicenseFactory(
    plan_price__plan__listing=up.listing, plan_price__per_call_amount=3
)
_, raw = api_key_create(license=lic)
print(json.dumps({{"listing": up.listing.name, "key": raw}}))
"""


@dataclass
class Image:
    app: Path  # the image's /app
    python: str  # the image's interpreter
    env: dict[str, str]  # the production environment of .env.example, secrets filled
    site: Path  # the venv's site-packages


@dataclass
class Served:
    image: Image
    base: str
    port: int
    host: str  # the site's host name (first of ALLOWED_HOSTS)
    listing: str
    key: str
    log: Path


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, fresh_database: str) -> Image:
    """The build (COPY, pip install, collectstatic), then check --deploy and migrate."""
    tmp_path = tmp_path_factory.mktemp("image")
    dockerfile = (ROOT / "Dockerfile").read_text()
    app = tmp_path / "app"
    app.mkdir()
    workdir, image_env, runs = assemble_context(dockerfile, app)
    assert workdir == "/app"

    # The image's venv: a fresh interpreter environment that sees this venv's packages (the
    # dependencies pip would download) but not this checkout (no editable install, no cwd).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([python, "-c", purelib], text=True).strip())
    (site / "_parent_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    path = f"{venv / 'bin'}:{os.environ['PATH']}"

    # RUN pip install . (the rest of that RUN line creates the user; nothing to check here).
    assert any(run.startswith("pip install . ") for run in runs), runs
    install = [python, "-m", "pip", "install", "-q", "--no-deps"]
    install += ["--no-build-isolation", "--no-index", "--ignore-installed", "."]
    _run(install, cwd=app, env={"PATH": path, "HOME": str(tmp_path)}, timeout=300)

    # The build's collectstatic line, run as written, with only the build's environment.
    (collect,) = [run for run in runs if "collectstatic" in run]
    _run(collect, cwd=app, env={"PATH": path, "HOME": str(tmp_path), **image_env})

    env = production_env(
        DATABASE_URL=fresh_database,
        REDIS_URL=REDIS_URL,
        CELERY_BROKER_URL=REDIS_URL,
        PATH=path,
        HOME=str(tmp_path),
        **image_env,
    )
    _run([python, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=app, env=env)
    _run([python, "manage.py", "migrate", "--noinput"], cwd=app, env=env)
    return Image(app=app, python=python, env=env, site=site)


@pytest.fixture(scope="module")
def served(image: Image, upstream_port: int, own_redis: redis.Redis) -> Iterator[Served]:
    """The image's CMD on a free loopback port, with a hosted listing and a buyer's key."""
    # Rows a creator and a buyer would have made: a hosted listing on a loopback upstream and a
    # license key (seeded from this checkout's factories, into the image's database).
    seed = _SEED.format(url=f"http://127.0.0.1:{upstream_port}/mcp")
    out = _run([sys.executable, "-c", seed], cwd=ROOT, env=image.env)
    seeded = json.loads(out.strip().splitlines()[-1])

    port = _free_port()
    cmd = _cmd((ROOT / "Dockerfile").read_text())
    assert cmd[0] == "uvicorn"
    args = [{"0.0.0.0": "127.0.0.1", "8000": str(port)}.get(a, a) for a in cmd[1:]]  # noqa: S104
    server_env = {**image.env, "GATEWAY_UPSTREAM_ALLOWLIST": f"127.0.0.1:{upstream_port}"}
    log_path = image.app.parent / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [image.python, "-m", "uvicorn", *args],
            cwd=image.app,
            env=server_env,
            stdout=log,
            stderr=log,
        )
        try:
            wait_port(port, server, timeout=30)
            yield Served(
                image=image,
                base=f"http://127.0.0.1:{port}",
                port=port,
                host=image.env["ALLOWED_HOSTS"].split(",")[0],
                listing=seeded["listing"],
                key=seeded["key"],
                log=log_path,
            )
        finally:
            stop(server)
    output = log_path.read_text()
    assert "Traceback" not in output, output


def _tools_call(http: httpx.Client, served: Served, url: str, **kw: object) -> httpx.Response:
    return http.post(
        url,
        headers={
            "Host": served.host,
            "X-Forwarded-Proto": "https",
            "Authorization": f"Bearer {served.key}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
        },
        json={
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "ok", "arguments": {}},
        },
        **kw,  # type: ignore[arg-type]
    )


def _wait_stream_length(client: redis.Redis, stream: str, length: int) -> None:
    """A finished call's usage record reaches the stream just after the response."""
    deadline = time.monotonic() + 5
    while client.xlen(stream) < length:
        assert time.monotonic() < deadline, f"usage stream below {length} after 5 s"
        time.sleep(0.05)
    assert client.xlen(stream) == length


def test_the_image_holds_the_product_and_its_static_files(image: Image) -> None:
    site_dirs = {p.name for p in image.site.iterdir()}
    assert {"config", "gateway", "web"} <= site_dirs, sorted(site_dirs)
    assert (image.app / "var" / "static" / "web" / "ui.css").exists()
    # What production leaves out is really out: the product starts without it.
    for absent in ("demo", "fakes", "tests"):
        probe = subprocess.run(
            [image.python, "-c", f"import {absent}"], cwd=image.app, env=image.env, check=False
        )
        assert probe.returncode != 0, f"{absent} is importable inside the image"


def test_the_image_serves_pages_api_and_a_metered_call(
    served: Served, own_redis: redis.Redis
) -> None:
    tls = {"Host": served.host, "X-Forwarded-Proto": "https"}
    with httpx.Client(base_url=served.base, timeout=10) as http:
        # Without the TLS proxy's header Django redirects to https.
        plain = http.get("/healthz", headers={"Host": served.host})
        assert plain.status_code == 301
        assert plain.headers["location"] == f"https://{served.host}/healthz"
        health = http.get("/healthz", headers=tls)
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        hsts = health.headers["strict-transport-security"]
        assert hsts == "max-age=31536000; includeSubDomains; preload"
        assert http.get("/static/web/ui.css", headers=tls).status_code == 200
        missing = http.get("/api/v1/no-such-route", headers=tls)
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/json"

        before = own_redis.xlen(served.image.env["GATEWAY_USAGE_STREAM"])
        call = _tools_call(http, served, f"/mcp/{served.listing}")
    assert call.status_code == 200, call.text
    receipt = call.json()["result"]["_meta"]["dev.toolbooth/receipt"]
    assert receipt["amount"] == 3, call.json()
    assert receipt["call_id"]
    # On the durable usage stream the worker drains into the ledger.
    _wait_stream_length(own_redis, served.image.env["GATEWAY_USAGE_STREAM"], before + 1)


def test_the_compose_web_healthcheck_passes_against_the_image(served: Served) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    test = compose["services"]["web"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    args = [a.replace(":8000/", f":{served.port}/") for a in test[2:]]
    ok = subprocess.run(
        [served.image.python, *args], cwd=served.image.app, env=served.image.env, check=False
    )
    assert ok.returncode == 0
    down = [a.replace(":8000/", ":9/") for a in test[2:]]
    refused = subprocess.run(
        [served.image.python, *down],
        cwd=served.image.app,
        env=served.image.env,
        capture_output=True,
        check=False,
    )
    assert refused.returncode == 1


def _caddyfile_for_test(port: int, http_port: int, https_port: int, storage: Path) -> str:
    """deploy/Caddyfile with what only a container has replaced: the ports (80/443 need root
    and may be taken), the upstream (`web` is compose's DNS name), certificates from Caddy's
    own CA (no ACME here) and no admin endpoint (one per machine)."""
    text = (ROOT / "deploy" / "Caddyfile").read_text()
    block = re.search(r"dynamic a web 8000 \{[^}]*\}", text)
    assert block, "deploy/Caddyfile proxies to compose's `web` service"
    text = text.replace(block.group(0), f"to 127.0.0.1:{port}")
    options = (
        "{\n\tadmin off\n\tlocal_certs\n\tskip_install_trust\n"
        f"\thttp_port {http_port}\n\thttps_port {https_port}\n"
        f'\tstorage file_system "{storage}"\n}}\n'
    )
    return options + text


@pytest.mark.skipif(
    shutil.which("caddy") is None, reason="caddy not installed (apt-get install caddy)"
)
def test_caddy_terminates_tls_in_front_of_the_image(
    served: Served, own_redis: redis.Redis, tmp_path: Path
) -> None:
    http_port, https_port = _free_port(), _free_port()
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(_caddyfile_for_test(served.port, http_port, https_port, tmp_path / "ca"))
    log_path = tmp_path / "caddy.log"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TOOLBOOTH_DOMAIN": served.host}
    with log_path.open("wb") as log:
        caddy = subprocess.Popen(
            ["caddy", "run", "--adapter", "caddyfile", "--config", str(caddyfile)],
            env=env,
            stdout=log,
            stderr=log,
        )
        try:
            wait_port(https_port, caddy)
            https = f"https://127.0.0.1:{https_port}"
            sni = {"sni_hostname": served.host}
            deadline = time.monotonic() + 20
            with httpx.Client(verify=False, timeout=10) as http:  # noqa: S501  (Caddy's local CA)
                while True:  # the certificate is issued just after start
                    try:
                        health = http.get(
                            f"{https}/healthz", headers={"Host": served.host}, extensions=sni
                        )
                        break
                    except httpx.ConnectError:
                        assert time.monotonic() < deadline, log_path.read_text()
                        time.sleep(0.2)
                # Django saw https (X-Forwarded-Proto from Caddy): no redirect, and HSTS.
                assert (health.status_code, health.json()) == (200, {"status": "ok"})
                assert "max-age=31536000" in health.headers["strict-transport-security"]
                assert health.http_version == "HTTP/1.1"

                plain = http.get(
                    f"http://127.0.0.1:{http_port}/healthz", headers={"Host": served.host}
                )
                assert plain.status_code == 308
                assert plain.headers["location"].startswith(f"https://{served.host}")

                stream = served.image.env["GATEWAY_USAGE_STREAM"]
                before = own_redis.xlen(stream)
                call = _tools_call(
                    http,
                    served,
                    f"{https}/mcp/{served.listing}",
                    extensions=sni,
                )
                assert call.status_code == 200, call.text
                assert call.json()["result"]["_meta"]["dev.toolbooth/receipt"]["amount"] == 3
                _wait_stream_length(own_redis, stream, before + 1)

                probe = http.get(
                    f"{https}/healthz?key=tb_probe_secret_in_query",
                    headers={"Host": served.host},
                    extensions=sni,
                )
                assert probe.status_code == 200
        finally:
            stop(caddy)
    output = log_path.read_text()
    assert "/healthz?(removed)" in output, output
    assert "tb_probe_secret_in_query" not in output

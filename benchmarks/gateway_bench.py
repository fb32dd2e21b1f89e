"""Gateway benchmark: tools/call throughput, p50/p99 and CPU per call, in one run.

Two upstreams (the no-op upstream with a canned result, and the Python MCP SDK upstream in
stateless JSON mode), each reached three ways: direct, through nginx (a plain proxy hop, the
floor) and through the gateway with auth, rate limiting and metering on; at concurrency 1, 16
and 64. Every server (upstreams, nginx, gateway, its Redis) is pinned to core 0 and wrk to
core 1. CPU time per call comes from /proc/<pid>/stat (holds up on a noisy machine where
wall-clock throughput does not). Also checked: one upstream request per call (the no-op
upstream counts them), Redis commands per gateway call (a private redis-server), PostgreSQL
transactions during the gateway runs (warm keys: only the 5 s cache refills).

    .venv/bin/python benchmarks/gateway_bench.py [--seconds 5] [--skip-python] [--upstream-core 1]
        [--credential key|token]

Needs taskset, redis-server, PostgreSQL on 127.0.0.1:5432, wrk and nginx (installs wrk and
nginx-light with apt-get when missing). Ports 18580-18589. Results also go to
benchmarks/results/gateway_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
REDIS_PORT, NOOP_PORT, PY_PORT, NGX_NOOP, NGX_PY, GW_PORT = range(18580, 18586)
DB_NAME = "tb_h5_bench"
SERVER_CORE, LOAD_CORE = "0", "1"
ENV = {
    **os.environ,
    "DJANGO_SETTINGS_MODULE": "config.settings.base",
    "DEBUG": "0",
    "SECRET_KEY": "bench-only-secret-key",
    "LICENSE_KEY_PEPPER": "bench-only-pepper",
    "GATEWAY_IDENTITY_SECRET": "bench-only-identity",
    "GATEWAY_UPSTREAM_SECRET_KEY": "bench-only-upstream-key",
    "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DB_NAME}",
    "REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
    "GATEWAY_UPSTREAM_ALLOWLIST": f"127.0.0.1:{NOOP_PORT},127.0.0.1:{PY_PORT}",
    "LOG_LEVEL": "WARNING",
}
ADD_SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}
CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": "add", "arguments": {"a": 1, "b": 2}},
}


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def pinned(core: str, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", core, *cmd]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime, all threads


def ensure_tools() -> str:
    """wrk and nginx from Debian's packages when missing; returns nginx's path."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else "")
    missing = [] if found else ["nginx-light"]
    if not shutil.which("wrk"):
        missing.append("wrk")
    if missing:
        subprocess.run(["apt-get", "install", "-y", *missing], check=True)
    return found or "/usr/sbin/nginx"


def nginx_conf(tmp: Path) -> Path:
    conf = tmp / "nginx.conf"
    servers = "".join(
        f"""
  upstream u{port} {{ server 127.0.0.1:{port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{listen};
    location / {{
      proxy_pass http://u{port};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host 127.0.0.1:{port};
    }}
  }}"""
        for port, listen in ((NOOP_PORT, NGX_NOOP), (PY_PORT, NGX_PY))
    )
    conf.write_text(
        f"""worker_processes 1;
daemon off;
user root;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
{servers}
}}
"""
    )
    return conf


def gateway_cmd(port: int) -> list[str]:
    """The gateway as production serves it (uvicorn, uvloop, httptools), access log off."""
    return [
        *(str(BIN / "uvicorn"), "config.asgi:application", "--host", "127.0.0.1"),
        *("--port", str(port), "--loop", "uvloop", "--http", "httptools"),
        *("--no-access-log", "--log-level", "warning"),
    ]


def redis_cmd(port: int, folder: Path) -> list[str]:
    """A private redis-server that keeps nothing on disk."""
    return [
        *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
        *("--save", "", "--appendonly", "no", "--dir", str(folder)),
    ]


def fresh_database(name: str, env: dict[str, str]) -> None:
    """Drop and create database `name`, migrate it, and set Django up in this process on it."""
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc"]
    subprocess.run([*psql, f"drop database if exists {name}"], check=True)
    subprocess.run([*psql, f"create database {name}"], check=True)
    subprocess.run(
        [str(BIN / "python"), "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True
    )
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def setup_database(credential: str = "key") -> dict[str, tuple[str, str]]:
    """A fresh bench database with two hosted listings and one real key each, or (credential
    "token") one OAuth connection each, calling with its access token."""
    fresh_database(DB_NAME, ENV)
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from billing.models import (
        Creator,
        CreatorSubscription,
        LicenseSource,
        Plan,
        PlanKind,
        PlanPrice,
    )
    from billing.services.licenses import api_key_create, license_issue
    from gateway.manifest import manifest_hash, tool_hashes
    from gateway.models import HostedUpstream, ToolManifest
    from marketplace.models import Listing

    owner = get_user_model().objects.create_user("bench-owner")
    buyer = get_user_model().objects.create_user("bench-buyer")
    # A subscription makes the calls collectible (billed 1 cent each, as a bought plan's are);
    # a grant without one would cost 0 and skip the spend-cap work of a paid call.
    sub = CreatorSubscription.objects.create(
        buyer=buyer,
        creator=Creator.objects.create(user=owner, handle="bench"),
        stripe_subscription_id="sub_bench",
        stripe_customer_id="cus_bench",
        status="active",
        platform_fee_bps=0,
    )
    keys = {}
    for label, port in (("noop", NOOP_PORT), ("python", PY_PORT)):
        listing = Listing.objects.create(name=f"io.github.bench/{label}", owner=owner)
        HostedUpstream.objects.create(listing=listing, url=f"http://127.0.0.1:{port}/mcp")
        # An approved tool manifest, as every creator who priced their tools has: the calls
        # take the rug-pull guard's path (its checks are in the measured CPU).
        tools = [{"name": "add", "description": "Add two integers.", "inputSchema": ADD_SCHEMA}]
        ToolManifest.objects.create(
            listing=listing,
            version=1,
            manifest_hash=manifest_hash(tool_hashes(tools)),
            tools=tools,
            tool_hashes=tool_hashes(tools),
            approved_by=owner,
            approved_at=timezone.now(),
        )
        plan = Plan.objects.create(
            listing=listing,
            kind=PlanKind.PER_CALL,
            name="bench",
            rate_limit_per_minute=100_000_000,
            meter_event_name=f"bench_{label}",
        )
        price = PlanPrice.objects.create(
            plan=plan, version=1, per_call_amount=1, effective_at=timezone.now()
        )
        lic = license_issue(
            buyer=buyer,
            plan=plan,
            plan_price=price,
            source=LicenseSource.GRANT,
            reason="bench",
            creator_subscription=sub,
        )
        if credential == "token":
            from billing.services.licenses import access_token_issue, oauth_key_create

            _, raw = access_token_issue(
                key=oauth_key_create(license=lic, name="bench client"), seconds=86_400
            )
        else:
            _, raw = api_key_create(license=lic)
        keys[label] = (listing.name, raw)
    return keys


def wrk(url: str, conns: int, seconds: float, key: str | None, tmp: Path) -> dict[str, Any]:
    script = tmp / "call.lua"
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {json.dumps(json.dumps(CALL))}",
        'wrk.headers["Content-Type"] = "application/json"',
        'wrk.headers["Accept"] = "application/json, text/event-stream"',
    ]
    if key:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {key}"')
    script.write_text("\n".join(lines) + "\n")
    cmd = pinned(LOAD_CORE, ["wrk", "-t1", f"-c{conns}", f"-d{int(seconds)}s", "--latency"])
    proc = subprocess.Popen([*cmd, "-s", str(script), url], stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate()
    return {"text": out, "pid": proc.pid}


def parse_wrk(text: str) -> dict[str, float]:
    def to_ms(value: str) -> float:
        number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.M))
    total = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests": total,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),  # type: ignore[union-attr]
        "p50_ms": to_ms(pct["50"]),
        "p99_ms": to_ms(pct["99"]),
        "errors": int(errors.group(1)) if errors else 0,
    }


def redis_commands() -> int:
    """Script calls clients sent (each one round trip). Commands run inside scripts also show
    in commandstats, so they are not counted; the warm gateway path sends nothing else."""
    import redis

    stats = redis.Redis(port=REDIS_PORT).info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k.split("|")[0] in _CLIENT_COMMANDS)


_CLIENT_COMMANDS = {"cmdstat_evalsha", "cmdstat_eval", "cmdstat_script"}


def pg_lookups() -> dict[str, int]:
    """Index and sequential scans of the tables the gateway reads on a cache miss: the key
    (entitlement) and the hosted upstream. Counted per table, so autovacuum and the setup's
    own connection do not blur the figure."""
    import psycopg

    url = f"postgresql://postgres@127.0.0.1:5432/{DB_NAME}"
    with psycopg.connect(url, autocommit=True) as c:
        rows = c.execute(
            "select relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0) from "
            "pg_stat_user_tables where relname in ('billing_apikey', 'gateway_hostedupstream')"
        ).fetchall()
    return {name: int(n) for name, n in rows}


def noop_count() -> int:
    with socket.create_connection(("127.0.0.1", NOOP_PORT)) as s:
        s.sendall(b"GET /count HTTP/1.1\r\nHost: x\r\n\r\n")
        return int(s.recv(4096).split(b"\r\n\r\n", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--skip-python", action="store_true")
    parser.add_argument(
        "--upstream-core",
        default=SERVER_CORE,
        help="a diagnosis, not the benchmark: run the upstreams on another core (with wrk) to "
        "see how much sharing a core with them costs the gateway and nginx per call",
    )
    parser.add_argument(
        "--credential",
        choices=("key", "token"),
        default="key",
        help="call with a license key (default) or an OAuth access token (same admission path)",
    )
    args = parser.parse_args()
    nginx = ensure_tools()
    tmp = Path(tempfile.mkdtemp(prefix="tb-gw-bench-"))
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(name: str, cmd: list[str], port: int) -> None:
        core = args.upstream_core if name.startswith("upstream:") else SERVER_CORE
        procs[name] = subprocess.Popen(
            pinned(core, cmd),
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(port)

    try:
        spawn(
            "redis",
            redis_cmd(REDIS_PORT, tmp),
            REDIS_PORT,
        )
        keys = setup_database(args.credential)
        spawn(
            "upstream:noop",
            [str(BIN / "python"), "benchmarks/noop_upstream.py", "--port", str(NOOP_PORT)],
            NOOP_PORT,
        )
        upstream = ROOT / "tests/gateway/upstreams/mcp_upstream.py"
        spawn(
            "upstream:python",
            [str(BIN / "python"), str(upstream), "--port", str(PY_PORT), "--stateless", "--json"],
            PY_PORT,
        )
        spawn("nginx", [nginx, "-c", str(nginx_conf(tmp)), "-p", str(tmp)], NGX_NOOP)
        spawn(
            "gateway",
            gateway_cmd(GW_PORT),
            GW_PORT,
        )
        nginx_worker = int(
            subprocess.run(
                ["pgrep", "-P", str(procs["nginx"].pid)], capture_output=True, text=True, check=True
            ).stdout.split()[0]
        )
        pids: dict[str, Any] = {
            "upstream": {
                "noop": procs["upstream:noop"].pid,
                "python": procs["upstream:python"].pid,
            },
            "nginx": nginx_worker,
            "gateway": procs["gateway"].pid,
            "redis": procs["redis"].pid,
        }
        results: list[dict[str, Any]] = []
        from django.db import connection

        connection.close()  # the setup's session publishes its counters on exit
        time.sleep(1.5)
        pg_before = pg_lookups()
        gateway_calls = 0.0
        gateway_started = time.monotonic()
        upstreams = ["noop"] if args.skip_python else ["noop", "python"]
        for label in upstreams:
            name, key = keys[label]
            port = NOOP_PORT if label == "noop" else PY_PORT
            paths = {
                "direct": (f"http://127.0.0.1:{port}/mcp", None, []),
                "nginx": (
                    f"http://127.0.0.1:{NGX_NOOP if label == 'noop' else NGX_PY}/mcp",
                    None,
                    ["nginx"],
                ),
                "gateway": (f"http://127.0.0.1:{GW_PORT}/mcp/{name}", key, ["gateway", "redis"]),
            }
            for path, (url, bearer, extra) in paths.items():
                for conns in (1, 16, 64):
                    warm = parse_wrk(wrk(url, conns, 1, bearer, tmp)["text"])  # pools, caches
                    watched: dict[str, int] = {"upstream": pids["upstream"][label]}
                    watched.update({p: pids[p] for p in extra})
                    cpu0 = {p: cpu_seconds(pid) for p, pid in watched.items()}
                    r0 = redis_commands()
                    n0 = noop_count() if label == "noop" else 0
                    run = wrk(url, conns, args.seconds, bearer, tmp)
                    cpu1 = {p: cpu_seconds(pid) for p, pid in watched.items()}
                    stats = parse_wrk(run["text"])
                    calls = stats["requests"]
                    row: dict[str, Any] = {
                        "upstream": label,
                        "path": path,
                        "concurrency": conns,
                        **stats,
                        "cpu_us_per_call": {
                            p: round((cpu1[p] - cpu0[p]) / calls * 1e6, 1) for p in watched
                        },
                        "redis_script_calls_per_call": round((redis_commands() - r0) / calls, 3),
                    }
                    if label == "noop":
                        row["upstream_requests_per_call"] = round((noop_count() - n0) / calls, 4)
                    if path == "gateway":
                        gateway_calls += calls + warm["requests"]
                    results.append(row)
                    print(json.dumps(row), flush=True)
        elapsed = time.monotonic() - gateway_started
        time.sleep(11)  # PostgreSQL publishes an idle backend's counters after 10 s
        pg_after = pg_lookups()
        pg_queries = {k: pg_after.get(k, 0) - v for k, v in pg_before.items()}
        summary = _summary(results, pg_queries, gateway_calls, elapsed)
        print(summary["text"])
        out = ROOT / "benchmarks/results"
        out.mkdir(exist_ok=True)
        (out / "gateway_bench.json").write_text(
            json.dumps({"runs": results, "summary": summary}, indent=2)
        )
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def _summary(
    results: list[dict[str, Any]], pg_queries: dict[str, int], gateway_calls: float, elapsed: float
) -> dict[str, Any]:
    by = {(r["upstream"], r["path"], r["concurrency"]): r for r in results}
    lines = [
        "",
        f"{'upstream':8} {'path':8} {'c':>3} {'req/s':>8} {'ratio':>6} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'+p50 ms':>8}  CPU us/call by process",
    ]
    for r in results:
        direct = by[(r["upstream"], "direct", r["concurrency"])]
        cpu = " ".join(f"{k}={v}" for k, v in r["cpu_us_per_call"].items())
        lines.append(
            f"{r['upstream']:8} {r['path']:8} {r['concurrency']:>3} {r['rps']:>8.0f} "
            f"{r['rps'] / direct['rps']:>6.2f} {r['p50_ms']:>7.3f} {r['p99_ms']:>7.3f} "
            f"{r['p50_ms'] - direct['p50_ms']:>8.3f}  {cpu}"
            + (f" errors={r['errors']}" if r["errors"] else "")
        )
    gw = [r for r in results if r["path"] == "gateway"]
    gw_cpu = [r["cpu_us_per_call"]["gateway"] for r in gw]
    added = {
        u: round(by[(u, "gateway", 1)]["p50_ms"] - by[(u, "direct", 1)]["p50_ms"], 3)
        for u in {r["upstream"] for r in gw}
    }
    # The issue's figures come from a machine where an nginx hop cost ~30 us of CPU; machines
    # here vary by 2x and more from run to run, and every process on the servers' core costs
    # more per call beside a slow upstream (nginx too), so also scale the gateway by nginx
    # measured in this run on the same upstream and concurrency.
    scaled = {
        u: {
            c: round(
                by[(u, "gateway", c)]["cpu_us_per_call"]["gateway"]
                * 30
                / by[(u, "nginx", c)]["cpu_us_per_call"]["nginx"]
            )
            for c in sorted({r["concurrency"] for r in gw if r["upstream"] == u})
            if (u, "nginx", c) in by
        }
        for u in sorted({r["upstream"] for r in gw})
    }
    lines += [
        "",
        f"gateway CPU per metered call: {min(gw_cpu)}-{max(gw_cpu)} us (target <= 300)",
        "gateway CPU scaled to a 30 us nginx hop (nginx on the same upstream and concurrency "
        f"in this run), by upstream and concurrency: {scaled} us",
        f"added p50 at concurrency 1: {added} ms (target <= 0.5)",
        "upstream requests per call (no-op, gateway): "
        + str([r.get("upstream_requests_per_call") for r in gw if r["upstream"] == "noop"]),
        "Redis script calls per gateway call (admission + record; the record rides the next "
        "admission's write): " + str(sorted({r["redis_script_calls_per_call"] for r in gw})),
        f"PostgreSQL lookups during {gateway_calls:.0f} gateway calls ({elapsed:.0f} s, "
        f"{len({r['upstream'] for r in gw})} keys, caches refill every 5 s): {pg_queries}",
    ]
    return {
        "text": "\n".join(lines),
        "added_p50_ms": added,
        "pg_lookups": pg_queries,
        "gateway_cpu_scaled_to_nginx_30us": scaled,
    }


if __name__ == "__main__":
    main()

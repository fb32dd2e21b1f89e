"""Which ASGI server serves Toolbooth: uvicorn vs granian on the same Django app.

Each server runs one worker pinned to core 0; wrk runs on core 1. Prints requests/s, latency
percentiles and the server's CPU time per request (robust on a noisy machine).

    .venv/bin/python benchmarks/asgi_server_bench.py [--seconds 10] [--connections 16]
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _field(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"wrk output without {pattern!r}:\n{text}")
    return match.group(1)


def _cpu_seconds(pid: int) -> float:
    """utime + stime of the process and its children that were reaped."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def _wait_ready(port: int, path: str) -> None:
    import urllib.request

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def _run(
    name: str, cmd: list[str], env: dict[str, str], path: str, seconds: int, conns: int
) -> None:
    port = int(cmd[cmd.index("--port") + 1])
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *cmd],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        _wait_ready(port, path)
        subprocess.run(
            ["taskset", "-c", "1", "wrk", "-t1", "-c4", "-d2s", f"http://127.0.0.1:{port}{path}"],
            capture_output=True,
            check=True,
        )
        cpu0 = _cpu_seconds(proc.pid)
        out = subprocess.run(
            [
                "taskset",
                "-c",
                "1",
                "wrk",
                "-t1",
                f"-c{conns}",
                f"-d{seconds}s",
                "--latency",
                f"http://127.0.0.1:{port}{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        cpu = _cpu_seconds(proc.pid) - cpu0
        reqs = int(_field(r"(\d+) requests in", out))
        rps = float(_field(r"Requests/sec:\s+([\d.]+)", out))
        p50 = _field(r"50%\s+([\d.]+\w+)", out)
        p99 = _field(r"99%\s+([\d.]+\w+)", out)
        print(
            f"{name:10s} {rps:9.0f} req/s  p50 {p50:>8s}  p99 {p99:>8s}  "
            f"server CPU {cpu / reqs * 1e6:7.0f} µs/request"
        )
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--path", default="/healthz")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install -y wrk")
    tmp = tempfile.mkdtemp()
    env = {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": "bench",
        "LICENSE_KEY_PEPPER": "bench",
        "DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite3",
        "REDIS_URL": "",
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "LOG_LEVEL": "WARNING",
    }
    subprocess.run(
        [str(BIN / "python"), "manage.py", "migrate", "-v0"], env=env, cwd=ROOT, check=True
    )
    print(f"GET {args.path}, {args.connections} connections, {args.seconds}s, server on core 0")
    p1, p2 = _free_port(), _free_port()
    _run(
        "uvicorn",
        [
            str(BIN / "uvicorn"),
            "config.asgi:application",
            "--port",
            str(p1),
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        env,
        args.path,
        args.seconds,
        args.connections,
    )
    _run(
        "granian",
        [
            str(BIN / "granian"),
            "--interface",
            "asgi",
            "config.asgi:application",
            "--port",
            str(p2),
            "--workers",
            "1",
            "--log-level",
            "warning",
        ],
        env,
        args.path,
        args.seconds,
        args.connections,
    )


if __name__ == "__main__":
    main()

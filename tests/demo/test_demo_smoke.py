"""The README promises `make demo` works on embedded defaults: run it for real.

SQLite in a temp folder, no Redis, no broker, the fake Stripe and the demo upstream started by
the demo command itself. A visitor signs up, buys a license on the fake hosted checkout and
gets the key once; it calls the hosted demo server through the gateway with the real Python
MCP client, and the call lands in the usage ledger
(drained in-process, since there is no Celery worker in the demo).
"""

import asyncio
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"demo exited early: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} never answered")


_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def _buy_through_hosted_checkout(site: str, plan_id: int) -> str:
    """Sign up, buy on the fake Stripe hosted page, and read the key the success page shows once.

    Plain HTTP (no browser): the browser tests walk the same pages on PostgreSQL; this proves
    the embedded defaults (SQLite, eager tasks, webhooks racing the success page) hold up.
    """
    with httpx.Client(base_url=site, timeout=30) as web:
        page = web.get("/accounts/signup/")
        token = _CSRF.search(page.text).group(1)
        signed_up = web.post(
            "/accounts/signup/",
            data={
                "csrfmiddlewaretoken": token,
                "username": "carol",
                "email": "carol@example.com",
                "password1": "a-long-demo-pass-phrase",
                "password2": "a-long-demo-pass-phrase",
            },
        )
        assert signed_up.status_code == 302, signed_up.text[:500]
        page = web.get(f"/billing/buy/{plan_id}")
        token = _CSRF.search(page.text).group(1)
        to_stripe = web.post(f"/billing/buy/{plan_id}", data={"csrfmiddlewaretoken": token})
        assert to_stripe.status_code in (302, 303), to_stripe.text[:500]
        checkout_url = to_stripe.headers["location"]
        paid = httpx.post(f"{checkout_url}/pay", data={"email": "carol@example.com"}, timeout=30)
        assert paid.status_code in (302, 303), paid.text[:500]
        success = web.get(paid.headers["location"])
        assert success.status_code == 200, success.text[:500]
        key = re.search(r'id="raw-key">(tb_test_\w+)<', success.text)
        assert key, success.text[:1000]
        again = web.get(paid.headers["location"])
        assert key.group(1) not in again.text  # shown exactly once
        return key.group(1)


async def _call_through_gateway(url: str, key: str) -> tuple[bool, object, dict]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30)
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        result = await client.call_tool("forecast", {"city": "Oslo"})
        return bool(result.is_error), result.structured_content, dict(result.meta or {})


def test_make_demo_serves_sells_and_meters(tmp_path):
    port, stripe_port, upstream_port = _free_port(), _free_port(), _free_port()
    env = {
        # Unset, not empty, like `make demo`: an empty CELERY_TASK_ALWAYS_EAGER reads as false.
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DJANGO_", "DATABASE_", "CELERY_TASK_ALWAYS_EAGER"))
        },
        "DEBUG": "1",
        "LOG_LEVEL": "WARNING",
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "CELERY_BROKER_URL": "",
        "TOOLBOOTH_VAR_DIR": str(tmp_path),
        "STRIPE_API_BASE": f"http://127.0.0.1:{stripe_port}",
        "STRIPE_SECRET_KEY": "sk_test_toolbooth_demo",
        "SITE_URL": f"http://127.0.0.1:{port}",
        "GATEWAY_UPSTREAM_ALLOWLIST": f"127.0.0.1:{upstream_port}",
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], env=env, cwd=ROOT, check=True, timeout=120)
    demo = subprocess.Popen(
        [*manage, "demo", "--port", str(port), "--upstream-port", str(upstream_port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        site = f"http://127.0.0.1:{port}"
        _wait_http(f"{site}/healthz", demo)
        home = httpx.get(f"{site}/?q=weather", timeout=10)
        assert home.status_code == 200
        assert "Demo Weather" in home.text

        db = sqlite3.connect(tmp_path / "demo.sqlite3")
        (listing_name, plan_id) = db.execute(
            "SELECT l.name, p.id FROM billing_plan p JOIN marketplace_listing l "
            "ON l.id = p.listing_id WHERE p.kind = 'one_time' AND l.name LIKE '%/weather'"
        ).fetchone()
        key = _buy_through_hosted_checkout(site, plan_id)

        is_error, structured, meta = asyncio.run(
            _call_through_gateway(f"{site}/mcp/{listing_name}", key)
        )
        assert not is_error
        assert structured["city"] == "Oslo"
        assert "dev.toolbooth/receipt" in meta

        deadline = time.monotonic() + 20
        count = 0
        while time.monotonic() < deadline and count == 0:
            count = db.execute("SELECT count(*) FROM gateway_usageevent").fetchone()[0]
            time.sleep(0.3)
        assert count == 1
    finally:
        demo.terminate()
        demo.wait(15)

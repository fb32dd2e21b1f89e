"""Browser test wiring: the whole site under uvicorn (ASGI, so the gateway is in front of Django,
as in production) against the pytest database, the fake Stripe sending signed webhooks to it,
the demo MCP upstream, and Debian's chromium driven by Playwright.

Ports 18900-18999 belong to these tests. Celery runs eagerly inside the site process; the usage
drain (a beat task in production) is called by the tests, as STYLE.md asks for tasks.
Screenshots of every page the tests visit go to `screenshots/` (git-ignored; see the README).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from fakes.stripe.server import FakeStripeServer
from tests.gateway.conftest import start, stop, test_database_url

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "screenshots"
SITE_PORT, STRIPE_PORT, UPSTREAM_PORT = 18900, 18901, 18902
SITE = f"http://127.0.0.1:{SITE_PORT}"
WEBHOOK_SECRET = "whsec_ui_tests"
CONNECT_SECRET = "whsec_ui_tests_connect"
STRIPE_KEY = "sk_test_ui_tests"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def fake_stripe() -> Iterator[FakeStripeServer]:
    with FakeStripeServer(
        port=STRIPE_PORT,
        webhook_url=f"{SITE}/billing/webhooks/stripe",
        webhook_secret=WEBHOOK_SECRET,
        connect_webhook_secret=CONNECT_SECRET,
        webhook_backoff_seconds=0.05,
    ) as server:
        yield server


@pytest.fixture(scope="session")
def demo_upstream() -> Iterator[str]:
    proc = start(
        [sys.executable, "-m", "demo.upstream", "--port", str(UPSTREAM_PORT)], UPSTREAM_PORT
    )
    yield f"http://127.0.0.1:{UPSTREAM_PORT}/mcp"
    stop(proc)


@pytest.fixture(scope="session")
def site(
    django_db_setup: None,
    django_db_blocker: Any,
    fake_stripe: FakeStripeServer,
    demo_upstream: str,
) -> Iterator[str]:
    """The site on loopback, reading and writing the pytest database."""
    env = {
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SITE_URL": SITE,
        "STRIPE_API_BASE": fake_stripe.base_url,
        "STRIPE_SECRET_KEY": STRIPE_KEY,
        "STRIPE_WEBHOOK_SECRETS": f"{WEBHOOK_SECRET},{CONNECT_SECRET}",
        "CELERY_TASK_ALWAYS_EAGER": "1",
        "GATEWAY_UPSTREAM_ALLOWLIST": f"127.0.0.1:{UPSTREAM_PORT}",
        "GATEWAY_UPSTREAM_CACHE_SECONDS": "0.5",
        "LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(SITE_PORT)]
    cmd += ["--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]
    proc = start(cmd, SITE_PORT, env)
    yield SITE
    stop(proc)


@pytest.fixture
def live(
    site: str, transactional_db: None, settings: Any, monkeypatch: Any, redis_client: Any
) -> str:
    """Per test: committed rows the site can see, a clean Redis, this process on the same fake
    Stripe, and Django's ORM allowed while Playwright's sync API holds an event loop."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{STRIPE_PORT}"
    settings.STRIPE_SECRET_KEY = STRIPE_KEY
    settings.STRIPE_WEBHOOK_SECRETS = [WEBHOOK_SECRET, CONNECT_SECRET]
    settings.SITE_URL = SITE
    return site


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped: Playwright's sync API keeps an event loop on the main thread while it
    runs, which would break later tests that call asyncio.run."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        # Failing, not skipping: these tests are the UI's definition of done.
        pytest.fail(f"no chromium at {CHROMIUM}: run scripts/install-browser (Debian's package)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Shots:
    """Saves a full-page screenshot per name, so anyone can look at what the tests saw."""

    def __init__(self) -> None:
        SCREENSHOTS.mkdir(exist_ok=True)
        self.taken: list[str] = []

    def __call__(self, page: Any, name: str) -> None:
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        self.taken.append(name)


@pytest.fixture(scope="session")
def shots() -> Shots:
    return Shots()


def new_page(browser: Any, *, width: int = 1100, height: int = 800) -> Any:
    context = browser.new_context(
        base_url=SITE,
        viewport={"width": width, "height": height},
        permissions=["clipboard-read", "clipboard-write"],
    )
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []

    def on_console(msg: Any) -> None:
        # CSP violations and script errors on our pages (not the fake Stripe's own pages,
        # nor a form answered 400 on purpose) show up on the console; tests assert none.
        if msg.type != "error" or not page.url.startswith(SITE):
            return
        if "status of 400" in msg.text:
            return
        errors.append(f"{page.url}: {msg.text} @ {msg.location}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
    page.console_errors = errors
    return page

"""In a real browser: a creator whose upstream answers 404 to everything sees it failing on
their listing page, with the exact answer from "Test connection", and the public listing shows
the same figure; anyone signed in turns optional emails off on /me/notifications/.

Runs its own site process (ports 18950-18951 of the UI tests' range), allowed to reach an
upstream that is not an MCP server (tests/gateway/upstreams/scripted_upstream.py --answer 404).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from playwright.sync_api import expect

from gateway.discovery import upstream_tools_fetch
from gateway.models import HostedUpstream
from notifications.models import NotificationOptOut
from tests.gateway.conftest import UPSTREAMS, start, stop, test_database_url
from tests.ui.conftest import Shots, new_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SITE_PORT, NOT_MCP_PORT = 18950, 18951
SITE = f"http://127.0.0.1:{SITE_PORT}"
PASSWORD = "a long and unusual passphrase 42"


@pytest.fixture(scope="module")
def health_site(django_db_setup: None, django_db_blocker: Any) -> Iterator[str]:
    upstream = start(
        [
            sys.executable,
            str(UPSTREAMS / "scripted_upstream.py"),
            "--port",
            str(NOT_MCP_PORT),
            "--answer",
            "404",
        ],
        NOT_MCP_PORT,
    )
    env = {
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SITE_URL": SITE,
        "CELERY_TASK_ALWAYS_EAGER": "1",
        "GATEWAY_UPSTREAM_ALLOWLIST": f"127.0.0.1:{NOT_MCP_PORT}",
        "LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(SITE_PORT)]
    cmd += ["--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]
    proc = start(cmd, SITE_PORT, env)
    yield SITE
    stop(proc)
    stop(upstream)


@pytest.fixture
def live_health(
    health_site: str, transactional_db: None, monkeypatch: Any, settings: Any, redis_client: Any
) -> str:
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    settings.GATEWAY_UPSTREAM_ALLOWLIST = [f"127.0.0.1:{NOT_MCP_PORT}"]
    return health_site


def _log_in(page: Any, username: str) -> None:
    page.goto(f"{SITE}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def _creator_with_broken_upstream() -> HostedUpstream:
    from billing.services.creators import creator_become
    from tests.factories import ListingFactory, UserFactory

    user = UserFactory(username="maker404", email="maker404@example.com")
    user.set_password(PASSWORD)
    user.save()
    listing = ListingFactory(name="io.github.maker404/broken", owner=user)
    creator_become(user=user, handle="maker404")
    return HostedUpstream.objects.create(
        listing=listing, url=f"http://127.0.0.1:{NOT_MCP_PORT}/mcp", enabled=True
    )


def test_a_404_upstream_is_failing_everywhere_and_test_connection_says_why(
    live_health: str, browser: Any, shots: Shots
) -> None:
    up = _creator_with_broken_upstream()
    page = new_page(browser)
    _log_in(page, "maker404")
    page.goto(f"{SITE}/creator/listings/{up.listing.name}/")
    page.get_by_role("button", name="Test connection").click()

    result = page.locator("#connection-result")
    expect(result).to_contain_text("Connection failed at initialize")
    expect(result).to_contain_text("The upstream answered HTTP 404 to initialize.")
    expect(result).to_contain_text("HTTP status 404")
    expect(result).to_contain_text("text/plain")
    expect(result).to_contain_text("404 page not found")
    health = page.locator("#upstream-health")
    expect(health).to_contain_text("Degraded")
    expect(health).to_contain_text("Test connection: The upstream answered HTTP 404")
    shots(page, "30-creator-test-connection-404")

    for _ in range(2):  # the hourly tool discovery fails too: three failures in a row
        upstream_tools_fetch(listing_id=up.listing_id)
    page.goto(f"{SITE}/creator/listings/{up.listing.name}/")
    expect(health).to_contain_text("Failing")
    expect(health).to_contain_text("3 checks or calls failed in a row")
    expect(health).to_contain_text("Tool discovery")
    expect(page.locator("#upstream")).not_to_contain_text("serving calls")
    shots(page, "31-creator-upstream-failing")

    page.goto(f"{SITE}/servers/{up.listing.name}")
    badge = page.locator("#health")
    expect(badge).to_contain_text("Failing")
    expect(badge).to_contain_text("3 checks or calls failed in a row")
    expect(badge).not_to_contain_text("Healthy")
    shots(page, "32-listing-upstream-failing")
    assert page.console_errors == []


def test_notification_settings_turn_optional_mails_off(
    live_health: str, browser: Any, shots: Shots
) -> None:
    _creator_with_broken_upstream()
    page = new_page(browser)
    _log_in(page, "maker404")
    page.goto(f"{SITE}/me/notifications/")
    expect(page.get_by_role("heading", name="Email notifications")).to_be_visible()
    expect(page.get_by_text("As a creator")).to_be_visible()
    receipt = page.get_by_label("Purchase receipt")
    expect(receipt).to_be_checked()
    expect(receipt).to_be_disabled()
    quota = page.get_by_label("80% of the monthly quota used")
    expect(quota).to_be_checked()
    quota.uncheck()
    page.get_by_label("Upstream unhealthy").uncheck()
    page.get_by_role("button", name="Save notification settings").click()
    expect(page.get_by_text("Notification settings saved.")).to_be_visible()
    expect(page.get_by_label("80% of the monthly quota used")).not_to_be_checked()
    expect(page.get_by_label("New sale")).to_be_checked()
    shots(page, "33-notification-settings")
    kinds = set(NotificationOptOut.objects.values_list("kind", flat=True))
    assert kinds == {"quota_80", "upstream_unhealthy"}
    assert page.console_errors == []

"""OAuth test wiring (issue 13): the whole site under uvicorn against the pytest database, as in
tests/ui, but with access tokens that expire after a few seconds so refresh and expiry are seen
in a test; the fake Stripe sending signed webhooks; the demo MCP upstream behind two hosted
listings; a loopback server publishing Client ID Metadata Documents (its host:port is on the SSRF
allowlist, like the upstream's); and a loopback OAuth callback that records what a browser
brings back.

Ports 18960-18979 belong to these tests. Browsers are driven with Playwright's async API inside
each test's own event loop (the mcp SDK's OAuth client is async and calls our redirect handler
from inside its loop), so no Playwright event loop outlives a test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from django.conf import settings

from fakes.stripe.server import FakeStripeServer
from tests.gateway.conftest import start, stop, test_database_url
from tests.ui.conftest import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS

SITE_PORT, STRIPE_PORT, UPSTREAM_PORT, CIMD_PORT, CALLBACK_PORT, BRIDGE_PORT = range(18960, 18966)
SCRIPTED_PORT = 18966
SITE = f"http://127.0.0.1:{SITE_PORT}"
CIMD = f"http://127.0.0.1:{CIMD_PORT}"
CALLBACK = f"http://127.0.0.1:{CALLBACK_PORT}/callback"
WEBHOOK_SECRET = "whsec_oauth_tests"
CONNECT_SECRET = "whsec_oauth_tests_connect"
STRIPE_KEY = "sk_test_oauth_tests"
# Short enough to wait past in a test, long enough for a browser login in between.
ACCESS_TOKEN_SECONDS = 4
ENTITLEMENT_CACHE_SECONDS = 5
PASSWORD = "correct horse battery staple"  # tests.factories.UserFactory's


# --- processes -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def oauth_stripe() -> Iterator[FakeStripeServer]:
    with FakeStripeServer(
        port=STRIPE_PORT,
        webhook_url=f"{SITE}/billing/webhooks/stripe",
        webhook_secret=WEBHOOK_SECRET,
        connect_webhook_secret=CONNECT_SECRET,
        webhook_backoff_seconds=0.05,
    ) as server:
        yield server


@pytest.fixture(scope="session")
def oauth_upstream() -> Iterator[str]:
    proc = start(
        [sys.executable, "-m", "demo.upstream", "--port", str(UPSTREAM_PORT)], UPSTREAM_PORT
    )
    yield f"http://127.0.0.1:{UPSTREAM_PORT}/mcp"
    stop(proc)


@pytest.fixture(scope="session")
def scripted_upstream() -> Iterator[str]:
    """tests/gateway's scripted upstream: its `headers` tool answers with the request headers
    it received (what the gateway forwarded)."""
    from tests.gateway.conftest import UPSTREAMS

    script = str(UPSTREAMS / "scripted_upstream.py")
    proc = start([sys.executable, script, "--port", str(SCRIPTED_PORT)], SCRIPTED_PORT)
    yield f"http://127.0.0.1:{SCRIPTED_PORT}/mcp"
    stop(proc)


class _Documents(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _DocumentHandler)
        self.documents: dict[str, bytes] = {}
        self.fetched: list[str] = []


class _DocumentHandler(BaseHTTPRequestHandler):
    server: _Documents

    def do_GET(self) -> None:
        self.server.fetched.append(self.path)
        body = self.server.documents.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ClientDocuments:
    """Client ID Metadata Documents served from loopback: `publish(path, doc)` returns the URL."""

    def __init__(self, server: _Documents) -> None:
        self._server = server

    def publish(self, path: str, document: dict[str, Any]) -> str:
        self._server.documents[path] = json.dumps(document).encode()
        return f"{CIMD}{path}"

    @property
    def fetched(self) -> list[str]:
        return self._server.fetched


@pytest.fixture(scope="session")
def client_documents() -> Iterator[ClientDocuments]:
    server = _Documents(CIMD_PORT)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield ClientDocuments(server)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def oauth_site(
    django_db_setup: None,
    django_db_blocker: Any,
    oauth_stripe: FakeStripeServer,
    oauth_upstream: str,
    client_documents: ClientDocuments,
) -> Iterator[str]:
    """The site on loopback, reading and writing the pytest database, with short access tokens."""
    env = {
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": test_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "SITE_URL": SITE,
        "STRIPE_API_BASE": oauth_stripe.base_url,
        "STRIPE_SECRET_KEY": STRIPE_KEY,
        "STRIPE_WEBHOOK_SECRETS": f"{WEBHOOK_SECRET},{CONNECT_SECRET}",
        "CELERY_TASK_ALWAYS_EAGER": "1",
        # The upstream, and the loopback host of the client metadata documents (the contract:
        # an http://127.0.0.1 client_id is fetched only when its host:port is allowlisted).
        "GATEWAY_UPSTREAM_ALLOWLIST": ",".join(
            f"127.0.0.1:{port}" for port in (UPSTREAM_PORT, SCRIPTED_PORT, CIMD_PORT)
        ),
        "GATEWAY_UPSTREAM_CACHE_SECONDS": "0.5",
        "GATEWAY_ENTITLEMENT_CACHE_SECONDS": str(ENTITLEMENT_CACHE_SECONDS),
        # Many refusals come from 127.0.0.1 on purpose: never 429 for them here.
        "GATEWAY_AUTH_FAILURES_PER_MINUTE": "100000",
        "OAUTH_ACCESS_TOKEN_SECONDS": str(ACCESS_TOKEN_SECONDS),
        "LOG_LEVEL": "WARNING",
    }
    cmd = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--port", str(SITE_PORT)]
    cmd += ["--host", "127.0.0.1", "--no-access-log", "--log-level", "warning"]
    proc = start(cmd, SITE_PORT, env)
    yield SITE
    stop(proc)


@pytest.fixture
def oauth_live(
    oauth_site: str, transactional_db: None, settings: Any, monkeypatch: Any, redis_client: Any
) -> str:
    """Per test: committed rows the site can see, a clean Redis, this process on the same fake
    Stripe, and Django's ORM allowed inside the event loop a test runs (Playwright, the SDK)."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{STRIPE_PORT}"
    settings.STRIPE_SECRET_KEY = STRIPE_KEY
    settings.STRIPE_WEBHOOK_SECRETS = [WEBHOOK_SECRET, CONNECT_SECRET]
    settings.SITE_URL = SITE
    return oauth_site


class Callback:
    """A loopback redirect_uri: records the query of each request a browser brings back."""

    def __init__(self, port: int) -> None:
        self.hits: list[dict[str, str]] = []
        self._event = threading.Event()
        callback = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/callback":  # the browser also asks for /favicon.ico
                    self.send_error(404)
                    return
                callback.hits.append({k: v[0] for k, v in parse_qs(url.query).items()})
                callback._event.set()
                body = b"<!doctype html><title>Done</title><h1>You can close this tab</h1>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        self.hits.clear()
        self._event.clear()

    def wait(self, timeout: float = 30) -> dict[str, str]:
        if not self._event.wait(timeout):
            raise TimeoutError("the browser never came back to the OAuth callback")
        return self.hits[-1]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="session")
def callback_server() -> Iterator[Callback]:
    server = Callback(CALLBACK_PORT)
    yield server
    server.close()


@pytest.fixture
def callback(callback_server: Callback) -> Callback:
    callback_server.reset()
    return callback_server


# --- data ------------------------------------------------------------------------------------


def hosted_listing(upstream: str, *, title: str) -> Any:
    """A listing with an owner, served through the gateway from the demo upstream."""
    from tests.billing.factories import OwnedListingFactory

    listing = OwnedListingFactory(title=title, description=f"{title}: an MCP server.")
    hosted_upstream(listing, upstream)
    return listing


_served: dict[str, list[dict[str, Any]]] = {}


def hosted_upstream(listing: Any, upstream: str) -> Any:
    """Serve `listing` from `upstream`, its tools approved by the creator (the gateway refuses
    every call of a listing without an approved manifest). The tools are found by real discovery
    once per upstream (the demo upstream's do not change)."""
    from tests.gateway.factories import HostedUpstreamFactory, served_tools

    if upstream not in _served:
        _served[upstream] = served_tools(upstream)
    return HostedUpstreamFactory(listing=listing, url=upstream, approved=_served[upstream])


def metered_license(listing: Any, buyer: Any, *, per_call: int = 4) -> Any:
    """An active license bought through Checkout (calls are billed to its Stripe customer)."""
    from tests.billing.factories import MeteredLicenseFactory

    return MeteredLicenseFactory(
        buyer=buyer,
        plan_price__plan__listing=listing,
        plan_price__plan__name=f"PAYG {per_call}c",
        plan_price__per_call_amount=per_call,
    )


# --- protocol helpers ------------------------------------------------------------------------


def gateway_url(name: str) -> str:
    return f"{SITE}/mcp/{name}"


@dataclass
class Pkce:
    verifier: str = field(default_factory=lambda: secrets.token_urlsafe(48))

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class _Forms(HTMLParser):
    """The forms of a page: action, method, and their inputs and buttons (enough for Django's)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self._current: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = {"action": a.get("action", ""), "method": a.get("method", "get")}
            self._current["fields"] = []
            self.forms.append(self._current)
        elif tag in ("input", "button") and self._current is not None:
            self._current["fields"].append({"tag": tag, **a})

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def page_forms(html: str) -> list[dict[str, Any]]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def login(client: httpx.Client, username: str) -> None:
    """Log in with Django's login form (CSRF token from the form), as a browser would."""
    page = client.get(f"{SITE}/accounts/login/")
    assert page.status_code == 200, page.status_code
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, "no CSRF token on the login form"
    done = client.post(
        f"{SITE}/accounts/login/",
        data={"username": username, "password": PASSWORD, "csrfmiddlewaretoken": token[1]},
        headers={"Referer": f"{SITE}/accounts/login/"},
    )
    assert done.status_code == 302, f"login refused: {done.status_code}"


def register(
    *,
    redirect_uri: str = CALLBACK,
    name: str = "Protocol test client",
    auth_method: str = "none",
) -> dict[str, Any]:
    """Dynamic Client Registration (RFC 7591) of a client; returns the registration answer."""
    answer = httpx.post(
        f"{SITE}/oauth/register",
        json={
            "client_name": name,
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": auth_method,
            "scope": "mcp",
        },
        timeout=10,
    )
    assert answer.status_code in (200, 201), f"{answer.status_code} {answer.text[:500]}"
    return answer.json()


def authorize_params(
    client_id: str, resource: str, pkce: Pkce | None, *, state: str = "st4te", **extra: str
) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": CALLBACK,
        "state": state,
        "scope": "mcp",
        "resource": resource,
    }
    if pkce is not None:
        params |= {"code_challenge": pkce.challenge, "code_challenge_method": "S256"}
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


def authorize(client: httpx.Client, params: dict[str, str]) -> httpx.Response:
    return client.get(f"{SITE}/oauth/authorize", params=params, follow_redirects=False)


def location(response: httpx.Response) -> str:
    assert response.status_code in (302, 303), f"{response.status_code}: {response.text[:500]}"
    return urljoin(str(response.url), response.headers["location"])


def redirect_query(response: httpx.Response) -> dict[str, str]:
    """The query of a redirect to our callback (code and state, or error)."""
    target = location(response)
    assert target.startswith(CALLBACK), target
    return {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}


def consent(
    client: httpx.Client, consent_url: str, *, license_id: int | None = None, action: str = "allow"
) -> httpx.Response:
    """Answer the consent page with the logged-in `client`, like the browser's form post."""
    page = client.get(consent_url, follow_redirects=False)
    assert page.status_code == 200, f"consent page: {page.status_code} {page.text[:300]}"
    form = next(
        (f for f in page_forms(page.text) if any(x.get("name") == "action" for x in f["fields"])),
        None,
    )
    assert form is not None, "no form with the allow/deny buttons on the consent page"
    data: dict[str, str] = {}
    for x in form["fields"]:
        kind = x.get("type", "submit" if x["tag"] == "button" else "text")
        if x["tag"] == "button" or kind in ("submit", "button"):
            continue
        if kind in ("radio", "checkbox") and "checked" not in x:
            continue
        if x.get("name"):
            data[x["name"]] = x.get("value", "")
    if license_id is not None:
        data["license"] = str(license_id)
    data["action"] = action
    return client.post(
        urljoin(consent_url, form["action"] or consent_url),
        data=data,
        headers={"Referer": consent_url},
        follow_redirects=False,
    )


def token(**data: str) -> httpx.Response:
    return httpx.post(f"{SITE}/oauth/token", data=data, timeout=10)


def exchange(code: str, pkce: Pkce, client_id: str, resource: str | None) -> httpx.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": CALLBACK,
        "client_id": client_id,
        "code_verifier": pkce.verifier,
    }
    if resource is not None:
        data["resource"] = resource
    return token(**data)


def refresh(refresh_token: str, client_id: str, resource: str | None = None) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
    if resource is not None:
        data["resource"] = resource
    return token(**data)


def error_of(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error"))
    except ValueError:
        return f"<not JSON: {response.status_code} {response.text[:200]}>"


@dataclass
class Connection:
    client_id: str
    resource: str
    tokens: dict[str, Any]


def connect(
    client: httpx.Client, *, client_id: str, listing_name: str, license_id: int | None = None
) -> Connection:
    """The whole code flow with a logged-in `client`: authorize, consent, exchange."""
    pkce = Pkce()
    resource = gateway_url(listing_name)
    started = authorize(client, authorize_params(client_id, resource, pkce))
    consent_url = location(started)
    assert "/oauth/consent/" in consent_url, consent_url
    back = redirect_query(consent(client, consent_url, license_id=license_id))
    assert back.get("state") == "st4te", back
    assert "code" in back, back
    answer = exchange(back["code"], pkce, client_id, resource)
    assert answer.status_code == 200, f"{answer.status_code} {answer.text[:500]}"
    return Connection(client_id=client_id, resource=resource, tokens=answer.json())


@dataclass
class Reply:
    """The gateway's answer to one MCP message (the JSON of a JSON or SSE response)."""

    status_code: int
    headers: httpx.Headers
    text: str

    def json(self) -> Any:
        if self.headers.get("content-type", "").startswith("text/event-stream"):
            data = [ln[5:].strip() for ln in self.text.splitlines() if ln.startswith("data:")]
            return json.loads(data[-1])
        return json.loads(self.text)


def mcp_call(
    name: str,
    access_token: str | None,
    *,
    tool: str = "add",
    arguments: dict[str, Any] | None = None,
) -> Reply:
    """A tools/call through the gateway with a bearer credential, in a session of its own
    (initialize, initialized, call: the demo upstream keeps sessions). The first answer that is
    not a success is returned as it is (a 401 comes on initialize)."""
    from tests.gateway.conftest import post, rpc

    def reply(response: httpx.Response) -> Reply:
        return Reply(response.status_code, response.headers, response.text)

    init = post(
        SITE,
        name,
        rpc(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "oauth-tests", "version": "1"},
            },
        ),
        access_token,
    )
    if init.status_code != 200:
        return reply(init)
    session = {"Mcp-Session-Id": init.headers.get("mcp-session-id", "")}
    session["MCP-Protocol-Version"] = reply(init).json()["result"]["protocolVersion"]
    note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    done = post(SITE, name, note, access_token, session)
    if done.status_code not in (200, 202):
        return reply(done)
    if arguments is None:
        arguments = {"a": 2, "b": 3} if tool == "add" else {"city": "Oslo"}
    call = rpc("tools/call", {"name": tool, "arguments": arguments}, 2)
    return reply(post(SITE, name, call, access_token, session))


def mcp_works(name: str, access_token: str) -> bool:
    """Whether a tools/call with this credential is admitted and answered with a result."""
    answer = mcp_call(name, access_token)
    if answer.status_code != 200:
        return False
    body = answer.json()
    assert "result" in body, f"admitted but failed: {body}"
    return True


# --- browser ---------------------------------------------------------------------------------


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """Debian's chromium through Playwright's async API, for one test's event loop."""
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).exists():
        # Failing, not skipping: these flows are issue 13's definition of done.
        pytest.fail(f"no chromium at {CHROMIUM}: run scripts/install-browser (Debian's package)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: Any) -> Any:
    context = await browser.new_context(viewport={"width": 1100, "height": 800})
    context.set_default_timeout(15_000)
    page = await context.new_page()
    errors: list[str] = []  # on our pages: tests assert none
    everywhere: list[str] = []  # (the fake Stripe's pages too): shown when a page gets stuck

    def on_console(msg: Any) -> None:
        if msg.type == "error":
            everywhere.append(f"{page.url}: {msg.text}")
            if page.url.startswith(SITE):
                errors.append(f"{page.url}: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))
    page.console_errors = errors
    page.all_console_errors = everywhere
    return page


async def shot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def browser_login(page: Any, username: str, screenshot: str | None = None) -> None:
    """On the login page the consent page sent us to: fill Django's form and submit."""
    await page.wait_for_url(re.compile(r"/accounts/login/"))
    await page.fill('input[name="username"]', username)
    await page.fill('input[name="password"]', PASSWORD)
    if screenshot:
        await shot(page, screenshot)
    await page.click('form:has(input[name="password"]) button[type="submit"]')
    await expect_url(page, re.compile(r"/oauth/consent/"), "login")


async def expect_url(page: Any, pattern: Any, name: str) -> None:
    """Wait for the page to reach `pattern`; if it does not, save a screenshot `fail-<name>` and
    fail with where the page is and what its console said (a CSP refusal shows up there)."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    try:
        await page.wait_for_url(pattern)
    except PlaywrightTimeout:
        await shot(page, f"oauth-fail-{name}")
        raise AssertionError(
            f"{name}: the page stayed at {page.url}, never reached {pattern}; "
            f"console: {page.all_console_errors}"
        ) from None

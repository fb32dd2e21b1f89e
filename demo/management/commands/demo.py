"""`make demo`: the whole marketplace in one process on embedded defaults.

Starts the fake Stripe (its own loopback port, state kept in var/), the demo MCP upstream, seeds
demo data, then serves the site (pages, API, gateway) over ASGI with uvicorn. Without a
Celery beat, a thread sends the usage meter reports to the fake Stripe as beat would.
"""

import logging
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from demo.services import demo_seed
from fakes.stripe.server import FakeStripeServer

logger = logging.getLogger(__name__)
REPORT_EVERY_SECONDS = 10.0  # beat's cadence for usage_report_task


def _report_usage_forever(stop: threading.Event) -> None:
    """What beat does in production: seal finished minutes and send their meter events."""
    from gateway.services import usage_report

    while not stop.wait(REPORT_EVERY_SECONDS):
        try:
            usage_report()
        except Exception:  # the next round retries; the demo must keep serving
            logger.exception("demo.usage_report_failed")
        finally:
            close_old_connections()


def _wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise CommandError(f"nothing is listening on {host}:{port}")


class Command(BaseCommand):
    help = "Run the marketplace with demo data, a fake Stripe and a hosted demo MCP server."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--upstream-port", type=int, default=18080)
        parser.add_argument("--seed-only", action="store_true", help="seed, print, and exit")

    def handle(self, *args: Any, **opts: Any) -> None:
        base = urllib.parse.urlsplit(settings.STRIPE_API_BASE)
        if not settings.STRIPE_API_BASE or base.hostname not in ("127.0.0.1", "localhost"):
            raise CommandError("The demo needs STRIPE_API_BASE pointing at a loopback fake Stripe.")
        site = f"http://{opts['host']}:{opts['port']}"
        fake = FakeStripeServer(
            host=base.hostname or "127.0.0.1",
            port=base.port or 12111,
            webhook_url=f"{site}/billing/webhooks/stripe",
            webhook_secret=settings.STRIPE_WEBHOOK_SECRETS[0],
            state_path=str(Path(settings.VAR_DIR) / "fake_stripe.json"),
        )
        fake.start()
        upstream = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
            [sys.executable, "-m", "demo.upstream", "--port", str(opts["upstream_port"])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        reporter_stop = threading.Event()
        try:
            _wait_for_port("127.0.0.1", opts["upstream_port"])
            info = demo_seed(
                onboard=fake.complete_onboarding,
                upstream_url=f"http://127.0.0.1:{opts['upstream_port']}/mcp",
            )
            self._banner(site, fake.base_url, info)
            if not opts["seed_only"]:
                threading.Thread(
                    target=_report_usage_forever, args=(reporter_stop,), daemon=True
                ).start()
                signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
                uvicorn.run(
                    "config.asgi:application",
                    host=opts["host"],
                    port=opts["port"],
                    log_level="warning",
                )
        finally:
            reporter_stop.set()
            upstream.terminate()
            upstream.wait(5)
            fake.stop()

    def _banner(self, site: str, stripe: str, info: Any) -> None:
        out = self.stdout.write
        out("")
        out(f"Toolbooth demo at {site}  (fake Stripe at {stripe}, hosted checkout needs no card)")
        for role, (email, password) in info.credentials.items():
            out(f"  {role:8s} {email}  password: {password}")
        out(f"  hosted demo server: {site}/servers/{info.hosted_listing}")
        out(f"  its gateway URL:    {info.gateway_url}")
        out("Browse, log in as the buyer (or sign up), take a plan, copy the key and the client")
        out("config from 'My licenses', call the server, then see the usage there. Ctrl-C stops.")
        out("")

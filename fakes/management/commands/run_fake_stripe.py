"""Run the in-project fake Stripe on a loopback port (for the demo and manual testing).

    python manage.py run_fake_stripe --port 12111 \\
        --webhook-url http://127.0.0.1:8000/billing/webhooks/stripe --state var/fake_stripe.json
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from fakes.stripe.server import FakeStripeServer


class Command(BaseCommand):
    help = "Serve the stateful fake Stripe (API, hosted Checkout, Connect onboarding, controls)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=12111)
        parser.add_argument("--webhook-url", default=None, help="where to POST signed events")
        parser.add_argument(
            "--webhook-secret",
            default=None,
            help="signing secret (default: the first of STRIPE_WEBHOOK_SECRETS)",
        )
        parser.add_argument(
            "--connect-webhook-secret",
            default=None,
            help="secret for Connect events (default: the platform secret)",
        )
        parser.add_argument(
            "--state", default=None, help="JSON file that keeps objects across restarts"
        )
        parser.add_argument(
            "--all-events",
            action="store_true",
            help="send every event type, not only the ones the project subscribes to",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        secret = options["webhook_secret"] or settings.STRIPE_WEBHOOK_SECRETS[0]
        kwargs: dict[str, Any] = {}
        if options["all_events"]:
            kwargs["enabled_events"] = None
        server = FakeStripeServer(
            host=options["host"],
            port=options["port"],
            webhook_url=options["webhook_url"],
            webhook_secret=secret,
            connect_webhook_secret=options["connect_webhook_secret"],
            state_path=options["state"],
            **kwargs,
        )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        server.start()
        self.stdout.write(f"Fake Stripe at {server.base_url} (STRIPE_API_BASE={server.base_url})")
        self.stdout.write(f"Controls: {server.base_url}/control")
        if options["webhook_url"]:
            self.stdout.write(f"Webhooks -> {options['webhook_url']}")
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()

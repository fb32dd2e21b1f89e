"""`python manage.py run_fake_registry` — serve the loopback fake registry (tests, bench, demo)."""

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fakes.registry import FAULT_KINDS, FakeRegistry
from registry_sync.snapshot import load_server_list


class Command(BaseCommand):
    help = "Serve a fake Official MCP Registry on loopback (never for real traffic)."
    # A test tool: it needs no URLs, models or checks of the apps above.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=18100, help="0 = any free port")
        parser.add_argument(
            "--dataset",
            default="shared",
            help="'shared' (the bundled 247 versions) or 'generated:N' (N synthetic versions)",
        )
        parser.add_argument("--seed", type=int, default=20250930)
        parser.add_argument(
            "--scenario", action="append", default=[], help="a ServerList file to upsert"
        )
        parser.add_argument(
            "--opaque", action="append", default=[], help="a ServerList served verbatim"
        )
        parser.add_argument("--fault", choices=FAULT_KINDS, help="fail the first requests")
        parser.add_argument("--fault-times", type=int, default=1)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["host"] not in ("127.0.0.1", "localhost", "::1"):
            raise CommandError("the fake registry only listens on loopback")
        dataset: str = options["dataset"]
        if dataset == "shared":
            fake = FakeRegistry.shared()
        elif dataset.startswith("generated:"):
            try:
                size = int(dataset.split(":", 1)[1])
            except ValueError as exc:
                raise CommandError("--dataset generated:N needs an integer N") from exc
            fake = FakeRegistry.generated(size, seed=options["seed"])
        else:
            raise CommandError("--dataset must be 'shared' or 'generated:N'")
        for path in options["scenario"]:
            fake.load_scenario(path)
        for path in options["opaque"]:
            fake.add_opaque(load_server_list(path))
        if options["fault"]:
            fake.inject(options["fault"], options["fault_times"])
        url = fake.start(options["host"], options["port"])
        self.stdout.write(f"fake registry serving {len(fake)} versions at {url}")
        self.stdout.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            fake.stop()

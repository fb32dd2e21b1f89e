"""`manage.py demo_publish <server name>`: the demo's stand-in for `mcp-publisher publish`.

Publishes a version carrying the newest pending claim token of that name into the mirror the way
a registry sync would, so the demo's creator tour can verify a claim without the real registry.
"""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.models import ClaimStatus, ListingClaim
from demo.services import demo_claim_publish


class Command(BaseCommand):
    help = "Demo only: publish a version with the pending claim token of a server name."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="the registry name you claimed, e.g. io.github.x/y")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            version = demo_claim_publish(name=opts["name"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        verified = ListingClaim.objects.filter(
            registry_name=opts["name"], status=ClaimStatus.VERIFIED
        ).exists()
        self.stdout.write(f"Published {opts['name']} {version}.")
        done = "Claim verified: the listing is yours." if verified else "Claim not verified."
        self.stdout.write(done)

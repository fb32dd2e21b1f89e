"""Issue a complimentary license and print its key once."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.models import Plan
from billing.services.licenses import license_grant
from common.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Grant a complimentary license (prints the key once; it is not stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="buyer's email")
        parser.add_argument("--listing", required=True, help="listing (server) name")
        parser.add_argument("--plan", required=True, type=int, help="plan id on that listing")
        parser.add_argument("--days", type=int, default=None, help="expire after N days")

    def handle(self, *args: Any, **opts: Any) -> None:
        user = get_user_model().objects.filter(email__iexact=opts["user"]).first()
        if user is None:
            raise CommandError("No user with that email.")
        plan = Plan.objects.filter(pk=opts["plan"], listing__name=opts["listing"]).first()
        if plan is None:
            raise CommandError("No such plan on that listing.")
        if opts["days"] is not None and opts["days"] < 1:
            raise CommandError("--days must be at least 1.")
        try:
            lic, raw = license_grant(buyer=user, plan=plan, days=opts["days"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"license {lic.pk} granted")
        self.stdout.write(f"key (shown once): {raw}")

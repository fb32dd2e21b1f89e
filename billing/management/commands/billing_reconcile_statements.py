"""Check every creator's statement for a month against Stripe (a month-end job)."""

from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.services.statements import creator_statements_reconcile_all


class Command(BaseCommand):
    help = "Compare each creator's statement for --month (YYYY-MM, default last month) with Stripe."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--month", default="")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["month"]:
            try:
                month = datetime.strptime(opts["month"] + " +0000", "%Y-%m %z").date()
            except ValueError as exc:
                raise CommandError("--month is YYYY-MM.") from exc
        else:
            first = datetime.now(UTC).date().replace(day=1)
            month = (first - timedelta(days=1)).replace(day=1)
        mismatches = 0
        for creator, row in creator_statements_reconcile_all(month=month):
            mismatches += not row.matches
            self.stdout.write(
                f"{creator.handle} {row.currency} {'ok' if row.matches else 'MISMATCH'}"
            )
        if mismatches:
            raise CommandError(f"{mismatches} statement(s) do not match Stripe.")

"""Re-drive stored Stripe events: every failed one, or the given ids."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.models import StripeEvent, StripeEventStatus
from billing.services.events import stripe_event_process

# Enough for any backlog after an outage, small enough to stop a runaway loop.
MAX_EVENTS_PER_RUN = 5000


class Command(BaseCommand):
    help = "Process failed (or chosen) Stripe events again, oldest first."

    def add_arguments(self, parser: CommandParser) -> None:
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument(
            "--failed", action="store_true", help="every failed or unprocessed event"
        )
        group.add_argument("--ids", nargs="+", metavar="EVT", help="Stripe event ids")

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["ids"]:
            qs = StripeEvent.objects.filter(stripe_event_id__in=opts["ids"])
            missing = set(opts["ids"]) - set(qs.values_list("stripe_event_id", flat=True))
            if missing:
                raise CommandError(f"unknown event ids: {', '.join(sorted(missing))}")
        else:
            qs = StripeEvent.objects.filter(
                status__in=[StripeEventStatus.FAILED, StripeEventStatus.RECEIVED]
            )
        ok = failed = 0
        for pk in qs.order_by("received_at").values_list("pk", flat=True)[:MAX_EVENTS_PER_RUN]:
            try:
                event = stripe_event_process(event_pk=pk)
            except Exception:  # the row keeps the error; carry on with the rest
                failed += 1
                continue
            ok += 1
            self.stdout.write(f"{event.stripe_event_id} {event.type}: {event.status}")
        self.stdout.write(f"processed {ok}, failed {failed}")
        if failed:
            raise CommandError(f"{failed} event(s) failed again")

"""Admin: assign (or clear) a listing's owner."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.services.creators import listing_assign_owner
from marketplace.models import Listing


class Command(BaseCommand):
    help = "Set the owner of a listing (the user must exist); --clear removes it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--listing", required=True)
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--user", help="owner's email")
        group.add_argument("--clear", action="store_true")

    def handle(self, *args: Any, **opts: Any) -> None:
        listing = Listing.objects.filter(name=opts["listing"]).first()
        if listing is None:
            raise CommandError("No such listing.")
        user = None
        if opts["user"]:
            user = get_user_model().objects.filter(email__iexact=opts["user"]).first()
            if user is None:
                raise CommandError("No user with that email.")
        listing_assign_owner(listing=listing, user=user)
        self.stdout.write(f"{listing.name}: owner {'cleared' if user is None else user.pk}")

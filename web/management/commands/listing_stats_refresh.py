"""Recompute listings' popularity and trust now (what the hourly beat task does)."""

from typing import Any

from django.core.management.base import BaseCommand

from web.stats import listing_stats_refresh_all


class Command(BaseCommand):
    help = "Recompute calls in 30 days, buyers, uptime and ratings of every listing."

    def handle(self, *args: Any, **opts: Any) -> None:
        written = listing_stats_refresh_all()
        self.stdout.write(f"{written} listing(s) updated")

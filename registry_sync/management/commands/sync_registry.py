"""`python manage.py sync_registry [--full | --incremental] [--url URL] [--snapshot [PATH]]`."""

import logging
import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from registry_sync.models import SyncKind, SyncRun
from registry_sync.services import SyncProgress, registry_sync_lock, registry_sync_run


class Command(BaseCommand):
    help = (
        "Mirror the Official MCP Registry once (full or incremental, decided automatically "
        "unless forced), or load the bundled offline snapshot with --snapshot."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--full", action="store_true", help="walk everything and reconcile")
        group.add_argument(
            "--incremental", action="store_true", help="only what changed since the watermark"
        )
        group.add_argument(
            "--snapshot",
            nargs="?",
            const="",
            default=None,
            metavar="PATH",
            help="load a ServerList file offline (default: the bundled snapshot)",
        )
        parser.add_argument("--url", help="registry base URL (default: settings.REGISTRY_URL)")
        parser.add_argument(
            "--no-progress", action="store_true", help="no progress line even on a terminal"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["verbosity"] < 2:
            # One INFO line per HTTP request would drown the progress line.
            logging.getLogger("httpx").setLevel(logging.WARNING)
        kind: str | None = None
        if options["full"]:
            kind = SyncKind.FULL
        elif options["incremental"]:
            kind = SyncKind.INCREMENTAL
        elif options["snapshot"] is not None:
            kind = SyncKind.SNAPSHOT
        show_progress = not options["no_progress"] and sys.stderr.isatty()
        started = time.monotonic()
        progress = self._progress if show_progress else None
        with registry_sync_lock(url=options["url"]) as acquired:
            if not acquired:
                raise CommandError("another registry sync is running; try again later")
            try:
                run = registry_sync_run(
                    kind=kind,
                    url=options["url"],
                    snapshot_path=options["snapshot"] or None,
                    progress=progress,
                )
            except Exception as exc:
                if show_progress:
                    sys.stderr.write("\n")
                failed = SyncRun.objects.order_by("-pk").first()
                where = f" (run #{failed.pk})" if failed is not None else ""
                raise CommandError(f"registry sync failed{where}: {exc}") from exc
        if show_progress:
            sys.stderr.write("\n")
        self.stdout.write(self._summary(run, time.monotonic() - started))

    def _progress(self, p: SyncProgress) -> None:
        sys.stderr.write(
            f"\r{p.kind} sync [{p.phase}] pages {p.pages} · items {p.seen} · created {p.created}"
            f" · updated {p.updated} · unchanged {p.unchanged} · quarantined {p.quarantined}  "
        )
        sys.stderr.flush()

    @staticmethod
    def _summary(run: SyncRun, seconds: float) -> str:
        return (
            f"Registry sync #{run.pk} ({run.kind}) {run.status} in {seconds:.1f}s from "
            f"{run.source_url}\n"
            f"  pages {run.pages}, items {run.seen}, requests {run.requests}\n"
            f"  created {run.created}, updated {run.updated}, unchanged {run.unchanged}, "
            f"quarantined {run.quarantined}, gone {run.gone}, latest flips {run.latest_flips}\n"
            f"  watermark {run.watermark_after.isoformat() if run.watermark_after else '-'}"
        )

"""The hourly registry sync (settings.CELERY_BEAT_SCHEDULE["registry-sync-hourly"])."""

import logging
import random

from celery import Task, shared_task

from registry_sync.client import RegistryError
from registry_sync.services import registry_sync_lock, registry_sync_run

logger = logging.getLogger(__name__)

# A failed sync is retried a few times with growing pauses; after that the next hourly tick
# starts over from the same watermark, so nothing is lost by giving up.
MAX_RETRIES = 3
RETRY_BASE_SECONDS = 60
RETRY_MAX_SECONDS = 30 * 60
# Well under the hourly beat interval: a stuck walk is stopped before the next one is due.
SOFT_TIME_LIMIT_SECONDS = 50 * 60
TIME_LIMIT_SECONDS = 55 * 60


def retry_countdown(retries: int) -> int:
    """Exponential backoff with jitter for the task-level retry."""
    base: int = min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * (2**retries))
    return base + random.randint(0, RETRY_BASE_SECONDS // 2)  # noqa: S311 - jitter


@shared_task(  # type: ignore[untyped-decorator]
    bind=True,
    name="registry_sync.tasks.registry_sync_task",
    max_retries=MAX_RETRIES,
    soft_time_limit=SOFT_TIME_LIMIT_SECONDS,
    time_limit=TIME_LIMIT_SECONDS,
)
def registry_sync_task(self: Task, kind: str | None = None, url: str | None = None) -> int | None:
    """Sync the mirror once; returns the SyncRun id, or None when another sync holds the lock.

    Idempotent: upserts compare content hashes and the watermark only moves after a complete
    walk, so running it twice (or after a crash) converges on the same rows.
    """
    with registry_sync_lock(url=url) as acquired:
        if not acquired:
            logger.info("registry_sync.task.skipped_locked")
            return None
        try:
            run = registry_sync_run(kind=kind, url=url)
        except RegistryError as exc:
            countdown = retry_countdown(self.request.retries)
            logger.warning(
                "registry_sync.task.retry",
                extra={"retries": self.request.retries, "countdown": countdown},
            )
            raise self.retry(exc=exc, countdown=countdown) from exc
    return run.pk

"""Celery tasks of the web layer: thin and idempotent."""

from celery import shared_task

from web.stats import listing_stats_refresh_all


@shared_task  # type: ignore[untyped-decorator]
def listing_stats_refresh_task() -> int:
    """Beat: recompute every listing's popularity and trust figures (a rerun writes the same)."""
    return listing_stats_refresh_all()

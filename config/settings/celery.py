"""Celery settings. Without a broker (the demo) tasks run eagerly in-process."""

import os

from celery.schedules import crontab

from config.env import env_bool, env_str

_redis_url = os.environ.get("REDIS_URL", "")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", _redis_url or "memory://")
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=not _redis_url)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"

CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    # The registry asks aggregators to poll about hourly.
    "registry-sync-hourly": {
        "task": "registry_sync.tasks.registry_sync_task",
        "schedule": crontab(minute=7),
    },
}

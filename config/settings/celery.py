"""Celery settings. Without a broker (the demo) tasks run eagerly in-process."""

import os

from celery.schedules import crontab

from config.env import env_bool, env_str

_redis_url = os.environ.get("REDIS_URL", "")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", _redis_url or "memory://localhost/")
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
    # Gateway usage: the stream is drained often so quotas/receipts and the ledger stay close;
    # reports go to Stripe per customer and minute; the reconcile compares the last day hourly.
    # Price increases reach existing subscribers when their notice period ends; expiring
    # licenses (grants with --days, rotated keys' overlap) are swept on the same cadence.
    "billing-plan-prices-apply-due": {
        "task": "billing.tasks.plan_prices_apply_due_task",
        "schedule": 15 * 60,
    },
    # Events Stripe could not deliver (our endpoint down longer than its retries) are listed
    # from GET /v1/events and processed like webhooks; a run that finds nothing new is a no-op.
    "billing-stripe-events-catch-up": {
        "task": "billing.tasks.stripe_events_catch_up_task",
        "schedule": 15 * 60,
    },
    "billing-licenses-expire-due": {
        "task": "billing.tasks.licenses_expire_due_task",
        "schedule": 15 * 60,
    },
    # Keys that stop working within 3 days (billing.services.notices): one email per key and
    # expiry (notifications make a second run send nothing).
    "billing-api-keys-expiring-notify": {
        "task": "billing.tasks.api_keys_expiring_notify_task",
        "schedule": 60 * 60,
    },
    # Notifications whose send task was lost (a broker outage at commit) are queued again.
    "notifications-resend-stuck": {
        "task": "notifications.tasks.notifications_resend_stuck_task",
        "schedule": 5 * 60,
    },
    # Expired OAuth tokens, codes and unanswered authorization requests (oauth.tasks).
    "oauth-purge": {"task": "oauth.tasks.oauth_purge_task", "schedule": crontab(minute=41)},
    "gateway-usage-drain": {"task": "gateway.tasks.usage_drain_task", "schedule": 5.0},
    "gateway-inflight-sweep": {"task": "gateway.tasks.inflight_sweep_task", "schedule": 30.0},
    # Minutes are sealed 10 s after they end; a run every 10 s sends them soon after.
    "gateway-usage-report": {"task": "gateway.tasks.usage_report_task", "schedule": 10.0},
    # Tool changes gateway processes saw pass (the rug-pull guard) become pending changes and
    # emails; the gateway refuses the changed tools in its own process at once regardless.
    "gateway-tool-changes-drain": {
        "task": "gateway.tasks.tool_changes_drain_task",
        "schedule": 10.0,
    },
    # Tools shown on listing pages: re-read from every enabled upstream every hour (a save of
    # the upstream also refreshes its own list at once). Hourly because it is also the health
    # check of an upstream nobody calls, and how a changed tool list is found without a call.
    "gateway-upstream-tools-refresh": {
        "task": "gateway.tasks.hosted_upstreams_tools_refresh_task",
        "schedule": crontab(minute=17),
    },
    "gateway-usage-reconcile": {
        "task": "gateway.tasks.usage_reconcile_task",
        "schedule": crontab(minute=37),
    },
    # Popularity and trust on listings (web.stats): calls in 30 days, buyers, uptime, ratings.
    # Hourly: the figures rank search and fill pages, and a few minutes old is fine.
    "web-listing-stats-refresh": {
        "task": "web.tasks.listing_stats_refresh_task",
        "schedule": crontab(minute=23),
    },
    # Creator statements of the month that ended, against Stripe's transfers and fees (on the
    # 2nd, after Stripe's own month-end activity has settled).
    "billing-creator-statements-reconcile": {
        "task": "billing.tasks.creator_statements_reconcile_task",
        "schedule": crontab(day_of_month=2, hour=3, minute=11),
    },
}

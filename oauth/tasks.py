"""Housekeeping of the authorization server, run by beat."""

from __future__ import annotations

import logging

from celery import shared_task

from billing.services.licenses import access_tokens_purge
from oauth.services import oauth_state_purge

logger = logging.getLogger(__name__)


@shared_task  # type: ignore[untyped-decorator]
def oauth_purge_task() -> dict[str, int]:
    """Expired access tokens, refresh tokens, codes and unanswered authorization requests:
    none of them admits anything any more. Idempotent."""
    counts = {"access_tokens": access_tokens_purge(), **oauth_state_purge()}
    logger.info("oauth.purged", extra=counts)
    return counts

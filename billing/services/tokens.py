"""Personal API tokens: what scripts and agents send to `/api/v1/me/...` instead of a browser
session. Created on the tokens page and shown once; only the HMAC (billing.keys, the license
keys' pepper) and a display prefix are kept; revocable; last use recorded at most once a minute.
Raw tokens are never logged: logs carry the token's id."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from django.db.models import Q
from django.utils import timezone

from billing import keys
from billing.models import PersonalToken
from common.exceptions import ApplicationError, NotFoundError

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

MAX_LIVE_TOKENS = 20  # per person: enough for every script; a leak is easier to see
LAST_USED_RESOLUTION = timedelta(minutes=1)  # one write a minute per token, not one per request


def personal_token_create(*, user: User, name: str = "") -> tuple[PersonalToken, str]:
    """Mint a token; returns the row and the raw token, shown exactly once. Not idempotent by
    nature (each call is a new secret)."""
    live = PersonalToken.objects.filter(user_id=user.pk, revoked_at__isnull=True).count()
    if live >= MAX_LIVE_TOKENS:
        raise ApplicationError("You have too many API tokens; revoke one first.")
    raw = keys.token_generate()
    token = PersonalToken(
        user=user,
        name=name.strip(),
        token_hash=keys.key_hash(raw),
        display_prefix=raw[: keys.DISPLAY_PREFIX_LENGTH],
    )
    token.full_clean()
    token.save()
    logger.info("billing.personal_token_created", extra={"token_id": token.pk, "user_id": user.pk})
    return token, raw


def personal_token_revoke(*, user: User, token_id: int) -> PersonalToken:
    """Revoke one of the user's tokens now. Idempotent: a revoked token keeps its first
    revocation time (a conditional update, so two revocations cannot race)."""
    token = PersonalToken.objects.filter(pk=token_id, user_id=user.pk).first()
    if token is None:
        raise NotFoundError("No such token.")
    now = timezone.now()
    if PersonalToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now):
        token.revoked_at = now
        logger.info("billing.personal_token_revoked", extra={"token_id": token.pk})
    else:
        token.refresh_from_db(fields=["revoked_at"])
    return token


def personal_token_authenticate(*, raw_token: str) -> PersonalToken | None:
    """The live token behind `raw_token` (with its user), or None. One indexed read; the last
    use is written at most once a minute per token."""
    if not keys.token_is_well_formed(raw_token):
        return None
    token = (
        PersonalToken.objects.select_related("user")
        .filter(token_hash=keys.key_hash(raw_token), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.last_used_at is None or token.last_used_at < now - LAST_USED_RESOLUTION:
        PersonalToken.objects.filter(pk=token.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
        token.last_used_at = now
    return token

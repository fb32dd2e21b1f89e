"""Licenses and their keys: issue, change status (append-only history), mint/rotate/revoke keys,
and keep the gateway's entitlement cache honest."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

import redis
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Q, QuerySet, Value, When
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from billing import keys
from billing.lock_objects import api_key_lock, license_lock
from billing.models import (
    TERMINAL_LICENSE_STATUSES,
    AccessToken,
    ApiKey,
    ApiKeyKind,
    CheckoutOrder,
    CreatorSubscription,
    License,
    LicenseEvent,
    LicenseSource,
    LicenseStatus,
    Plan,
    PlanPrice,
)
from billing.services.notices import key_created_notify
from common.exceptions import ApplicationError

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

ENTITLEMENT_CACHE_PREFIX = "tb:ent:"
# The gateway's stale copy for PostgreSQL outages (gateway.ratelimit.StaleEntitlements).
ENTITLEMENT_STALE_PREFIX = "tb:ents:"
USABLE_FOR_NEW_KEYS = (LicenseStatus.ACTIVE, LicenseStatus.PAST_DUE)


# --- the gateway's cache -------------------------------------------------------------------


@lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_timeout=settings.GATEWAY_REDIS_TIMEOUT, socket_connect_timeout=0.5
    )


def entitlement_cache_invalidate(*, key_hashes: list[str]) -> None:
    """Delete the gateway's cached entitlements `tb:ent:<key_hash>` and their stale copies
    `tb:ents:<key_hash>` (so a key revoked before a PostgreSQL outage is not served in it).

    Called on commit after any change to a key, license or plan. Idempotent (DEL of a missing key
    is a no-op). If Redis is down the cache's short TTL bounds how long a stale entry lives, so a
    failure is logged, not raised. Without Redis (the demo) there is no shared cache to clear.
    """
    if not key_hashes or not settings.REDIS_URL:
        return
    try:
        prefixes = (ENTITLEMENT_CACHE_PREFIX, ENTITLEMENT_STALE_PREFIX)
        _redis(settings.REDIS_URL).delete(*[p + h for h in key_hashes for p in prefixes])
    except redis.RedisError:
        logger.warning("billing.entitlement_cache_invalidate_failed", extra={"n": len(key_hashes)})


def _invalidate_on_commit(key_hashes: Iterable[str]) -> None:
    hashes = list(key_hashes)
    if hashes:
        transaction.on_commit(lambda: entitlement_cache_invalidate(key_hashes=hashes))


def _credential_hashes(rows: QuerySet[ApiKey]) -> list[str]:
    """The cache keys of these keys: their own hashes and their live OAuth access tokens'."""
    hashes = list(rows.values_list("key_hash", flat=True))
    hashes += AccessToken.objects.filter(
        key__in=rows.values("pk"), expires_at__gt=timezone.now()
    ).values_list("token_hash", flat=True)
    return hashes


def invalidate_licenses_on_commit(*, license_ids: Iterable[int]) -> None:
    """Queue cache deletion for every key of these licenses (status, price or plan changed)."""
    ids = list(license_ids)
    if ids:
        _invalidate_on_commit(_credential_hashes(ApiKey.objects.filter(license_id__in=ids)))


def invalidate_plan_on_commit(*, plan: Plan) -> None:
    _invalidate_on_commit(_credential_hashes(ApiKey.objects.filter(license__plan=plan)))


# --- licenses ------------------------------------------------------------------------------


def license_issue(
    *,
    buyer: User,
    plan: Plan,
    plan_price: PlanPrice,
    source: str,
    reason: str,
    order: CheckoutOrder | None = None,
    creator_subscription: CreatorSubscription | None = None,
    expires_at: datetime | None = None,
    stripe_event_id: str = "",
) -> License:
    """Create an active license and its first history row.

    Invariant: at most one live license per (buyer, plan) and one per order, both enforced by
    DB constraints; a violation raises ApplicationError (callers that fulfil orders hold the
    order lock and check `order.license` first, so for them it cannot happen twice).
    """
    now = timezone.now()
    lic = License(
        buyer=buyer,
        listing_id=plan.listing_id,
        plan=plan,
        plan_price=plan_price,
        status=LicenseStatus.ACTIVE,
        status_changed_at=now,
        source=source,
        order=order,
        creator_subscription=creator_subscription,
        expires_at=expires_at,
    )
    lic.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            lic.save()
    except IntegrityError as exc:
        raise ApplicationError("You already have a license for this plan.") from exc
    LicenseEvent.objects.create(
        license=lic,
        from_status="",
        to_status=lic.status,
        reason=reason,
        stripe_event_id=stripe_event_id,
    )
    logger.info("billing.license_issued", extra={"license_id": lic.pk, "plan_id": plan.pk})
    return lic


def license_set_status(
    *, license: License, to_status: str, reason: str, stripe_event_id: str = ""
) -> bool:
    """Move a license to `to_status`, append the history row and clear its keys' cache.

    Call while holding the license lock (`lock_objects.license_lock`). Idempotent: setting the
    current status is a no-op returning False. revoked and expired are terminal: nothing moves
    a license out of them (a refunded license never comes back with a late subscription event).
    """
    if license.status == to_status:
        return False
    if license.status in TERMINAL_LICENSE_STATUSES:
        logger.info(
            "billing.license_status_terminal",
            extra={"license_id": license.pk, "status": license.status, "wanted": to_status},
        )
        return False
    from_status = license.status
    license.status = to_status
    license.status_changed_at = timezone.now()
    license.save(update_fields=["status", "status_changed_at", "updated_at"])
    LicenseEvent.objects.create(
        license=license,
        from_status=from_status,
        to_status=to_status,
        reason=reason,
        stripe_event_id=stripe_event_id,
    )
    invalidate_licenses_on_commit(license_ids=[license.pk])
    logger.info(
        "billing.license_status_changed",
        extra={"license_id": license.pk, "from": from_status, "to": to_status},
    )
    return True


def license_revoke(*, license_id: int, reason: str, stripe_event_id: str = "") -> License:
    """Revoke a license for good (refund, admin). Takes the license lock itself."""
    with transaction.atomic():
        lic = license_lock(pk=license_id)
        license_set_status(
            license=lic,
            to_status=LicenseStatus.REVOKED,
            reason=reason,
            stripe_event_id=stripe_event_id,
        )
    return lic


def license_grant(
    *,
    buyer: User,
    plan: Plan,
    days: int | None = None,
    reason: str = "complimentary grant",
) -> tuple[License, str]:
    """A complimentary license with its first key (raw key returned once, never stored).

    All-or-nothing: the license and key are created in one transaction. Not idempotent by
    design (an operator action); the live-license constraint refuses a duplicate grant.
    """
    from billing.selectors import plan_price_latest

    if not plan.active:
        raise ApplicationError("This plan is not active.")
    expires_at = timezone.now() + timedelta(days=days) if days else None
    with transaction.atomic():
        lic = license_issue(
            buyer=buyer,
            plan=plan,
            plan_price=plan_price_latest(plan=plan),
            source=LicenseSource.GRANT,
            reason=reason,
            expires_at=expires_at,
        )
        _key, raw = api_key_create(license=lic, name="granted", expires_at=expires_at)
    return lic, raw


# --- keys ----------------------------------------------------------------------------------


def api_key_create(
    *,
    license: License,
    name: str = "",
    expires_at: datetime | None = None,
    daily_spend_cap: int | None = None,
    monthly_spend_cap: int | None = None,
    rotated_from: ApiKey | None = None,
) -> tuple[ApiKey, str]:
    """Mint a key for a usable license; returns the row and the raw key, shown exactly once.

    Only the HMAC and a display prefix are stored. Not idempotent by nature (each call is a new
    secret); callers that must mint once (the success page) hold the order lock.
    """
    if license.status not in USABLE_FOR_NEW_KEYS:
        raise ApplicationError("Keys can only be created for an active license.")
    live_keys = ApiKey.objects.filter(
        license=license, revoked_at__isnull=True, kind=ApiKeyKind.KEY
    ).count()
    if live_keys >= settings.BILLING_MAX_KEYS_PER_LICENSE:
        raise ApplicationError("This license has too many keys; revoke one first.")
    if expires_at is not None and expires_at <= timezone.now():
        raise ApplicationError("A key's expiry must be in the future.")
    raw = keys.key_generate(live=settings.LICENSE_KEYS_LIVE)
    key = ApiKey(
        license=license,
        name=name,
        key_hash=keys.key_hash(raw),
        display_prefix=keys.key_display_prefix(raw),
        expires_at=expires_at,
        daily_spend_cap=daily_spend_cap,
        monthly_spend_cap=monthly_spend_cap,
        rotated_from=rotated_from,
    )
    key.full_clean()
    key.save()
    key_created_notify(key=key)  # a security mail (created or rotated), sent after commit
    logger.info("billing.api_key_created", extra={"key_id": key.pk, "license_id": license.pk})
    return key, raw


def api_key_revoke(*, key_id: int) -> ApiKey:
    """Revoke a key now. Takes the key lock; idempotent (a revoked key stays revoked at its
    first revocation time). Clears the key's cache entry on commit."""
    with transaction.atomic():
        key = api_key_lock(pk=key_id)
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            logger.info("billing.api_key_revoked", extra={"key_id": key.pk})
        _invalidate_on_commit(_credential_hashes(ApiKey.objects.filter(pk=key.pk)))
    return key


def api_key_rotate(*, key_id: int, overlap: timedelta | None = None) -> tuple[ApiKey, str]:
    """Mint a successor key; the old one keeps working for the overlap window, then expires.

    Holds the key lock, so two concurrent rotations of one key make one successor (the second
    finds `rotated_to` set and is refused). Clears the old key's cache entry on commit because
    its expiry changed.
    """
    if overlap is None:
        overlap = timedelta(hours=settings.BILLING_KEY_ROTATION_OVERLAP_HOURS)
    with transaction.atomic():
        old = api_key_lock(pk=key_id)
        now = timezone.now()
        if old.revoked_at is not None or (old.expires_at is not None and old.expires_at <= now):
            raise ApplicationError("This key is no longer valid and cannot be rotated.")
        if old.kind != ApiKeyKind.KEY:
            raise ApplicationError("A connected client renews its own tokens; it has no key.")
        if ApiKey.objects.filter(rotated_from=old).exists():
            raise ApplicationError("This key has already been rotated.")
        lic = license_lock(pk=old.license_id)
        new, raw = api_key_create(
            license=lic,
            name=old.name,
            expires_at=old.expires_at,
            daily_spend_cap=old.daily_spend_cap,
            monthly_spend_cap=old.monthly_spend_cap,
            rotated_from=old,
        )
        old_end = now + overlap
        if old.expires_at is None or old.expires_at > old_end:
            old.expires_at = old_end
            old.save(update_fields=["expires_at"])
        _invalidate_on_commit([old.key_hash])
    logger.info("billing.api_key_rotated", extra={"key_id": old.pk, "new_key_id": new.pk})
    return new, raw


def api_key_caps_set(
    *, key_id: int, daily_spend_cap: int | None, monthly_spend_cap: int | None
) -> ApiKey:
    """Set (or clear, with None) a key's spend caps in minor units of the plan's currency.

    Holds the key lock; idempotent (the same caps again change nothing). The caps are part of
    the cached entitlement, so the key's cache entry is cleared on commit and the gateway
    enforces the new caps on its next call.
    """
    for cap in (daily_spend_cap, monthly_spend_cap):
        if cap is not None and cap < 0:
            raise ApplicationError("Spend caps cannot be negative.")
    with transaction.atomic():
        key = api_key_lock(pk=key_id)
        if key.revoked_at is not None:
            raise ApplicationError("This key is revoked.")
        if (key.daily_spend_cap, key.monthly_spend_cap) != (daily_spend_cap, monthly_spend_cap):
            key.daily_spend_cap = daily_spend_cap
            key.monthly_spend_cap = monthly_spend_cap
            key.save(update_fields=["daily_spend_cap", "monthly_spend_cap"])
            _invalidate_on_commit(_credential_hashes(ApiKey.objects.filter(pk=key.pk)))
            logger.info("billing.api_key_caps_set", extra={"key_id": key.pk})
    return key


def oauth_key_create(*, license: License, name: str) -> ApiKey:
    """The key row an OAuth connection calls through (kind oauth). Its own secret is random and
    discarded, so it works only through the access tokens `access_token_issue` mints for it.
    Call inside the connection's transaction."""
    if license.status not in USABLE_FOR_NEW_KEYS:
        raise ApplicationError("Only an active license can be connected to a client.")
    live = ApiKey.objects.filter(license=license, revoked_at__isnull=True, kind=ApiKeyKind.OAUTH)
    if live.count() >= settings.OAUTH_MAX_CONNECTIONS_PER_LICENSE:
        raise ApplicationError("This license has too many connected clients; disconnect one first.")
    key = ApiKey(
        license=license,
        kind=ApiKeyKind.OAUTH,
        name=name[:100],
        key_hash=keys.key_hash(keys.key_generate(live=False)),
        display_prefix="oauth",
    )
    key.full_clean()
    key.save()
    logger.info("billing.oauth_key_created", extra={"key_id": key.pk, "license_id": license.pk})
    return key


def access_token_issue(*, key: ApiKey, seconds: int) -> tuple[AccessToken, str]:
    """Mint an access token standing for an OAuth key for `seconds`; returns the row and the raw
    token, handed to the client once. Refused for a revoked or non-OAuth key."""
    if key.kind != ApiKeyKind.OAUTH or key.revoked_at is not None:
        raise ApplicationError("This connection is no longer valid.")
    raw = keys.oauth_token_generate(keys.ACCESS_TOKEN_PREFIX)
    token = AccessToken.objects.create(
        key=key,
        token_hash=keys.key_hash(raw),
        expires_at=timezone.now() + timedelta(seconds=seconds),
    )
    return token, raw


def access_tokens_purge(*, now: datetime | None = None) -> int:
    """Delete access tokens that expired a day ago or more (they can no longer admit anything;
    the margin keeps a just-expired token's row for support questions). Idempotent."""
    cutoff = (now or timezone.now()) - timedelta(days=1)
    deleted, _ = AccessToken.objects.filter(expires_at__lt=cutoff).delete()
    return deleted


def keys_mark_used(*, last_used: dict[int, datetime]) -> None:
    """Record last-use times in one UPDATE (called by the gateway's usage drain in batches).

    Idempotent and order-insensitive: a key's `last_used_at` only ever moves forward
    (GREATEST), so a late or repeated batch cannot move it back. No lock needed.
    """
    if not last_used:
        return
    new_value = Case(
        *[When(pk=pk, then=Value(ts)) for pk, ts in last_used.items()],
        output_field=ApiKey._meta.get_field("last_used_at"),
    )
    ApiKey.objects.filter(pk__in=list(last_used)).update(
        last_used_at=Greatest(Coalesce(F("last_used_at"), new_value), new_value)
    )


def licenses_expire_due(*, now: datetime | None = None) -> int:
    """Expire live licenses whose `expires_at` passed (grants with --days). Idempotent: expired
    licenses are terminal and no longer match."""
    now = now or timezone.now()
    ids = list(
        License.objects.filter(
            ~Q(status__in=TERMINAL_LICENSE_STATUSES), expires_at__isnull=False, expires_at__lte=now
        ).values_list("pk", flat=True)
    )
    count = 0
    for pk in ids:
        with transaction.atomic():
            lic = license_lock(pk=pk)
            if license_set_status(license=lic, to_status=LicenseStatus.EXPIRED, reason="expired"):
                count += 1
    return count

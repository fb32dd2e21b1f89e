"""What billing tells people by email: the event -> recipient and context mapping for each kind.

Each function is called where the event happens, inside its transaction, and queues through
`notifications.services.notification_queue`, whose unique (recipient, kind, event key) makes a
replayed webhook, a retried task or a second sweep send nothing. Event keys name the Stripe
object or our row the event is about. Contexts are plain values and never carry key material
(a key's name, never its prefix or secret).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from billing.models import (
    LIVE_LICENSE_STATUSES,
    ApiKey,
    CheckoutOrder,
    ConnectAccount,
    CreatorSubscription,
    Dispute,
    License,
    PlanKind,
    PlanPrice,
)
from common.money import money_format
from notifications.models import NotificationKind as K
from notifications.services import notification_queue

logger = logging.getLogger(__name__)

# Keys that stop working within this many days get one email (rotated keys' overlap, grants).
KEY_EXPIRING_NOTICE = timedelta(days=3)
QUOTA_NOTICE_SHARE = 0.8


def _url(name: str, **kwargs: Any) -> str:
    return settings.SITE_URL + reverse(name, kwargs=kwargs or None)


def _day(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d") if value else ""


def _moment(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else ""


def _price_text(*, kind: str, price: PlanPrice, currency: str) -> str:
    """One line of what a price version costs (the email's own short form)."""

    def money(amount: int) -> str:
        return money_format(amount=amount, currency=currency)

    parts = []
    if kind == PlanKind.ONE_TIME:
        parts.append(money(price.unit_amount))
    elif kind == PlanKind.SUBSCRIPTION:
        parts.append(f"{money(price.unit_amount)} a month")
        if price.overage_amount:
            parts.append(f"{money(price.overage_amount)} per call over the included calls")
    elif kind == PlanKind.PER_CALL:
        parts.append(f"{money(price.per_call_amount)} per call")
    for tool, spec in sorted(price.tool_prices.items())[:10]:
        if spec.get("excluded"):
            parts.append(f"{tool}: not included")
        else:
            parts.append(f"{tool}: {money(int(spec['unit_amount']))} per call")
    return ", ".join(parts) or "free"


# --- buyers and creators at a purchase -----------------------------------------------------


def purchase_notify(*, order: CheckoutOrder, license: License) -> None:
    """The buyer's receipt and the creator's new-sale email for a fulfilled order. Call inside
    the fulfilment transaction (both are queued once per order)."""
    plan = order.plan
    amount = money_format(amount=order.amount, currency=order.currency)
    common = {
        "listing_name": plan.listing.name,
        "plan_name": plan.name,
        "amount": amount,
        "paid_on": _day(order.completed_at or timezone.now()),
    }
    notification_queue(
        recipient_id=order.buyer_id,
        kind=K.RECEIPT,
        event_key=f"order:{order.pk}",
        context={
            **common,
            "order_ref": f"#{order.pk}",
            "recurring": order.mode == "subscription",
            "action_url": _url("ui:license", license_id=license.pk),
            "action_label": "Open your license",
        },
    )
    fee = order.amount * order.platform_fee_bps // 10_000
    notification_queue(
        recipient_id=order.creator.user_id,
        kind=K.NEW_SALE,
        event_key=f"order:{order.pk}",
        context={
            **common,
            "net": money_format(amount=order.amount - fee, currency=order.currency)
            if order.amount
            else "",
            "action_url": _url("ui:creator"),
            "action_label": "Open your sales",
        },
    )


# --- keys ------------------------------------------------------------------------------------


def key_created_notify(*, key: ApiKey) -> None:
    """A security mail for every new or rotated key (not optional). Never the key or its
    prefix: only its name and when."""
    lic = key.license
    rotated = key.rotated_from
    context: dict[str, Any] = {
        "listing_name": lic.listing.name,
        "key_name": key.name,
        "created_at": _moment(key.created_at or timezone.now()),
        "action_url": _url("ui:license", license_id=lic.pk),
        "action_label": "Review your keys",
    }
    if rotated is not None:
        context["old_expires_at"] = _moment(rotated.expires_at)
    notification_queue(
        recipient_id=lic.buyer_id,
        kind=K.KEY_ROTATED if rotated is not None else K.KEY_CREATED,
        event_key=f"key:{key.pk}",
        context=context,
    )


def api_keys_expiring_notify(*, now: datetime | None = None) -> int:
    """One email per key that stops working within KEY_EXPIRING_NOTICE (per key and expiry:
    a key whose expiry moves gets a new one). Returns the notifications queued."""
    now = now or timezone.now()
    keys = (
        ApiKey.objects.filter(
            revoked_at__isnull=True,
            expires_at__gt=now,
            expires_at__lte=now + KEY_EXPIRING_NOTICE,
            license__status__in=LIVE_LICENSE_STATUSES,
        )
        .select_related("license__listing")
        .order_by("pk")[:1000]
    )
    queued = 0
    for key in keys:
        assert key.expires_at is not None  # noqa: S101 - filtered above
        lic = key.license
        row = notification_queue(
            recipient_id=lic.buyer_id,
            kind=K.KEY_EXPIRING,
            event_key=f"key:{key.pk}:expires:{int(key.expires_at.timestamp())}",
            context={
                "listing_name": lic.listing.name,
                "key_name": key.name,
                "expires_at": _moment(key.expires_at),
                "expires_on": _day(key.expires_at),
                "action_url": _url("ui:license", license_id=lic.pk),
                "action_label": "Manage your keys",
            },
        )
        queued += row is not None
    return queued


# --- prices ----------------------------------------------------------------------------------


def price_increase_notify(*, price_id: int) -> int:
    """Tell every buyer whose live license is on an older version of the plan that `price_id`
    applies to them from its effective date. Once per buyer and version."""
    price = PlanPrice.objects.select_related("plan__listing").get(pk=price_id)
    plan = price.plan
    licenses = (
        License.objects.filter(
            plan=plan, status__in=LIVE_LICENSE_STATUSES, plan_price__version__lt=price.version
        )
        .select_related("plan_price")
        .order_by("pk")
    )
    queued = 0
    for lic in licenses:
        row = notification_queue(
            recipient_id=lic.buyer_id,
            kind=K.PRICE_INCREASE,
            event_key=f"price:{price.pk}:license:{lic.pk}",
            context={
                "listing_name": plan.listing.name,
                "plan_name": plan.name,
                "old_price": _price_text(
                    kind=plan.kind, price=lic.plan_price, currency=plan.currency
                ),
                "new_price": _price_text(kind=plan.kind, price=price, currency=plan.currency),
                "effective_on": _day(price.effective_at),
                "action_url": _url("ui:license", license_id=lic.pk),
                "action_label": "Open your license",
            },
        )
        queued += row is not None
    return queued


# --- subscriptions and payments --------------------------------------------------------------


def _subscription_listings(row: CreatorSubscription) -> tuple[str, int | None]:
    lic = row.licenses.select_related("listing").order_by("pk").first()
    if lic is None:
        return row.creator.handle, None
    names = sorted(set(row.licenses.values_list("listing__name", flat=True)))
    return ", ".join(names[:5]), lic.pk


def payment_failed_notify(*, invoice: dict[str, Any], row: CreatorSubscription | None) -> None:
    """invoice.payment_failed: once per invoice and attempt (Stripe retries are new attempts)."""
    if row is None:
        return
    listing_name, license_id = _subscription_listings(row)
    next_attempt = invoice.get("next_payment_attempt")
    notification_queue(
        recipient_id=row.buyer_id,
        kind=K.PAYMENT_FAILED,
        event_key=f"invoice:{invoice.get('id')}:attempt:{invoice.get('attempt_count') or 0}",
        context={
            "listing_name": listing_name,
            "amount": money_format(
                amount=int(invoice.get("amount_due") or 0),
                currency=str(invoice.get("currency") or "usd"),
            ),
            "next_attempt_on": _day(datetime.fromtimestamp(int(next_attempt), tz=UTC))
            if next_attempt
            else "",
            "action_url": _url("ui:license", license_id=license_id)
            if license_id
            else _url("ui:licenses"),
            "action_label": "Open your license",
        },
    )


ENDED = ("canceled", "incomplete_expired")


def subscription_change_notify(*, row: CreatorSubscription | None) -> None:
    """After a subscription re-read: "ending" once per period end it is set to end at, "ended"
    once per subscription."""
    if row is None:
        return
    listing_name, license_id = _subscription_listings(row)
    url = _url("ui:license", license_id=license_id) if license_id else _url("ui:licenses")
    if row.status in ENDED:
        notification_queue(
            recipient_id=row.buyer_id,
            kind=K.SUBSCRIPTION_ENDED,
            event_key=f"sub:{row.stripe_subscription_id}:ended",
            context={"listing_name": listing_name, "action_url": url, "action_label": "Open"},
        )
    elif row.cancel_at_period_end and row.current_period_end is not None:
        notification_queue(
            recipient_id=row.buyer_id,
            kind=K.SUBSCRIPTION_ENDING,
            event_key=(
                f"sub:{row.stripe_subscription_id}:ending:{int(row.current_period_end.timestamp())}"
            ),
            context={
                "listing_name": listing_name,
                "ends_on": _day(row.current_period_end),
                "action_url": url,
                "action_label": "Open your license",
            },
        )


# --- creators --------------------------------------------------------------------------------


def payouts_attention_notify(*, row: ConnectAccount, account: dict[str, Any]) -> None:
    """account.updated with requirements Stripe needs (currently_due, past_due) or payouts
    disabled: once per distinct set of requirements, so a re-sent event or an unrelated update
    is silent and a new demand is a new email."""
    req = account.get("requirements") or {}
    currently_due = sorted(str(x) for x in (req.get("currently_due") or []))
    past_due = sorted(str(x) for x in (req.get("past_due") or []))
    disabled = str(req.get("disabled_reason") or "")
    if not (currently_due or past_due or disabled):
        return
    digest = hashlib.sha256(
        "|".join([",".join(currently_due), ",".join(past_due), disabled]).encode()
    ).hexdigest()[:16]
    notification_queue(
        recipient_id=row.creator.user_id,
        kind=K.PAYOUTS_ATTENTION,
        event_key=f"account:{row.stripe_account_id}:{digest}",
        context={
            "currently_due": ", ".join(currently_due[:20]),
            "past_due": ", ".join(past_due[:20]),
            "disabled_reason": disabled,
            "action_url": _url("ui:creator"),
            "action_label": "Finish onboarding",
        },
    )


def dispute_opened_notify(*, dispute: Dispute | None) -> None:
    if dispute is None:
        return
    sale = dispute.sale
    notification_queue(
        recipient_id=dispute.creator.user_id,
        kind=K.DISPUTE_OPENED,
        event_key=f"dispute:{dispute.stripe_dispute_id}",
        context={
            "listing_name": sale.listing.name,
            "amount": money_format(amount=dispute.amount, currency=dispute.currency),
            "held": money_format(amount=dispute.held, currency=dispute.currency),
            "reason": dispute.reason.replace("_", " "),
            "action_url": _url("ui:creator"),
            "action_label": "Open your earnings",
        },
    )


# --- quota -----------------------------------------------------------------------------------


def quota_event_key(*, license_id: int, period_start: datetime) -> str:
    return f"quota80:{license_id}:{int(period_start.timestamp())}"


def quota_usage_notify(
    *, used_by_license: dict[int, int], period_starts: dict[int, datetime]
) -> int:
    """Buyers whose license used QUOTA_NOTICE_SHARE of its monthly calls: once per license and
    quota period (the period's start names it)."""
    queued = 0
    licenses = License.objects.filter(pk__in=list(used_by_license)).select_related(
        "plan", "listing"
    )
    for lic in licenses:
        included = lic.plan.included_calls
        used = used_by_license[lic.pk]
        if not included or used < included * QUOTA_NOTICE_SHARE:
            continue
        start = period_starts[lic.pk]
        row = notification_queue(
            recipient_id=lic.buyer_id,
            kind=K.QUOTA_80,
            event_key=quota_event_key(license_id=lic.pk, period_start=start),
            context={
                "listing_name": lic.listing.name,
                "used": f"{used:,}",
                "included": f"{included:,}",
                "percent": min(100, used * 100 // included),
                "hard_cap": lic.plan.hard_cap,
                "action_url": _url("ui:license", license_id=lic.pk),
                "action_label": "See your usage",
            },
        )
        queued += row is not None
    return queued


def licenses_quota_periods(
    *, license_ids: Iterable[int], now: datetime | None = None
) -> dict[int, datetime]:
    """Start of the current quota period of each license that has a monthly quota: the
    subscription's period, else the calendar month (billing.selectors' rule). One query."""
    now = now or timezone.now()
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    rows = License.objects.filter(
        Q(pk__in=list(license_ids)), plan__included_calls__isnull=False
    ).values_list("pk", "creator_subscription__current_period_start")
    return {pk: start or month for pk, start in rows}


def license_upcoming_price(*, license: License) -> dict[str, str] | None:
    """The price version this license moves to later (an increase in its notice period), in
    the words of the price-increase email, for the license page; None when there is none.
    One query."""
    plan = license.plan
    upcoming = (
        PlanPrice.objects.filter(
            plan_id=plan.pk,
            version__gt=license.plan_price.version,
            effective_at__gt=timezone.now(),
        )
        .order_by("-version")
        .first()
    )
    if upcoming is None:
        return None
    return {
        "old_price": _price_text(kind=plan.kind, price=license.plan_price, currency=plan.currency),
        "new_price": _price_text(kind=plan.kind, price=upcoming, currency=plan.currency),
        "effective_on": _day(upcoming.effective_at),
    }

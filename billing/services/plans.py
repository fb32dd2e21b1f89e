"""Plans and versioned prices, and their Stripe Products, Prices and Billing Meters.

Stripe objects are created idempotently: every create carries a key derived from our row
(`plan_stripe_sync`), so a retry after a dropped response gets the same object back, and the
id is stored with a conditional UPDATE so a concurrent sync cannot overwrite it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from billing import stripe_client
from billing.lock_objects import plan_lock
from billing.models import (
    LIVE_LICENSE_STATUSES,
    License,
    LicenseEvent,
    Plan,
    PlanKind,
    PlanPrice,
)
from billing.pricing import plan_amount_errors, tool_price_refusal
from billing.services.creators import listing_require_owned
from billing.services.licenses import invalidate_licenses_on_commit, invalidate_plan_on_commit
from common.exceptions import ApplicationError
from common.text import clean_text
from marketplace.models import Listing

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

MAX_TOOL_PRICES = 200
# Stripe subscription statuses after which nothing is billed again.
ENDED_SUBSCRIPTION_STATUSES = ("canceled", "incomplete_expired")


def _clean_tool_prices(tool_prices: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    cleaned: dict[str, dict[str, Any]] = {}
    for tool, spec in (tool_prices or {}).items():
        if not isinstance(tool, str) or not tool or len(tool) > 128:
            raise ApplicationError("Tool names must be 1-128 characters.")
        if not isinstance(spec, dict):
            raise ApplicationError("Each tool price is {unit_amount, excluded}.")
        amount = spec.get("unit_amount", 0)
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise ApplicationError("Tool prices are whole minor units, 0 or more.")
        cleaned[tool] = {"unit_amount": amount, "excluded": bool(spec.get("excluded", False))}
    if len(cleaned) > MAX_TOOL_PRICES:
        raise ApplicationError("Too many per-tool prices.")
    return cleaned


def _validate_tool_prices(
    *, kind: str, hard_cap: bool, included_calls: int | None, tool_prices: dict[str, Any]
) -> None:
    """Per-tool prices only where a call can be charged (billing.pricing): a price on a free
    tier, a one-time license or a hard-capped subscription would be shown and never collected."""
    refusal = tool_price_refusal(
        kind=kind, hard_cap=hard_cap, included_calls=included_calls, tool_prices=tool_prices
    )
    if refusal:
        raise ApplicationError(refusal)


def _clean_tools(tools: list[str] | None, tool_prices: dict[str, Any]) -> list[str] | None:
    """The tools a price version covers: the upstream's tools the creator saw when saving,
    plus the priced ones; None when no tool was known (the default then covers every tool)."""
    if tools is None:
        return None
    names = {t for t in tools if isinstance(t, str) and 0 < len(t) <= 128} | set(tool_prices)
    if len(names) > MAX_TOOL_PRICES:
        raise ApplicationError("Too many tools.")
    return sorted(names)


def _validate_amounts(
    *,
    kind: str,
    currency: str,
    unit_amount: int,
    per_call_amount: int,
    overage_amount: int,
    hard_cap: bool,
    included_calls: int | None,
) -> None:
    """The minimums and combinations of `billing.pricing.plan_amount_errors` (the plan form
    asks the same function), as one ApplicationError naming the fields."""
    errors = plan_amount_errors(
        kind=kind,
        currency=currency,
        unit_amount=unit_amount,
        per_call_amount=per_call_amount,
        overage_amount=overage_amount,
        hard_cap=hard_cap,
        included_calls=included_calls,
    )
    if errors:
        # Shaped like a validation error's `extra.fields` (common.api.exceptions).
        fields = {name: [text] for name, text in errors.items()}
        raise ApplicationError(" ".join(errors.values()), extra={"fields": fields})


def _price_models_refresh(*, listing_id: int) -> None:
    """Keep `Listing.price_models` (a catalogue facet) in step with the listing's active plans.

    Written directly: marketplace has no service for this denormalised column, and billing owns
    its meaning (",free,subscription,").
    """
    kinds = sorted(
        set(Plan.objects.filter(listing_id=listing_id, active=True).values_list("kind", flat=True))
    )
    Listing.objects.filter(pk=listing_id).update(
        price_models=(",".join(["", *kinds, ""]) if kinds else "")
    )


def plan_create(
    *,
    user: User,
    listing: Listing,
    kind: str,
    name: str,
    currency: str = "",
    unit_amount: int = 0,
    per_call_amount: int = 0,
    overage_amount: int = 0,
    included_calls: int | None = None,
    hard_cap: bool = False,
    rate_limit_per_minute: int = 60,
    tool_prices: dict[str, Any] | None = None,
    tools: list[str] | None = None,
) -> Plan:
    """A new plan with its first price version, for a listing the user owns.

    All-or-nothing (plan + price + facet in one transaction); the Stripe objects are created on
    commit by `plan_stripe_sync_task` (and again, idempotently, at checkout if still missing).
    `tools`: the upstream's tool names the creator saw (the default price covers only these and
    the priced ones; billing.pricing). Non-zero tool prices only on plans that charge per call.
    """
    listing_require_owned(user=user, listing=listing)
    if kind not in PlanKind.values:
        raise ApplicationError("Unknown plan kind.")
    if kind == PlanKind.ONE_TIME:
        hard_cap = True  # a perpetual license has nothing to bill overage against
    currency = (currency or settings.DEFAULT_CURRENCY).lower()
    _validate_amounts(
        kind=kind,
        currency=currency,
        unit_amount=unit_amount,
        per_call_amount=per_call_amount,
        overage_amount=overage_amount,
        hard_cap=hard_cap,
        included_calls=included_calls,
    )
    cleaned_tools = _clean_tool_prices(tool_prices)
    _validate_tool_prices(
        kind=kind, hard_cap=hard_cap, included_calls=included_calls, tool_prices=cleaned_tools
    )
    with transaction.atomic():
        plan = Plan(
            listing=listing,
            kind=kind,
            # Shown to buyers: cleaned like registry text (no bidi overrides, no controls).
            name=clean_text(name, max_length=100) or PlanKind(kind).label,
            currency=currency,
            included_calls=included_calls,
            hard_cap=hard_cap,
            rate_limit_per_minute=rate_limit_per_minute,
        )
        plan.full_clean()
        plan.save()
        if plan.is_metered:
            plan.meter_event_name = f"{settings.STRIPE_METER_EVENT_PREFIX}_plan_{plan.pk}"
            plan.save(update_fields=["meter_event_name"])
        PlanPrice.objects.create(
            plan=plan,
            version=1,
            unit_amount=unit_amount,
            per_call_amount=per_call_amount,
            overage_amount=overage_amount,
            tool_prices=cleaned_tools,
            tools=_clean_tools(tools, cleaned_tools),
            effective_at=timezone.now(),
        )
        _price_models_refresh(listing_id=listing.pk)
        if kind != PlanKind.FREE:
            _sync_on_commit(plan.pk)
    logger.info("billing.plan_created", extra={"plan_id": plan.pk, "listing_id": listing.pk})
    return plan


def _sync_on_commit(plan_id: int) -> None:
    from billing.tasks import plan_stripe_sync_task

    transaction.on_commit(lambda: plan_stripe_sync_task.delay(plan_id))


def plan_update(
    *,
    user: User,
    plan: Plan,
    name: str | None = None,
    rate_limit_per_minute: int | None = None,
    included_calls: int | None = None,
    hard_cap: bool | None = None,
    active: bool | None = None,
) -> Plan:
    """Edit a plan's non-price terms. Holds the plan lock; clears every key's cached
    entitlement on commit (limits are part of it)."""
    listing_require_owned(user=user, listing=plan.listing)
    with transaction.atomic():
        locked = plan_lock(pk=plan.pk)
        if name is not None:
            locked.name = clean_text(name, max_length=100) or locked.name
        if rate_limit_per_minute is not None:
            locked.rate_limit_per_minute = rate_limit_per_minute
        if included_calls is not None:
            locked.included_calls = included_calls
        if hard_cap is not None and locked.kind == PlanKind.SUBSCRIPTION:
            if not hard_cap and not locked.meter_event_name:
                raise ApplicationError("Overage billing must be chosen when the plan is created.")
            locked.hard_cap = hard_cap
        if active is not None:
            locked.active = active
        current = PlanPrice.objects.filter(plan=locked).order_by("-version").first()
        if current is not None:
            _validate_tool_prices(
                kind=locked.kind,
                hard_cap=locked.hard_cap,
                included_calls=locked.included_calls,
                tool_prices=current.tool_prices or {},
            )
        locked.full_clean()
        locked.save()
        _price_models_refresh(listing_id=locked.listing_id)
        invalidate_plan_on_commit(plan=locked)
    return locked


def plan_price_change(
    *,
    user: User,
    plan: Plan,
    unit_amount: int | None = None,
    per_call_amount: int | None = None,
    overage_amount: int | None = None,
    tool_prices: dict[str, Any] | None = None,
    tools: list[str] | None = None,
) -> PlanPrice:
    """A new price version. New buyers pay it at once. Existing licenses move to it at once if
    nothing got dearer, else after PRICE_INCREASE_NOTICE_DAYS (`plan_prices_apply_due`).

    Holds the plan lock so two edits get consecutive version numbers. `tools` replaces the
    list of covered tools (None keeps the current one).
    """
    listing_require_owned(user=user, listing=plan.listing)
    with transaction.atomic():
        locked = plan_lock(pk=plan.pk)
        current = PlanPrice.objects.filter(plan=locked).order_by("-version").first()
        assert current is not None  # noqa: S101 - every plan is created with version 1
        new_tools = (
            _clean_tool_prices(tool_prices) if tool_prices is not None else current.tool_prices
        )
        covered = current.tools if tools is None else tools
        new = PlanPrice(
            plan=locked,
            version=current.version + 1,
            unit_amount=current.unit_amount if unit_amount is None else unit_amount,
            per_call_amount=current.per_call_amount if per_call_amount is None else per_call_amount,
            overage_amount=current.overage_amount if overage_amount is None else overage_amount,
            tool_prices=new_tools,
            tools=_clean_tools(covered, new_tools),
        )
        _validate_tool_prices(
            kind=locked.kind,
            hard_cap=locked.hard_cap,
            included_calls=locked.included_calls,
            tool_prices=new_tools,
        )
        _validate_amounts(
            kind=locked.kind,
            currency=locked.currency,
            unit_amount=new.unit_amount,
            per_call_amount=new.per_call_amount,
            overage_amount=new.overage_amount,
            hard_cap=locked.hard_cap,
            included_calls=locked.included_calls,
        )
        now = timezone.now()
        increase = _is_increase(old=current, new=new)
        new.effective_at = (
            now + timedelta(days=settings.PRICE_INCREASE_NOTICE_DAYS) if increase else now
        )
        new.save()
        if not increase:
            _move_licenses_to(price=new)
        else:  # every buyer on an older version hears of it, with its date
            _price_increase_notify_on_commit(new.pk)
        if locked.kind != PlanKind.FREE:
            _sync_on_commit(locked.pk)
    logger.info(
        "billing.plan_price_changed",
        extra={"plan_id": plan.pk, "version": new.version, "increase": increase},
    )
    return new


def _price_increase_notify_on_commit(price_id: int) -> None:
    from billing.tasks import plan_price_increase_notify_task

    transaction.on_commit(lambda: plan_price_increase_notify_task.delay(price_id))


def _is_increase(*, old: PlanPrice, new: PlanPrice) -> bool:
    if (new.unit_amount, new.per_call_amount, new.overage_amount) > (0, 0, 0) and any(
        n > o
        for n, o in (
            (new.unit_amount, old.unit_amount),
            (new.per_call_amount, old.per_call_amount),
            (new.overage_amount, old.overage_amount),
        )
    ):
        return True
    if old.tools is not None and new.tools is not None and set(old.tools) - set(new.tools):
        return True  # a tool no longer covered is refused: a worse deal
    for tool, spec in new.tool_prices.items():
        before = old.tool_prices.get(tool)
        old_amount = before["unit_amount"] if before else old.per_call_amount
        if not spec.get("excluded") and spec["unit_amount"] > old_amount:
            return True
        if spec.get("excluded") and not (before or {}).get("excluded"):
            return True  # losing a tool is a worse deal too
    return False


def _move_licenses_to(*, price: PlanPrice) -> int:
    """Point live licenses still on an older version at `price`, write one history row each,
    and queue the Stripe switch for their subscriptions. Call inside a transaction.

    Idempotent: a license already on `price` does not match, so a rerun writes nothing.
    """
    rows = list(
        License.objects.filter(
            plan_id=price.plan_id,
            status__in=LIVE_LICENSE_STATUSES,
            plan_price__version__lt=price.version,
        ).values_list("pk", "status", "plan_price__version")
    )
    if not rows:
        return 0
    ids = [pk for pk, _, _ in rows]
    License.objects.filter(pk__in=ids).update(plan_price=price)
    # The license history is append-only; a price move keeps the status and says so.
    LicenseEvent.objects.bulk_create(
        LicenseEvent(
            license_id=pk,
            from_status=status,
            to_status=status,
            reason=f"price v{version} -> v{price.version}",
        )
        for pk, status, version in rows
    )
    invalidate_licenses_on_commit(license_ids=ids)
    _subscription_prices_switch_on_commit(price=price)
    return len(ids)


def _subscription_prices_switch_on_commit(*, price: PlanPrice) -> list[int]:
    """Queue `creator_subscription_price_update_task` for every live subscription whose
    licenses are on `price` but whose Stripe items do not hold its Stripe Price yet.

    Also a reconciliation: the beat job calls it for every due version, so a switch whose task
    gave up is tried again on the next run. A version with the same monthly amount (an
    overage-only change) queues nothing. Call inside a transaction.
    """
    plan = Plan.objects.only("kind").get(pk=price.plan_id)
    if plan.kind != PlanKind.SUBSCRIPTION:
        return []
    # Stripe Prices of this plan's other versions with another monthly amount: an item still
    # holding one of them is what needs switching.
    stale = list(
        PlanPrice.objects.filter(plan_id=price.plan_id)
        .exclude(pk=price.pk)
        .exclude(unit_amount=price.unit_amount)
        .exclude(stripe_price_id="")
        .values_list("stripe_price_id", flat=True)
    )
    if not stale:
        return []
    qs = License.objects.filter(
        plan_price=price,
        status__in=LIVE_LICENSE_STATUSES,
        creator_subscription__items__has_any_keys=stale,
    ).exclude(creator_subscription__status__in=ENDED_SUBSCRIPTION_STATUSES)
    sub_ids = sorted(set(qs.values_list("creator_subscription_id", flat=True)))
    if not sub_ids:
        return []
    from billing.tasks import creator_subscription_price_update_task

    def enqueue() -> None:
        for sub_id in sub_ids:
            creator_subscription_price_update_task.delay(sub_id)

    transaction.on_commit(enqueue)
    return [int(pk) for pk in sub_ids]


def plan_prices_apply_due(*, now: datetime | None = None) -> int:
    """Move existing licenses to price versions whose notice period ended (beat task), and
    queue the switch of live subscriptions' monthly Stripe price item to that version.

    Idempotent: licenses already on the newest due version do not match, and subscriptions
    whose items already hold its Stripe Price are not queued again. Per-call and overage amounts
    take effect here (the gateway meters each call at the license's version); the monthly fee
    from the subscription's next period (`proration_behavior=none`).
    Holds each due version's row lock while moving its licenses (none over the network).
    """
    moved = 0
    now = now or timezone.now()
    due = (
        PlanPrice.objects.filter(effective_at__lte=now)
        .values("plan_id")
        .annotate(version=Max("version"))
    )
    for row in due:
        with transaction.atomic():
            price = PlanPrice.objects.select_for_update().get(
                plan_id=row["plan_id"], version=row["version"]
            )
            count = _move_licenses_to(price=price)
            if not count:
                _subscription_prices_switch_on_commit(price=price)
            moved += count
    return moved


# --- Stripe objects --------------------------------------------------------------------------


def _store_if_empty(model: type[Plan] | type[PlanPrice], pk: int, field: str, value: str) -> None:
    """Record a Stripe id unless a concurrent sync stored one first (no lock needed)."""
    model._default_manager.filter(pk=pk, **{field: ""}).update(**{field: value})


def plan_stripe_sync(*, plan_id: int) -> Plan:
    """Make sure the plan's Stripe Product, Meter, metered Price and one Price per version exist.

    Idempotent and retry-safe: each create carries a key derived from our row ids, so a retry
    after a dropped response returns the object Stripe already made instead of a second one;
    ids are then stored only where still empty. No lock is held over the network.
    """
    plan = Plan.objects.select_related("listing").get(pk=plan_id)
    if plan.kind == PlanKind.FREE:
        return plan
    client = stripe_client.get_client()
    key = stripe_client.idempotency_key
    if not plan.stripe_product_id:
        product = client.v1.products.create(
            params={
                "name": f"{plan.listing.display_title} - {plan.name}"[:250],
                "metadata": {"plan_id": str(plan.pk), "listing_id": str(plan.listing_id)},
            },
            options={"idempotency_key": key("product", plan.pk)},
        )
        _store_if_empty(Plan, plan.pk, "stripe_product_id", product["id"])
        plan.refresh_from_db()
    if plan.is_metered and plan.meter_event_name and not plan.stripe_meter_id:
        meter = client.v1.billing.meters.create(
            params={
                "display_name": f"Toolbooth plan {plan.pk}",
                "event_name": plan.meter_event_name,
                "default_aggregation": {"formula": "sum"},
                "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
                "value_settings": {"event_payload_key": "value"},
            },
            options={"idempotency_key": key("meter", plan.pk)},
        )
        _store_if_empty(Plan, plan.pk, "stripe_meter_id", meter["id"])
        plan.refresh_from_db()
    if plan.is_metered and plan.stripe_meter_id and not plan.stripe_metered_price_id:
        # One minor unit per meter unit: the gateway reports each call's price as the value.
        metered = client.v1.prices.create(
            params={
                "currency": plan.currency,
                "product": plan.stripe_product_id,
                "unit_amount": 1,
                "recurring": {
                    "interval": "month",
                    "usage_type": "metered",
                    "meter": plan.stripe_meter_id,
                },
                "nickname": "usage (minor units)",
                "metadata": {"plan_id": str(plan.pk), "role": "metered"},
            },
            options={"idempotency_key": key("metered_price", plan.pk)},
        )
        _store_if_empty(Plan, plan.pk, "stripe_metered_price_id", metered["id"])
        plan.refresh_from_db()
    if plan.kind in (PlanKind.ONE_TIME, PlanKind.SUBSCRIPTION):
        for price in PlanPrice.objects.filter(plan=plan, stripe_price_id=""):
            params: dict[str, Any] = {
                "currency": plan.currency,
                "product": plan.stripe_product_id,
                "unit_amount": price.unit_amount,
                "nickname": f"v{price.version}",
                "metadata": {"plan_id": str(plan.pk), "version": str(price.version)},
            }
            if plan.kind == PlanKind.SUBSCRIPTION:
                params["recurring"] = {"interval": "month", "usage_type": "licensed"}
            created = client.v1.prices.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": key("price", plan.pk, price.version)},
            )
            _store_if_empty(PlanPrice, price.pk, "stripe_price_id", created["id"])
    plan.refresh_from_db()
    logger.info("billing.plan_stripe_synced", extra={"plan_id": plan.pk})
    return plan

"""A subscriber's controls on their license page: status, renewal date and Stripe's estimate of
the next invoice, and the changes (cancel at the period end, resume, cancel now after a
confirmation page, switch plans) plus Stripe's customer portal. Plain POST forms with CSRF
tokens; each calls one billing service and redirects back with a message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from billing import selectors as billing_selectors
from billing.models import (
    LIVE_LICENSE_STATUSES,
    SubscriptionChange,
    SubscriptionChangeKind,
    SubscriptionChangeStatus,
)
from billing.services import subscription_changes as changes
from common.exceptions import ApplicationError, ServiceUnavailableError

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from billing.models import License

# What the page and the README promise (billing.services.subscription_changes does it).
REFUND_RULE = (
    "Cancelling now ends access at once and is not refunded: the rest of the period you paid "
    "for is forfeited, and calls used so far are billed now. Cancelling at the period end "
    "keeps everything working until then and charges nothing more."
)


def subscription_context(lic: License) -> dict[str, Any]:
    """The license page's subscription section (empty for licenses without a subscription).
    One Stripe call (the estimate) when the subscription is live."""
    row = lic.creator_subscription
    if row is None:
        return {}
    live = lic.status in LIVE_LICENSE_STATUSES and row.status not in ("canceled",)
    scheduled = (
        SubscriptionChange.objects.filter(
            license=lic,
            kind=SubscriptionChangeKind.DOWNGRADE,
            status=SubscriptionChangeStatus.SENT,
        )
        .select_related("to_plan")
        .first()
    )
    others = row.licenses.filter(status__in=LIVE_LICENSE_STATUSES).exclude(pk=lic.pk)
    return {
        "sub": row,
        "sub_live": live,
        "sub_other_plans": list(others.select_related("plan", "listing")),
        "sub_estimate": (
            billing_selectors.subscription_next_invoice_get(creator_subscription=row)
            if live
            else None
        ),
        "sub_scheduled": scheduled,
        "sub_options": changes.switch_options(license=lic) if live and not scheduled else [],
        "refund_rule": REFUND_RULE,
    }


def _user(request: HttpRequest) -> User:
    return cast("User", request.user)


def _own_license(request: HttpRequest, license_id: int) -> License:
    try:
        return billing_selectors.license_get_for_buyer(buyer=_user(request), license_id=license_id)
    except ApplicationError as exc:
        raise Http404("Not found.") from exc


@never_cache
@login_required
@require_POST
def license_subscription_action(request: HttpRequest, license_id: int) -> HttpResponse:
    """cancel_at_period_end | resume | cancel_now (only with confirm=yes) | switch (plan)."""
    lic = _own_license(request, license_id)
    action = request.POST.get("action", "")
    buyer = _user(request)
    try:
        if action == "cancel_at_period_end":
            row = changes.subscription_cancel_at_period_end(buyer=buyer, license_id=lic.pk)
            when = row.current_period_end.date().isoformat() if row.current_period_end else ""
            messages.success(
                request, f"Your subscription will end on {when}; nothing more is charged."
            )
        elif action == "resume":
            changes.subscription_resume(buyer=buyer, license_id=lic.pk)
            messages.success(request, "Your subscription will renew as before.")
        elif action == "cancel_now":
            if request.POST.get("confirm") != "yes":
                return redirect("ui:license-cancel", license_id=lic.pk)
            changes.subscription_cancel_now(buyer=buyer, license_id=lic.pk)
            messages.success(request, "Cancelled: this plan has ended.")
        elif action == "switch":
            try:
                plan_id = int(request.POST.get("plan", ""))
            except ValueError as exc:
                raise ApplicationError("Choose a plan.") from exc
            change = changes.subscription_plan_switch(
                buyer=buyer, license_id=lic.pk, plan_id=plan_id
            )
            if change.kind == SubscriptionChangeKind.UPGRADE:
                messages.success(
                    request,
                    f"Switched to {change.to_plan.name if change.to_plan else 'the new plan'}; "
                    "the difference for the rest of this period was charged now.",
                )
            else:
                when = change.effective_at.date().isoformat() if change.effective_at else ""
                messages.success(
                    request,
                    f"You move to {change.to_plan.name if change.to_plan else 'the new plan'} "
                    f"on {when}; your current plan keeps working until then.",
                )
        else:
            raise ApplicationError("Unknown action.")
    except ServiceUnavailableError as exc:
        messages.error(request, exc.message)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect(reverse("ui:license", kwargs={"license_id": lic.pk}) + "#subscription")


@never_cache
@login_required
@require_http_methods(["GET"])
def license_cancel_confirm(request: HttpRequest, license_id: int) -> HttpResponse:
    """Cancelling now cannot be undone: a page that says what happens, then one POST."""
    lic = _own_license(request, license_id)
    if lic.creator_subscription is None or lic.status not in LIVE_LICENSE_STATUSES:
        return redirect("ui:license", license_id=lic.pk)
    return render(
        request,
        "web/subscription_cancel.html",
        {"license": lic, "sub": lic.creator_subscription, "refund_rule": REFUND_RULE},
    )


@never_cache
@login_required
@require_POST
def billing_portal_open(request: HttpRequest) -> HttpResponse:
    """Send the buyer to Stripe's customer portal; it comes back to the page they left."""
    back = request.POST.get("next", "")
    if not back.startswith("/") or back.startswith("//"):
        back = reverse("ui:licenses")
    try:
        url = changes.billing_portal_session_create(
            buyer=_user(request), return_url=request.build_absolute_uri(back)
        )
    except (ServiceUnavailableError, ApplicationError) as exc:
        messages.error(request, exc.message)
        return HttpResponseRedirect(back)
    return HttpResponseRedirect(url)

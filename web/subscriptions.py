"""A subscriber's controls on their license page: status, renewal date and Stripe's estimate of
the next invoice, and the changes (cancel at the period end, resume, cancel now after a
confirmation page, switch plans after a confirmation page with Stripe's exact price) plus
Stripe's customer portal. Plain POST forms with CSRF tokens; each calls one billing service and
redirects back with a message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core import signing
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
            return _switch_confirmed(request, lic)
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


# The confirmation page hands its preview to "Confirm switch" in one signed field: the license,
# the plan, the proration date Stripe priced and the fingerprint of the update it priced. The
# buyer cannot move the proration date (a later one would charge less); a preview older than
# the service accepts is shown again instead.
SWITCH_SALT = "web.subscriptions.switch"


def _switch_token(quote: changes.SwitchQuote, buyer_id: int) -> str:
    return signing.dumps(
        {
            "u": buyer_id,
            "l": quote.license.pk,
            "p": quote.to_plan.pk,
            "d": quote.proration_date,
            "h": quote.digest,
        },
        salt=SWITCH_SALT,
        compress=True,
    )


def _switch_page_url(license_id: int, plan_id: int | str) -> str:
    return reverse("ui:license-switch", kwargs={"license_id": license_id}) + f"?plan={plan_id}"


def _license_url(lic: License) -> str:
    return reverse("ui:license", kwargs={"license_id": lic.pk}) + "#subscription"


@never_cache
@login_required
@require_http_methods(["GET"])
def license_switch_confirm(request: HttpRequest, license_id: int) -> HttpResponse:
    """What switching to `?plan=` does and costs, before anything changes: for an upgrade
    Stripe's own preview of the charge now (the amount "Confirm switch" then charges), for a
    downgrade the date it takes effect. Stripe unreachable: 503 + Retry-After, nothing done."""
    lic = _own_license(request, license_id)
    try:
        plan_id = int(request.GET.get("plan", ""))
    except ValueError:
        messages.error(request, "Choose a plan.")
        return HttpResponseRedirect(_license_url(lic))
    try:
        quote = changes.subscription_switch_preview(
            buyer=_user(request), license_id=lic.pk, plan_id=plan_id
        )
    except ServiceUnavailableError as exc:
        response = render(
            request,
            "web/subscription_switch.html",
            {"license": lic, "quote": None, "unavailable": exc.message},
            status=503,
        )
        response["Retry-After"] = str(exc.retry_after)
        return response
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return HttpResponseRedirect(_license_url(lic))
    return render(
        request,
        "web/subscription_switch.html",
        {
            "license": lic,
            "quote": quote,
            "token": _switch_token(quote, _user(request).pk),
            "max_age_minutes": int(changes.QUOTE_MAX_AGE.total_seconds() // 60),
        },
    )


def _switch_confirmed(request: HttpRequest, lic: License) -> HttpResponse:
    """The confirmation page's button: the switch the page priced, with its proration date, or
    a fresh page when that price no longer holds. Stripe unreachable: the page says so (503),
    nothing done; pressing the button again sends the same request (same idempotency key)."""
    plan = request.POST.get("plan", "")
    plan = plan if plan.isdigit() else ""
    try:
        data = signing.loads(
            request.POST.get("quote", ""),
            salt=SWITCH_SALT,
            max_age=changes.QUOTE_MAX_AGE,
        )
    except signing.SignatureExpired:
        messages.info(request, "That price was shown a while ago; here it is again.")
        return HttpResponseRedirect(_switch_page_url(lic.pk, plan))
    except signing.BadSignature:
        return HttpResponseRedirect(_switch_page_url(lic.pk, plan))
    if data.get("u") != _user(request).pk or data.get("l") != lic.pk:
        return HttpResponseRedirect(_switch_page_url(lic.pk, plan))
    try:
        change = changes.subscription_plan_switch(
            buyer=_user(request),
            license_id=lic.pk,
            plan_id=int(data["p"]),
            proration_date=data.get("d"),
            quote_digest=str(data.get("h") or ""),
        )
    except changes.SwitchQuoteStale as exc:
        messages.info(request, f"{exc.message} Here is the current price.")
        return HttpResponseRedirect(_switch_page_url(lic.pk, data["p"]))
    except ServiceUnavailableError as exc:
        response = render(
            request,
            "web/subscription_switch.html",
            {
                "license": lic,
                "quote": None,
                "unavailable": exc.message,
                "retry_token": request.POST.get("quote", ""),
                "retry_plan": data["p"],
            },
            status=503,
        )
        response["Retry-After"] = str(exc.retry_after)
        return response
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return HttpResponseRedirect(_license_url(lic))
    to_name = change.to_plan.name if change.to_plan else "the new plan"
    if change.kind == SubscriptionChangeKind.UPGRADE:
        messages.success(
            request,
            f"Switched to {to_name}; the difference for the rest of this period was charged now.",
        )
    else:
        when = change.effective_at.date().isoformat() if change.effective_at else ""
        messages.success(
            request, f"You move to {to_name} on {when}; your current plan keeps working until then."
        )
    return HttpResponseRedirect(_license_url(lic))

"""Billing's own pages: the buy page (POST sends the buyer to Stripe Checkout) and the checkout
success page (the first key, shown once). Everything else people see lives in `web` (`ui:`).

Raw keys appear in one response only and are never stored; the success page is marked no-store
so a browser cache does not keep it either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from billing import selectors
from billing.models import LicenseSource, Plan
from billing.services import checkout
from common.exceptions import ApplicationError, ServiceUnavailableError

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def _user(request: HttpRequest) -> User:
    """The signed-in user (every caller is behind login_required or checks it)."""
    return cast("User", request.user)


@require_http_methods(["GET", "POST"])
def buy_view(request: HttpRequest, plan_id: int) -> HttpResponse:
    plan = get_object_or_404(Plan.objects.select_related("listing"), pk=plan_id, active=True)
    if request.method == "POST":
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        success = request.build_absolute_uri(reverse("billing:checkout-success"))
        try:
            url, lic = checkout.checkout_start(
                buyer=_user(request),
                plan=plan,
                success_url=success + "?session_id={CHECKOUT_SESSION_ID}",
                cancel_url=request.build_absolute_uri(request.path),
            )
        except ServiceUnavailableError as exc:
            # Stripe cannot be reached: say so on the page itself (503, nothing was bought);
            # pressing the button again is safe.
            messages.error(request, exc.message)
            response = _buy_page(request, plan, status=503)
            response["Retry-After"] = str(exc.retry_after)
            return response
        except ApplicationError as exc:
            messages.error(request, exc.message)
            return redirect(request.path)
        if url:
            return HttpResponseRedirect(url)
        if lic is not None and lic.source == LicenseSource.SUBSCRIPTION:
            # A further plan from a creator the buyer subscribes to joins that subscription.
            messages.success(
                request,
                f"{plan.name} was added to your subscription with this creator and charged "
                "for the rest of this period: create a key below.",
            )
        else:
            messages.success(request, "Free license granted: create a key below.")
        if lic is not None:
            return redirect("ui:license", license_id=lic.pk)
        return redirect("ui:licenses")
    return _buy_page(request, plan)


def _buy_page(request: HttpRequest, plan: Plan, *, status: int = 200) -> HttpResponse:
    price = selectors.plan_price_latest(plan=plan)
    return render(request, "billing/buy.html", {"plan": plan, "price": price}, status=status)


@never_cache
@login_required
def checkout_success_view(request: HttpRequest) -> HttpResponse:
    session_id = request.GET.get("session_id", "")
    lic, raw = checkout.checkout_success_key_reveal(buyer=_user(request), session_id=session_id)
    return render(request, "billing/checkout_success.html", {"license": lic, "raw_key": raw})

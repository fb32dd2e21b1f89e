"""Minimal server-rendered pages for creators and buyers (the full UI is a later issue).

Each view calls the same services as the REST API. Raw keys appear in one response only and are
never stored; pages are marked no-store so a browser cache does not keep them either.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import select_template
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from billing import selectors
from billing.models import Plan, PlanKind
from billing.services import checkout, claims, creators, licenses, plans
from common.exceptions import ApplicationError
from marketplace.models import Listing

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def _user(request: HttpRequest) -> User:
    """The signed-in user (every caller is behind login_required / IsAuthenticated)."""
    return cast("User", request.user)


def _render(
    request: HttpRequest, template: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    base = select_template(["base.html", "billing/base_fallback.html"])
    return render(request, template, {"base_template": base, **context}, status=status)


def _int(value: str | None, default: int = 0) -> int:
    try:
        return int(value) if value not in (None, "") else default
    except ValueError as exc:
        raise ApplicationError("Amounts are whole numbers.") from exc


@login_required
@require_http_methods(["GET", "POST"])
def creator_home_view(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        try:
            creators.creator_become(user=_user(request), handle=request.POST.get("handle", ""))
        except ApplicationError as exc:
            messages.error(request, exc.message)
        return redirect("billing:creator-home")
    creator = selectors.creator_get_for_user(user=_user(request))
    owned = Listing.objects.filter(owner_id=_user(request).pk).order_by("name")
    return _render(request, "billing/creator_home.html", {"creator": creator, "listings": owned})


@login_required
@require_POST
def creator_onboard_view(request: HttpRequest) -> HttpResponse:
    try:
        creator = creators.creator_require(user=_user(request))
        back = request.build_absolute_uri(reverse("billing:creator-home"))
        url = creators.connect_onboarding_link(creator=creator, return_url=back, refresh_url=back)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("billing:creator-home")
    return HttpResponseRedirect(url)


@login_required
@require_http_methods(["GET", "POST"])
def creator_claim_view(request: HttpRequest) -> HttpResponse:
    context: dict[str, Any] = {}
    if request.method == "POST":
        try:
            creator = creators.creator_require(user=_user(request))
            listing = get_object_or_404(Listing, name=request.POST.get("listing", ""))
            claim = claims.claim_start(
                creator=creator,
                listing=listing,
                registry_name=request.POST.get("registry_name", ""),
            )
            context["claim"] = claim
            context["snippet"] = json.dumps(
                {"_meta": claims.claim_meta_snippet(claim=claim)}, indent=2
            )
        except ApplicationError as exc:
            messages.error(request, exc.message)
    return _render(request, "billing/creator_claim.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def creator_plans_view(request: HttpRequest) -> HttpResponse:
    name = request.GET.get("listing") or request.POST.get("listing", "")
    listing = get_object_or_404(Listing, name=name, owner_id=_user(request).pk)
    if request.method == "POST":
        post = request.POST
        try:
            plans.plan_create(
                user=_user(request),
                listing=listing,
                kind=post.get("kind", ""),
                name=post.get("name", ""),
                unit_amount=_int(post.get("unit_amount")),
                per_call_amount=_int(post.get("per_call_amount")),
                overage_amount=_int(post.get("overage_amount")),
                included_calls=_int(post.get("included_calls"))
                if post.get("included_calls")
                else None,
                hard_cap=post.get("hard_cap") == "on",
                rate_limit_per_minute=_int(post.get("rate_limit_per_minute"), 60),
            )
            messages.success(request, "Plan created.")
        except ApplicationError as exc:
            messages.error(request, exc.message)
        return redirect(reverse("billing:creator-plans") + "?" + _q(listing.name))
    return _render(
        request,
        "billing/creator_plans.html",
        {
            "listing": listing,
            "plans": selectors.plans_for_listing(listing_id=listing.pk, active_only=False),
            "kinds": PlanKind.choices,
        },
    )


def _q(name: str) -> str:
    from urllib.parse import urlencode

    return urlencode({"listing": name})


@require_http_methods(["GET", "POST"])
def buy_view(request: HttpRequest, plan_id: int) -> HttpResponse:
    plan = get_object_or_404(Plan.objects.select_related("listing"), pk=plan_id, active=True)
    if request.method == "POST":
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        success = request.build_absolute_uri(reverse("billing:checkout-success"))
        try:
            url, _lic = checkout.checkout_start(
                buyer=_user(request),
                plan=plan,
                success_url=success + "?session_id={CHECKOUT_SESSION_ID}",
                cancel_url=request.build_absolute_uri(request.path),
            )
        except ApplicationError as exc:
            messages.error(request, exc.message)
            return redirect(request.path)
        if url:
            return HttpResponseRedirect(url)
        messages.success(request, "Free license granted: create a key below.")
        return redirect("billing:licenses")
    price = selectors.plan_price_latest(plan=plan)
    return _render(request, "billing/buy.html", {"plan": plan, "price": price})


@never_cache
@login_required
def checkout_success_view(request: HttpRequest) -> HttpResponse:
    session_id = request.GET.get("session_id", "")
    lic, raw = checkout.checkout_success_key_reveal(buyer=_user(request), session_id=session_id)
    return _render(request, "billing/checkout_success.html", {"license": lic, "raw_key": raw})


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def licenses_view(request: HttpRequest) -> HttpResponse:
    raw_key = None
    if request.method == "POST":
        action = request.POST.get("action", "")
        try:
            lic = selectors.license_get_for_buyer(
                buyer=_user(request),
                license_id=_int(request.POST.get("license")),
            )
            if action == "create":
                _key, raw_key = licenses.api_key_create(
                    license=lic, name=request.POST.get("name", "")[:100]
                )
            else:
                key = selectors.api_key_get_for_buyer(
                    buyer=_user(request),
                    license_id=lic.pk,
                    key_id=_int(request.POST.get("key")),
                )
                if action == "rotate":
                    _key, raw_key = licenses.api_key_rotate(key_id=key.pk)
                elif action == "revoke":
                    licenses.api_key_revoke(key_id=key.pk)
                    messages.success(request, "Key revoked.")
        except ApplicationError as exc:
            messages.error(request, exc.message)
    items = [
        (lic, selectors.api_key_list_for_license(license=lic))
        for lic in selectors.license_list_for_buyer(buyer=_user(request))
    ]
    return _render(request, "billing/licenses.html", {"items": items, "raw_key": raw_key})

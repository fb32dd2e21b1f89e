"""Server-rendered pages for people: the listing page with its plans, sign-up, buyers' licenses
(keys, spend caps, usage, client configuration, invoices) and creators' pages (claim, payouts,
upstream, plans and prices, earnings, per-tool calls).

Views stay thin: they validate a form, call one billing or gateway service, and render. Every
action is a plain POST form with a CSRF token, so the pages work without JavaScript; htmx
(static file, no inline script) only swaps the changed section in place when it is there.
Responses that carry a raw key are `no-store` and the key is never kept anywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from billing import selectors as billing_selectors
from billing.models import ListingClaim, PlanKind, Sale, SaleKind
from billing.services import claims, creators, licenses, plans
from billing.stripe_client import get_client
from common.exceptions import ApplicationError
from gateway.models import HostedUpstream
from gateway.selectors import tool_manifest_review
from gateway.services import hosted_upstream_set, tool_manifest_approve
from marketplace.models import Listing
from marketplace.selectors import listing_get
from web import reports
from web.charts import bar_chart
from web.clients import client_snippets
from web.creators import creator_handle_for_owner
from web.exports import previous_month
from web.formatting import count_format, money_format
from web.forms import (
    BecomeCreatorForm,
    ClaimForm,
    KeyCreateForm,
    PlanCreateForm,
    PriceChangeForm,
    SignUpForm,
    SpendCapForm,
    UpstreamForm,
    config_json,
    tool_prices_text,
)
from web.review_pages import reviews_context
from web.selectors import gateway_url, listing_offer_get, plan_offer_get
from web.subscriptions import subscription_context

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from billing.models import License

logger = logging.getLogger(__name__)

# A listing page lists at most this many of the visitor's own licenses for it.
MAX_HELD_SHOWN = 10


def _user(request: HttpRequest) -> User:
    return cast("User", request.user)


def _is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


# --- public --------------------------------------------------------------------------------


@require_safe
def listing_page(request: HttpRequest, name: str) -> HttpResponse:
    """The catalogue's detail page plus what Toolbooth adds: plans, prices, per-tool prices,
    the gateway URL and a health badge when we host it."""
    offer = listing_offer_get(name=name)
    if offer is None:
        raise Http404("No listing with this name.")
    listing = offer.listing
    held = []
    if request.user.is_authenticated:
        # So nobody buys twice by accident: what they hold here, above the buy buttons.
        held = list(
            billing_selectors.license_list_for_buyer(buyer=_user(request))
            .filter(listing_id=listing.pk)
            .order_by("-created_at")[:MAX_HELD_SHOWN]
        )
    context = {
        "held_licenses": held,
        "detail": offer.detail,
        "listing": listing,
        "offer": offer,
        "health": reports.upstream_health_get(listing_id=listing.pk) if offer.hosted else None,
        "buyable": listing.status in ("active", "deprecated"),
        "owned": request.user.is_authenticated and listing.owner_id == request.user.pk,
        **reviews_context(user=request.user, listing=listing),  # type: ignore[arg-type]
        "creator_handle": creator_handle_for_owner(user_id=listing.owner_id),
    }
    return render(request, "web/listing.html", context)


@require_http_methods(["GET", "POST"])
def signup_page(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("ui:licenses")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, "Welcome to Toolbooth. Pick a server and a plan to get a key.")
        next_url = request.POST.get("next", "")
        if next_url.startswith("/") and not next_url.startswith("//"):
            return HttpResponseRedirect(next_url)
        return redirect("catalogue-search")
    return render(
        request, "registration/signup.html", {"form": form, "next": request.GET.get("next", "")}
    )


# --- buyers --------------------------------------------------------------------------------


@never_cache
@login_required
@require_safe
def licenses_page(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    # One query: the key counts are annotations, not a query per license.
    licenses = billing_selectors.license_list_for_buyer(buyer=user).annotate(
        live_keys=Count("keys", filter=Q(keys__revoked_at__isnull=True))
    )
    items = [{"license": lic, "live_keys": lic.live_keys} for lic in licenses]
    context = {
        "items": items,
        "sales": reports.sales_for_buyer(buyer_id=user.pk),
    }
    return render(request, "web/licenses.html", context)


def _usage_context(lic: License) -> dict[str, Any]:
    currency = lic.plan.currency
    report = reports.usage_report_for_license(license_id=lic.pk, currency=currency)
    day_chart = bar_chart(
        title="Calls per day",
        points=[
            (
                d.day.strftime("%d %b"),
                d.calls,
                f"{d.day.isoformat()}: {count_format(d.calls)} call{'s' if d.calls != 1 else ''}, "
                f"{money_format(amount=d.spend, currency=currency)}",
            )
            for d in report.days
        ],
        tick_every=7,
    )
    tool_chart = bar_chart(
        title="Calls per tool",
        points=[
            (
                t.tool[:12],
                t.calls,
                f"{t.tool}: {count_format(t.calls)} calls, {count_format(t.errors)} errors",
            )
            for t in report.tools[:12]
        ],
    )
    return {"usage": report, "day_chart": day_chart, "tool_chart": tool_chart}


def _license_context(request: HttpRequest, lic: License, **extra: Any) -> dict[str, Any]:
    keys = list(billing_selectors.api_key_list_for_license(license=lic))
    now = timezone.now()
    return {
        "license": lic,
        "keys": keys,
        "now": now,
        "create_form": extra.pop("create_form", None) or KeyCreateForm(),
        "gateway_url": gateway_url(lic.listing.name),
        "snippets": client_snippets(
            name=lic.listing.name,
            gateway_url=gateway_url(lic.listing.name),
            key=extra.get("raw_key"),
        ),
        "overlap_hours": settings.BILLING_KEY_ROTATION_OVERLAP_HOURS,
        "currency": lic.plan.currency,
        "last_month": previous_month(),
        **_usage_context(lic),
        **subscription_context(lic),
        **extra,
    }


def _license_for(request: HttpRequest, license_id: int) -> License:
    try:
        return billing_selectors.license_get_for_buyer(buyer=_user(request), license_id=license_id)
    except ApplicationError as exc:
        raise Http404("Not found.") from exc


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def license_page(request: HttpRequest, license_id: int) -> HttpResponse:
    """One license: its keys (create, rotate with overlap, revoke, spend caps), usage per day
    and per tool, and client configuration. A new raw key is in this response only."""
    lic = _license_for(request, license_id)
    extra: dict[str, Any] = {}
    status = 200
    if request.method == "POST":
        try:
            extra = _key_action(request, lic)
        except ApplicationError as exc:
            extra = {"key_error": exc.message}
            status = 400
        lic.refresh_from_db()
    context = _license_context(request, lic, **extra)
    if _is_htmx(request):
        return render(request, "web/_keys.html", context, status=status)
    return render(request, "web/license.html", context, status=status)


def _key_action(request: HttpRequest, lic: License) -> dict[str, Any]:
    action = request.POST.get("action", "")
    if action == "create":
        form = KeyCreateForm(request.POST)
        if not form.is_valid():
            return {"create_form": form, "key_error": "Check the highlighted fields."}
        _key, raw = licenses.api_key_create(
            license=lic,
            name=form.cleaned_data["name"],
            daily_spend_cap=form.cleaned_data["daily_spend_cap"],
            monthly_spend_cap=form.cleaned_data["monthly_spend_cap"],
        )
        return {"raw_key": raw, "key_notice": "New key created."}
    try:
        key_id = int(request.POST.get("key", ""))
    except ValueError as exc:
        raise ApplicationError("Choose a key.") from exc
    key = billing_selectors.api_key_get_for_buyer(
        buyer=_user(request), license_id=lic.pk, key_id=key_id
    )
    if action == "rotate":
        _new, raw = licenses.api_key_rotate(key_id=key.pk)
        return {
            "raw_key": raw,
            "key_notice": f"Key rotated: the old key keeps working for "
            f"{settings.BILLING_KEY_ROTATION_OVERLAP_HOURS} hours.",
        }
    if action == "revoke":
        if not request.POST.get("confirm"):  # a tick box on the form: no inline script needed
            raise ApplicationError("Tick “Yes, revoke” first: a revoked key stops working at once.")
        licenses.api_key_revoke(key_id=key.pk)
        return {"key_notice": "Key revoked: it stops working within seconds."}
    if action == "caps":
        caps = SpendCapForm(request.POST)
        if not caps.is_valid():
            raise ApplicationError("Spend caps are amounts like 5.00, or empty for none.")
        licenses.api_key_caps_set(
            key_id=key.pk,
            daily_spend_cap=caps.cleaned_data["daily_spend_cap"],
            monthly_spend_cap=caps.cleaned_data["monthly_spend_cap"],
        )
        return {"key_notice": "Spend caps saved."}
    raise ApplicationError("Unknown action.")


def _sale_for_buyer(request: HttpRequest, sale_id: int) -> Sale:
    sale = (
        Sale.objects.select_related("listing", "license__plan")
        .filter(pk=sale_id, buyer_id=_user(request).pk)
        .first()
    )
    if sale is None:
        raise Http404("Not found.")
    return sale


@never_cache
@login_required
@require_safe
def receipt_page(request: HttpRequest, sale_id: int) -> HttpResponse:
    """Our receipt for a payment or refund, from the Sale ledger (no Stripe call)."""
    sale = _sale_for_buyer(request, sale_id)
    return render(request, "web/receipt.html", {"sale": sale})


@login_required
@require_safe
def invoice_redirect(request: HttpRequest, sale_id: int) -> HttpResponse:
    """Stripe's hosted invoice page for a subscription payment (one Stripe read, on click)."""
    sale = _sale_for_buyer(request, sale_id)
    if sale.kind != SaleKind.INVOICE or not sale.stripe_invoice_id:
        raise Http404("No invoice for this payment.")
    try:
        invoice = get_client().v1.invoices.retrieve(sale.stripe_invoice_id)
        url = str(invoice["hosted_invoice_url"] or "")
    except Exception:  # Stripe down or slow: say so instead of a 500.
        logger.warning("web.invoice_unavailable", extra={"sale_id": sale.pk})
        url = ""
    if not url.startswith(("https://", "http://")):
        messages.error(request, "The invoice is not available right now; try again later.")
        return redirect("ui:licenses")
    return HttpResponseRedirect(url)


# --- creators ------------------------------------------------------------------------------


def _owned_listings(user: User) -> list[Listing]:
    return list(Listing.objects.filter(owner_id=user.pk).order_by("name")[:200])


@dataclass(frozen=True, slots=True)
class OwnedListing:
    listing: Listing
    health: reports.Health | None  # None: not hosted here


def _owned_listings_with_health(user: User) -> list[OwnedListing]:
    """The creator's listings with the badge their public page shows (the same
    `reports.upstream_health_get`), read only for the ones we host."""
    listings = _owned_listings(user)
    hosted = set(
        HostedUpstream.objects.filter(listing__in=listings).values_list("listing_id", flat=True)
    )
    return [
        OwnedListing(
            listing=listing,
            health=reports.upstream_health_get(listing_id=listing.pk)
            if listing.pk in hosted
            else None,
        )
        for listing in listings
    ]


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def creator_page(request: HttpRequest) -> HttpResponse:
    user = _user(request)
    form = BecomeCreatorForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            creators.creator_become(user=user, handle=form.cleaned_data["handle"])
        except ApplicationError as exc:
            form.add_error("handle", exc.message)
        else:
            messages.success(request, "You are a creator. Claim your server next.")
            return redirect("ui:creator")
    creator = billing_selectors.creator_get_for_user(user=user)
    context: dict[str, Any] = {"creator": creator, "form": form}
    if creator is not None:
        context.update(
            {
                "connect": getattr(creator, "connect", None),
                "listings": _owned_listings_with_health(user),
                "earnings": reports.earnings_for_creator(creator_id=creator.pk),
                "statements": billing_selectors.creator_statement_list(
                    creator_id=creator.pk, month=timezone.now().date()
                ),
                "recent_sales": reports.sales_recent_for_creator(creator_id=creator.pk),
                "claims": ListingClaim.objects.filter(creator=creator)
                .select_related("listing")
                .order_by("-created_at")[:20],
                "fee_percent": settings.PLATFORM_FEE_BPS / 100,
            }
        )
    return render(request, "web/creator.html", context)


@login_required
@require_POST
def creator_onboard(request: HttpRequest) -> HttpResponse:
    """Send the creator to Stripe's hosted Connect onboarding (the fake's page in the demo)."""
    try:
        creator = creators.creator_require(user=_user(request))
        back = request.build_absolute_uri(reverse("ui:creator"))
        done = request.build_absolute_uri(reverse("ui:creator-onboard-return"))
        url = creators.connect_onboarding_link(creator=creator, return_url=done, refresh_url=back)
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("ui:creator")
    return HttpResponseRedirect(url)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def creator_claim_page(request: HttpRequest) -> HttpResponse:
    """Start a claim: the token to publish in server.json `_meta`, and what happens next."""
    user = _user(request)
    creator = billing_selectors.creator_get_for_user(user=user)
    if creator is None:
        messages.info(request, "Choose a creator handle first.")
        return redirect("ui:creator")
    form = ClaimForm(request.POST or request.GET or None)
    context: dict[str, Any] = {"form": form, "creator": creator}
    if request.method == "POST" and form.is_valid():
        listing = listing_get(name=form.cleaned_data["listing"])
        if listing is None:
            form.add_error("listing", "No listing with this name in the catalogue.")
        else:
            try:
                claim = claims.claim_start(creator=creator, listing=listing)
            except ApplicationError as exc:
                form.add_error("listing", exc.message)
            else:
                context["claim"] = claim
                context["snippet"] = config_json({"_meta": claims.claim_meta_snippet(claim=claim)})
    return render(request, "web/creator_claim.html", context)


def _owned_listing(request: HttpRequest, name: str) -> Listing:
    listing = listing_get(name=name)
    if listing is None or listing.owner_id != request.user.pk:
        raise Http404("Not found.")
    return listing


def _plan_rows(listing: Listing) -> list[dict[str, Any]]:
    rows = []
    for plan in billing_selectors.plans_for_listing(listing_id=listing.pk, active_only=False):
        prices = list(plan.prices.order_by("-version")[:2])
        if not prices:
            continue
        latest = prices[0]
        initial = {
            "unit_amount": _decimal_text(latest.unit_amount),
            "per_call_amount": _decimal_text(latest.per_call_amount),
            "overage_amount": _decimal_text(latest.overage_amount),
            "tool_prices": tool_prices_text(latest.tool_prices),
        }
        rows.append(
            {
                "plan": plan,
                "price": latest,
                "offer": plan_offer_get(plan=plan),
                "pending": latest.effective_at > timezone.now(),
                "form": PriceChangeForm(initial=initial, prefix=f"plan{plan.pk}"),
            }
        )
    return rows


def _decimal_text(minor: int) -> str:
    return f"{minor / 100:.2f}" if minor else ""


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def creator_listing_page(request: HttpRequest, name: str) -> HttpResponse:
    """Manage one owned listing: upstream, plans and prices, calls per tool, earnings."""
    user = _user(request)
    listing = _owned_listing(request, name)
    creator = creators.creator_require(user=user)
    upstream = HostedUpstream.objects.filter(listing=listing).only("url", "enabled").first()
    upstream_form = UpstreamForm(
        initial={
            "url": upstream.url if upstream else "",
            "enabled": upstream.enabled if upstream else True,
        }
    )
    plan_form = PlanCreateForm(
        initial={"rate_limit_per_minute": 60}, currency=settings.DEFAULT_CURRENCY
    )
    here = reverse("ui:creator-listing", kwargs={"name": listing.name})
    connection = None  # a "Test connection" result, shown on this response only
    if request.method == "POST":
        section = request.POST.get("section", "")
        if section == "test" and upstream is not None:
            from gateway.connection_test import upstream_connection_test

            connection = upstream_connection_test(listing_id=listing.pk)
        elif section == "upstream":
            upstream_form = UpstreamForm(request.POST)
            if upstream_form.is_valid():
                data = upstream_form.cleaned_data
                try:
                    hosted_upstream_set(
                        listing=listing,
                        actor=user,
                        url=data["url"],
                        secret=data["secret"] or None,
                        enabled=data["enabled"],
                    )
                except ApplicationError as exc:
                    fields = exc.extra.get("fields", {})
                    upstream_form.add_error("url" if "url" in fields else None, exc.message)
                else:
                    messages.success(request, "Upstream saved.")
                    return redirect(here + "#upstream")
        elif section == "plan":
            plan_form = PlanCreateForm(request.POST, currency=settings.DEFAULT_CURRENCY)
            if plan_form.is_valid():
                data = plan_form.cleaned_data
                try:
                    plans.plan_create(
                        user=user,
                        listing=listing,
                        kind=data["kind"],
                        name=data["name"] or "",
                        unit_amount=data["unit_amount"] or 0,
                        per_call_amount=data["per_call_amount"] or 0,
                        overage_amount=data["overage_amount"] or 0,
                        included_calls=data["included_calls"],
                        hard_cap=data["hard_cap"],
                        rate_limit_per_minute=data["rate_limit_per_minute"],
                        tool_prices=data["tool_prices"] or None,
                        tools=_discovered_tools(listing),
                    )
                except ApplicationError as exc:
                    _form_errors_from(plan_form, exc)
                else:
                    messages.success(request, "Plan created.")
                    _tools_approve(request, listing, with_prices=True)
                    return redirect(here + "#plans")
        elif section in ("price", "active"):
            response = _plan_action(request, listing, section, here)
            if response is not None:
                return response
        elif section == "tools":
            _tools_approve(request, listing, with_prices=False)
            return redirect(here + "#tools")
    review = tool_manifest_review(listing_id=listing.pk)
    context = {
        "listing": listing,
        "creator": creator,
        "upstream": upstream,
        "upstream_form": upstream_form,
        # The same figure as the listing page's badge (web.reports.upstream_health_get).
        "health": reports.upstream_health_get(listing_id=listing.pk) if upstream else None,
        "connection": connection,
        "plan_form": plan_form,
        "plans": _plan_rows(listing),
        "kinds": PlanKind.choices,
        "tool_stats": reports.tool_stats_for_listing(listing_id=listing.pk),
        "last_month": previous_month(),
        "earnings": reports.earnings_for_creator(creator_id=creator.pk, listing_id=listing.pk),
        "recent_sales": reports.sales_recent_for_creator(
            creator_id=creator.pk, listing_id=listing.pk
        ),
        "gateway_url": gateway_url(listing.name),
        "tool_review": review,
        "notice_days": settings.PRICE_INCREASE_NOTICE_DAYS,
        "fee_percent": settings.PLATFORM_FEE_BPS / 100,
        "payable": bool(getattr(creator, "connect", None) and creator.connect.is_payable),
    }
    if review is not None and review.unapproved_notice:
        messages.warning(request, review.unapproved_notice)  # the gateway refuses every call
    status = 400 if request.method == "POST" else 200
    return render(request, "web/creator_listing.html", context, status=status)


def _form_errors_from(form: PlanCreateForm, exc: ApplicationError) -> None:
    """A service's refusal on the fields it names (`extra.fields`), else above the form."""
    fields = exc.extra.get("fields") or {}
    named = {k: v for k, v in fields.items() if k in form.fields and isinstance(v, list)}
    if not named:
        form.add_error(None, exc.message)
    for name, texts in named.items():
        for text in texts:
            form.add_error(name, str(text))


def _tools_approve(request: HttpRequest, listing: Listing, *, with_prices: bool) -> None:
    """Pin the tools the page showed (its `manifest_hash`): one click on "Approve", or along
    with a saved price (the creator priced what they reviewed). Tools the saved prices do not
    cover stay refused by billing until the prices are saved again (billing.pricing)."""
    expected = request.POST.get("manifest_hash", "")
    if not expected:
        return  # the page showed nothing to approve
    try:
        manifest = tool_manifest_approve(
            listing=listing, actor=_user(request), expected_hash=expected
        )
    except ApplicationError as exc:
        messages.warning(request, f"Tools not approved: {exc.message}")
        return
    messages.success(request, f"Tools approved (version {manifest.version}).")
    if with_prices:
        return
    lists = []
    for plan in billing_selectors.plans_for_listing(listing_id=listing.pk):
        latest = plan.prices.order_by("-version").first()
        if latest is not None and latest.tools is not None:
            lists.append(set(latest.tools))
    uncovered = sorted(
        {t["name"] for t in manifest.tools if any(t["name"] not in c for c in lists)}
    )
    if uncovered:
        them = "it" if len(uncovered) == 1 else "them"
        messages.info(
            request,
            f"Approved, but your saved prices do not cover {', '.join(uncovered[:10])} yet, "
            f"so agents are refused {them}: save the prices to sell {them}.",
        )


def _discovered_tools(listing: Listing) -> list[str] | None:
    """The tool names the creator sees on this page: the ones a saved price covers at the plan's
    default (a tool the upstream lists later is refused until the next save; billing.pricing).
    None when none were discovered yet."""
    raw = HostedUpstream.objects.filter(listing=listing).values_list("tools", flat=True).first()
    names = [t["name"] for t in raw or [] if isinstance(t, dict) and isinstance(t.get("name"), str)]
    return names or None


def _plan_action(
    request: HttpRequest, listing: Listing, section: str, here: str
) -> HttpResponse | None:
    try:
        plan_id = int(request.POST.get("plan", ""))
    except ValueError:
        messages.error(request, "Choose a plan.")
        return redirect(here + "#plans")
    plan = (
        billing_selectors.plans_for_listing(listing_id=listing.pk, active_only=False)
        .filter(pk=plan_id)
        .first()
    )
    if plan is None:
        raise Http404("Not found.")
    try:
        if section == "active":
            if request.POST.get("active") != "1" and not request.POST.get("confirm"):
                messages.error(request, "Tick “Yes, stop selling” first to stop selling a plan.")
                return redirect(here + "#plans")
            plans.plan_update(
                user=_user(request), plan=plan, active=request.POST.get("active") == "1"
            )
            messages.success(request, "Plan updated.")
        else:
            form = PriceChangeForm(request.POST, prefix=f"plan{plan.pk}")
            if not form.is_valid():
                errors = "; ".join(str(e) for errs in form.errors.values() for e in errs)
                messages.error(request, f"Price not changed: {errors}")
                return redirect(here + "#plans")
            data = form.cleaned_data
            price = plans.plan_price_change(
                user=_user(request),
                plan=plan,
                unit_amount=data["unit_amount"] or 0,
                per_call_amount=data["per_call_amount"] or 0,
                overage_amount=data["overage_amount"] or 0,
                tool_prices=data["tool_prices"],
                tools=_discovered_tools(listing),
            )
            if price.effective_at > timezone.now():
                messages.success(
                    request,
                    f"New price saved. New buyers pay it now; existing buyers move to it on "
                    f"{price.effective_at:%Y-%m-%d} ({settings.PRICE_INCREASE_NOTICE_DAYS} days' "
                    "notice, because it is an increase).",
                )
            else:
                messages.success(request, "New price saved and applied to every buyer now.")
            _tools_approve(request, listing, with_prices=True)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect(here + "#plans")

"""The OAuth consent page and the "connected clients" of a license.

An MCP client (Claude, ChatGPT, mcp-remote, the SDK) sends the buyer here from /oauth/authorize
(oauth.provider). The buyer signs in, sees which client asks for which server, and picks one of
their licenses for it, or buys a plan through Checkout and comes back here. Allowing sends the
client a code (oauth.services.authorization_approve); the tokens it trades the code for are
metered like a key of that license.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from billing import selectors as billing_selectors
from billing.models import CheckoutOrder, Plan
from billing.services import checkout
from common.exceptions import ApplicationError, NotFoundError, ServiceUnavailableError
from oauth import selectors as oauth_selectors
from oauth import services as oauth_services
from oauth.models import AuthorizationRequest, ClientKind
from web.selectors import listing_offer_get

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def _user(request: HttpRequest) -> User:
    return cast("User", request.user)


def _client_facts(req: AuthorizationRequest) -> dict[str, Any]:
    """What the buyer can trust about the client: for a metadata document, the site that
    publishes it; for a self-registered client only that its name is its own claim. Either
    way, where the answer goes (the redirect URI's host)."""
    client = req.client
    redirect_host = urlsplit(req.redirect_uri).netloc or req.redirect_uri
    if client.kind == ClientKind.METADATA_DOCUMENT:
        origin = urlsplit(client.client_id).netloc
        return {"name": client.name or origin, "verified_site": origin, "redirect": redirect_host}
    return {
        "name": client.name or "An unnamed client",
        "verified_site": "",
        "redirect": redirect_host,
    }


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def consent_page(request: HttpRequest, request_id: str) -> HttpResponse:
    try:
        req = oauth_services.authorization_request_get(request_id=request_id)
    except NotFoundError as exc:
        return render(request, "web/oauth_consent_gone.html", {"message": exc.message}, status=404)
    user = _user(request)
    error = ""
    status = 200
    if request.method == "POST":
        action = request.POST.get("action", "")
        try:
            if action == "deny":
                return HttpResponseRedirect(
                    oauth_services.authorization_deny(request_id=req.pk, user=user)
                )
            if action == "allow":
                try:
                    license_id = int(request.POST.get("license", ""))
                except ValueError as exc:
                    raise ApplicationError("Pick one of your licenses for this server.") from exc
                url = oauth_services.authorization_approve(
                    request_id=req.pk, user=user, license_id=license_id
                )
                return HttpResponseRedirect(url)
            if action == "buy":
                return _buy(request, req)
            raise ApplicationError("Choose Allow or Deny.")
        except ServiceUnavailableError as exc:
            error, status = exc.message, 503
        except (ApplicationError, NotFoundError) as exc:
            error, status = exc.message, 400
    elif request.GET.get("session_id"):
        _fulfil_return(user, request.GET["session_id"])
    licenses = [
        lic
        for lic in billing_selectors.license_list_for_buyer(buyer=user).filter(
            listing_id=req.listing_id
        )
        if billing_selectors.license_is_usable(license=lic)
    ]
    offer = listing_offer_get(name=req.listing.name)
    context = {
        "req": req,
        "client": _client_facts(req),
        "listing": req.listing,
        "licenses": licenses,
        "offer": offer,
        "error": error,
    }
    response = render(request, "web/oauth_consent.html", context, status=status)
    response["Content-Security-Policy"] = _policy_allowing(req.redirect_uri)
    if status == 503:
        response["Retry-After"] = "30"
    return response


_HOSTNAME = re.compile(r"^[a-z0-9.\-]+$")
_IPV6 = re.compile(r"^[0-9a-f:.]+$")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*$")
_NEVER = frozenset({"javascript", "data", "blob", "filesystem"})


def _policy_allowing(redirect_uri: str) -> str:
    """The site's policy with the client's redirect target added to `form-action`: browsers
    apply `form-action` to the redirects that follow a form submission too, so Allow's 302 to
    the client (a loopback callback, claude.ai, a custom scheme) would be blocked. Only this
    page, whose form answers this one client, gets it; a target we cannot write as a CSP
    source safely is left out (the redirect is then blocked, never widened)."""
    parts = urlsplit(redirect_uri)
    scheme = parts.scheme.lower()
    source = ""
    try:
        port = parts.port
    except ValueError:
        return settings.CONTENT_SECURITY_POLICY
    host = parts.hostname or ""
    if scheme in ("http", "https"):
        if _HOSTNAME.match(host):
            source = f"{scheme}://{host}"
        elif _IPV6.match(host):
            source = f"{scheme}://[{host}]"
        if source and port:
            source += f":{port}"
    elif _SCHEME.match(scheme) and scheme not in _NEVER:
        source = f"{scheme}:"  # a native app's private-use scheme (RFC 8252 §7.1)
    policy = settings.CONTENT_SECURITY_POLICY
    if not source:
        return policy
    return policy.replace("form-action 'self'", f"form-action 'self' {source}", 1)


def _buy(request: HttpRequest, req: AuthorizationRequest) -> HttpResponse:
    """Start Checkout for one of the listing's plans and come back to this consent page."""
    try:
        plan_id = int(request.POST.get("plan", ""))
    except ValueError as exc:
        raise ApplicationError("Choose a plan.") from exc
    plan = Plan.objects.filter(pk=plan_id, listing_id=req.listing_id, active=True).first()
    if plan is None:
        raise ApplicationError("Choose a plan of this server.")
    here = request.build_absolute_uri(reverse("ui:oauth-consent", args=[req.pk]))
    url, lic = checkout.checkout_start(
        buyer=_user(request),
        plan=plan,
        success_url=here + "?session_id={CHECKOUT_SESSION_ID}",
        cancel_url=here,
    )
    if url:
        return HttpResponseRedirect(url)
    if lic is not None:
        messages.success(request, f"You now hold {plan.name}: pick it below and allow.")
    return redirect("ui:oauth-consent", request_id=req.pk)


def _fulfil_return(user: User, session_id: str) -> None:
    """Back from Checkout: grant the license now rather than wait for the webhook (both are
    idempotent), so the new license is there to pick. Someone else's session is ignored."""
    if CheckoutOrder.objects.filter(stripe_session_id=session_id, buyer_id=user.pk).exists():
        # Stripe unreachable: the webhook grants it later.
        with contextlib.suppress(ServiceUnavailableError):
            checkout.checkout_fulfil(session_id=session_id)


@login_required
@require_POST
def connection_revoke(request: HttpRequest, license_id: int, connection_id: int) -> HttpResponse:
    """The license page's "Disconnect" button for one connected client."""
    try:
        lic = billing_selectors.license_get_for_buyer(buyer=_user(request), license_id=license_id)
    except NotFoundError as exc:
        raise Http404("No such license.") from exc
    if not request.POST.get("confirm"):
        messages.error(request, "Tick the box to confirm disconnecting the client.")
        return redirect("ui:license", license_id=lic.pk)
    if (
        not oauth_selectors.connection_list_for_license(license_id=lic.pk)
        .filter(pk=connection_id)
        .exists()
    ):
        raise Http404("No such connected client.")
    oauth_services.connection_revoke_for_buyer(user=_user(request), connection_id=connection_id)
    messages.success(request, "Disconnected: the client's tokens no longer work.")
    return redirect(reverse("ui:license", args=[lic.pk]) + "#connected-clients")

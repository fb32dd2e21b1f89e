"""Where Stripe's Connect onboarding sends the creator back (/creator/onboard/return).

Stripe's `account.updated` webhook may arrive after the browser does, so this page re-reads the
account from Stripe (billing's `connect_account_sync`, the same order-proof service the webhook
uses) before showing the creator page: they see the final state, not "Not set up yet". If
Stripe cannot answer now, the page says so and the webhook still brings the state later.
"""

from __future__ import annotations

import logging

import stripe
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from billing import selectors as billing_selectors
from billing.services.creators import connect_account_sync
from billing.stripe_client import PaymentsUnavailable, unavailable_as_error

logger = logging.getLogger(__name__)


@never_cache
@login_required
@require_safe
def creator_onboard_return(request: HttpRequest) -> HttpResponse:
    creator = billing_selectors.creator_get_for_user(user=request.user)  # type: ignore[arg-type]
    account = getattr(creator, "connect", None) if creator is not None else None
    if creator is None or account is None:
        return redirect("ui:creator")
    try:
        with unavailable_as_error():
            account = connect_account_sync(stripe_account_id=account.stripe_account_id) or account
    except (PaymentsUnavailable, stripe.StripeError):
        logger.warning("web.onboard_return_sync_failed", extra={"creator_id": creator.pk})
        messages.warning(
            request, "Stripe did not answer just now: your payout status updates in a minute."
        )
        return redirect("ui:creator")
    if account.is_payable:
        messages.success(request, "Payouts are set up: you can sell now.")
    else:
        messages.info(request, "Stripe needs a few more details before you can sell.")
    return redirect("ui:creator")

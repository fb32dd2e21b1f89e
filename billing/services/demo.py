"""Demo data for billing: a payable creator whose listings carry one plan of every kind.

For `make demo` (fake Stripe) and for tests. The Connect onboarding step needs the fake's
hosted page or control, so the caller passes `onboard(account_id)` that completes it (e.g.
`FakeStripeServer.complete_onboarding`, or a POST to `<fake>/control/accounts/<id>/onboard`);
the account's flags are then re-read from Stripe like after any `account.updated`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from billing.models import Plan
from billing.selectors import plans_for_listing
from billing.services.creators import (
    connect_account_ensure,
    connect_account_sync,
    creator_become,
    listing_assign_owner,
)
from billing.services.plans import plan_create, plan_stripe_sync
from marketplace.models import Listing

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def billing_demo_seed(
    *, owner: User, handle: str, listings: list[Listing], onboard: Callable[[str], object]
) -> list[Plan]:
    """Idempotent: a listing that already has plans is left as it is."""
    creator = creator_become(user=owner, handle=handle)
    account = connect_account_ensure(creator=creator, email=owner.email)
    if not account.is_payable:
        onboard(account.stripe_account_id)
        connect_account_sync(stripe_account_id=account.stripe_account_id)
    made: list[Plan] = []
    for listing in listings:
        if listing.owner_id != owner.pk:
            listing_assign_owner(listing=listing, user=owner)
        if plans_for_listing(listing_id=listing.pk).exists():
            continue
        for spec in (
            {"kind": "free", "name": "Free", "included_calls": 100, "rate_limit_per_minute": 10},
            {"kind": "one_time", "name": "Lifetime license", "unit_amount": 4900},
            {
                "kind": "subscription",
                "name": "Pro",
                "unit_amount": 900,
                "included_calls": 10_000,
                "overage_amount": 1,
                "rate_limit_per_minute": 120,
            },
            {"kind": "per_call", "name": "Pay per call", "per_call_amount": 2},
        ):
            made.append(plan_create(user=owner, listing=listing, **spec))  # type: ignore[arg-type]
    for plan in made:
        plan_stripe_sync(plan_id=plan.pk)
    return made

"""Creators, ownership and Stripe Connect Express onboarding."""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING

from django.db import IntegrityError, transaction
from django.utils.text import slugify

from billing import stripe_client
from billing.lock_objects import connect_account_lock
from billing.models import ConnectAccount, Creator, Plan
from billing.services.licenses import invalidate_plan_on_commit
from billing.services.notices import payouts_attention_notify
from common.exceptions import ApplicationError, NotFoundError
from common.text import clean_text
from marketplace.models import Listing, ListingSource
from marketplace.services import listings_search_vector_update

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$")


def creator_become(*, user: User, handle: str = "", display_name: str = "") -> Creator:
    """Make the user a creator (idempotent: an existing creator is returned unchanged).

    The handle names the creator's own namespace `dev.toolbooth.<handle>`, so it is unique and
    restricted to DNS-label characters.
    """
    existing = Creator.objects.filter(user_id=user.pk).first()
    if existing is not None:
        return existing
    handle = slugify(handle or user.get_username().split("@", 1)[0]).lower().replace("_", "-")
    if not _SLUG_RE.match(handle):
        raise ApplicationError("Choose a handle of 3-50 letters, digits or dashes.")
    # What creators type is shown to others: cleaned like registry text (no bidi overrides).
    creator = Creator(
        user=user, handle=handle, display_name=clean_text(display_name, max_length=100)
    )
    creator.full_clean(exclude=["user"])
    try:
        with transaction.atomic():
            creator.save()
    except IntegrityError as exc:
        again = Creator.objects.filter(user_id=user.pk).first()
        if again is not None:  # a concurrent request made the same user a creator
            return again
        raise ApplicationError("That handle is taken.") from exc
    logger.info("billing.creator_created", extra={"creator_id": creator.pk})
    return creator


def creator_require(*, user: User) -> Creator:
    creator = Creator.objects.select_related("connect").filter(user_id=user.pk).first()
    if creator is None:
        raise ApplicationError("Become a creator first.")
    return creator


def listing_require_owned(*, user: User, listing: Listing) -> Creator:
    """The creator who owns `listing`; anyone else gets a 404-shaped refusal (it is not theirs)."""
    if listing.owner_id is None or listing.owner_id != user.pk:
        raise NotFoundError("You do not own this listing.")
    return creator_require(user=user)


def listing_assign_owner(*, listing: Listing, user: User | None) -> Listing:
    """Admin action: set (or clear) a listing's owner. Clears the entitlement cache of every key
    on the listing's plans on commit, since the payee changed."""
    with transaction.atomic():
        Listing.objects.filter(pk=listing.pk).update(owner=user)
        listing.owner = user
        for plan in Plan.objects.filter(listing=listing):
            invalidate_plan_on_commit(plan=plan)
    logger.info(
        "billing.listing_owner_assigned",
        extra={"listing_id": listing.pk, "user_id": getattr(user, "pk", None)},
    )
    return listing


def listing_publish_for_creator(
    *, creator: Creator, slug: str, title: str = "", description: str = ""
) -> Listing:
    """A listing that is not in the registry yet, under the creator's own namespace.

    The marketplace model is written directly (marketplace has no create service for creator
    listings); the catalogue refresh only touches registry-sourced rows, so the search vector
    is computed here (without it full-text search never finds the listing).
    """
    slug = slugify(slug).lower()
    if not _SLUG_RE.match(slug):
        raise ApplicationError("Choose a server slug of 3-50 letters, digits or dashes.")
    name = f"{creator.namespace}/{slug}"
    if Listing.objects.filter(name=name).exists():
        raise ApplicationError("You already have a server with that name.")
    listing = Listing(
        name=name,
        source=ListingSource.CREATOR,
        title=clean_text(title, max_length=100),
        description=clean_text(description, max_length=2000, single_line=False),
        owner=creator.user,
        name_words=" ".join(re.split(r"[./_-]+", name)),
    )
    listing.full_clean()
    listing.save()
    listings_search_vector_update(names=[listing.name])
    logger.info("billing.creator_listing_published", extra={"listing_id": listing.pk})
    return listing


# --- Stripe Connect --------------------------------------------------------------------------


def connect_account_ensure(*, creator: Creator, email: str = "") -> ConnectAccount:
    """The creator's Express account, created once.

    Idempotent across retries and races: the Stripe call carries the key
    ("connect_account", creator.pk), so a retried or concurrent call gets the same account back,
    and the one-to-one row makes the second insert a no-op. The Stripe call runs outside any
    transaction (no lock held over the network).
    """
    existing = ConnectAccount.objects.filter(creator=creator).first()
    if existing is not None:
        return existing
    client = stripe_client.get_client()
    params: dict[str, object] = {
        "type": "express",
        "capabilities": {"transfers": {"requested": True}, "card_payments": {"requested": True}},
        "metadata": {"creator_id": str(creator.pk)},
    }
    if email:
        params["email"] = email
    account = client.v1.accounts.create(
        params=params,  # type: ignore[arg-type]
        options={"idempotency_key": stripe_client.idempotency_key("connect_account", creator.pk)},
    )
    try:
        with transaction.atomic():
            row = ConnectAccount.objects.create(
                creator=creator,
                stripe_account_id=account["id"],
                charges_enabled=bool(account["charges_enabled"]),
                payouts_enabled=bool(account["payouts_enabled"]),
                details_submitted=bool(account["details_submitted"]),
            )
    except IntegrityError:
        row = ConnectAccount.objects.get(creator=creator)
    logger.info(
        "billing.connect_account_created",
        extra={"creator_id": creator.pk, "account": row.stripe_account_id},
    )
    return row


@stripe_client.unavailable_as_error()
def connect_onboarding_link(*, creator: Creator, return_url: str, refresh_url: str) -> str:
    """A fresh onboarding link (they expire quickly, so one is made per visit).

    The idempotency key is deterministic per account, minute and parameters: a retried request
    in the same minute reuses the link instead of making another, and a request from another
    page (other return/refresh URLs) gets its own key instead of Stripe's idempotency error.
    Stripe unreachable: `PaymentsUnavailable` (503), with at most the account row written.
    """
    account = connect_account_ensure(creator=creator, email=creator.user.email or "")
    client = stripe_client.get_client()
    params: dict[str, str] = {
        "account": account.stripe_account_id,
        "type": "account_onboarding",
        "return_url": return_url,
        "refresh_url": refresh_url,
    }
    link = client.v1.account_links.create(
        params=params,  # type: ignore[arg-type]
        options={
            "idempotency_key": stripe_client.idempotency_key(
                "account_link", int(time.time() // 60), params=params
            )
        },
    )
    return str(link["url"])


def connect_account_sync(*, stripe_account_id: str) -> ConnectAccount | None:
    """Re-read the account from Stripe and store its capability flags.

    Order-proof: it stores what Stripe says now, not what the event said, so a late
    `account.updated` cannot undo a newer one. Takes the account row lock for the write.
    Unknown accounts (not ours) are ignored.
    """
    if not ConnectAccount.objects.filter(stripe_account_id=stripe_account_id).exists():
        logger.info("billing.connect_account_unknown", extra={"account": stripe_account_id})
        return None
    account = stripe_client.get_client().v1.accounts.retrieve(stripe_account_id)
    with transaction.atomic():
        row = connect_account_lock(stripe_account_id=stripe_account_id)
        if row is None:
            return None
        row.charges_enabled = bool(account["charges_enabled"])
        row.payouts_enabled = bool(account["payouts_enabled"])
        row.details_submitted = bool(account["details_submitted"])
        row.save(
            update_fields=["charges_enabled", "payouts_enabled", "details_submitted", "updated_at"]
        )
        payouts_attention_notify(row=row, account=account.to_dict())  # requirements due
    logger.info(
        "billing.connect_account_synced",
        extra={"account": stripe_account_id, "payable": row.is_payable},
    )
    return row

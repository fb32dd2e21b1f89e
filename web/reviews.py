"""Reviews and ratings: services and selectors.

Only verified buyers review: someone who holds (or held) a license of the listing whose keys made
at least one call recorded in the ledger, whatever its outcome. One review per buyer and listing
(a DB constraint); writing again edits it. The listing's owner replies. Text goes through
`common.text.clean_text` like every text people write, and templates escape it.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Avg, Count, QuerySet
from django.utils import timezone

from billing.models import License
from common.exceptions import ApplicationError
from common.text import clean_text
from gateway.models import UsageEvent
from marketplace.models import Listing
from marketplace.services import listing_rating_set
from web.models import REPLY_TEXT_MAX, REVIEW_TEXT_MAX, Review


def review_eligible(*, user: AbstractBaseUser, listing: Listing) -> bool:
    """A verified buyer: a license of this listing that made a call. Two indexed queries."""
    if not user.is_authenticated or listing.owner_id == user.pk:
        return False
    license_ids = list(
        License.objects.filter(buyer_id=user.pk, listing_id=listing.pk).values_list("pk", flat=True)
    )
    return bool(license_ids) and UsageEvent.objects.filter(license_id__in=license_ids).exists()


def review_list_for_listing(*, listing_id: int, limit: int = 50) -> QuerySet[Review]:
    """The newest reviews first, with their authors' names (one query)."""
    return (
        Review.objects.filter(listing_id=listing_id)
        .select_related("author")
        .order_by("-created_at")[:limit]
    )


def review_get_for_author(*, listing_id: int, user: AbstractBaseUser) -> Review | None:
    if not user.is_authenticated:
        return None
    return Review.objects.filter(listing_id=listing_id, author_id=user.pk).first()


def _rating_refresh(*, listing_id: int) -> None:
    figures = Review.objects.filter(listing_id=listing_id).aggregate(
        avg=Avg("rating"), n=Count("id")
    )
    avg = round(figures["avg"], 2) if figures["avg"] is not None else None
    listing_rating_set(listing_id=listing_id, rating_avg=avg, rating_count=figures["n"])


def review_save(*, user: AbstractBaseUser, listing: Listing, rating: int, text: str) -> Review:
    """Write or edit the user's one review of the listing, then the listing's rating figures.

    Refused for anyone who is not a verified buyer (and for the owner). The review and the
    rating figures change in one transaction, so the page never shows one without the other.
    """
    if not review_eligible(user=user, listing=listing):
        raise ApplicationError(
            "Only buyers who have called this server through Toolbooth can review it.",
            status_code=403,
        )
    if not isinstance(rating, int) or not 1 <= rating <= 5:
        raise ApplicationError("A rating is 1 to 5 stars.")
    cleaned = clean_text(text, max_length=REVIEW_TEXT_MAX, single_line=False)
    with transaction.atomic():
        review = (
            Review.objects.select_for_update()
            .filter(listing_id=listing.pk, author_id=user.pk)
            .first()
        )
        if review is None:
            try:
                with transaction.atomic():  # a concurrent first review hits the constraint
                    review = Review.objects.create(
                        listing_id=listing.pk, author_id=user.pk, rating=rating, text=cleaned
                    )
            except IntegrityError:
                review = Review.objects.select_for_update().get(
                    listing_id=listing.pk, author_id=user.pk
                )
            else:
                _rating_refresh(listing_id=listing.pk)
                return review
        review.rating = rating
        review.text = cleaned
        review.edited_at = timezone.now()
        review.save(update_fields=["rating", "text", "edited_at", "updated_at"])
        _rating_refresh(listing_id=listing.pk)
    return review


def review_reply(*, user: AbstractBaseUser, review_id: int, text: str) -> Review:
    """The listing owner's answer to a review (writing again replaces it; empty removes it)."""
    review = Review.objects.select_related("listing").filter(pk=review_id).first()
    if review is None or review.listing.owner_id != user.pk or not user.is_authenticated:
        raise ApplicationError(
            "Only the listing's creator can reply to its reviews.", status_code=403
        )
    review.reply = clean_text(text, max_length=REPLY_TEXT_MAX, single_line=False)
    review.replied_at = timezone.now() if review.reply else None
    review.save(update_fields=["reply", "replied_at", "updated_at"])
    return review

"""The review forms on the listing page: write or edit a review, and the creator's reply.

POST only, CSRF-protected like every form; both redirect back to the listing page, where the
review section (`web/_reviews.html`) shows the result. Rules live in `web.reviews`.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from common.exceptions import ApplicationError
from marketplace.models import Listing
from marketplace.selectors import listing_get
from web import reviews
from web.forms import ReviewForm, ReviewReplyForm


def reviews_context(*, user: AbstractBaseUser, listing: Listing) -> dict[str, Any]:
    """What the listing page needs to show reviews and the right form for this visitor."""
    own = reviews.review_get_for_author(listing_id=listing.pk, user=user)
    eligible = reviews.review_eligible(user=user, listing=listing)
    initial = {"rating": own.rating, "text": own.text} if own else None
    return {
        "reviews": list(reviews.review_list_for_listing(listing_id=listing.pk)),
        "own_review": own,
        "review_form": ReviewForm(initial=initial) if eligible else None,
        "reply_form": ReviewReplyForm(),
    }


def _listing_url(listing: Listing) -> str:
    return reverse("ui:listing", kwargs={"name": listing.name}) + "#reviews"


@login_required
@require_POST
def review_write(request: HttpRequest, name: str) -> HttpResponse:
    listing = listing_get(name=name)
    if listing is None:
        raise Http404("No listing with this name.")
    form = ReviewForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose 1 to 5 stars; a review is at most 2,000 characters.")
        return redirect(_listing_url(listing))
    try:
        reviews.review_save(
            user=request.user,  # type: ignore[arg-type]
            listing=listing,
            rating=form.cleaned_data["rating"],
            text=form.cleaned_data["text"],
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Thank you: your review is saved.")
    return redirect(_listing_url(listing))


@login_required
@require_POST
def review_reply(request: HttpRequest, review_id: int) -> HttpResponse:
    form = ReviewReplyForm(request.POST)
    if not form.is_valid():
        messages.error(request, "A reply is at most 1,000 characters.")
        return redirect("catalogue-search")
    try:
        review = reviews.review_reply(
            user=request.user,  # type: ignore[arg-type]
            review_id=review_id,
            text=form.cleaned_data["text"],
        )
    except ApplicationError as exc:
        raise Http404(exc.message) from exc
    messages.success(request, "Your reply is saved.")
    return redirect(_listing_url(review.listing))

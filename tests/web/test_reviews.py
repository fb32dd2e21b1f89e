"""Reviews: only verified buyers (a license that made a call), one per buyer and listing (the
database says so too), editable, the creator's reply, text neutralised and escaped, CSRF, and
what the listing page and its markdown show."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.test import Client
from django.utils import timezone

from common.exceptions import ApplicationError
from gateway.models import UsageEvent
from marketplace.models import Listing
from tests.billing.factories import LicenseFactory, PlanPriceFactory
from tests.factories import UserFactory
from tests.marketplace.test_pages import XSS, assert_no_inline_script_or_style
from web.models import Review
from web.reviews import review_eligible, review_reply, review_save

pytestmark = pytest.mark.django_db


def _call(lic: Any, outcome: str = "success") -> None:
    UsageEvent.objects.create(
        call_id=uuid.uuid4(),
        key_id=1,
        license_id=lic.pk,
        listing_id=lic.listing_id,
        plan_id=lic.plan_id,
        tool="forecast",
        unit_amount=0,
        currency="usd",
        billable=False,
        outcome=outcome,
        latency_ms=5,
        occurred_at=timezone.now(),
    )


def _verified_buyer() -> tuple[Any, Listing]:
    lic = LicenseFactory()
    _call(lic, outcome="tool_error")  # any call proves use of the license
    return lic.buyer, lic.listing


def test_only_a_buyer_whose_license_made_a_call_may_review() -> None:
    price = PlanPriceFactory()
    listing = price.plan.listing
    stranger = UserFactory()
    holder = LicenseFactory(plan_price=price).buyer  # a license, but never called
    for user in (stranger, holder, listing.owner):
        assert not review_eligible(user=user, listing=listing)
        with pytest.raises(ApplicationError) as refused:
            review_save(user=user, listing=listing, rating=5, text="great")
        assert refused.value.status_code == 403
    assert not Review.objects.exists()


def test_one_review_per_buyer_edited_in_place_and_the_rating_follows() -> None:
    buyer, listing = _verified_buyer()
    first = review_save(user=buyer, listing=listing, rating=2, text="slow")
    listing.refresh_from_db()
    assert (listing.rating_avg, listing.rating_count) == (2.0, 1)
    assert first.edited_at is None

    second = review_save(user=buyer, listing=listing, rating=4, text="faster now")
    assert second.pk == first.pk
    assert Review.objects.count() == 1
    assert (second.rating, second.text) == (4, "faster now")
    assert second.edited_at is not None
    listing.refresh_from_db()
    assert (listing.rating_avg, listing.rating_count) == (4.0, 1)

    with pytest.raises(ApplicationError):
        review_save(user=buyer, listing=listing, rating=6, text="")
    with pytest.raises(IntegrityError), transaction.atomic():
        Review.objects.create(listing=listing, author=buyer, rating=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Review.objects.filter(pk=first.pk).update(rating=0)


def test_text_is_neutralised_and_only_the_owner_replies() -> None:
    buyer, listing = _verified_buyer()
    review = review_save(
        user=buyer, listing=listing, rating=5, text="good\u202etxt.exe\x00 tool\n\nreally"
    )
    assert review.text == "goodtxt.exe tool\n\nreally"  # bidi override and NUL gone, lines kept

    with pytest.raises(ApplicationError):
        review_reply(user=buyer, review_id=review.pk, text="I am not the creator")
    replied = review_reply(user=listing.owner, review_id=review.pk, text="Thanks\u2066!")
    assert (replied.reply, replied.replied_at is not None) == ("Thanks!", True)
    cleared = review_reply(user=listing.owner, review_id=review.pk, text="")
    assert (cleared.reply, cleared.replied_at) == ("", None)


def test_listing_page_and_markdown_show_reviews_escaped_with_forms_for_the_right_people() -> None:
    buyer, listing = _verified_buyer()
    review = review_save(user=buyer, listing=listing, rating=4, text=f"Nice {XSS}")
    review_reply(user=listing.owner, review_id=review.pk, text=f"Thanks {XSS}")

    anonymous = Client().get(f"/servers/{listing.name}")
    html = anonymous.content.decode()
    assert anonymous.status_code == 200
    assert XSS not in html
    assert "Nice &lt;script&gt;" in html
    assert "Thanks &lt;script&gt;" in html
    assert "4.0 of 5" in html
    assert 'id="review-form"' not in html
    assert_no_inline_script_or_style(html)

    as_buyer = Client()
    as_buyer.force_login(buyer)
    html = as_buyer.get(f"/servers/{listing.name}").content.decode()
    assert "Edit your review" in html
    as_owner = Client()
    as_owner.force_login(listing.owner)
    html = as_owner.get(f"/servers/{listing.name}").content.decode()
    assert f'action="/reviews/{review.pk}/reply"' in html
    assert 'id="review-form"' not in html

    markdown = Client().get(f"/servers/{listing.name}.md").content.decode()
    assert "## Popularity and reviews" in markdown
    assert "- Rating: 4.0 of 5 from 1 verified buyer" in markdown
    assert "<script>" not in markdown
    assert "Creator's reply: Thanks" in markdown

    llms = Client().get("/llms.txt").content.decode()
    assert "## Popularity and ratings" in llms
    assert "Only verified buyers review" in llms


def test_the_forms_post_with_csrf_and_refuse_non_buyers() -> None:
    buyer, listing = _verified_buyer()
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(buyer)
    url = f"/reviews/write/{listing.name}"
    assert csrf_client.post(url, {"rating": "5", "text": "x"}).status_code == 403
    assert not Review.objects.exists()

    client = Client()
    client.force_login(buyer)
    response = client.post(url, {"rating": "5", "text": "Works well"})
    assert response.status_code == 302
    assert response["Location"].endswith("#reviews")
    review = Review.objects.get()
    assert (review.rating, review.text) == (5, "Works well")

    stranger = Client()
    stranger.force_login(UserFactory())
    stranger.post(url, {"rating": "1", "text": "never used it"})
    assert Review.objects.count() == 1
    assert stranger.post(f"/reviews/{review.pk}/reply", {"text": "hi"}).status_code == 404
    owner = Client()
    owner.force_login(listing.owner)
    assert owner.post(f"/reviews/{review.pk}/reply", {"text": "Thank you"}).status_code == 302
    review.refresh_from_db()
    assert review.reply == "Thank you"

"""Reviews: what verified buyers say about a listing, and the creator's reply.

They live in `web` because deciding who may write one reads billing's licenses and the gateway's
ledger, both below this app. Text is user input: cleaned by `common.text.clean_text` before it
is stored and escaped wherever it is shown.
"""

from django.conf import settings
from django.db import models

from common.models import TimeStampedModel

REVIEW_TEXT_MAX = 2000
REPLY_TEXT_MAX = 1000


class Review(TimeStampedModel):
    listing = models.ForeignKey(
        "marketplace.Listing", on_delete=models.CASCADE, related_name="reviews"
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reviews"
    )
    rating = models.PositiveSmallIntegerField()  # 1-5 stars
    text = models.CharField(max_length=REVIEW_TEXT_MAX, blank=True, default="")
    # Set when the author changes a review after writing it (created_at stays the first one).
    edited_at = models.DateTimeField(null=True, blank=True)
    reply = models.CharField(max_length=REPLY_TEXT_MAX, blank=True, default="")
    replied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["listing", "author"], name="review_one_per_buyer"),
            models.CheckConstraint(
                condition=models.Q(rating__gte=1, rating__lte=5), name="review_rating_1_to_5"
            ),
        ]

    def __str__(self) -> str:
        return f"review {self.pk} of listing {self.listing_id} ({self.rating}/5)"

"""The catalogue: one listing per server name, derived from the mirror (or made by a creator).

Registry text reaches these columns only through `common.text.clean_text` (capped, no control
characters); templates escape it, and nothing here is ever rendered as HTML.
"""

from django.conf import settings
from django.contrib.postgres.search import SearchVectorField
from django.db import models

from common.models import TimeStampedModel


class ListingStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    DEPRECATED = "deprecated", "Deprecated"
    DELETED = "deleted", "Deleted upstream"
    GONE = "gone", "Gone from the registry"


class ListingSource(models.TextChoices):
    REGISTRY = "registry", "Official MCP Registry"
    CREATOR = "creator", "Published by its creator on Toolbooth"


class Listing(TimeStampedModel):
    name = models.CharField(max_length=200, unique=True)
    source = models.CharField(
        max_length=16, choices=ListingSource.choices, default=ListingSource.REGISTRY
    )
    title = models.CharField(max_length=100, blank=True, default="")
    description = models.CharField(max_length=2000, blank=True, default="")
    latest_version = models.CharField(max_length=255, blank=True, default="")
    version_count = models.PositiveIntegerField(default=0)
    status = models.CharField(
        max_length=16, choices=ListingStatus.choices, default=ListingStatus.ACTIVE
    )
    status_message = models.CharField(max_length=500, blank=True, default="")
    website_url = models.URLField(max_length=500, blank=True, default="")
    repository_url = models.URLField(max_length=500, blank=True, default="")
    published_at = models.DateTimeField(null=True, blank=True)
    upstream_updated_at = models.DateTimeField(null=True, blank=True)
    # Facets, denormalised from the latest version so filters are one indexed lookup.
    has_remote = models.BooleanField(default=False)
    has_package = models.BooleanField(default=False)
    # Comma-delimited with leading/trailing commas (",npm,pypi,") so `contains=",npm,"` is exact
    # on every database.
    package_types = models.CharField(max_length=200, blank=True, default="")
    transports = models.CharField(max_length=200, blank=True, default="")
    # Maintained by billing when plans change (",free,subscription,").
    price_models = models.CharField(max_length=100, blank=True, default="")
    # "io github acme weather": the name split into words for full-text search.
    name_words = models.CharField(max_length=300, blank=True, default="")
    search_vector = SearchVectorField(null=True, blank=True, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_listings",
    )
    # Popularity and trust, written off the hot path by `web.stats.listing_stats_refresh_all`
    # (beat task and `listing_stats_refresh` command) through `listing_stats_set`; search
    # ranks and pages read them without touching the ledger.
    # Successful calls (outcome "success" or "replayed": answers the caller got) in 30 days.
    calls_30d = models.PositiveIntegerField(default=0)
    # Distinct people holding an active or past license of the listing.
    buyers = models.PositiveIntegerField(default=0)
    # Share of calls answered in the last 24 h, from the one health selector
    # (`web.reports.upstream_health_get`); null when not hosted or nobody called.
    uptime = models.FloatField(null=True, blank=True)
    health_state = models.CharField(max_length=16, blank=True, default="")
    # Verified buyers' reviews (web.models.Review): mean of 1-5 stars and how many.
    rating_avg = models.FloatField(null=True, blank=True)
    rating_count = models.PositiveIntegerField(default=0)
    stats_updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            models.Index(fields=["status", "name"], name="listing_status_name"),
            models.Index(fields=["-upstream_updated_at"], name="listing_updated"),
            models.Index(fields=["-calls_30d", "name"], name="listing_popular"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def display_title(self) -> str:
        return self.title or self.name.split("/", 1)[-1]

"""Admin for listings: mirrored columns are read-only (the registry sync owns them)."""

from typing import TYPE_CHECKING

from django.contrib import admin

from marketplace.models import Listing
from marketplace.services import MIRRORED_FIELDS

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Listing]
else:
    _ModelAdmin = admin.ModelAdmin


@admin.register(Listing)
class ListingAdmin(_ModelAdmin):
    list_display = ("name", "status", "source", "latest_version", "owner", "upstream_updated_at")
    list_filter = ("status", "source", "has_remote", "has_package")
    search_fields = ("name",)
    readonly_fields = (*MIRRORED_FIELDS, "created_at", "updated_at", "price_models")
    raw_id_fields = ("owner",)
    show_full_result_count = False  # no COUNT(*) over the whole catalogue per page view

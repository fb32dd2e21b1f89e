"""The search form of the public pages (the same filters as the API)."""

from typing import Any

from django import forms

from marketplace.models import ListingStatus
from marketplace.selectors import KNOWN_PACKAGE_TYPES, MAX_QUERY_LENGTH, STATUS_ANY


class ListingSearchForm(forms.Form):
    q = forms.CharField(label="Search", required=False, max_length=MAX_QUERY_LENGTH)
    transport = forms.ChoiceField(
        label="Runs",
        required=False,
        choices=[("", "Anywhere"), ("remote", "Hosted (remote)"), ("local", "Locally (package)")],
    )
    package_type = forms.ChoiceField(
        label="Package",
        required=False,
        choices=[("", "Any package"), *((t, t) for t in KNOWN_PACKAGE_TYPES)],
    )
    price_model = forms.ChoiceField(
        label="Pricing",
        required=False,
        choices=[
            ("", "Any pricing"),
            ("free", "Free"),
            ("one_time", "One-time license"),
            ("subscription", "Subscription"),
            ("per_call", "Pay per call"),
        ],
    )
    free_tier = forms.BooleanField(label="Has a free plan", required=False)
    status = forms.ChoiceField(
        label="Status",
        required=False,
        choices=[
            ("", "Active and deprecated"),
            *ListingStatus.choices,
            (STATUS_ANY, "Any status"),
        ],
    )
    ordering = forms.ChoiceField(
        label="Order",
        required=False,
        choices=[
            ("", "Best match"),
            ("name", "Name"),
            ("-updated", "Recently updated"),
            ("-published", "Newest"),
        ],
    )

    def filters(self) -> dict[str, Any]:
        """The non-empty cleaned values, as keyword arguments for `listing_search`."""
        if not self.is_valid():
            return {}
        return {key: value for key, value in self.cleaned_data.items() if value}

"""Routes of the people pages. Included after `web.urls` (so `/servers/<name>.md` stays the
agents' markdown) and before `marketplace.urls`, whose plain detail page this one extends."""

from django.urls import path

from web import consent, creators, home, onboarding, review_pages, subscriptions, tokens, views
from web.exports import license_usage_csv, listing_usage_csv

app_name = "ui"

urlpatterns = [
    path("", home.home_page, name="home"),
    path("creators/<slug:handle>", creators.creator_profile_page, name="creator-profile"),
    path("reviews/write/<path:name>", review_pages.review_write, name="review-write"),
    path("reviews/<int:review_id>/reply", review_pages.review_reply, name="review-reply"),
    path("servers/<path:name>", views.listing_page, name="listing"),
    path("accounts/signup/", views.signup_page, name="signup"),
    path("me/licenses/", views.licenses_page, name="licenses"),
    path("me/licenses/<int:license_id>/", views.license_page, name="license"),
    path(
        "me/licenses/<int:license_id>/usage.csv",
        license_usage_csv,
        name="license-usage-csv",
    ),
    path(
        "me/licenses/<int:license_id>/subscription/",
        subscriptions.license_subscription_action,
        name="license-subscription",
    ),
    path(
        "me/licenses/<int:license_id>/cancel/",
        subscriptions.license_cancel_confirm,
        name="license-cancel",
    ),
    path(
        "me/licenses/<int:license_id>/switch/",
        subscriptions.license_switch_confirm,
        name="license-switch",
    ),
    path("me/billing-portal/", subscriptions.billing_portal_open, name="billing-portal"),
    path("me/tokens/", tokens.tokens_page, name="tokens"),
    path("oauth/consent/<str:request_id>", consent.consent_page, name="oauth-consent"),
    path(
        "me/licenses/<int:license_id>/connections/<int:connection_id>/disconnect",
        consent.connection_revoke,
        name="connection-revoke",
    ),
    path("me/receipts/<int:sale_id>/", views.receipt_page, name="receipt"),
    path("me/invoices/<int:sale_id>/", views.invoice_redirect, name="invoice"),
    path("creator/", views.creator_page, name="creator"),
    path("creator/onboard/", views.creator_onboard, name="creator-onboard"),
    path(
        "creator/onboard/return",
        onboarding.creator_onboard_return,
        name="creator-onboard-return",
    ),
    path("creator/claim/", views.creator_claim_page, name="creator-claim"),
    path(
        "creator/listings/<path:name>/usage.csv",
        listing_usage_csv,
        name="creator-listing-usage-csv",
    ),
    path("creator/listings/<path:name>/", views.creator_listing_page, name="creator-listing"),
]

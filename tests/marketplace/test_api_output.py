"""The list and detail APIs write listings without DRF's serializer machinery
(`marketplace.apis.listing_output`, rendered by orjson); the serializers stay the schema. These
tests hold both to the same JSON, and check the typo notice (`corrected_query`)."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.test import Client
from django.utils import timezone as dj_timezone
from rest_framework.renderers import JSONRenderer

from marketplace.apis import FastJSONRenderer, ListingOutputSerializer, listing_output
from marketplace.selectors import ListingOfferSummary, listing_offer_summaries
from tests.billing.factories import OwnedListingFactory, PlanFactory, PlanPriceFactory
from tests.factories import ListingFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def client() -> Client:
    return Client()


def _listings() -> list:
    """Every kind of value a row holds: empty and set facets, missing and sub-second times,
    floats and nulls, text that needs escaping and the two line separators JavaScript rejects."""
    sold = OwnedListingFactory(
        name="io.github.acme/weather-pro",
        title="",
        description='Forecasts "quoted" <b>tags</b> \u2028 line \u2029 para, ünïcode ☂',
        price_models=",free,subscription,",
        package_types=",npm,pypi,",
        transports=",stdio,streamable-http,",
        has_remote=True,
        has_package=True,
        published_at=datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
        upstream_updated_at=datetime(2025, 3, 2, 1, 2, 3, tzinfo=timezone(timedelta(hours=2))),
        calls_30d=1234,
        buyers=7,
        uptime=0.995,
        rating_avg=4.5,
        rating_count=2,
        status_message="",
    )
    PlanPriceFactory(plan=PlanFactory(listing=sold), unit_amount=500, per_call_amount=0)
    plain = ListingFactory(
        name="com.example/a b?c#d%e",
        title="Spaces & signs",
        published_at=None,
        upstream_updated_at=None,
        uptime=None,
        rating_avg=3,
        status="deprecated",
        status_message="Superseded",
    )
    return [sold, plain]


def test_listing_output_is_what_the_serializer_writes():
    listings = _listings()
    offers = listing_offer_summaries(listing_ids=[item.pk for item in listings])
    assert offers[listings[0].pk].price_from  # the plan above is offered

    for listing in listings:
        listing.refresh_from_db()
        fast = listing_output(
            listing,
            offers.get(listing.pk, ListingOfferSummary()),
            dj_timezone.get_current_timezone(),
        )
        slow = ListingOutputSerializer(listing, context={"offers": offers}).data

        assert fast == slow
        assert list(fast) == list(slow)  # same key order too
        assert FastJSONRenderer().render(fast) == JSONRenderer().render(slow)


def test_list_and_detail_answer_what_the_serializer_writes(client):
    listings = _listings()
    offers = listing_offer_summaries(listing_ids=[item.pk for item in listings])

    listed = client.get("/api/v1/listings", {"status": "any"})
    detail = client.get(f"/api/v1/listings/{listings[0].name}")

    assert listed["Content-Type"] == "application/json"
    expected = []
    for listing in sorted(listings, key=lambda item: item.name):
        listing.refresh_from_db()
        expected.append(ListingOutputSerializer(listing, context={"offers": offers}).data)
    assert listed.json()["results"] == expected
    assert "\\u2028" in listed.content.decode()
    assert "\u2028" not in listed.content.decode()
    body = detail.json()
    listings[0].refresh_from_db()
    serialised = ListingOutputSerializer(listings[0], context={"offers": offers}).data
    assert {key: body[key] for key in serialised} == serialised
    assert {"versions", "versions_truncated", "remotes", "packages"} <= set(body)


def test_indented_json_is_still_served_on_request(client):
    ListingFactory(name="io.github.acme/weather")

    response = client.get("/api/v1/listings", HTTP_ACCEPT="application/json; indent=2")

    assert response.status_code == 200
    assert response.content.startswith(b'{\n  "count": 1')


def test_a_corrected_query_is_named_in_the_api_and_on_the_page(client):
    from marketplace.services import search_words_refresh

    ListingFactory(name="io.github.github/github-mcp-server", title="GitHub")
    ListingFactory(name="com.example/weather", description="Forecasts")
    search_words_refresh()

    typo = client.get("/api/v1/listings", {"q": "githb"}).json()
    exact = client.get("/api/v1/listings", {"q": "github"}).json()
    nothing = client.get("/api/v1/listings", {"q": "zzqxv"}).json()
    page = client.get("/", {"q": "githb"}).content.decode()
    exact_page = client.get("/", {"q": "github"}).content.decode()

    assert typo["corrected_query"] == "github"
    assert [r["name"] for r in typo["results"]] == ["io.github.github/github-mcp-server"]
    assert exact["corrected_query"] == ""
    assert (nothing["count"], nothing["corrected_query"], nothing["results"]) == (0, "", [])
    assert "Showing results for <strong>github</strong>: no server matched “githb”." in page
    assert "1 server for “github”" in page
    assert "Showing results for" not in exact_page


def test_a_search_counts_from_the_ids_it_read(client, django_assert_num_queries):
    """The matching ids are read once; the page's count is their number, not another query."""
    ListingFactory.create_batch(3, description="weather station")
    client.get("/api/v1/listings", {"q": "weather"})  # warm: session, content types

    # ids, page rows, then the offer provider's two (hosted flags, prices).
    with django_assert_num_queries(4):
        body = client.get("/api/v1/listings", {"q": "weather"}).json()

    assert (body["count"], body["count_capped"], len(body["results"])) == (3, False, 3)

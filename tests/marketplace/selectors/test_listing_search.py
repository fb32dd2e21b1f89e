"""listing_search: PostgreSQL full-text search with ranking, name fallback, filters, ordering."""

from datetime import timedelta

import pytest

from marketplace.models import ListingStatus
from marketplace.selectors import listing_names_with_buyers, listing_search
from tests.factories import BASE_TIME, ListingFactory, UserFactory

pytestmark = pytest.mark.django_db


def names(qs) -> list[str]:
    return [listing.name for listing in qs]


def test_title_match_ranks_above_description_match():
    ListingFactory(name="io.github.a/alpha", title="Notes", description="Weather for your notes")
    ListingFactory(name="io.github.b/beta", title="Weather", description="Forecasts and radar")
    ListingFactory(name="io.github.c/gamma", title="Calendar", description="Meetings")

    assert names(listing_search(q="weather")) == ["io.github.b/beta", "io.github.a/alpha"]


def test_english_stemming_and_websearch_syntax():
    ListingFactory(name="io.github.a/forecaster", description="Daily forecasts with rain radar")
    ListingFactory(name="io.github.b/sunny", description="Sunny forecasts only")

    assert set(names(listing_search(q="forecast"))) == {
        "io.github.a/forecaster",
        "io.github.b/sunny",
    }
    assert names(listing_search(q="forecast -rain")) == ["io.github.b/sunny"]
    assert names(listing_search(q='"rain radar"')) == ["io.github.a/forecaster"]


def test_pasted_registry_name_matches_its_listing_first():
    ListingFactory(name="io.github.acme/weather-api", description="Forecasts")
    ListingFactory(name="io.github.other/weather", description="Weather api for acme fans")

    result = names(listing_search(q="io.github.acme/weather-api"))

    assert result[0] == "io.github.acme/weather-api"


def test_name_substring_fallback_when_full_text_finds_nothing():
    ListingFactory(name="io.github.someone/brave-search-mcp-server", description="Web search")
    ListingFactory(name="ai.smithery/bravest", description="Courage")
    ListingFactory(name="com.example/other", description="Nothing")

    # "brav" is not a word anywhere, but it is part of two names; prefix matches come first.
    assert names(listing_search(q="brav")) == [
        "ai.smithery/bravest",
        "io.github.someone/brave-search-mcp-server",
    ]
    assert names(listing_search(q="ai.smith")) == ["ai.smithery/bravest"]


def test_stop_words_only_and_control_characters_do_not_break_search():
    ListingFactory(name="io.github.a/the-tool", description="A tool")

    assert names(listing_search(q="the")) == ["io.github.a/the-tool"]
    assert names(listing_search(q="\x00\x1b[31m")) == []
    assert names(listing_search(q="tool\x00")) == ["io.github.a/the-tool"]
    assert names(listing_search(q="'\"&|!:*()<->")) == []


def test_deleted_and_gone_are_hidden_unless_asked():
    ListingFactory(name="io.github.a/live", status=ListingStatus.ACTIVE)
    ListingFactory(name="io.github.a/old", status=ListingStatus.DEPRECATED)
    ListingFactory(name="io.github.a/deleted", status=ListingStatus.DELETED)
    ListingFactory(name="io.github.a/gone", status=ListingStatus.GONE)

    assert names(listing_search()) == ["io.github.a/live", "io.github.a/old"]
    assert names(listing_search(status="deleted")) == ["io.github.a/deleted"]
    assert names(listing_search(status="gone")) == ["io.github.a/gone"]
    assert len(names(listing_search(status="any"))) == 4
    assert names(listing_search(q="gone", status="any")) == ["io.github.a/gone"]


def test_transport_package_type_and_price_model_filters():
    ListingFactory(name="io.github.a/remote", has_remote=True, transports=",streamable-http,")
    ListingFactory(
        name="io.github.a/npm", has_package=True, package_types=",npm,", transports=",stdio,"
    )
    ListingFactory(
        name="io.github.a/both",
        has_remote=True,
        has_package=True,
        package_types=",oci,pypi,",
        price_models=",free,per_call,",
    )

    assert names(listing_search(transport="remote")) == ["io.github.a/both", "io.github.a/remote"]
    assert names(listing_search(transport="local")) == ["io.github.a/both", "io.github.a/npm"]
    assert names(listing_search(package_type="pypi")) == ["io.github.a/both"]
    assert names(listing_search(package_type="NPM")) == ["io.github.a/npm"]
    assert names(listing_search(package_type="py")) == []  # exact token, not a substring
    assert names(listing_search(price_model="per_call")) == ["io.github.a/both"]


def test_orderings_put_undated_listings_last():
    ListingFactory(name="io.github.a/b", published_at=BASE_TIME, upstream_updated_at=BASE_TIME)
    ListingFactory(
        name="io.github.a/a",
        published_at=BASE_TIME - timedelta(days=9),
        upstream_updated_at=BASE_TIME + timedelta(days=1),
    )
    ListingFactory(name="io.github.a/c", published_at=None, upstream_updated_at=None)

    assert names(listing_search(ordering="name")) == [
        "io.github.a/a",
        "io.github.a/b",
        "io.github.a/c",
    ]
    assert names(listing_search(ordering="-updated")) == [
        "io.github.a/a",
        "io.github.a/b",
        "io.github.a/c",
    ]
    assert names(listing_search(ordering="-published")) == [
        "io.github.a/b",
        "io.github.a/a",
        "io.github.a/c",
    ]


def test_explicit_ordering_overrides_relevance():
    ListingFactory(name="io.github.z/weather", title="Weather")
    ListingFactory(name="io.github.a/notes", description="mentions weather once")

    assert names(listing_search(q="weather")) == ["io.github.z/weather", "io.github.a/notes"]
    assert names(listing_search(q="weather", ordering="name")) == [
        "io.github.a/notes",
        "io.github.z/weather",
    ]


def test_search_is_a_constant_number_of_queries(django_assert_max_num_queries, monkeypatch):
    from marketplace import selectors

    ListingFactory.create_batch(30, description="weather station")

    with django_assert_max_num_queries(3):
        qs = listing_search(q="weather")
        assert qs.count() == 30
        assert len(list(qs[:20])) == 20
    with django_assert_max_num_queries(4):
        qs = listing_search(q="io.github.maker")  # name fallback: + does any name contain it?
        qs.count()
        list(qs[:20])
    # typo: + the word list (savepoint, view exists?, planner setting, lookup, release) + the
    # corrected search
    with django_assert_max_num_queries(10):
        qs = listing_search(q="wether")
        qs.count()
        list(qs[:20])
    monkeypatch.setattr(selectors, "SEARCH_CANDIDATES", 10)
    monkeypatch.setattr(selectors, "SEARCH_WINDOW", 10)
    with django_assert_max_num_queries(4):
        qs = listing_search(q="weather")  # a common word: + the candidate ids
        qs.count()
        assert len(list(qs[:20])) == 10


def test_names_with_buyers_are_owned_and_priced():
    owner = UserFactory()
    ListingFactory(name="io.github.a/paid", owner=owner, price_models=",subscription,")
    ListingFactory(name="io.github.a/owned-free", owner=owner, price_models="")
    ListingFactory(name="io.github.a/priced-unowned", price_models=",per_call,")

    result = listing_names_with_buyers(
        names=["io.github.a/paid", "io.github.a/owned-free", "io.github.a/priced-unowned", "x/y"]
    )

    assert result == {"io.github.a/paid"}
    assert listing_names_with_buyers(names=[]) == set()


# --- ranking, typo tolerance, bounded candidates (issue 14) ----------------------------------


def test_hosted_listing_ranks_above_a_mirror_sample_that_mentions_the_word():
    """The demo's shape: the registry's C# sample says "weather" in its description, the
    creator's hosted Demo Weather has it in the title and is buyable."""
    from billing.services.creators import creator_become, listing_publish_for_creator

    ListingFactory(
        name="com.joelverhagen.mcp/Knapcode.SampleMcpServer",
        description="A sample MCP server using the MCP C# SDK. Generates random numbers and "
        "random weather.",
    )
    creator = creator_become(user=UserFactory(), handle="ada", display_name="Ada's Tools")
    hosted = listing_publish_for_creator(
        creator=creator,
        slug="demo-weather",
        title="Demo Weather",
        description="Tomorrow's forecast for any city. A demo MCP server hosted through the "
        "Toolbooth gateway: free tier, lifetime license, subscription or pay per call.",
    )
    hosted.price_models = ",free,subscription,"
    hosted.save(update_fields=["price_models"])

    assert names(listing_search(q="weather")) == [
        "dev.toolbooth.ada/demo-weather",
        "com.joelverhagen.mcp/Knapcode.SampleMcpServer",
    ]


def test_buyable_lifts_a_title_match_but_not_a_description_only_match_over_a_name_match():
    owner = UserFactory()
    ListingFactory(name="io.github.a/weather", description="Forecasts")
    ListingFactory(
        name="dev.toolbooth.b/sky", title="Weather", owner=owner, price_models=",per_call,"
    )
    ListingFactory(
        name="dev.toolbooth.c/rain",
        description="Rain and weather",
        owner=owner,
        price_models=",free,",
    )

    assert names(listing_search(q="weather")) == [
        "dev.toolbooth.b/sky",
        "io.github.a/weather",
        "dev.toolbooth.c/rain",
    ]


def test_real_use_breaks_ties_between_equal_matches():
    ListingFactory(name="io.github.a/notes-one", title="Notes")
    ListingFactory(name="io.github.b/notes-two", title="Notes", calls_30d=5000, buyers=40)

    assert names(listing_search(q="notes"))[0] == "io.github.b/notes-two"


def test_a_typo_finds_the_closest_catalogue_word():
    from marketplace.services import search_words_refresh

    ListingFactory(name="io.github.github/github-mcp-server", title="GitHub")
    ListingFactory(name="io.github.acme/gitlab-tools", title="GitLab")
    ListingFactory(name="com.example/weather", description="Forecasts")
    search_words_refresh()

    result = names(listing_search(q="githb"))

    assert result[0] == "io.github.github/github-mcp-server"
    assert "com.example/weather" not in result
    assert names(listing_search(q="githb issuez")) == []  # no catalogue word near "issuez"
    assert names(listing_search(q="zzqxv")) == []


def test_a_name_fragment_wins_over_a_typo_correction():
    from marketplace.services import search_words_refresh

    ListingFactory(name="ai.smithery/bravest", description="Courage")
    ListingFactory(name="io.github.x/brave", description="Browser")
    search_words_refresh()

    assert names(listing_search(q="ai.smith")) == ["ai.smithery/bravest"]


def test_a_common_word_ranks_the_newest_matches_and_every_buyable_one(monkeypatch):
    """Past SEARCH_CANDIDATES matches only a bounded window is ranked (the newest, plus every
    buyable listing however old), and the count is capped like the paginator's."""
    from marketplace import selectors

    monkeypatch.setattr(selectors, "SEARCH_CANDIDATES", 3)
    monkeypatch.setattr(selectors, "SEARCH_WINDOW", 3)
    old_buyable = ListingFactory(
        name="dev.toolbooth.a/old-server",
        title="Server",
        owner=UserFactory(),
        price_models=",free,",
        upstream_updated_at=BASE_TIME - timedelta(days=900),
    )
    for n in range(6):
        ListingFactory(
            name=f"io.github.m{n}/server-{n}",
            description="A server",
            upstream_updated_at=BASE_TIME + timedelta(days=n),
        )

    result = names(listing_search(q="server"))

    assert result[0] == old_buyable.name
    # Equal text matches: the three newest are ranked (then by name), the older ones left out.
    assert result[1:] == ["io.github.m3/server-3", "io.github.m4/server-4", "io.github.m5/server-5"]

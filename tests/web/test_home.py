"""The home page leads with hosted servers (featured, popular, new) above the full mirror; a
query, a filter or htmx gets the plain search page."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.factories import ListingFactory
from tests.gateway.factories import HostedUpstreamFactory
from tests.marketplace.test_pages import XSS, assert_no_inline_script_or_style

pytestmark = pytest.mark.django_db


def _hosted(name: str, **fields: Any) -> Any:
    listing = ListingFactory(name=name, **{"price_models": ",per_call,", **fields})
    HostedUpstreamFactory(listing=listing, url="https://mcp.example.com/mcp")
    return listing


def _section(html: str, section: str) -> str:
    return html.split(f'id="{section}"', 1)[1].split("</section>", 1)[0]


def test_home_leads_with_featured_popular_and_new_hosted_servers_above_the_mirror(
    django_assert_max_num_queries: Any,
) -> None:
    ListingFactory(name="io.github.aaa/test-server")  # the mirror's first by name
    _hosted("io.github.acme/rated", rating_avg=4.5, rating_count=2, calls_30d=1)
    _hosted("io.github.acme/busy", calls_30d=900, title=f"Busy {XSS}")
    _hosted("io.github.acme/fresh")
    paused = _hosted("io.github.acme/paused", calls_30d=5000)
    paused.hosted_upstream.enabled = False
    paused.hosted_upstream.save(update_fields=["enabled"])
    _hosted("io.github.acme/noplan", price_models="")

    with django_assert_max_num_queries(12):
        response = Client().get("/")
    html = response.content.decode()
    assert response.status_code == 200
    assert_no_inline_script_or_style(html)
    assert XSS not in html
    assert "io.github.acme/rated" in _section(html, "featured")
    popular = _section(html, "popular")
    assert "io.github.acme/busy" in popular
    assert "io.github.acme/rated" not in popular  # one section each
    assert "io.github.acme/fresh" in _section(html, "new")
    hosted = html.split('class="home-mirror"', 1)[0]
    assert "paused" not in hosted
    assert "noplan" not in hosted
    # The hosted sections come before the mirror, which still lists everything.
    assert html.index('id="featured"') < html.index('id="results"')
    assert "io.github.aaa/test-server" in html.split('id="results"', 1)[1]


def test_a_query_or_htmx_gets_the_plain_search() -> None:
    _hosted("io.github.acme/busy", calls_30d=900)
    searched = Client().get("/?q=busy").content.decode()
    assert 'id="popular"' not in searched
    assert "io.github.acme/busy" in searched
    partial = Client().get("/", headers={"HX-Request": "true"}).content.decode()
    assert 'id="popular"' not in partial
    assert partial.lstrip().startswith('<section id="results"')
    assert partial.rstrip().endswith('<div id="home-hosted" hx-swap-oob="true"></div>')


def test_home_cards_show_the_price_and_hosted_badge_like_search_results() -> None:
    from tests.billing.factories import PlanFactory, PlanPriceFactory

    busy = _hosted("io.github.acme/busy", calls_30d=900)
    PlanPriceFactory(plan=PlanFactory(listing=busy, kind="per_call"), per_call_amount=3)
    html = Client().get("/").content.decode()
    card = _section(html, "popular")
    assert "Hosted" in card
    assert "from $0.03 per call" in card
    searched = Client().get("/?q=busy").content.decode()
    assert "from $0.03 per call" in searched  # one function decides both


def test_creator_profile_cards_show_the_price() -> None:
    from billing.services.creators import creator_become
    from tests.billing.factories import PlanFactory, PlanPriceFactory
    from tests.factories import UserFactory

    owner = UserFactory(username="acmeco")
    busy = _hosted("io.github.acme/busy", calls_30d=900, owner=owner)
    PlanPriceFactory(plan=PlanFactory(listing=busy, kind="per_call"), per_call_amount=3)
    creator_become(user=owner, handle="acmeco")
    html = Client().get("/creators/acmeco").content.decode()
    assert "from $0.03 per call" in html

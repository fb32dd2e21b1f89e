"""/llms.txt, /servers.md and /servers/<name>.md: content, content types, and registry text that
cannot turn into links, images or HTML when an agent (or a person) renders the markdown."""

import re
from html.parser import HTMLParser

import cmarkgfm
import pytest
from cmarkgfm.cmark import Options
from django.conf import settings
from django.test import Client

from marketplace.models import Listing, ListingStatus
from tests.factories import ListingFactory
from tests.gateway.factories import HostedUpstreamFactory
from tests.web.agents_data import LOCAL_ONLY, WEATHER, Shop, build_shop, mirrored_listing
from web.formatting import md_text, money_format, plan_price_summary
from web.selectors import listing_offer_get

pytestmark = pytest.mark.django_db

MARKDOWN = "text/markdown; charset=utf-8"
HOSTILE = (
    "Click [x](javascript:alert(1)) <img src=x onerror=alert(2)> ![](http://evil.example/p.png) "
    "<script>alert(3)</script> mail ceo@evil.example, visit www.evil.example or "
    "https://evil.example/a?b=<c> &#60;b&#62; **bold** | a | \x1b[31m\u202egnp.exe"
)


class _Tags(HTMLParser):
    """Every start tag and attribute a GFM renderer produced."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def render(markdown: str) -> list[tuple[str, dict[str, str | None]]]:
    """Render as GitHub would, with raw HTML allowed (so unescaped HTML would show up)."""
    html = cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)
    parser = _Tags()
    parser.feed(html)
    return parser.tags


@pytest.fixture
def client() -> Client:
    return Client()


@pytest.fixture
def shop(db: None) -> Shop:
    return build_shop()


def test_llms_txt_describes_marketplace_search_and_keys(client):
    response = client.get("/llms.txt")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    text = response.content.decode()
    assert text.startswith("# Toolbooth\n\n> ")
    site = settings.SITE_URL
    assert f"{site}/api/v1/listings?q=" in text
    assert f"{site}/servers/<server name>.md" in text
    assert f"{site}/mcp-catalog" in text
    assert "search_listings" in text
    assert "how_to_buy" in text
    assert f"{site}/mcp/<server name>" in text
    assert "Authorization: Bearer <key>" in text
    assert "shown once" in text
    for term in ("free", "one_time", "subscription", "per_call", "excluded"):
        assert f"`{term}`" in text or term in text
    assert "429" in text
    assert "Retry-After" in text
    for field in ("`offer`", "`popularity`", "`hosted`", "`free_plan`", "`price_from`"):
        assert field in text
    assert "from $5.00 per month" in text
    sections = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert sections[:2] == ["Find a server", "Get a key"]
    links = re.findall(r"\]\(([^)]*)\)", text)
    assert links
    assert all(link.startswith(site + "/") for link in links), links


def test_listing_markdown_shows_gateway_plans_prices_and_how_to_buy(client, shop: Shop):
    response = client.get(f"/servers/{WEATHER}.md")

    assert response.status_code == 200
    assert response["Content-Type"] == MARKDOWN
    text = response.content.decode()
    site = settings.SITE_URL
    assert text.startswith("# Acme Weather\n")
    assert "- Name: `io.github.acme/weather`" in text
    assert "Weather forecasts for any city." in text
    assert f"[{site}/mcp/{WEATHER}]({site}/mcp/{WEATHER})" in text
    # Plans, with money rendered from integer minor units.
    assert "### Hobby (Free)" in text
    assert "- Price: Free, stops at 100 calls a month" in text
    assert "### Metered (Pay per call)" in text
    assert "- Price: $0.03 per call" in text
    assert "  - `forecast_hourly`: $0.10 per call" in text
    assert "  - `ping`: free" in text
    assert "  - `admin_reset`: not available on this plan" in text
    assert "### Pro (Subscription)" in text
    assert "- Price: $5.00 per month, 1,000 calls a month included, then $0.02 per call" in text
    assert "- Rate limit: 120 tool calls per minute for the license, all its keys" in text
    assert f"- Get it free: [{site}/billing/buy/{shop.free.pk}]" in text
    assert f"- Buy: [{site}/billing/buy/{shop.per_call.pk}]" in text
    # How to buy, versions, remotes, packages.
    assert "Authorization: Bearer <key>" in text
    assert '"url": "' + f"{site}/mcp/{WEATHER}" + '"' in text
    assert "- `1.0.0` (latest, active" in text
    assert "- `0.9.0` (active" in text
    assert "`https://weather.acme.example/mcp` (headers: `Authorization`)" in text
    assert "`@acme/weather-mcp`" in text
    assert "environment: `WEATHER_API_KEY`" in text
    # Only our own URLs are links.
    links = [a["href"] for tag, a in render(text) if tag == "a"]
    assert links
    assert all(str(href).startswith(site + "/") for href in links), links


def test_listing_markdown_without_hosting_has_no_gateway_url(client):
    mirrored_listing(LOCAL_ONLY, description="Notes on disk.")

    text = client.get(f"/servers/{LOCAL_ONLY}.md").content.decode()

    assert "/mcp/" not in text
    assert "not hosted on Toolbooth" in text
    assert "No plans on Toolbooth for this server." in text


def test_disabled_upstream_is_not_hosted(client):
    listing = ListingFactory(name="io.github.acme/paused")
    HostedUpstreamFactory(listing=listing, enabled=False)

    offer = listing_offer_get(name="io.github.acme/paused")

    assert offer is not None
    assert offer.hosted is False
    assert offer.gateway_url is None


@pytest.mark.parametrize(
    ("status", "phrase"),
    [(ListingStatus.DEPRECATED, "DEPRECATED"), (ListingStatus.DELETED, "DELETED")],
)
def test_listing_markdown_shows_status_clearly(client, status, phrase):
    ListingFactory(
        name="io.github.acme/old", status=status, status_message="Use io.github.acme/new"
    )

    text = client.get("/servers/io.github.acme/old.md").content.decode()

    first_block = text.split("\n\n")[1]
    assert first_block.startswith(f"> **Status: {phrase}")
    assert "> Message: Use io.github.acme/new" in first_block


def test_hostile_registry_text_is_inert_markdown(client):
    mirrored_listing(
        "io.github.evil/x",
        title="# Evil [t](http://evil.example) <b>",
        description=HOSTILE,
        website_url="https://evil.example/site",
    )
    Listing.objects.filter(name="io.github.evil/x").update(
        status=ListingStatus.DEPRECATED, status_message="![m](http://evil.example/m.png)"
    )

    text = client.get("/servers/io.github.evil/x.md").content.decode()

    assert "\x1b" not in text
    assert "\u202e" not in text
    tags = render(text)
    names = {tag for tag, _ in tags}
    # Only the structure this view writes itself: no images, scripts, raw HTML or tables.
    ours = {"h1", "h2", "h3", "p", "ul", "ol", "li", "a", "code", "blockquote", "strong", "pre"}
    assert names <= ours, names - ours
    assert [tag for tag, _ in tags].count("strong") == 1  # our status line, not their **bold**
    site = settings.SITE_URL
    hrefs = [str(a.get("href")) for tag, a in tags if tag == "a"]
    assert all(href.startswith(site + "/") for href in hrefs), hrefs
    # The heading is our title line, their "#" is text; the text itself survives, escaped.
    assert [tag for tag, _ in tags if tag == "h1"] == ["h1"]
    assert "javascript" in text
    assert "\\<img src\\=x onerror\\=alert\\(2\\)\\>" in text


def test_md_text_neutralises_every_link_form():
    for hostile in (
        "[x](javascript:alert(1))",
        "![](http://evil)",
        "<http://evil>",
        "http://evil.example",
        "www.evil.example",
        "a@evil.example",
        "<img src=x>",
        "[ref]: http://evil",
    ):
        tags = render("- " + md_text(hostile, max_length=200))
        assert {tag for tag, _ in tags} <= {"ul", "li", "code"}, (hostile, tags)


def test_markdown_url_for_unknown_listing_is_404(client):
    response = client.get("/servers/io.github.nobody/nothing.md")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/plain")


def test_names_with_dots_and_real_md_names(client):
    ListingFactory(name="io.github.acme/v1.2", title="Dotted")
    ListingFactory(name="io.github.acme/notes.md", title="Really named .md")

    dotted = client.get("/servers/io.github.acme/v1.2.md")
    real_html = client.get("/servers/io.github.acme/notes.md")
    real_md = client.get("/servers/io.github.acme/notes.md.md")

    assert dotted["Content-Type"] == MARKDOWN
    assert dotted.content.decode().startswith("# Dotted\n")
    # A listing really named "*.md" keeps its HTML page; its markdown is one more ".md".
    assert real_html.status_code == 200
    assert real_html["Content-Type"].startswith("text/html")
    assert "Really named .md" in real_html.content.decode()
    assert real_md["Content-Type"] == MARKDOWN
    assert real_md.content.decode().startswith("# Really named .md\n")


def test_html_detail_page_still_served(client, shop: Shop):
    response = client.get(f"/servers/{WEATHER}")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")


def test_search_markdown_lists_matches_with_links(client, shop: Shop):
    mirrored_listing(LOCAL_ONLY, description="Notes on disk.")

    text = client.get("/servers.md", {"q": "weather"}).content.decode()

    site = settings.SITE_URL
    assert text.startswith("# Toolbooth: Search: weather\n")
    assert f"- [Acme Weather]({site}/servers/{WEATHER}.md)" in text
    assert "plans: free, per_call, subscription; hosted on Toolbooth" in text
    assert LOCAL_ONLY not in text

    free_only = client.get("/servers.md", {"price_model": "free"}).content.decode()
    assert WEATHER in free_only
    assert LOCAL_ONLY not in free_only

    bad = client.get("/servers.md", {"transport": "carrier-pigeon"})
    assert bad.status_code == 400


def test_listing_offer_query_count(django_assert_num_queries, shop: Shop):
    # detail (3) + plans (1) + newest price per plan (3) + hosting (1) + approved tools (1)
    with django_assert_num_queries(9):
        offer = listing_offer_get(name=WEATHER)
    assert offer is not None
    assert [p.kind for p in offer.plans] == ["free", "per_call", "subscription"]


def test_money_and_price_summaries():
    assert money_format(amount=3, currency="usd") == "$0.03"
    assert money_format(amount=123456, currency="eur") == "€1,234.56"
    assert money_format(amount=500, currency="jpy") == "500 JPY"
    assert money_format(amount=1500, currency="kwd") == "1.500 KWD"
    assert money_format(amount=250, currency="chf") == "2.50 CHF"
    summary = plan_price_summary(
        kind="subscription",
        currency="usd",
        unit_amount=900,
        per_call_amount=0,
        overage_amount=0,
        included_calls=5000,
        hard_cap=True,
    )
    assert summary == "$9.00 per month, stops at 5,000 calls a month"
    assert (
        plan_price_summary(
            kind="one_time",
            currency="gbp",
            unit_amount=1999,
            per_call_amount=0,
            overage_amount=0,
            included_calls=None,
            hard_cap=True,
        )
        == "£19.99 once"
    )

"""`GET /v1/events` in the fake answers like Stripe: newest first, the list envelope, cursors,
`type`/`types`, `created` ranges, `delivery_success`, `limit` <= 100, and only the caller's
own events (platform, or one connected account with `Stripe-Account`)."""

import pytest
import stripe


def _ids(page):
    return [e.id for e in page.data]


def _platform(fake):
    return [e for e in fake.events() if not e.get("account")]


def test_newest_first_with_the_real_envelope_and_cursors(client, catalogue, fake_stripe):
    everything = list(reversed(_platform(fake_stripe)))  # newest first
    assert len(everything) >= 5
    first = client.v1.events.list({"limit": 2})
    raw = first.to_dict()
    assert (raw["object"], raw["url"], raw["has_more"]) == ("list", "/v1/events", True)
    assert _ids(first) == [e["id"] for e in everything[:2]]
    assert all("pending_webhooks" in e for e in raw["data"])

    walked = [e.id for e in client.v1.events.list({"limit": 2}).auto_paging_iter()]
    assert walked == [e["id"] for e in everything]  # each once, in order

    after = client.v1.events.list({"limit": 2, "starting_after": everything[1]["id"]})
    assert _ids(after) == [e["id"] for e in everything[2:4]]
    before = client.v1.events.list({"limit": 2, "ending_before": everything[4]["id"]})
    assert _ids(before) == [e["id"] for e in everything[2:4]]
    last = client.v1.events.list({"limit": 100, "starting_after": everything[-2]["id"]})
    assert (_ids(last), last.has_more) == ([everything[-1]["id"]], False)


def test_type_types_and_created_filters(client, catalogue, fake_stripe):
    events = _platform(fake_stripe)
    prices = client.v1.events.list({"type": "price.created", "limit": 100})
    assert {e.type for e in prices.data} == {"price.created"}
    assert len(prices.data) == sum(e["type"] == "price.created" for e in events)
    wildcard = client.v1.events.list({"type": "price.*", "limit": 100})
    assert _ids(wildcard) == _ids(prices)
    both = client.v1.events.list({"types": ["price.created", "product.created"], "limit": 100})
    assert {e.type for e in both.data} == {"price.created", "product.created"}

    newest = max(e["created"] for e in events)
    assert client.v1.events.list({"created": {"gt": newest}}).data == []
    recent = client.v1.events.list({"created": {"gte": newest}, "limit": 100})
    assert {e.created for e in recent.data} == {newest}
    exact = client.v1.events.list({"created": newest, "limit": 100})
    assert _ids(exact) == _ids(recent)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 101},
        {"type": "price.created", "types": ["product.created"]},
        {"types": [f"t{i}.created" for i in range(21)]},
        {"created": {"after": 1}},
        {"delivery_success": "maybe"},
        {"starting_after": "evt_nope"},
        {"object": "event"},
    ],
)
def test_refusals_look_like_stripes(client, fake_stripe, params):
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.events.list(params)
    assert refused.value.http_status in (400, 404)


def test_delivery_success_follows_pending_webhooks(client, catalogue, fake_stripe):
    assert fake_stripe.wait_for_webhooks(5)
    delivered = client.v1.events.list({"delivery_success": True, "limit": 100})
    assert all(e.pending_webhooks == 0 for e in delivered.data)
    fake_stripe.pause_webhooks()
    session = client.v1.checkout.sessions.create(
        {
            "mode": "payment",
            "line_items": [{"price": catalogue.one_time_price.id, "quantity": 1}],
            "success_url": "http://127.0.0.1/s",
        }
    )
    client.v1.checkout.sessions.expire(session.id)  # an event the endpoint subscribes to
    pending = client.v1.events.list({"delivery_success": False, "limit": 100})
    assert [(e.type, e.data.object.id) for e in pending.data] == [
        ("checkout.session.expired", session.id)
    ]
    assert pending.data[0].pending_webhooks == 1
    fake_stripe.resume_webhooks()
    assert fake_stripe.wait_for_webhooks(5)
    assert client.v1.events.list({"delivery_success": False}).data == []


def test_connect_events_are_listed_per_account(client, catalogue, fake_stripe):
    account = catalogue.account.id
    theirs = [e["id"] for e in fake_stripe.events() if e.get("account") == account]
    assert theirs
    platform = [e.id for e in client.v1.events.list({"limit": 100}).auto_paging_iter()]
    assert not set(theirs) & set(platform)
    listed = client.v1.events.list({"limit": 100}, {"stripe_account": account})
    assert sorted(_ids(listed)) == sorted(theirs)

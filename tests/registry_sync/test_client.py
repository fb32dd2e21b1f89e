"""The real RegistryClient over loopback HTTP against the fake registry."""

import json
from datetime import UTC, datetime

import pytest

from fakes.registry import FakeRegistry
from registry_sync.client import (
    CursorLoopError,
    RegistryClientError,
    RegistryError,
    TokenBucket,
)
from tests.registry_sync.conftest import FIXTURES


def _server(name: str, version: str) -> dict:
    return {"name": name, "description": "test", "version": version}


def test_walk_reproduces_the_shared_pages_and_cursors(shared_fake, make_client):
    client = make_client(shared_fake.url)
    pages = list(client.iter_pages(include_deleted=True, limit=100))
    expected = [json.loads((FIXTURES / f"page-{n}.json").read_text()) for n in (1, 2, 3)]
    assert [p.items for p in pages] == [e["servers"] for e in expected]
    assert pages[0].next_cursor == expected[0]["metadata"]["nextCursor"]
    assert pages[1].next_cursor == expected[1]["metadata"]["nextCursor"]
    assert pages[2].next_cursor is None
    assert client.requests == 3


def test_full_last_page_is_followed_by_the_empty_page(make_client):
    fake = FakeRegistry([{"server": _server("io.github.a/x", f"1.0.{i}")} for i in range(4)])
    for item in fake.items():
        item["_meta"] = {}
    with fake.serve() as url:
        pages = list(make_client(url).iter_pages(limit=2))
    assert [len(p.items) for p in pages] == [2, 2, 0]
    assert pages[-1].next_cursor is None


def test_updated_since_is_strict_and_matches_the_shared_filter(shared_fake, make_client):
    client = make_client(shared_fake.url)
    since = datetime(2025, 9, 29, tzinfo=UTC)
    items = [i for p in client.iter_pages(updated_since=since) for i in p.items]
    expected = json.loads((FIXTURES / "updated-since-2025-09-29.json").read_text())["servers"]
    assert items == expected
    assert "updated_since=2025-09-29T00%3A00%3A00Z" in shared_fake.request_paths[-1]
    # Strict '>': asking from the newest updatedAt returns nothing.
    newest = datetime(2025, 9, 30, 14, 42, 48, 239932, tzinfo=UTC)
    assert [i for p in client.iter_pages(updated_since=newest) for i in p.items] == []


def test_limit_out_of_range_is_a_422_without_retries(shared_fake, make_client):
    client = make_client(shared_fake.url)
    with pytest.raises(RegistryClientError) as info:
        list(client.iter_pages(limit=101))
    assert info.value.status_code == 422
    assert "validation failed" in str(info.value)
    assert "<= 100" in str(info.value)
    assert client.requests == 1


@pytest.mark.parametrize("fault", ["429", "500", "502", "504", "html200", "reset"])
def test_transient_faults_are_retried_then_succeed(shared_fake, make_client, fault):
    shared_fake.inject(fault, times=2)
    client = make_client(shared_fake.url, max_retries=3)
    pages = list(client.iter_pages())
    assert sum(len(p.items) for p in pages) == 247
    assert client.retries == 2
    assert client.requests == 3 + 2


def test_retries_are_bounded_and_end_in_a_clear_error(shared_fake, make_client):
    shared_fake.inject("429", times=10)
    client = make_client(shared_fake.url, max_retries=2)
    with pytest.raises(RegistryError) as info:
        list(client.iter_pages())
    assert "failed after 3 attempts" in str(info.value)
    assert "HTTP 429" in str(info.value)
    assert client.requests == 3


def test_a_hanging_registry_times_out_and_is_retried(shared_fake, make_client):
    shared_fake.hang_seconds = 1.0
    shared_fake.inject("hang")
    client = make_client(shared_fake.url, timeout=0.2, max_retries=1)
    pages = list(client.iter_pages())
    assert sum(len(p.items) for p in pages) == 247
    assert client.retries == 1

    shared_fake.inject("hang")
    client = make_client(shared_fake.url, timeout=0.2, max_retries=0)
    with pytest.raises(RegistryError, match="timeout"):
        list(client.iter_pages())


@pytest.mark.parametrize("mode", ["repeat", "empty"])
def test_cursor_loops_are_detected(shared_fake, make_client, mode):
    shared_fake.cursor_loop = mode
    client = make_client(shared_fake.url)
    with pytest.raises(CursorLoopError):
        list(client.iter_pages())
    assert client.requests == 2


def test_names_versions_and_cursors_are_percent_encoded(make_client):
    fake = FakeRegistry()
    for version in ("1.0.0+build.5", "1.0.0+build.6", "1.0.0+build.7"):
        fake.publish(_server("io.github.user/weather", version))
    with fake.serve() as url:
        client = make_client(url)
        # limit=1: every cursor ends in a "+"; sent raw it would decode to a space upstream.
        pages = list(client.iter_pages(limit=1))
        versions = [i["server"]["version"] for p in pages for i in p.items]
        assert versions == ["1.0.0+build.5", "1.0.0+build.6", "1.0.0+build.7"]
        assert any(
            "cursor=io.github.user%2Fweather%3A1.0.0%2Bbuild.5" in p for p in fake.request_paths
        )
        one = client.version("io.github.user/weather", "1.0.0+build.6")
        assert one["server"]["version"] == "1.0.0+build.6"
        assert fake.request_paths[-1].startswith(
            "/v0.1/servers/io.github.user%2Fweather/versions/1.0.0%2Bbuild.6"
        )
        latest = client.version("io.github.user/weather", "latest")
        # Build metadata is ignored by semver precedence: a later equal version does not win.
        assert latest["server"]["version"] == "1.0.0+build.5"
        assert [i["server"]["version"] for i in client.versions("io.github.user/weather")] == [
            "1.0.0+build.7",
            "1.0.0+build.6",
            "1.0.0+build.5",
        ]
        assert client.versions("io.github.nobody/none") == []
        assert client.version("io.github.user/weather", "9.9.9") is None


def test_token_bucket_paces_after_the_burst():
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(per_minute=60, burst=2, clock=lambda: now[0], sleep=sleep)
    assert [bucket.acquire() for _ in range(2)] == [0.0, 0.0]
    assert bucket.acquire() == pytest.approx(1.0)
    now[0] += 5.0  # refill, capped at the burst
    assert [bucket.acquire() for _ in range(2)] == [0.0, 0.0]
    assert bucket.acquire() == pytest.approx(1.0)
    assert TokenBucket(per_minute=0).acquire() == 0.0

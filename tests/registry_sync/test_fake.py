"""The fake registry keeps the upstream semantics the sync relies on."""

import json

import httpx
import pytest

from fakes.registry import FakeRegistry, generate_items
from tests.registry_sync.conftest import FIXTURES


def test_query_validation_matches_upstream(shared_fake):
    base = shared_fake.url + "/v0.1/servers"
    for bad in ("0", "101", "abc"):
        response = httpx.get(base, params={"limit": bad})
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
    assert httpx.get(base, params={"updated_since": "2025-09-29"}).status_code == 400
    both = {"updated_since": "2025-09-29T00:00:00Z", "include_deleted": "false"}
    assert httpx.get(base, params=both).status_code == 400
    assert len(httpx.get(base).json()["servers"]) == 30  # default limit


def test_version_latest_and_search_filters(shared_fake):
    base = shared_fake.url + "/v0.1/servers"
    latest = httpx.get(base, params={"version": "latest", "limit": 100}).json()
    names = {i["server"]["name"] for i in latest["servers"]}
    assert all(
        i["_meta"]["io.modelcontextprotocol.registry/official"]["isLatest"]
        for i in latest["servers"]
    )
    assert len(names) == len(latest["servers"])
    found = httpx.get(base, params={"search": "APPLE-RAG", "limit": 100}).json()["servers"]
    assert {i["server"]["name"] for i in found} == {"com.apple-rag/mcp-server"}


def test_scenario_flips_latest_without_bumping_updated_at(shared_fake):
    before = {(i["server"]["name"], i["server"]["version"]): i for i in shared_fake.items()}
    shared_fake.load_scenario(FIXTURES / "scenario-updated-since-2025-10-01.json")
    after = {(i["server"]["name"], i["server"]["version"]): i for i in shared_fake.items()}
    promoted = after[("com.apple-rag/mcp-server", "2.8.0")]["_meta"][
        "io.modelcontextprotocol.registry/official"
    ]
    assert promoted["isLatest"] is True
    old = before[("com.apple-rag/mcp-server", "2.8.0")]["_meta"][
        "io.modelcontextprotocol.registry/official"
    ]
    assert promoted["updatedAt"] == old["updatedAt"]
    versions = httpx.get(
        shared_fake.url + "/v0.1/servers/com.apple-rag%2Fmcp-server/versions",
        params={"include_deleted": "true"},
    ).json()
    expected = json.loads((FIXTURES / "scenario-versions-com.apple-rag.json").read_text())
    assert versions == expected
    # Without include_deleted the deleted 2.9.0 is left out.
    plain = httpx.get(shared_fake.url + "/v0.1/servers/com.apple-rag%2Fmcp-server/versions")
    assert "2.9.0" not in {i["server"]["version"] for i in plain.json()["servers"]}


def test_publish_and_status_rules():
    fake = FakeRegistry()
    fake.publish({"name": "io.github.a/x", "description": "d", "version": "1.2.0"})
    fake.publish({"name": "io.github.a/x", "description": "d", "version": "1.10.0"})
    fake.publish({"name": "io.github.a/x", "description": "d", "version": "1.3.0"})  # lower
    fake.publish({"name": "io.github.a/x", "description": "d", "version": "nightly"})

    def latest() -> list[str]:
        return [
            i["server"]["version"]
            for i in fake.items()
            if i["_meta"]["io.modelcontextprotocol.registry/official"]["isLatest"]
        ]

    assert latest() == ["1.10.0"]  # semver beats non-semver; 1.10.0 > 1.3.0
    fake.set_status("io.github.a/x", "1.10.0", "deleted", "withdrawn")
    assert latest() == ["1.3.0"]
    fake.set_status("io.github.a/x", "1.10.0", "active")
    assert latest() == ["1.10.0"]
    for version in ("1.2.0", "1.3.0", "1.10.0", "nightly"):
        fake.set_status("io.github.a/x", version, "deleted")
    assert latest() == ["1.10.0"]  # all deleted: the highest deleted keeps the flag
    fake.erase("io.github.a/x", "1.10.0")
    assert latest() == ["1.3.0"]


def test_generated_dataset_is_deterministic_and_consistent():
    items = generate_items(2000, seed=7)
    assert len(items) == 2000
    assert items == generate_items(2000, seed=7)
    assert items != generate_items(2000, seed=8)
    keys = [(i["server"]["name"], i["server"]["version"]) for i in items]
    assert len(set(keys)) == 2000
    latest: dict[str, int] = {}
    for i in items:
        if i["_meta"]["io.modelcontextprotocol.registry/official"]["isLatest"]:
            latest[i["server"]["name"]] = latest.get(i["server"]["name"], 0) + 1
    assert set(latest.values()) == {1}
    assert len(latest) == len({k[0] for k in keys})
    lowered = {}
    for name in latest:
        lowered.setdefault(name.lower(), set()).add(name)
    assert any(len(v) > 1 for v in lowered.values())  # case-only twins exist


@pytest.mark.parametrize("path", ["/v0.1/health", "/v0/servers?limit=1"])
def test_other_routes(shared_fake, path):
    assert httpx.get(shared_fake.url + path).status_code == 200

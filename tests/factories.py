"""factory_boy factories for the whole suite (apps may add theirs in tests/<app>/factories.py).

`ServerVersionFactory` builds mirror rows with a realistic raw registry item
(`{"server": server.json, "_meta": {official metadata}}`), so code under test reads the same
shapes it reads in production.
"""

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import factory
from django.contrib.auth import get_user_model
from factory.django import DjangoModelFactory

from marketplace.models import Listing, ListingSource, ListingStatus
from marketplace.services import listings_search_vector_update, name_to_words
from registry_sync.models import ServerVersion, VersionStatus

OFFICIAL = "io.modelcontextprotocol.registry/official"
SCHEMA_URL = "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
BASE_TIME = datetime(2025, 9, 1, 12, 0, tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def registry_item(
    *,
    name: str,
    version: str,
    description: str = "An MCP server.",
    title: str = "",
    remotes: list[dict[str, Any]] | None = None,
    packages: list[dict[str, Any]] | None = None,
    website_url: str = "",
    repository: dict[str, Any] | None = None,
    status: str = "active",
    status_message: str = "",
    published_at: datetime | None = None,
    updated_at: datetime | None = None,
    is_latest: bool = True,
    extra_server: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One item as `GET /v0.1/servers` returns it (empty members omitted, like the Go encoder)."""
    server: dict[str, Any] = {"$schema": SCHEMA_URL, "name": name, "description": description}
    if title:
        server["title"] = title
    if repository is not None:
        server["repository"] = repository
    if website_url:
        server["websiteUrl"] = website_url
    server["version"] = version
    if packages:
        server["packages"] = packages
    if remotes:
        server["remotes"] = remotes
    server.update(extra_server or {})
    official: dict[str, Any] = {"status": status}
    official["statusChangedAt"] = _iso(updated_at or published_at)
    if status_message:
        official["statusMessage"] = status_message
    official["publishedAt"] = _iso(published_at)
    official["updatedAt"] = _iso(updated_at or published_at)
    official["isLatest"] = is_latest
    return {"server": server, "_meta": {OFFICIAL: official}}


def npm_package(identifier: str = "weather-mcp", **overrides: Any) -> dict[str, Any]:
    package = {
        "registryType": "npm",
        "registryBaseUrl": "https://registry.npmjs.org",
        "identifier": identifier,
        "version": "1.0.0",
        "runtimeHint": "npx",
        "transport": {"type": "stdio"},
        "environmentVariables": [
            {
                "name": "WEATHER_API_KEY",
                "description": "API key",
                "isRequired": True,
                "isSecret": True,
            }
        ],
    }
    package.update(overrides)
    return package


def http_remote(url: str = "https://mcp.example.com/mcp", **overrides: Any) -> dict[str, Any]:
    remote = {
        "type": "streamable-http",
        "url": url,
        "headers": [
            {"name": "Authorization", "value": "Bearer {api_key}", "isSecret": True},
        ],
    }
    remote.update(overrides)
    return remote


class UserFactory(DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("correct horse battery staple")


class ServerVersionFactory(DjangoModelFactory):
    """A mirror row; server.json fields are Params (`description=...`, `remotes=[...]`)."""

    class Meta:
        model = ServerVersion
        skip_postgeneration_save = True

    class Params:
        description = "An MCP server."
        title = ""
        remotes = factory.LazyFunction(list)
        packages = factory.LazyFunction(list)
        website_url = ""
        repository = None
        extra_server = factory.LazyFunction(dict)

    name = factory.Sequence(lambda n: f"io.github.user{n}/server-{n}")
    version = "1.0.0"
    status = VersionStatus.ACTIVE
    status_message = ""
    published_at = factory.Sequence(lambda n: BASE_TIME + timedelta(minutes=n))
    upstream_updated_at = factory.SelfAttribute("published_at")
    status_changed_at = factory.SelfAttribute("published_at")
    is_latest = True
    raw = factory.LazyAttribute(
        lambda o: registry_item(
            name=o.name,
            version=o.version,
            description=o.description,
            title=o.title,
            remotes=o.remotes,
            packages=o.packages,
            website_url=o.website_url,
            repository=o.repository,
            status=o.status,
            status_message=o.status_message,
            published_at=o.published_at,
            updated_at=o.upstream_updated_at,
            is_latest=o.is_latest,
            extra_server=o.extra_server,
        )
    )
    content_hash = factory.LazyAttribute(
        lambda o: hashlib.sha256(
            json.dumps(o.raw, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
    )


class ListingFactory(DjangoModelFactory):
    """A listing as the mirror would leave it, with its search vector computed (PostgreSQL)."""

    class Meta:
        model = Listing
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"io.github.maker{n}/tool-{n}")
    source = ListingSource.REGISTRY
    title = ""
    description = "An MCP server."
    latest_version = "1.0.0"
    version_count = 1
    status = ListingStatus.ACTIVE
    published_at = factory.Sequence(lambda n: BASE_TIME + timedelta(minutes=n))
    upstream_updated_at = factory.SelfAttribute("published_at")
    name_words = factory.LazyAttribute(lambda o: name_to_words(o.name))

    @factory.post_generation
    def index_for_search(obj: Listing, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            listings_search_vector_update(names=[obj.name])

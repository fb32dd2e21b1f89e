"""Registry-sync test wiring: a loopback fake registry and fast, isolated settings."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes.registry import FakeRegistry
from registry_sync.client import RegistryClient

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "registry"
SHARED_PAGES = [FIXTURES / f"page-{n}.json" for n in (1, 2, 3)]


@pytest.fixture(autouse=True)
def _registry_settings(settings):
    """No pacing, tiny backoff, and no higher-app hooks unless a test installs its own."""
    settings.REGISTRY_MAX_REQUESTS_PER_MINUTE = 0
    settings.REGISTRY_BACKOFF_BASE_SECONDS = 0.001
    settings.REGISTRY_BACKOFF_MAX_SECONDS = 0.01
    settings.REGISTRY_MAX_RETRIES = 3
    settings.REGISTRY_TIMEOUT_SECONDS = 5.0
    settings.REGISTRY_NAMES_CHANGED_HOOKS = []
    settings.REGISTRY_PROTECTED_NAMES_PROVIDER = ""
    return settings


@pytest.fixture
def shared_fake() -> Iterator[FakeRegistry]:
    """The fake serving the 247 shared versions (the copied page files), started on port 0."""
    fake = FakeRegistry.from_files(SHARED_PAGES)
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def make_client():
    clients: list[RegistryClient] = []

    def _make(url: str, **kwargs) -> RegistryClient:
        kwargs.setdefault("backoff_base", 0.001)
        kwargs.setdefault("backoff_max", 0.01)
        kwargs.setdefault("max_requests_per_minute", 0)
        client = RegistryClient(base_url=url, **kwargs)
        clients.append(client)
        return client

    yield _make
    for client in clients:
        client.close()

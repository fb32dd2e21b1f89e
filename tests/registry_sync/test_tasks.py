"""The Celery task: called directly (STYLE: call tasks directly), real Redis for the lock."""

import pytest

from registry_sync.client import RegistryError
from registry_sync.models import ServerVersion, SyncRun, SyncStatus
from registry_sync.services import registry_sync_lock
from registry_sync.tasks import registry_sync_task, retry_countdown

pytestmark = pytest.mark.django_db


def test_task_syncs_and_is_idempotent(shared_fake, settings, redis_client):
    settings.REGISTRY_URL = shared_fake.url
    first = registry_sync_task()
    second = registry_sync_task()
    assert ServerVersion.objects.count() == 247
    runs = SyncRun.objects.order_by("pk")
    assert [r.pk for r in runs] == [first, second]
    assert runs[1].created == 0
    assert runs[1].updated == 0
    assert not redis_client.keys("*registry_sync:lock:*")  # released


def test_task_skips_while_another_sync_holds_the_lock(shared_fake, settings, redis_client):
    settings.REGISTRY_URL = shared_fake.url
    with registry_sync_lock(url=shared_fake.url) as acquired:
        assert acquired is True
        assert redis_client.keys("*registry_sync:lock:*")
        assert registry_sync_task() is None
    assert not SyncRun.objects.exists()
    assert registry_sync_task() is not None


def test_task_surfaces_registry_errors_for_retry(shared_fake, settings, redis_client):
    settings.REGISTRY_URL = shared_fake.url
    settings.REGISTRY_MAX_RETRIES = 0
    shared_fake.inject("502")
    # Called directly, Celery's retry() re-raises the original error.
    with pytest.raises(RegistryError):
        registry_sync_task()
    assert SyncRun.objects.get().status == SyncStatus.FAILED
    assert not redis_client.keys("*registry_sync:lock:*")


def test_retry_countdown_grows_and_is_capped():
    assert 60 <= retry_countdown(0) <= 90
    assert 240 <= retry_countdown(2) <= 270
    assert retry_countdown(20) <= 30 * 60 + 30

"""The admin shows runs, quarantine, alerts and mirrored rows; alerts can be resolved."""

import json

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from fakes.registry import FakeRegistry
from registry_sync.models import ServerVersion, SyncAlert, SyncRun
from registry_sync.services import registry_sync_run
from tests.registry_sync.conftest import FIXTURES
from tests.registry_sync.factories import SyncAlertFactory

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.registry_sync.admin_urls")]


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def test_admin_pages_render(admin_client, shared_fake):
    shared_fake.add_opaque(
        json.loads((FIXTURES / "scenario-malformed.json").read_text())["servers"]
    )
    run = registry_sync_run(url=shared_fake.url)
    for name in ("syncrun", "quarantineditem", "syncalert", "serverversion", "synccursor"):
        response = admin_client.get(reverse(f"admin:registry_sync_{name}_changelist"))
        assert response.status_code == 200, name
    page = admin_client.get(reverse("admin:registry_sync_syncrun_change", args=[run.pk]))
    assert page.status_code == 200
    assert b"item is null" in page.content
    assert SyncRun.objects.get(pk=run.pk).quarantined == 4
    version = ServerVersion.objects.get(name="io.github.example/long-text")
    detail = admin_client.get(
        reverse("admin:registry_sync_serverversion_change", args=[version.pk])
    )
    assert detail.status_code == 200
    assert b"Very long description." in detail.content
    search = admin_client.get(
        reverse("admin:registry_sync_serverversion_changelist"),
        {"q": "apple-rag"},
    )
    assert b"com.apple-rag/mcp-server" in search.content


def test_resolve_action(admin_client):
    open_alert = SyncAlertFactory()
    response = admin_client.post(
        reverse("admin:registry_sync_syncalert_changelist"),
        {"action": "resolve", "_selected_action": [open_alert.pk]},
    )
    assert response.status_code == 302
    open_alert.refresh_from_db()
    assert open_alert.resolved_at is not None
    assert SyncAlert.objects.filter(resolved_at__isnull=True).count() == 0


def test_registry_text_is_escaped_in_the_admin(admin_client):
    fake = FakeRegistry()
    fake.publish(
        {"name": "io.github.evil/x", "description": "<script>alert(1)</script>", "version": "1.0.0"}
    )
    with fake.serve() as url:
        registry_sync_run(url=url)
    version = ServerVersion.objects.get(name="io.github.evil/x")
    detail = admin_client.get(
        reverse("admin:registry_sync_serverversion_change", args=[version.pk])
    )
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in detail.content
    assert b"<script>alert(1)</script>" not in detail.content

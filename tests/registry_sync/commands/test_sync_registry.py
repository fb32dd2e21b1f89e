"""`manage.py sync_registry` and `run_fake_registry`."""

import subprocess
import sys
from io import StringIO
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from registry_sync.models import ServerVersion, SyncRun, SyncStatus

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[3]


def test_command_syncs_and_prints_a_summary(shared_fake, redis_client):
    out = StringIO()
    call_command("sync_registry", "--url", shared_fake.url, stdout=out)
    text = out.getvalue()
    assert "(full) succeeded" in text
    assert "pages 3, items 247, requests 3" in text
    assert "created 247, updated 0, unchanged 0, quarantined 0, gone 0" in text
    assert "watermark 2025-09-30T14:42:48.239932+00:00" in text

    out = StringIO()
    call_command("sync_registry", "--url", shared_fake.url, "--full", stdout=out)
    assert "created 0, updated 0, unchanged 247" in out.getvalue()


def test_command_fails_with_a_clear_message(shared_fake, settings, redis_client):
    settings.REGISTRY_MAX_RETRIES = 1
    shared_fake.inject("500", times=5)
    with pytest.raises(CommandError, match=r"registry sync failed \(run #\d+\): .*HTTP 500"):
        call_command("sync_registry", "--url", shared_fake.url, stdout=StringIO())
    assert SyncRun.objects.get().status == SyncStatus.FAILED


def test_command_snapshot_mode_is_offline(redis_client):
    out = StringIO()
    call_command("sync_registry", "--snapshot", stdout=out)
    assert "(snapshot) succeeded" in out.getvalue()
    assert ServerVersion.objects.count() == 247


def test_run_fake_registry_serves_over_loopback():
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "run_fake_registry",
            "--port",
            "0",
            "--dataset",
            "generated:250",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("fake registry serving 250 versions at http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1].strip()
        body = httpx.get(url + "/v0.1/servers", params={"limit": 100}, timeout=5).json()
        assert body["metadata"]["count"] == 100
    finally:
        proc.terminate()
        proc.wait(timeout=10)

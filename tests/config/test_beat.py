"""Beat's heartbeat: a real `celery beat` process keeps it fresh; a hung one lets it go stale,
and the compose healthcheck (`python -m config.beat check`) says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from config.beat import HEARTBEAT_SECONDS, heartbeat_path
from tests.gateway.conftest import stop

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# Beat sends the scheduled tasks to this broker: a Redis database of its own (the suite uses
# 15), so no other test's worker runs them. Emptied afterwards.
BROKER = "redis://127.0.0.1:6379/12"


def _check(schedule: Path, max_age: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "config.beat", "check", str(schedule), "--max-age", str(max_age)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_check_fails_before_beat_ever_ticked(tmp_path):
    result = _check(tmp_path / "celerybeat-schedule", 60)
    assert result.returncode == 1
    assert "not ticked" in result.stderr


def test_heartbeat_follows_a_real_beat_and_goes_stale_when_it_hangs(tmp_path):
    schedule = tmp_path / "celerybeat-schedule"
    max_age = HEARTBEAT_SECONDS + 2
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "CELERY_BROKER_URL": BROKER,
        "REDIS_URL": BROKER,
    }
    cmd = [sys.executable, "-m", "celery", "-A", "config", "beat", "-l", "warning"]
    cmd += ["--scheduler", "config.beat:HeartbeatScheduler", "--schedule", str(schedule)]
    beat = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not heartbeat_path(schedule).exists():
            assert beat.poll() is None, "beat exited"
            assert time.monotonic() < deadline, "beat never ticked"
            time.sleep(0.2)
        assert _check(schedule, max_age).returncode == 0
        # It keeps ticking, not just once.
        first = heartbeat_path(schedule).stat().st_mtime
        time.sleep(HEARTBEAT_SECONDS + 1)
        assert heartbeat_path(schedule).stat().st_mtime > first
        result = _check(schedule, max_age)
        assert result.returncode == 0, result.stderr

        beat.send_signal(signal.SIGSTOP)  # hung: the process is there, the loop is not
        time.sleep(max_age + 1)
        result = _check(schedule, max_age)
        assert result.returncode == 1
        assert "last ticked" in result.stderr
    finally:
        beat.send_signal(signal.SIGCONT)
        stop(beat)
        redis.Redis.from_url(BROKER).flushdb()

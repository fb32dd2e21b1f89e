"""`manage.py check --deploy` with the production environment `.env.example` documents.

Run as a new process with only that environment (the test settings never load), as a
deployment would run it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.deployenv import ROOT, SECRETS, env_example, production_env


def _check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_env_example_commits_no_secret_and_marks_each_required():
    values, comments = env_example()
    required = {name for name, comment in comments.items() if comment.startswith("required")}
    assert required == set(SECRETS)
    for name in SECRETS:
        assert values[name] == "", f"{name} has a value in .env.example"


def test_check_deploy_passes_with_the_documented_production_environment():
    result = _check_deploy(production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("overrides", "check_id"),
    [
        ({"GATEWAY_UPSTREAM_ALLOWLIST": "127.0.0.1:9"}, "gateway.W001"),
        ({"GATEWAY_METRICS_TOKEN": ""}, "gateway.W002"),
        ({"GATEWAY_REQUIRE_KEY": "0"}, "gateway.E001"),
        ({"STRIPE_WEBHOOK_SECRETS": "whsec_toolbooth_local"}, "billing.E001"),
        ({"STRIPE_WEBHOOK_SECRETS": ""}, "billing.E001"),
        ({"STRIPE_SECRET_KEY": ""}, "billing.E002"),
        ({"SECURE_HSTS_PRELOAD": "0"}, "security.W021"),
        ({"SECURE_HSTS_INCLUDE_SUBDOMAINS": "0"}, "security.W005"),
        ({"SECURE_SSL_REDIRECT": ""}, "security.W008"),
    ],
)
def test_check_deploy_fails_when_a_production_value_is_missing(overrides, check_id):
    """Each value in .env.example is there for a reason: without it the command fails."""
    result = _check_deploy(production_env(**overrides))
    assert result.returncode != 0
    assert check_id in result.stderr, result.stderr


def test_an_empty_boolean_means_its_default():
    """`VAR=` in .env.example documents the default; it must not silently mean off."""
    env = production_env(SESSION_COOKIE_SECURE="", CSRF_COOKIE_SECURE="")
    result = subprocess.run(
        [sys.executable, "-c", _PRINT_COOKIES],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["True", "True"], result.stderr


_PRINT_COOKIES = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE)"
)

"""docker-compose.yml can't run here (no Docker engine), so check its shape instead."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_production_services_with_healthchecks():
    services = _compose()["services"]
    for name in ("postgres", "redis", "web", "worker", "beat"):
        assert name in services, name
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
        assert services[name]["healthcheck"]["test"], name


def test_compose_images_and_commands():
    services = _compose()["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert services["web"]["command"][:2] == ["uvicorn", "config.asgi:application"]
    assert services["worker"]["command"][:4] == ["celery", "-A", "config", "worker"]
    assert services["beat"]["command"][:4] == ["celery", "-A", "config", "beat"]
    for name in ("web", "worker", "beat"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["REDIS_URL"].startswith("redis://")
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["redis"]["condition"] == "service_healthy"


def test_compose_sets_no_secret_defaults():
    text = (ROOT / "docker-compose.yml").read_text()
    assert "SECRET_KEY" not in text
    assert "${POSTGRES_PASSWORD:?" in text


def test_env_example_lists_every_setting_read_from_the_environment():
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", example, flags=re.M))
    read: set[str] = set()
    for path in (ROOT / "config").rglob("*.py"):
        read |= set(re.findall(r'env_\w+\(\s*"([A-Z][A-Z0-9_]+)"', path.read_text()))
    missing = read - listed
    assert not missing, f"settings missing from .env.example: {sorted(missing)}"


@pytest.mark.django_db
def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_only_the_tls_proxy_publishes_ports_and_they_are_fixed():
    services = _compose()["services"]
    published = {name: svc["ports"] for name, svc in services.items() if "ports" in svc}
    assert published == {"proxy": ["80:80", "443:443", "443:443/udp"]}
    assert services["web"]["expose"] == ["8000"]
    proxy = services["proxy"]
    assert proxy["image"].startswith("caddy:2")
    assert proxy["depends_on"]["web"]["condition"] == "service_healthy"
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    # Certificates survive a restart (Let's Encrypt rate-limits re-issuing).
    assert any(v.startswith("caddy_data:/data") for v in proxy["volumes"])
    # web trusts X-Forwarded-For only because nothing but the proxy can reach it.
    assert services["web"]["environment"]["FORWARDED_ALLOW_IPS"] == "*"


def test_caddyfile_terminates_tls_and_streams_to_web():
    text = (ROOT / "deploy" / "Caddyfile").read_text()
    code = "\n".join(line.split("#")[0] for line in text.splitlines())
    site = code.strip().splitlines()
    assert site[0].startswith("{$TOOLBOOTH_DOMAIN"), "the site address is a host name"
    assert "http://" not in code, "a plain-HTTP site would skip TLS"
    assert "tls internal" not in code, "a real deployment gets a public certificate"
    assert "dynamic a web 8000" in code
    assert "flush_interval -1" in code  # SSE events pass at once
    assert 'request>uri regexp "\\?.*$"' in code  # no query string in the access log


@pytest.mark.skipif(
    shutil.which("caddy") is None, reason="caddy not installed (apt-get install caddy)"
)
def test_caddyfile_is_valid_for_caddy():
    result = subprocess.run(
        ["caddy", "validate", "--adapter", "caddyfile", "--config", str(ROOT / "deploy/Caddyfile")],
        env={**os.environ, "TOOLBOOTH_DOMAIN": "toolbooth.example.com"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_beat_has_a_heartbeat_healthcheck():
    beat = _compose()["services"]["beat"]
    command = beat["command"]
    scheduler = command[command.index("--scheduler") + 1]
    schedule = command[command.index("--schedule") + 1]
    assert scheduler == "config.beat:HeartbeatScheduler"
    test = beat["healthcheck"]["test"]
    assert test[:5] == ["CMD", "python", "-m", "config.beat", "check"]
    assert test[5] == schedule
    max_age = float(test[test.index("--max-age") + 1])
    from config.beat import HEARTBEAT_SECONDS

    assert max_age >= 4 * HEARTBEAT_SECONDS


def test_web_healthcheck_asks_as_the_proxy_does():
    test = _compose()["services"]["web"]["healthcheck"]["test"]
    assert test == ["CMD", "python", "-m", "common.healthcheck", "http://127.0.0.1:8000/healthz"]


def test_no_secret_is_committed_in_the_deploy_files():
    """Secrets come from .env: compose interpolates them with `:?` (fails when unset)."""
    text = (ROOT / "docker-compose.yml").read_text() + (ROOT / "deploy" / "Caddyfile").read_text()
    for marker in ("sk_live_", "sk_test_", "whsec_", "SECRET_KEY", "PEPPER", "METRICS_TOKEN"):
        assert marker not in text, marker
    for name in re.findall(r"\$\{([A-Z_]*PASSWORD[A-Z_]*)", text):
        assert f"${{{name}:?" in text, f"{name} has a default"
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_dockerfile_copies_every_product_app_and_the_templates():
    """A new app in INSTALLED_APPS needs its COPY line, or the image fails at collectstatic
    (tests/test_docker_image.py shows that slowly; this says which line is missing)."""
    from django.conf import settings

    copied = set(re.findall(r"^COPY\s+(\S+)", (ROOT / "Dockerfile").read_text(), flags=re.M))
    ours = {app for app in settings.INSTALLED_APPS if "." not in app and (ROOT / app).is_dir()}
    needed = (ours - {"demo", "fakes"}) | {"templates", "manage.py", "pyproject.toml"}
    missing = needed - copied
    assert not missing, f"Dockerfile does not COPY: {sorted(missing)}"
    assert not copied & {"demo", "fakes", "tests", ".env"}, "the image holds the product only"


def _commands() -> dict[str, list[list[str]]]:
    """Each service's command lines as argv lists: its command and its healthcheck's."""
    out: dict[str, list[list[str]]] = {}
    for name, svc in _compose()["services"].items():
        lines: list[list[str]] = []
        if isinstance(svc.get("command"), list):
            lines.append([str(a) for a in svc["command"]])
        test = (svc.get("healthcheck") or {}).get("test") or []
        if test[:1] == ["CMD"]:
            lines.append([str(a) for a in test[1:]])
        out[name] = lines
    return out


def test_every_python_target_the_compose_file_names_exists():
    """A module, app or class renamed in the code but not in docker-compose.yml would only
    show as a crash loop or a service that never turns healthy after a deploy; each target the
    app services run (python -m X, manage.py, uvicorn X:Y, celery -A X, --scheduler X:Y) is
    resolved here as the container would resolve it."""
    import importlib
    import importlib.util

    def attribute(target: str) -> object:
        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)

    checked: set[str] = set()
    for service, lines in _commands().items():
        for argv in lines:
            if argv[:2] == ["python", "-m"]:
                spec = importlib.util.find_spec(argv[2])
                assert spec is not None, f"{service}: no module {argv[2]}"
                source = Path(spec.origin or "").read_text()
                assert '__name__ == "__main__"' in source, f"{service}: {argv[2]} has no main"
                checked.add(argv[2])
            elif argv[:2] == ["python", "manage.py"]:
                assert (ROOT / "manage.py").is_file()
                checked.add("manage.py")
            elif argv[:1] == ["uvicorn"]:
                assert callable(attribute(argv[1])), f"{service}: {argv[1]}"
                checked.add(argv[1])
            elif argv[:1] == ["celery"]:
                app = argv[argv.index("-A") + 1]
                from celery import Celery

                assert isinstance(importlib.import_module(f"{app}.celery").app, Celery)
                checked.add(f"celery -A {app}")
                if "--scheduler" in argv:
                    scheduler = argv[argv.index("--scheduler") + 1]
                    assert isinstance(attribute(scheduler), type), f"{service}: {scheduler}"
                    checked.add(scheduler)
    assert checked >= {
        "common.healthcheck",
        "config.beat",
        "manage.py",
        "config.asgi:application",
        "celery -A config",
        "config.beat:HeartbeatScheduler",
    }


def test_the_beat_healthcheck_command_tells_a_live_beat_from_a_stalled_one(tmp_path):
    """The beat healthcheck exactly as compose runs it (its own argv, schedule path swapped for
    a temporary one): healthy right after a tick, unhealthy without a heartbeat or with one
    older than --max-age."""
    import sys
    import time

    test = _compose()["services"]["beat"]["healthcheck"]["test"]
    schedule = tmp_path / "celerybeat-schedule"
    argv = [sys.executable, *test[2:]]
    argv[argv.index(test[5])] = str(schedule)  # /app/var/celerybeat-schedule in the image

    def exit_code() -> int:
        run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=30)
        return run.returncode

    assert exit_code() != 0  # never ticked
    heartbeat = Path(f"{schedule}.heartbeat")
    heartbeat.touch()
    assert exit_code() == 0
    max_age = float(test[test.index("--max-age") + 1])
    stale = time.time() - max_age - 5
    os.utime(heartbeat, (stale, stale))
    assert exit_code() != 0

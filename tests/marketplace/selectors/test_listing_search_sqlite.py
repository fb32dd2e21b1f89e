"""The demo's embedded default (SQLite): refresh, search, API and pages work without PostgreSQL.

Runs in a subprocess because the suite's database is PostgreSQL; that process migrates a fresh
SQLite file and exercises the real services and selectors.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = r"""
import json
import django
django.setup()
from django.test.utils import setup_test_environment
setup_test_environment()
from django.test import Client
from django.core.management import call_command
from django.db import connection
call_command("migrate", verbosity=0)
from marketplace.selectors import listing_search
from marketplace.services import listings_refresh_from_registry
from tests.factories import ServerVersionFactory
ServerVersionFactory(name="io.github.acme/weather", description="Forecasts for any city")
ServerVersionFactory(name="io.github.acme/notes", title="Notes", description="Keep notes")
ServerVersionFactory(name="io.github.acme/gone", status="gone")
changed = listings_refresh_from_registry(names=[
    "io.github.acme/weather", "io.github.acme/notes", "io.github.acme/gone"])
print(json.dumps({
    "vendor": connection.vendor,
    "changed": changed,
    "again": listings_refresh_from_registry(names=["io.github.acme/weather"]),
    "city": [x.name for x in listing_search(q="city")],
    "notes": [x.name for x in listing_search(q="NOTES")],
    "acme": [x.name for x in listing_search(q="acme/")],
    "gone": [x.name for x in listing_search(q="acme", status="gone")],
    "all": [x.name for x in listing_search()],
    "pages": [
        Client().get(path).status_code
        for path in ["/", "/?q=city", "/servers/io.github.acme/weather", "/api/v1/listings?q=city"]
    ],
    "api": Client().get("/api/v1/listings", {"q": "forecasts"}).json()["count"],
}))
"""


def test_refresh_and_search_on_sqlite(tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["vendor"] == "sqlite"
    assert result["changed"] == 3
    assert result["again"] == 0
    assert result["city"] == ["io.github.acme/weather"]
    assert result["notes"] == ["io.github.acme/notes"]
    assert result["acme"] == ["io.github.acme/notes", "io.github.acme/weather"]
    assert result["gone"] == ["io.github.acme/gone"]
    assert result["all"] == ["io.github.acme/notes", "io.github.acme/weather"]
    assert result["pages"] == [200, 200, 200, 200]
    assert result["api"] == 1

"""The production environment `.env.example` documents, as tests use it.

`.env.example` leaves every secret empty (nothing secret is committed) and marks each one
`required`; an operator generates them. `production_env()` does the same with fresh random
values, so tests run what a new deployment would run.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / ".env.example"

# Every `required` variable of .env.example and a value of the shape production uses.
SECRETS = {
    "SECRET_KEY": lambda: secrets.token_urlsafe(50),
    "LICENSE_KEY_PEPPER": lambda: secrets.token_urlsafe(32),
    "GATEWAY_IDENTITY_SECRET": lambda: secrets.token_urlsafe(32),
    "GATEWAY_UPSTREAM_SECRET_KEY": lambda: secrets.token_urlsafe(32),
    "GATEWAY_METRICS_TOKEN": lambda: secrets.token_urlsafe(32),
    "STRIPE_SECRET_KEY": lambda: "sk_live_" + secrets.token_urlsafe(24),
    "STRIPE_WEBHOOK_SECRETS": lambda: "whsec_" + secrets.token_urlsafe(24),
    "POSTGRES_PASSWORD": lambda: secrets.token_urlsafe(24),
}
_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


def parse_env_file(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Values and comments, read as docker compose reads an env_file (` #` starts a comment)."""
    values: dict[str, str] = {}
    comments: dict[str, str] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        name, rest = match.groups()
        value, comment = rest, ""
        inline = re.search(r"\s#", rest)
        if inline:
            value, comment = rest[: inline.start()], rest[inline.end() :]
        values[name] = value.strip()
        comments[name] = comment.strip()
    return values, comments


def env_example() -> tuple[dict[str, str], dict[str, str]]:
    return parse_env_file(ENV_EXAMPLE.read_text())


def production_env(**overrides: str) -> dict[str, str]:
    """A process environment: PATH and HOME from ours, then .env.example with secrets filled."""
    values, _ = env_example()
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(ROOT)), "LANG": "C.UTF-8"}
    env.update(values)
    for name, make in SECRETS.items():
        env[name] = make()
    env["DJANGO_SETTINGS_MODULE"] = "config.settings.base"
    env.update(overrides)
    return env

"""Typed helpers that read settings from the environment with safe local defaults."""

import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_str(name: str, default: str = "") -> str:
    """An empty value counts as unset, so `VAR=` in a shell or Makefile means "the default"."""
    return os.environ.get(name) or default


def env_bool(name: str, default: bool = False) -> bool:
    """Empty counts as unset, as in env_str: `.env.example`'s `VAR=  # default: ...` lines
    (and docker compose's env_file) must give the documented default, not False."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean, got {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from exc


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_required(name: str, *, debug: bool, local_default: str) -> str:
    """A secret: required outside DEBUG, a throwaway local value under DEBUG."""
    value = os.environ.get(name, "")
    if value:
        return value
    if debug:
        return local_default
    raise ImproperlyConfigured(f"{name} must be set when DEBUG is off")

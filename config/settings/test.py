"""Test settings: only overrides. Real PostgreSQL and Redis on localhost."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/toolbooth")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("DEBUG", "0")
os.environ.setdefault("SECRET_KEY", "test-only-secret-key")
os.environ.setdefault("LICENSE_KEY_PEPPER", "test-only-pepper")
os.environ.setdefault("GATEWAY_IDENTITY_SECRET", "test-only-identity-secret")
os.environ.setdefault("GATEWAY_UPSTREAM_SECRET_KEY", "test-only-upstream-secret-key")
os.environ.setdefault("CELERY_TASK_ALWAYS_EAGER", "0")

from config.settings.base import *  # noqa: F403

SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# In memory unless a test (or the worker it starts) points Django at its loopback SMTP server.
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend")
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
WHITENOISE_USE_FINDERS = True
# Registry tests run against a loopback fake; never pace them like the real registry.
REGISTRY_MAX_REQUESTS_PER_MINUTE = 0

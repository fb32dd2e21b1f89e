"""All settings, read from the environment with safe local defaults (see .env.example).

Nothing here is production-only: production differs only by its environment. Integration
settings live in sibling modules (registry, stripe, celery, gateway) and are imported at the end.
"""

import importlib.util
from pathlib import Path

import dj_database_url

from config.env import env_bool, env_float, env_int, env_list, env_required, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(env_str("TOOLBOOTH_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", default=False)
SECRET_KEY = env_required("SECRET_KEY", debug=DEBUG, local_default="insecure-local-only-secret-key")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
# Reverse proxies whose X-Forwarded-For names the client (addresses or networks, e.g.
# "10.0.0.0/8"): per-address limits (invalid keys at the gateway, /mcp-catalog streams) read
# the header only from these peers (common.clientaddr). Empty: the TCP peer is the client.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "django.contrib.sitemaps",  # templates of the sitemap views (web/seo.py)
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "common",
    "registry_sync",
    "marketplace",
    "billing",
    "gateway",
    "oauth",
    "notifications",
    "web",
]
# In a checkout, not in the production image (Dockerfile): the demo runner (seeds accounts with
# known passwords) and the stand-ins for Stripe and the registry (their run_fake_* commands).
# Neither has models or URLs, and no product app imports them (tests/test_layering.py), so the
# site is the same with or without them.
INSTALLED_APPS += [app for app in ("demo", "fakes") if importlib.util.find_spec(app) is not None]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "common.middleware.SecurityHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# The embedded default (SQLite) exists for the demo only; tests and production use PostgreSQL.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'demo.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The demo runs webhooks, the success page and the usage drain concurrently in one
    # process: take the write lock when a transaction starts (no lock-upgrade deadlock that
    # SQLite answers with an immediate "database is locked"), wait for it, and let readers
    # run beside the writer (WAL).
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = 5
    # Under ASGI Django runs each request's sync code in a thread of its own and keeps
    # connections per thread, so CONN_MAX_AGE keeps nothing there: every request connected
    # anew (5-10 ms; benchmarks/search_bench.py counted one new PostgreSQL session per request).
    # psycopg's pool hands each request an open connection instead. config/asgi.py turns it on
    # for the web process; forking processes (Celery's prefork workers) and commands keep plain
    # connections. Django refuses a pool together with persistent connections.
    if env_bool("DATABASE_POOL", default=False):
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": env_int("DATABASE_POOL_MIN_SIZE", 2),
            "max_size": env_int("DATABASE_POOL_MAX_SIZE", 10),
            "timeout": env_float("DATABASE_POOL_TIMEOUT", 10.0),  # waiting for a free one
        }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Optional: without Redis the demo runs on in-process implementations.
REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"socket_timeout": 0.1, "socket_connect_timeout": 0.1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every start without it
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = DEBUG

# Email, with Django's own setting names (notifications/). Without EMAIL_HOST, or with DEBUG on
# (the demo), mail is printed to the console; EMAIL_BACKEND overrides either way.
EMAIL_HOST = env_str("EMAIL_HOST", "")
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=bool(EMAIL_HOST))
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", default=False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)  # every outside call has a timeout
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST and not DEBUG
    else "django.core.mail.backends.console.EmailBackend",
)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Toolbooth <noreply@toolbooth.local>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# Cookies and transport: secure outside DEBUG.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BEHIND_TLS_PROXY") else None
)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
# Both apply only once SECURE_HSTS_SECONDS > 0. Subdomains default on (a cookie set on a
# plain-HTTP subdomain could otherwise shadow ours); preload is opt-in, since leaving the
# browsers' preload list takes months (https://hstspreload.org/#removal).
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=False)
# No inline script anywhere: pages load only our own static files.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "common.api.pagination.DefaultPagination",
    "PAGE_SIZE": 20,
    "EXCEPTION_HANDLER": "common.api.exceptions.exception_handler",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Toolbooth API",
    "DESCRIPTION": "Catalogue of MCP servers mirrored from the Official MCP Registry, "
    "plus licenses and usage for buyers.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # API docs work offline and under our CSP: Swagger UI from our own static files.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a "status": name each enum after its own choices.
    "ENUM_NAME_OVERRIDES": {
        "ListingStatusEnum": "marketplace.models.ListingStatus",
        "VersionStatusEnum": "registry_sync.models.VersionStatus",
        "LicenseStatusEnum": "billing.models.LicenseStatus",
        "ClaimStatusEnum": "billing.models.ClaimStatus",
        "OrderStatusEnum": "billing.models.OrderStatus",
    },
}

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
# common.logging.configure_logging also cuts query strings out of uvicorn's access log.
LOGGING_CONFIG = "common.logging.configure_logging"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "event": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s %(extra_fields)s"},
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "filters": {"extra_fields": {"()": "common.logging.ExtraFieldsFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "event",
            "filters": ["extra_fields"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # httpx logs every request at INFO: too loud for a sync of hundreds of pages.
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}

from config.settings.celery import *  # noqa: E402, F403
from config.settings.gateway import *  # noqa: E402, F403
from config.settings.oauth import *  # noqa: E402, F403
from config.settings.registry import *  # noqa: E402, F403
from config.settings.stripe import *  # noqa: E402, F403
from config.settings.web import *  # noqa: E402, F403

CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace(
    "form-action 'self'",
    "form-action 'self' " + " ".join(STRIPE_HOSTED_ORIGINS),  # noqa: F405
)

"""The ASGI app the catalogue tests run under uvicorn: `/mcp-catalog` to the MCP catalogue,
everything else to Django (what config/asgi.py does once the catalogue is wired in there)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
django_application = get_asgi_application()

from web.catalog_mcp import catalog_asgi_app  # noqa: E402  (needs the app registry)

application = catalog_asgi_app(fallback=django_application)

"""ASGI entry point: the whole site (pages, API and the MCP gateway) is served over ASGI.

`/mcp-catalog` (the catalogue as an MCP server, web/catalog_mcp.py), `/mcp/<listing>` and
`/metrics` (the gateway's own small ASGI app, gateway/app.py explains why) and the OAuth
endpoints (`/.well-known/oauth-*`, `/oauth/authorize|token|register|revoke`: the `mcp` SDK's
handlers, oauth/asgi.py) are handled in front of Django; every other path is ordinary Django.
The catalogue is outermost because it needs lifespan shutdown to stop its session manager, and
it forwards lifespan to the gateway.
"""

import gc
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
# Sync views run in a new thread per request here, so only a pool reuses database connections
# (config/settings/base.py, DATABASE_POOL); set DATABASE_POOL=0 to connect per request.
os.environ.setdefault("DATABASE_POOL", "1")

django.setup(set_prefix=False)  # what django.core.asgi.get_asgi_application does first

from config.django_asgi import SyncChainASGIHandler  # noqa: E402

# Django's ASGIHandler, with its middleware chain run in one thread hop (config/django_asgi.py).
django_application = SyncChainASGIHandler()

from billing.webhooks import WebhookBodyLimit  # noqa: E402
from gateway.app import GatewayApp  # noqa: E402  (needs the app registry loaded above)
from oauth.asgi import oauth_asgi_app  # noqa: E402
from web.catalog_mcp import catalog_asgi_app  # noqa: E402

# The Stripe webhook's body is capped as it arrives, before Django buffers it (billing/webhooks.py).
# The OAuth protocol endpoints (oauth/asgi.py) sit behind the gateway, off its hot path.
application = catalog_asgi_app(
    fallback=GatewayApp(oauth_asgi_app(WebhookBodyLimit(django_application)))  # type: ignore[arg-type]
)

# Everything imported so far lives as long as the process. Moving it out of the collector's
# reach makes each full collection walk only what requests create: on the gateway under load a
# full collection paused every request in flight for ~95 ms, 1-4 ms after this
# (benchmarks/gateway_bench.py, p99 at concurrency 64).
gc.freeze()

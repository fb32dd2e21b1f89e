"""System checks: test-only gateway settings must not reach a deployment."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register


@register(Tags.security, deploy=True)
def gateway_deploy_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    if settings.GATEWAY_UPSTREAM_ALLOWLIST:
        messages.append(
            Warning(
                "GATEWAY_UPSTREAM_ALLOWLIST exempts upstreams from the SSRF guard.",
                hint="Leave it empty in production; it exists for loopback test/demo upstreams.",
                id="gateway.W001",
            )
        )
    if not settings.GATEWAY_REQUIRE_KEY:
        messages.append(
            Error(
                "GATEWAY_REQUIRE_KEY is off: anyone can call every hosted upstream for free.",
                hint="It exists only for the MCP conformance suite.",
                id="gateway.E001",
            )
        )
    if not settings.GATEWAY_METRICS_TOKEN:
        messages.append(
            Warning(
                "GATEWAY_METRICS_TOKEN is unset: /metrics answers loopback clients only.",
                hint="Set it and give it to the Prometheus scrape job as a Bearer token.",
                id="gateway.W002",
            )
        )
    return messages

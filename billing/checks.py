"""Deploy checks: the local Stripe defaults must not reach a deployment.

`config/settings/stripe.py` gives STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRETS throwaway values so
tests and the demo need no setup. In production the webhook default would let anyone who reads
this repository sign a webhook that our endpoint accepts, so `check --deploy` refuses it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

# The placeholders config/settings/stripe.py falls back to (public, so never secrets).
LOCAL_SECRET_KEY = "sk_test_toolbooth_local"  # noqa: S105
LOCAL_WEBHOOK_SECRET = "whsec_toolbooth_local"  # noqa: S105


@register(Tags.security, deploy=True)
def stripe_deploy_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    secrets: list[str] = [s for s in settings.STRIPE_WEBHOOK_SECRETS if s]
    if not secrets or LOCAL_WEBHOOK_SECRET in secrets:
        messages.append(
            Error(
                "STRIPE_WEBHOOK_SECRETS is unset or holds the public local default: "
                "webhooks are refused, or anyone can forge them.",
                hint="Set the platform and Connect endpoints' signing secrets (whsec_...).",
                id="billing.E001",
            )
        )
    if settings.STRIPE_SECRET_KEY == LOCAL_SECRET_KEY:
        messages.append(
            Error(
                "STRIPE_SECRET_KEY is unset (the local placeholder key is in use).",
                hint="Set the platform account's secret key (sk_live_...).",
                id="billing.E002",
            )
        )
    if settings.STRIPE_API_BASE:
        messages.append(
            Warning(
                "STRIPE_API_BASE is set: Stripe calls go to a stand-in, not to Stripe.",
                hint="Leave it empty in production; it exists for the fake Stripe (tests, demo).",
                id="billing.W001",
            )
        )
    return messages

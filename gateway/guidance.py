"""Refusal bodies a person or an agent can act on (issue 12, section 4).

Built on refusal paths only; a call that passes never touches this module.
- 401: one body per listing, the same for every missing, malformed, unknown, revoked or other
  listing's key (it never says whether a key exists): where to buy a license or manage keys.
- A tool that is not on the caller's plan: the plans of the listing that offer it, by
  `billing.pricing.advertised_price` over each active plan's terms (the same rule tools/list
  and the pages use). Those terms are read once per listing and cached for
  GATEWAY_UPSTREAM_CACHE_SECONDS, like the upstream config: a flood of refused calls costs one
  query per listing and interval, never one per call.
- Quota and spend-cap refusals: the license page, where the buyer sees usage, raises a cap or
  changes plans.
Links are absolute (SITE_URL + the page's route); without the people pages installed the text
stays and the link is left out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.urls import NoReverseMatch, reverse

from billing.entitlements import Entitlement
from billing.pricing import advertised_price
from gateway import fastjson

logger = logging.getLogger(__name__)

MAX_PLAN_NAMES = 5  # named in a refusal; the listing page has the rest
_MAX_CACHED = 10_000  # listings remembered per process; cleared past it

PlanTerms = tuple[tuple[str, Entitlement], ...]


def _link(route: str, **kwargs: Any) -> str | None:
    try:
        return f"{settings.SITE_URL}{reverse(route, kwargs=kwargs)}"
    except NoReverseMatch:
        return None


def listing_link(name: str) -> str | None:
    """The listing's page: its plans, Buy, and (signed in) the licenses already held."""
    return _link("ui:listing", name=name)


def license_link(license_id: int) -> str | None:
    """The buyer's page for one license: keys, spend caps, usage, plan."""
    return _link("ui:license", license_id=license_id) if license_id else None


def _body(rpc_id: Any, code: int, message: str, data: dict[str, Any]) -> bytes:
    error = {"code": code, "message": message, "data": {k: v for k, v in data.items() if v}}
    return fastjson.dumps({"jsonrpc": "2.0", "id": rpc_id, "error": error})


def _plan_terms_sync(listing_id: int) -> PlanTerms:
    from billing.selectors import plan_terms_list_for_listing

    return tuple(plan_terms_list_for_listing(listing_id=listing_id))


class Guidance:
    """The per-process caches behind the refusal bodies."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._unauthorized: dict[str, bytes] = {}
        self._plans: dict[int, tuple[float, PlanTerms]] = {}
        self._loading: dict[int, asyncio.Future[PlanTerms]] = {}

    def unauthorized(self, name: str) -> bytes:
        """The 401 body of listing `name` (a hosted listing: the caller checked it exists)."""
        body = self._unauthorized.get(name)
        if body is None:
            url = listing_link(name)
            text = (
                "Invalid or missing license key or token. Send a key as "
                "'Authorization: Bearer <key>', or connect this server's URL from an OAuth "
                "client (a custom connector in Claude or ChatGPT)."
            )
            if url:
                text += f" Buy a license or manage your keys at {url}"
            body = _body(None, -32001, text, {"listing_url": url})
            if len(self._unauthorized) > _MAX_CACHED:
                self._unauthorized.clear()
            self._unauthorized[name] = body
        return body

    def challenge(self, name: str) -> bytes:
        """The 401's `WWW-Authenticate`: where an OAuth client finds how to get a token
        (MCP authorization: RFC 9728 §5.1). The metadata document is served by `oauth.asgi`
        at the well-known path of this listing's gateway URL (§3.1); scope as it lists."""
        safe = name.replace('"', "").replace("\\", "")
        url = f"{settings.SITE_URL}/.well-known/oauth-protected-resource/mcp/{safe}"
        return f'Bearer resource_metadata="{url}", scope="mcp"'.encode()

    async def plan_terms(self, listing_id: int) -> PlanTerms:
        """The listing's active plans and their terms; () when PostgreSQL cannot say (the
        refusal then names no plans rather than waiting or failing)."""
        now = time.monotonic()
        hit = self._plans.get(listing_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        loading = self._loading.get(listing_id)
        if loading is None:
            loading = asyncio.ensure_future(sync_to_async(_plan_terms_sync)(listing_id))
            self._loading[listing_id] = loading
            loading.add_done_callback(lambda _: self._loading.pop(listing_id, None))
        try:
            terms = await asyncio.shield(loading)
        except DatabaseError:
            logger.warning("gateway.plan_terms_unavailable", extra={"listing_id": listing_id})
            return hit[1] if hit is not None else ()
        if len(self._plans) > _MAX_CACHED:
            self._plans.clear()
        self._plans[listing_id] = (now + self.ttl, terms)
        return terms

    async def not_on_plan(self, rpc_id: Any, ent: Entitlement, name: str, tool: str) -> bytes:
        """-32602 for a tool the caller's plan excludes or does not list: which plans offer it."""
        shown = tool[:100]
        offering = [
            plan_name
            for plan_name, terms in await self.plan_terms(ent.listing_id)
            if terms.plan_id != ent.plan_id and advertised_price(terms, tool) is not None
        ][:MAX_PLAN_NAMES]
        url = listing_link(name)
        if offering:
            names = ", ".join(offering)
            text = f"Tool {shown} is not on your plan. Plans that include it: {names}."
            if url:
                text += f" Change plans at {url}"
        else:
            text = f"Unknown tool: {shown} (not on your plan; no plan of this server offers it)."
        data = {"reason": "not_on_plan", "plans": offering, "listing_url": url}
        return _body(rpc_id, -32602, text, data)

    def limit_reached(
        self, rpc_id: Any, code: int, text: str, ent: Entitlement, retry_after: int, action: str
    ) -> bytes:
        """-32029/-32030/-32031 with the license page, where the buyer can `action`."""
        url = license_link(ent.license_id)
        if url:
            text = f"{text} {action} at {url}"
        data = {"retry_after": retry_after, "license_url": url}
        return _body(rpc_id, code, text, data)

"""Stripe's customer portal: `POST /v1/billing_portal/configurations` and
`POST /v1/billing_portal/sessions` with the real shapes, and the hosted page a session's `url`
opens, where the customer sees their subscriptions, invoices and card, cancels at the period end
(or takes it back) and switches a plan among the prices the configuration allows. What the page
does arrives as ordinary `customer.subscription.updated` events, as from the real portal.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from html import escape
from typing import Any

from fakes.stripe.api import Handler, StripeApi, _bool, _metadata, _nested, check_params
from fakes.stripe.core import ApiError, Request, Response, missing
from fakes.stripe.forms import parse_form
from fakes.stripe.pages import _page
from fakes.stripe.state import JSON, new_id, now

PORTAL_PRORATIONS = ("none", "create_prorations", "always_invoice")
# Real portal session URLs are short-lived; the fake keeps them for a day.
SESSION_TTL_SECONDS = 86400


def _date(ts: int | None) -> str:
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%d") if ts else "—"


def _money(amount: int | None, currency: str) -> str:
    return "metered" if amount is None else f"{amount / 100:.2f} {currency.upper()}"


def configuration(params: JSON, features: JSON, *, is_default: bool = False) -> JSON:
    t = now()
    profile = params.get("business_profile") or {}
    return {
        "id": new_id("bpc_", 24),
        "object": "billing_portal.configuration",
        "active": True,
        "application": None,
        "business_profile": {
            "headline": profile.get("headline") or None,
            "privacy_policy_url": profile.get("privacy_policy_url"),
            "terms_of_service_url": profile.get("terms_of_service_url"),
        },
        "created": t,
        "default_return_url": params.get("default_return_url") or None,
        "features": features,
        "is_default": is_default,
        "livemode": False,
        "login_page": {"enabled": False, "url": None},
        "metadata": dict(params.get("metadata") or {}),
        "name": params.get("name") or None,
        "updated": t,
    }


def _features(raw: JSON | None) -> JSON:
    """Validate `features[...]` like Stripe and fill in its defaults."""
    raw = raw or {}
    check_params(
        raw,
        {
            "customer_update",
            "invoice_history",
            "payment_method_update",
            "subscription_cancel",
            "subscription_update",
        },
        "features",
    )

    def enabled(name: str, allowed: set[str]) -> tuple[bool, JSON]:
        part = _nested(raw, name, allowed | {"enabled"}) or {}
        if part and part.get("enabled") in (None, ""):
            raise ApiError(
                400,
                f"Missing required param: features[{name}][enabled].",
                code="parameter_missing",
                param=f"features[{name}][enabled]",
            )
        return (_bool(part["enabled"], f"features[{name}][enabled]") if part else False), part

    history, _ = enabled("invoice_history", set())
    pm, _ = enabled("payment_method_update", set())
    customer_update, _ = enabled("customer_update", {"allowed_updates"})
    cancel_on, cancel = enabled("subscription_cancel", {"mode", "proration_behavior"})
    mode = str(cancel.get("mode") or "at_period_end")
    if mode not in ("at_period_end", "immediately"):
        raise ApiError(400, f"Invalid mode: {mode}", param="features[subscription_cancel][mode]")
    update_on, update = enabled(
        "subscription_update", {"default_allowed_updates", "products", "proration_behavior"}
    )
    proration = str(update.get("proration_behavior") or "none")
    if proration not in PORTAL_PRORATIONS:
        raise ApiError(
            400,
            f"Invalid proration_behavior: {proration}",
            param="features[subscription_update][proration_behavior]",
        )
    allowed = update.get("default_allowed_updates") or []
    if not isinstance(allowed, list) or any(
        a not in ("price", "quantity", "promotion_code") for a in allowed
    ):
        raise ApiError(
            400,
            "Invalid default_allowed_updates",
            param="features[subscription_update][default_allowed_updates]",
        )
    products = update.get("products") or []
    if not isinstance(products, list):
        raise ApiError(400, "Invalid array", param="features[subscription_update][products]")
    for i, entry in enumerate(products):
        prefix = f"features[subscription_update][products][{i}]"
        if not isinstance(entry, dict):
            raise ApiError(400, f"Invalid {prefix}", param=prefix)
        check_params(entry, {"product", "prices"}, prefix)
        if not entry.get("product") or not isinstance(entry.get("prices"), list):
            raise ApiError(
                400,
                f"Missing required param: {prefix}[prices].",
                code="parameter_missing",
                param=f"{prefix}[prices]",
            )
    if update_on and (not products or "price" not in allowed):
        raise ApiError(
            400,
            "To enable subscription updates, set default_allowed_updates to include price "
            "and list the products customers can switch between.",
            param="features[subscription_update]",
        )
    return {
        "customer_update": {"allowed_updates": [], "enabled": customer_update},
        "invoice_history": {"enabled": history},
        "payment_method_update": {"enabled": pm, "payment_method_configuration": None},
        "subscription_cancel": {
            "cancellation_reason": {"enabled": False, "options": []},
            "enabled": cancel_on,
            "mode": mode,
            "proration_behavior": str(cancel.get("proration_behavior") or "none"),
        },
        "subscription_pause": {"enabled": False},
        "subscription_update": {
            "billing_cycle_anchor": None,
            "default_allowed_updates": list(allowed),
            "enabled": update_on,
            "products": [
                {
                    "adjustable_quantity": {"enabled": False, "maximum": None, "minimum": 1},
                    "prices": list(p["prices"]),
                    "product": p["product"],
                }
                for p in products
            ]
            or None,
            "proration_behavior": proration,
            "schedule_at_period_end": {"conditions": []},
            "trial_update_behavior": "end_trial",
        },
    }


class PortalApi:
    """The portal's API routes and its hosted page, over the same engine as `StripeApi`."""

    def __init__(self, api: StripeApi) -> None:
        self.api = api
        self.engine = api.engine
        self.state = api.state

    def routes(self) -> list[tuple[str, re.Pattern[str], Handler]]:
        r = re.compile
        return [
            ("POST", r(r"/v1/billing_portal/configurations"), self.configuration_create),
            (
                "GET",
                r(r"/v1/billing_portal/configurations/([^/]+)"),
                self.api.retrieve("billing_portal_configurations", "configuration"),
            ),
            ("POST", r(r"/v1/billing_portal/sessions"), self.session_create),
        ]

    # -- API -----------------------------------------------------------------------------------

    def configuration_create(
        self, req: Request, params: JSON, _: tuple[str, ...]
    ) -> tuple[int, Any]:
        check_params(
            params,
            {"business_profile", "default_return_url", "features", "metadata", "name"},
        )
        if params.get("features") in (None, ""):
            raise ApiError(
                400,
                "Missing required param: features.",
                code="parameter_missing",
                param="features",
            )
        features = _features(_nested(params, "features", set(params["features"])))
        for entry in features["subscription_update"]["products"] or []:
            if self.state.get("products", entry["product"]) is None:
                raise missing("product", entry["product"], "features[subscription_update]")
            for price_id in entry["prices"]:
                pr = self.state.get("prices", price_id)
                if pr is None or pr["product"] != entry["product"]:
                    raise ApiError(
                        400,
                        f"The price {price_id} does not belong to product {entry['product']}.",
                        param="features[subscription_update][products]",
                    )
        _metadata(params)
        conf = configuration(params, features)
        self.state.put("billing_portal_configurations", conf)
        return 200, self.api.out(conf, params)

    def _default_configuration(self) -> JSON:
        """Stripe's dashboard default: invoices, card and cancel at period end; no switching."""
        for conf in self.state.all("billing_portal_configurations"):
            if conf["is_default"]:
                return conf
        features = _features(
            {
                "invoice_history": {"enabled": "true"},
                "payment_method_update": {"enabled": "true"},
                "subscription_cancel": {"enabled": "true", "mode": "at_period_end"},
            }
        )
        conf = configuration({}, features, is_default=True)
        self.state.put("billing_portal_configurations", conf)
        return conf

    def session_create(self, req: Request, params: JSON, _: tuple[str, ...]) -> tuple[int, Any]:
        check_params(params, {"customer", "return_url", "configuration", "locale", "on_behalf_of"})
        customer_id = str(params.get("customer") or "")
        if not customer_id:
            raise ApiError(
                400,
                "Missing required param: customer.",
                code="parameter_missing",
                param="customer",
            )
        if self.state.get("customers", customer_id) is None:
            raise missing("customer", customer_id, "customer")
        conf_id = params.get("configuration")
        if conf_id:
            conf = self.state.get("billing_portal_configurations", str(conf_id))
            if conf is None:
                raise missing("billing_portal.configuration", str(conf_id), "configuration")
        else:
            conf = self._default_configuration()
        return_url = params.get("return_url") or conf["default_return_url"]
        if not return_url:
            raise ApiError(
                400,
                "You must provide a return_url, or set a default_return_url on the configuration.",
                param="return_url",
            )
        bps_id = new_id("bps_", 24)
        session = {
            "id": bps_id,
            "object": "billing_portal.session",
            "configuration": conf["id"],
            "created": now(),
            "customer": customer_id,
            "customer_account": None,
            "flow": None,
            "livemode": False,
            "locale": params.get("locale") or None,
            "on_behalf_of": params.get("on_behalf_of") or None,
            "return_url": return_url,
            "url": f"{req.base_url}/p/session/{bps_id}",
        }
        self.state.put("billing_portal_sessions", session)
        return 200, self.api.out(session, params)

    # -- the hosted page -------------------------------------------------------------------------

    def handle(self, req: Request) -> Response | None:
        path = req.path.rstrip("/")
        if m := re.fullmatch(r"/p/session/([^/]+)", path):
            return self.page(req, m[1]) if req.method == "GET" else None
        action = r"/p/session/([^/]+)/subscriptions/([^/]+)/(cancel|renew|switch)"
        if m := re.fullmatch(action, path):
            return self.act(req, m[1], m[2], m[3]) if req.method == "POST" else None
        return None

    def _session(self, bps_id: str) -> tuple[JSON, JSON]:
        session = self.state.get("billing_portal_sessions", bps_id)
        if session is None or session["created"] + SESSION_TTL_SECONDS < now():
            raise ApiError(404, "This portal session has expired.", code="resource_missing")
        conf = self.state.get("billing_portal_configurations", session["configuration"])
        if conf is None:
            raise missing("billing_portal.configuration", session["configuration"])
        return session, conf

    def _switch_choices(self, conf: JSON, item: JSON) -> list[JSON]:
        """Prices the configuration lets this item switch to (same interval, licensed)."""
        update = conf["features"]["subscription_update"]
        if not update["enabled"] or item["price"]["recurring"].get("usage_type") == "metered":
            return []
        allowed = {pid for p in update["products"] or [] for pid in p["prices"]}
        if item["price"]["id"] not in allowed:
            return []
        out = []
        for price_id in sorted(allowed - {item["price"]["id"]}):
            pr = self.state.get("prices", price_id)
            if pr and pr["active"] and pr.get("recurring"):
                out.append(pr)
        return out

    def _product_name(self, product_id: str) -> str:
        product = self.state.get("products", product_id)
        return str(product["name"]) if product else product_id

    def page(self, req: Request, bps_id: str) -> Response:
        session, conf = self._session(bps_id)
        features = conf["features"]
        base = f"{req.base_url}/p/session/{bps_id}"
        cust = self.state.get("customers", session["customer"]) or {}
        parts = [f"<p>Signed in as {escape(str(cust.get('email') or session['customer']))}</p>"]
        parts.append("<h2>Current subscriptions</h2>")
        subs = [
            s
            for s in self.state.all("subscriptions")
            if s["customer"] == session["customer"] and s["status"] != "canceled"
        ]
        if not subs:
            parts.append("<p>No active subscriptions.</p>")
        for sub in subs:
            end = max(i["current_period_end"] for i in sub["items"]["data"])
            when = (
                f"Cancels on {_date(end)}"
                if sub["cancel_at_period_end"]
                else f"Renews on {_date(end)}"
            )
            parts.append(
                f'<section class="sub" data-subscription="{escape(sub["id"])}">'
                f"<p><strong>{escape(sub['status'])}</strong> · "
                f'<span class="renewal">{escape(when)}</span></p><table>'
            )
            for item in sub["items"]["data"]:
                price = item["price"]
                label = _money(price.get("unit_amount"), price["currency"])
                if price["recurring"].get("usage_type") == "metered":
                    label += " per unit (metered)"
                else:
                    label += f" / {price['recurring']['interval']}"
                choices = "".join(
                    _button(
                        f"{base}/subscriptions/{sub['id']}/switch",
                        f"Switch to {self._product_name(pr['product'])} "
                        f"({_money(pr.get('unit_amount'), pr['currency'])})",
                        {"item": item["id"], "price": pr["id"]},
                    )
                    for pr in self._switch_choices(conf, item)
                )
                parts.append(
                    f"<tr><td>{escape(self._product_name(price['product']))}</td>"
                    f"<td>{escape(label)}</td><td>{choices}</td></tr>"
                )
            parts.append("</table>")
            if features["subscription_cancel"]["enabled"]:
                if sub["cancel_at_period_end"]:
                    parts.append(
                        _button(f"{base}/subscriptions/{sub['id']}/renew", "Renew subscription")
                    )
                else:
                    parts.append(
                        _button(f"{base}/subscriptions/{sub['id']}/cancel", "Cancel subscription")
                    )
            parts.append("</section>")
        if features["payment_method_update"]["enabled"]:
            parts.append(
                "<h2>Payment method</h2><p id=card>Visa •••• 4242, expires 12/34 "
                "(test card; the fake does not change cards)</p>"
            )
        if features["invoice_history"]["enabled"]:
            invoices = [
                i
                for i in self.state.all("invoices")
                if i["customer"] == session["customer"] and i["status"] != "draft"
            ]
            rows = "".join(
                f"<tr><td>{_date(i['created'])}</td>"
                f"<td>{escape(_money(i['total'], i['currency']))}</td>"
                f"<td>{escape(str(i['status']))}</td>"
                f'<td><a href="{escape(i["hosted_invoice_url"] or "")}">View</a></td></tr>'
                for i in invoices[:24]
            )
            parts.append(f"<h2>Invoice history</h2><table id=invoices>{rows}</table>")
        parts.append(
            f'<p><a id="return" href="{escape(session["return_url"])}">← Return to the site</a></p>'
        )
        return _page("Billing portal", "".join(parts))

    def act(self, req: Request, bps_id: str, sub_id: str, action: str) -> Response:
        session, conf = self._session(bps_id)
        sub = self.state.get("subscriptions", sub_id)
        if sub is None or sub["customer"] != session["customer"]:
            raise missing("subscription", sub_id)
        features = conf["features"]
        form = parse_form(req.body) if req.body else {}
        if action in ("cancel", "renew"):
            if not features["subscription_cancel"]["enabled"]:
                raise ApiError(400, "Cancellation is not enabled in this portal.")
            if action == "cancel" and features["subscription_cancel"]["mode"] == "immediately":
                self.api.subscription_cancel(req, {}, (sub_id,))
            else:
                flag = "true" if action == "cancel" else "false"
                self.api.subscription_update(req, {"cancel_at_period_end": flag}, (sub_id,))
        else:
            item_id, price_id = str(form.get("item") or ""), str(form.get("price") or "")
            item = next((i for i in sub["items"]["data"] if i["id"] == item_id), None)
            if item is None or price_id not in {p["id"] for p in self._switch_choices(conf, item)}:
                raise ApiError(400, "This plan change is not offered in this portal.")
            self.api.subscription_update(
                req,
                {
                    "items": [{"id": item_id, "price": price_id}],
                    "proration_behavior": features["subscription_update"]["proration_behavior"],
                },
                (sub_id,),
            )
        return Response.redirect(f"{req.base_url}/p/session/{bps_id}")


def _button(action: str, label: str, fields: dict[str, str] | None = None) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
        for k, v in (fields or {}).items()
    )
    return (
        f'<form method="post" action="{escape(action)}" style="display:inline">{hidden}'
        f"<button type=submit>{escape(label)}</button></form>"
    )

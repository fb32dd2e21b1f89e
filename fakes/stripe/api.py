"""The `/v1` subset of Stripe's API from ../shared/stripe/README.md, with Stripe's validation.

Each handler takes the parsed params and returns `(status, json)`; it raises `ApiError` for
anything Stripe would refuse. Unknown parameters are refused like Stripe does ("Received unknown
parameter"), which catches client code that drifts from the pinned API version.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fakes.stripe import objects
from fakes.stripe.core import (
    ApiError,
    FakeStripe,
    Request,
    add_interval,
    aggregate,
    missing,
    strip_private,
)
from fakes.stripe.state import JSON, new_id, now

Handler = Callable[[Request, JSON, tuple[str, ...]], tuple[int, Any]]

METER_EVENT_MAX_AGE = 35 * 86400
METER_EVENT_MAX_FUTURE = 5 * 60
# `GET /v1/events` only reaches back this far.
EVENT_RETENTION_SECONDS = 30 * 86400
PRORATION_BEHAVIORS = ("always_invoice", "create_prorations", "none")


def check_params(params: JSON, allowed: set[str], prefix: str = "") -> None:
    for key in params:
        if key not in allowed and key != "expand":
            name = f"{prefix}[{key}]" if prefix else key
            raise ApiError(400, f"Received unknown parameter: {name}", param=name)


def _nested(params: JSON, name: str, allowed: set[str]) -> JSON | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    if not isinstance(value, dict):
        raise ApiError(400, f"Invalid object: {name}", param=name)
    check_params(value, allowed, name)
    return value


def _required(params: JSON, name: str) -> Any:
    value = params.get(name)
    if value in (None, ""):
        raise ApiError(
            400, f"Missing required param: {name}.", code="parameter_missing", param=name
        )
    return value


def _int(value: Any, param: str, *, minimum: int | None = None) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise ApiError(400, f"Invalid integer: {value}", param=param) from None
    if minimum is not None and number < minimum:
        raise ApiError(
            400,
            f"This value must be greater than or equal to {minimum}.",
            code="parameter_invalid_integer",
            param=param,
        )
    return number


def _bool(value: Any, param: str) -> bool:
    text = str(value).lower()
    if text not in ("true", "false"):
        raise ApiError(400, f"Invalid boolean: {value}", param=param)
    return text == "true"


def _range(spec: Any, param: str = "created") -> Callable[[int], bool]:
    """Stripe's range filter, checked up front: an integer (equal) or a hash of gt/gte/lt/lte."""
    if not isinstance(spec, dict):
        exact = _int(spec, param)
        return lambda value: value == exact
    check_params(spec, {"gt", "gte", "lt", "lte"}, param)
    bounds = [(op, _int(bound, f"{param}[{op}]")) for op, bound in spec.items()]
    tests: dict[str, Callable[[int, int], bool]] = {
        "gt": lambda value, bound: value > bound,
        "gte": lambda value, bound: value >= bound,
        "lt": lambda value, bound: value < bound,
        "lte": lambda value, bound: value <= bound,
    }
    return lambda value: all(tests[op](value, bound) for op, bound in bounds)


def _metadata(params: JSON) -> dict[str, str] | None:
    value = params.get("metadata")
    if value is None:
        return None
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise ApiError(400, "Invalid hash", param="metadata")
    if len(value) > 50:
        raise ApiError(400, "You can have at most 50 metadata keys.", param="metadata")
    for key, item in value.items():
        if len(key) > 40 or not isinstance(item, str) or len(item) > 500:
            raise ApiError(400, f"Invalid metadata value for key {key}", param=f"metadata[{key}]")
    return {k: v for k, v in value.items() if v != ""}


def _merge_metadata(obj: JSON, params: JSON) -> None:
    update = _metadata(params)
    if update is None:
        return
    if params.get("metadata") == "":
        obj["metadata"] = {}
        return
    merged = dict(obj["metadata"])
    for key, value in params["metadata"].items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    obj["metadata"] = merged


class StripeApi:
    """Routes `/v1/...` requests to handlers over the shared `FakeStripe` engine."""

    def __init__(self, engine: FakeStripe) -> None:
        self.engine = engine
        self.state = engine.state
        r = re.compile
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("POST", r(r"/v1/customers"), self.customer_create),
            ("GET", r(r"/v1/customers/([^/]+)"), self.retrieve("customers", "customer")),
            ("POST", r(r"/v1/products"), self.product_create),
            ("GET", r(r"/v1/products/([^/]+)"), self.retrieve("products", "product")),
            ("POST", r(r"/v1/prices"), self.price_create),
            ("GET", r(r"/v1/prices/([^/]+)"), self.retrieve("prices", "price")),
            ("POST", r(r"/v1/prices/([^/]+)"), self.price_update),
            ("POST", r(r"/v1/billing/meters"), self.meter_create),
            ("GET", r(r"/v1/billing/meters"), self.meter_list),
            ("GET", r(r"/v1/billing/meters/([^/]+)"), self.retrieve("meters", "billing.meter")),
            ("POST", r(r"/v1/billing/meters/([^/]+)/deactivate"), self.meter_status("inactive")),
            ("POST", r(r"/v1/billing/meters/([^/]+)/reactivate"), self.meter_status("active")),
            ("GET", r(r"/v1/billing/meters/([^/]+)/event_summaries"), self.meter_summaries),
            ("POST", r(r"/v1/billing/meter_events"), self.meter_event_create),
            ("POST", r(r"/v1/checkout/sessions"), self.checkout_create),
            ("GET", r(r"/v1/checkout/sessions/([^/]+)"), self.checkout_retrieve),
            ("GET", r(r"/v1/checkout/sessions/([^/]+)/line_items"), self.checkout_line_items),
            ("POST", r(r"/v1/checkout/sessions/([^/]+)/expire"), self.checkout_expire),
            (
                "GET",
                r(r"/v1/subscriptions/([^/]+)"),
                self.retrieve("subscriptions", "subscription"),
            ),
            ("POST", r(r"/v1/subscriptions/([^/]+)"), self.subscription_update),
            ("GET", r(r"/v1/subscription_items/([^/]+)"), self.subscription_item_retrieve),
            ("POST", r(r"/v1/subscription_items/([^/]+)"), self.subscription_item_update),
            ("DELETE", r(r"/v1/subscriptions/([^/]+)"), self.subscription_cancel),
            ("POST", r(r"/v1/invoices/create_preview"), self.invoice_preview),
            ("GET", r(r"/v1/invoices/([^/]+)"), self.retrieve("invoices", "invoice")),
            (
                "GET",
                r(r"/v1/payment_intents/([^/]+)"),
                self.retrieve("payment_intents", "payment_intent"),
            ),
            ("GET", r(r"/v1/charges/([^/]+)"), self.retrieve("charges", "charge")),
            ("POST", r(r"/v1/accounts"), self.account_create),
            ("GET", r(r"/v1/accounts/([^/]+)"), self.retrieve("accounts", "account")),
            ("POST", r(r"/v1/account_links"), self.account_link_create),
            ("POST", r(r"/v1/accounts/([^/]+)/login_links"), self.login_link_create),
            ("POST", r(r"/v1/transfers"), self.transfer_create),
            ("GET", r(r"/v1/transfers/([^/]+)"), self.retrieve("transfers", "transfer")),
            ("GET", r(r"/v1/events"), self.event_list),
            ("GET", r(r"/v1/events/([^/]+)"), self.retrieve("events", "event")),
        ]

    def route(self, method: str, path: str) -> tuple[Handler, tuple[str, ...]] | None:
        for route_method, pattern, handler in self.routes:
            match = pattern.fullmatch(path)
            if match and route_method == method:
                return handler, match.groups()
        return None

    # -- helpers -----------------------------------------------------------------------------

    def expand(self, obj: JSON, params: JSON) -> JSON:
        """Apply `expand[]` paths (`latest_invoice`, `items.data.price`, `line_items`)."""
        out = self.engine.render(obj)
        paths = params.get("expand") or []
        if isinstance(paths, str):
            paths = [paths]
        for path in paths:
            if path == "line_items" and out.get("object") == "checkout.session":
                items = self.state.get("checkout_line_items", out["id"]) or {"data": []}
                out["line_items"] = objects.list_envelope(
                    copy.deepcopy(items["data"]),
                    f"/v1/checkout/sessions/{out['id']}/line_items",
                )
                continue
            self._expand_path(out, path.split("."), path)
        return out

    def _expand_path(self, node: Any, parts: list[str], full: str) -> None:
        if not parts:
            return
        head, rest = parts[0], parts[1:]
        if isinstance(node, list):
            for item in node:
                self._expand_path(item, parts, full)
            return
        if not isinstance(node, dict) or head not in node:
            raise ApiError(
                400,
                f"This property cannot be expanded ({full}).",
                param="expand",
            )
        value = node[head]
        if not rest:
            if isinstance(value, str):
                found = self.state.find(value)
                if found is not None:
                    node[head] = self.engine.render(found)
            return
        if head == "data" and isinstance(value, list):
            for item in value:
                self._expand_path(item, rest, full)
        else:
            self._expand_path(value, rest, full)

    def out(self, obj: JSON, params: JSON) -> JSON:
        cleaned: JSON = strip_private(self.expand(obj, params))
        return cleaned

    def retrieve(self, collection: str, kind: str) -> Handler:
        def handler(req: Request, params: JSON, groups: tuple[str, ...]) -> tuple[int, Any]:
            obj = self.state.get(collection, groups[0])
            if obj is None:
                raise missing(kind, groups[0])
            return 200, self.out(obj, params)

        return handler

    # -- customers, products, prices -----------------------------------------------------------

    def customer_create(self, req: Request, params: JSON, _: tuple[str, ...]) -> tuple[int, Any]:
        check_params(
            params,
            {"email", "name", "description", "metadata", "phone", "preferred_locales", "address"},
        )
        params["metadata"] = _metadata(params)
        cust = self.state.put("customers", objects.customer(params))
        self.engine.emit("customer.created", cust, request=req)
        return 200, self.out(cust, params)

    def product_create(self, req: Request, params: JSON, _: tuple[str, ...]) -> tuple[int, Any]:
        check_params(
            params,
            {
                "name",
                "description",
                "metadata",
                "active",
                "id",
                "images",
                "url",
                "statement_descriptor",
                "unit_label",
                "tax_code",
                "shippable",
            },
        )
        _required(params, "name")
        if params.get("id") and self.state.get("products", params["id"]):
            raise ApiError(
                400,
                f"Product already exists. (id: {params['id']})",
                code="resource_already_exists",
                param="id",
            )
        active = _bool(params.get("active", "true"), "active")
        params["metadata"] = _metadata(params)
        prod = self.state.put("products", objects.product(params, active=active))
        self.engine.emit("product.created", prod, request=req)
        return 200, self.out(prod, params)

    def price_create(self, req: Request, params: JSON, _: tuple[str, ...]) -> tuple[int, Any]:
        check_params(
            params,
            {
                "currency",
                "product",
                "unit_amount",
                "unit_amount_decimal",
                "recurring",
                "billing_scheme",
                "lookup_key",
                "nickname",
                "tax_behavior",
                "metadata",
                "active",
                "transfer_lookup_key",
            },
        )
        currency = str(_required(params, "currency"))
        if not re.fullmatch(r"[a-zA-Z]{3}", currency):
            raise ApiError(400, f"Invalid currency: {currency}.", param="currency")
        product_id = params.get("product")
        if not product_id:
            raise ApiError(
                400, "Missing required param: product.", code="parameter_missing", param="product"
            )
        if self.state.get("products", product_id) is None:
            raise missing("product", product_id, "product")
        if (params.get("billing_scheme") or "per_unit") != "per_unit":
            raise ApiError(
                400, "The fake supports only billing_scheme=per_unit.", param="billing_scheme"
            )
        unit_amount: int | None = None
        decimal: str | None = None
        if params.get("unit_amount") not in (None, ""):
            if params.get("unit_amount_decimal") not in (None, ""):
                raise ApiError(
                    400,
                    "You may only specify one of these parameters: unit_amount, "
                    "unit_amount_decimal.",
                    param="unit_amount",
                )
            unit_amount = _int(params["unit_amount"], "unit_amount", minimum=0)
            decimal = str(unit_amount)
        elif params.get("unit_amount_decimal") not in (None, ""):
            decimal = str(params["unit_amount_decimal"])
            try:
                value = float(decimal)
            except ValueError:
                raise ApiError(
                    400, f"Invalid decimal: {decimal}", param="unit_amount_decimal"
                ) from None
            if value < 0:
                raise ApiError(400, "Invalid decimal: negative", param="unit_amount_decimal")
            unit_amount = int(value) if value == int(value) else None
        else:
            raise ApiError(
                400,
                "Missing required param: unit_amount.",
                code="parameter_missing",
                param="unit_amount",
            )
        recurring = _nested(
            params,
            "recurring",
            {"interval", "interval_count", "usage_type", "meter", "trial_period_days"},
        )
        if recurring is not None:
            interval = recurring.get("interval")
            if interval not in ("day", "week", "month", "year"):
                raise ApiError(
                    400,
                    "Invalid recurring[interval]: must be one of day, week, month, or year",
                    param="recurring[interval]",
                )
            if recurring.get("interval_count") not in (None, ""):
                _int(recurring["interval_count"], "recurring[interval_count]", minimum=1)
            usage_type = recurring.get("usage_type") or "licensed"
            if usage_type not in ("licensed", "metered"):
                raise ApiError(
                    400,
                    f"Invalid recurring[usage_type]: {usage_type}",
                    param="recurring[usage_type]",
                )
            meter_id = recurring.get("meter")
            if usage_type == "metered" and not meter_id:
                raise ApiError(
                    400,
                    "You must specify `recurring[meter]` when `recurring[usage_type]` is "
                    "`metered`.",
                    param="recurring[meter]",
                )
            if meter_id and usage_type != "metered":
                raise ApiError(
                    400,
                    "`recurring[meter]` can only be set when `recurring[usage_type]` is `metered`.",
                    param="recurring[meter]",
                )
            if meter_id and self.state.get("meters", meter_id) is None:
                raise missing("billing.meter", meter_id, "recurring[meter]")
        lookup_key = params.get("lookup_key")
        if lookup_key:
            for other in self.state.all("prices"):
                if other.get("lookup_key") == lookup_key:
                    if str(params.get("transfer_lookup_key")).lower() != "true":
                        raise ApiError(
                            400,
                            f"A price (`{other['id']}`) already uses that lookup key.",
                            code="lookup_key_already_exists",
                            param="lookup_key",
                        )
                    other["lookup_key"] = None
        params["metadata"] = _metadata(params)
        active = _bool(params.get("active", "true"), "active")
        pr = objects.price(
            params, unit_amount=unit_amount, unit_amount_decimal=decimal, active=active
        )
        self.state.put("prices", pr)
        self.engine.emit("price.created", pr, request=req)
        return 200, self.out(pr, params)

    def price_update(self, req: Request, params: JSON, groups: tuple[str, ...]) -> tuple[int, Any]:
        check_params(
            params,
            {"active", "metadata", "lookup_key", "nickname", "tax_behavior", "transfer_lookup_key"},
        )
        pr = self.state.get("prices", groups[0])
        if pr is None:
            raise missing("price", groups[0])
        previous: JSON = {}
        if "active" in params:
            active = _bool(params["active"], "active")
            if active != pr["active"]:
                previous["active"] = pr["active"]
                pr["active"] = active
        for name in ("lookup_key", "nickname"):
            if name in params:
                previous[name] = pr[name]
                pr[name] = params[name] or None
        if "metadata" in params:
            previous["metadata"] = dict(pr["metadata"])
            _merge_metadata(pr, params)
        self.engine.emit("price.updated", pr, previous_attributes=previous, request=req)
        return 200, self.out(pr, params)

    # -- billing meters ------------------------------------------------------------------------

    def meter_create(self, req: Request, params: JSON, _: tuple[str, ...]) -> tuple[int, Any]:
        check_params(
            params,
            {
                "display_name",
                "event_name",
                "default_aggregation",
                "customer_mapping",
                "value_settings",
                "event_time_window",
            },
        )
        _required(params, "display_name")
        event_name = str(_required(params, "event_name"))
        if len(event_name) > 100:
            raise ApiError(400, "event_name must be at most 100 characters.", param="event_name")
        aggregation = _nested(params, "default_aggregation", {"formula"})
        if aggregation is None:
            raise ApiError(
                400,
                "Missing required param: default_aggregation.",
                code="parameter_missing",
                param="default_aggregation",
            )
        if aggregation.get("formula") not in ("count", "last", "sum"):
            raise ApiError(
                400,
                "Invalid default_aggregation[formula]: must be one of count, last, or sum",
                param="default_aggregation[formula]",
            )
        mapping = _nested(params, "customer_mapping", {"event_payload_key", "type"})
        if mapping is not None:
            _required(mapping, "event_payload_key")
            if mapping.get("type") != "by_id":
                raise ApiError(
                    400,
                    "Invalid customer_mapping[type]: must be by_id",
                    param="customer_mapping[type]",
                )
        value_settings = _nested(params, "value_settings", {"event_payload_key"})
        if value_settings is not None:
            _required(value_settings, "event_payload_key")
        window = params.get("event_time_window")
        if window not in (None, "", "day", "hour"):
            raise ApiError(
                400, "Invalid event_time_window: must be day or hour", param="event_time_window"
            )
        for other in self.state.all("meters"):
            if other["event_name"] == event_name and other["status"] == "active":
                raise ApiError(
                    400,
                    f"An active meter with event_name `{event_name}` already exists.",
                    code="resource_already_exists",
                    param="event_name",
                )
        mtr = self.state.put("meters", objects.meter(params))
        return 200, self.out(mtr, params)

    def meter_list(self, req: Request, params: JSON, _: tuple[str, ...]) -> tuple[int, Any]:
        check_params(params, {"status", "limit", "starting_after", "ending_before"})
        meters = self.state.all("meters")
        status = params.get("status")
        if status:
            if status not in ("active", "inactive"):
                raise ApiError(400, "Invalid status: must be active or inactive", param="status")
            meters = [m for m in meters if m["status"] == status]
        return 200, self.paginate(meters, params, "/v1/billing/meters")

    def paginate(self, items: list[JSON], params: JSON, url: str) -> JSON:
        limit = _int(params.get("limit", 10), "limit", minimum=1)
        if limit > 100:
            raise ApiError(400, "This value must be less than or equal to 100.", param="limit")
        ids = [i["id"] for i in items]
        if params.get("starting_after"):
            if params["starting_after"] not in ids:
                raise missing("object", params["starting_after"], "starting_after")
            items = items[ids.index(params["starting_after"]) + 1 :]
        elif params.get("ending_before"):
            if params["ending_before"] not in ids:
                raise missing("object", params["ending_before"], "ending_before")
            before = items[: ids.index(params["ending_before"])]
            items = before[-limit:]
            return objects.list_envelope(
                [strip_private(self.engine.render(i)) for i in items],
                url,
                has_more=len(before) > limit,
            )
        page = items[:limit]
        return objects.list_envelope(
            [strip_private(self.engine.render(i)) for i in page], url, has_more=len(items) > limit
        )

    def meter_status(self, status: str) -> Handler:
        def handler(req: Request, params: JSON, groups: tuple[str, ...]) -> tuple[int, Any]:
            check_params(params, set())
            mtr = self.state.get("meters", groups[0])
            if mtr is None:
                raise missing("billing.meter", groups[0])
            if mtr["status"] == status:
                raise ApiError(400, f"This meter is already {status}.", param="id")
            mtr["status"] = status
            mtr["updated"] = now()
            mtr["status_transitions"]["deactivated_at"] = now() if status == "inactive" else None
            return 200, self.out(mtr, params)

        return handler

    def meter_event_create(self, req: Request, params: JSON, _: tuple[str, ...]) -> tuple[int, Any]:
        check_params(params, {"event_name", "payload", "identifier", "timestamp"})
        event_name = str(_required(params, "event_name"))
        payload = params.get("payload")
        if not isinstance(payload, dict) or not payload:
            raise ApiError(
                400, "Missing required param: payload.", code="parameter_missing", param="payload"
            )
        for key, value in payload.items():
            if not isinstance(value, str) or len(value) > 100:
                raise ApiError(
                    400,
                    f"Invalid payload[{key}]: must be a string of at most 100 characters",
                    param=f"payload[{key}]",
                )
        identifier = params.get("identifier") or new_id("", 24)
        if len(identifier) > 100:
            raise ApiError(400, "identifier must be at most 100 characters.", param="identifier")
        t = now()
        timestamp = _int(params["timestamp"], "timestamp") if params.get("timestamp") else t
        if timestamp < t - METER_EVENT_MAX_AGE or timestamp > t + METER_EVENT_MAX_FUTURE:
            raise ApiError(
                400,
                "Timestamp must be within the past 35 calendar days and no more than 5 minutes "
                "in the future.",
                param="timestamp",
            )
        mtr = next(
            (
                m
                for m in self.state.all("meters")
                if m["event_name"] == event_name and m["status"] == "active"
            ),
            None,
        )
        if mtr is None:
            raise ApiError(
                400,
                f"No active meter found for event_name `{event_name}`.",
                code="resource_missing",
                param="event_name",
            )
        customer_key = mtr["customer_mapping"]["event_payload_key"]
        customer_id = payload.get(customer_key)
        if not customer_id:
            raise ApiError(
                400,
                f"Missing required payload key: {customer_key}.",
                param=f"payload[{customer_key}]",
            )
        if self.state.get("customers", customer_id) is None:
            raise missing("customer", customer_id, f"payload[{customer_key}]")
        value_key = mtr["value_settings"]["event_payload_key"]
        raw_value = payload.get(value_key)
        if mtr["default_aggregation"]["formula"] != "count":
            try:
                value = float(raw_value) if raw_value is not None else float("nan")
            except ValueError:
                value = float("nan")
            if value != value:  # NaN: missing or not a number
                raise ApiError(
                    400,
                    f"Payload key `{value_key}` must be a number.",
                    param=f"payload[{value_key}]",
                )
        else:
            value = 1.0
        with self.state.lock:
            # Identifier uniqueness: Stripe keeps it for at least 24 h; the fake keeps it forever.
            if identifier in self.state.collections["meter_events"]:
                raise ApiError(
                    400,
                    f"An event already exists with identifier {identifier}.",
                    code="resource_already_exists",
                    param="identifier",
                )
            self.state.meter_event_seq += 1
            evt = objects.meter_event(
                event_name=event_name,
                identifier=identifier,
                payload=dict(payload),
                timestamp=timestamp,
            )
            stored = {
                **evt,
                "_seq": self.state.meter_event_seq,
                "_customer": customer_id,
                "_value": value,
                "_meter": mtr["id"],
            }
            self.state.put("meter_events", stored, key=identifier)
        return 200, evt

    def meter_summaries(
        self, req: Request, params: JSON, groups: tuple[str, ...]
    ) -> tuple[int, Any]:
        check_params(
            params,
            {
                "customer",
                "start_time",
                "end_time",
                "value_grouping_window",
                "limit",
                "starting_after",
                "ending_before",
            },
        )
        mtr = self.state.get("meters", groups[0])
        if mtr is None:
            raise missing("billing.meter", groups[0])
        customer_id = str(_required(params, "customer"))
        start = _int(_required(params, "start_time"), "start_time")
        end = _int(_required(params, "end_time"), "end_time")
        for name, value in (("start_time", start), ("end_time", end)):
            if value % 60:
                raise ApiError(400, f"{name} must be aligned with minute boundaries.", param=name)
        if end <= start:
            raise ApiError(400, "end_time must be after start_time.", param="end_time")
        window = params.get("value_grouping_window")
        step = {"hour": 3600, "day": 86400}.get(window or "", 0)
        if window and not step:
            raise ApiError(
                400,
                "Invalid value_grouping_window: must be day or hour",
                param="value_grouping_window",
            )
        if step and (start % step or end % step):
            raise ApiError(
                400,
                f"start_time and end_time must be aligned with {window} boundaries.",
                param="start_time",
            )
        bounds = (
            [(s, min(s + step, end)) for s in range(start, end, step)] if step else [(start, end)]
        )
        events = [
            e
            for e in self.state.meter_events()
            if e["_meter"] == mtr["id"] and e["_customer"] == customer_id
        ]
        formula = mtr["default_aggregation"]["formula"]
        summaries = []
        for s, e_ in bounds:
            window_events = [ev for ev in events if s <= ev["timestamp"] < e_]
            summaries.append(
                objects.meter_event_summary(
                    meter_id=mtr["id"],
                    start_time=s,
                    end_time=e_,
                    aggregated_value=aggregate(formula, window_events),
                )
            )
        summaries.reverse()  # newest window first, like Stripe
        limit = _int(params.get("limit", 10), "limit", minimum=1)
        return 200, objects.list_envelope(
            summaries[:limit],
            f"/v1/billing/meters/{mtr['id']}/event_summaries",
            has_more=len(summaries) > limit,
        )

    # -- checkout ------------------------------------------------------------------------------

    def checkout_create(self, req: Request, params: JSON, _: tuple[str, ...]) -> tuple[int, Any]:
        check_params(
            params,
            {
                "mode",
                "line_items",
                "success_url",
                "cancel_url",
                "customer",
                "customer_email",
                "client_reference_id",
                "metadata",
                "expires_at",
                "payment_intent_data",
                "subscription_data",
                "customer_creation",
                "allow_promotion_codes",
                "billing_address_collection",
                "locale",
                "ui_mode",
                "payment_method_types",
                "automatic_tax",
                "submit_type",
                "return_url",
                "consent_collection",
                "currency",
                "invoice_creation",
                "custom_text",
                "saved_payment_method_options",
            },
        )
        mode = params.get("mode")
        if mode not in ("payment", "subscription", "setup"):
            raise ApiError(
                400, "Missing required param: mode.", code="parameter_missing", param="mode"
            )
        if mode == "setup":
            raise ApiError(
                400, "The fake supports mode=payment and mode=subscription only.", param="mode"
            )
        if params.get("customer") and params.get("customer_email"):
            raise ApiError(
                400,
                "You may only specify one of these parameters: customer, customer_email.",
                param="customer_email",
            )
        if params.get("customer") and self.state.get("customers", params["customer"]) is None:
            raise missing("customer", params["customer"], "customer")
        ui_mode = params.get("ui_mode") or "hosted_page"
        if ui_mode in ("hosted_page", "hosted") and not params.get("success_url"):
            pass  # optional since 2024: Stripe then shows its own confirmation page
        raw_items = params.get("line_items")
        if not isinstance(raw_items, list) or not raw_items:
            raise ApiError(
                400,
                "Missing required param: line_items.",
                code="parameter_missing",
                param="line_items",
            )
        items: list[JSON] = []
        currencies: set[str] = set()
        has_recurring = False
        for i, raw in enumerate(raw_items):
            prefix = f"line_items[{i}]"
            if not isinstance(raw, dict):
                raise ApiError(400, f"Invalid {prefix}", param=prefix)
            check_params(raw, {"price", "quantity", "adjustable_quantity"}, prefix)
            price_id = raw.get("price")
            if not price_id:
                raise ApiError(
                    400,
                    f"Missing required param: {prefix}[price].",
                    code="parameter_missing",
                    param=f"{prefix}[price]",
                )
            pr = self.state.get("prices", price_id)
            if pr is None:
                raise missing("price", price_id, f"{prefix}[price]")
            if not pr["active"]:
                raise ApiError(
                    400,
                    "The price specified is inactive. This field only accepts active prices.",
                    param=f"{prefix}[price]",
                )
            recurring = pr.get("recurring")
            metered = bool(recurring and recurring["usage_type"] == "metered")
            quantity: int | None = None
            if metered:
                if raw.get("quantity") not in (None, ""):
                    raise ApiError(
                        400,
                        "Quantity should not be defined when `recurring.usage_type=metered`.",
                        param=f"{prefix}[quantity]",
                    )
            else:
                if raw.get("quantity") in (None, ""):
                    raise ApiError(
                        400,
                        f"Missing required param: {prefix}[quantity].",
                        code="parameter_missing",
                        param=f"{prefix}[quantity]",
                    )
                quantity = _int(raw["quantity"], f"{prefix}[quantity]", minimum=1)
            if recurring:
                has_recurring = True
                if mode == "payment":
                    raise ApiError(
                        400,
                        "You specified `payment` mode but passed a recurring price. Either switch "
                        "to `subscription` mode or use only one-time prices.",
                        param=f"{prefix}[price]",
                    )
            currencies.add(pr["currency"])
            prod = self.state.get("products", pr["product"])
            items.append(
                objects.checkout_line_item(
                    price_obj=copy.deepcopy(pr),
                    quantity=quantity,
                    description=(prod or {}).get("name"),
                )
            )
        if mode == "subscription" and not has_recurring:
            raise ApiError(
                400,
                "You must provide at least one recurring price in `subscription` mode when using "
                "prices.",
                param="line_items",
            )
        if len(currencies) > 1:
            raise ApiError(400, "All prices must use the same currency.", param="line_items")
        pi_data = _nested(
            params,
            "payment_intent_data",
            {
                "application_fee_amount",
                "transfer_data",
                "on_behalf_of",
                "metadata",
                "transfer_group",
                "description",
                "capture_method",
                "receipt_email",
                "statement_descriptor",
                "setup_future_usage",
            },
        )
        sub_data = _nested(
            params,
            "subscription_data",
            {
                "application_fee_percent",
                "transfer_data",
                "on_behalf_of",
                "metadata",
                "trial_period_days",
                "description",
                "billing_cycle_anchor",
                "trial_end",
            },
        )
        if pi_data is not None and mode != "payment":
            raise ApiError(
                400,
                "You can not pass `payment_intent_data` in `subscription` mode.",
                param="payment_intent_data",
            )
        if sub_data is not None and mode != "subscription":
            raise ApiError(
                400,
                "You can not pass `subscription_data` in `payment` mode.",
                param="subscription_data",
            )
        amount = sum(int(li["amount_total"]) for li in items)
        for name, data, fields in (
            ("payment_intent_data", pi_data, {"destination", "amount"}),
            ("subscription_data", sub_data, {"destination", "amount_percent"}),
        ):
            if data is None:
                continue
            td = _nested(data, "transfer_data", fields)
            if td is not None:
                dest = td.get("destination")
                if not dest:
                    raise ApiError(
                        400,
                        f"Missing required param: {name}[transfer_data][destination].",
                        code="parameter_missing",
                        param=f"{name}[transfer_data][destination]",
                    )
                if self.state.get("accounts", dest) is None:
                    raise missing("account", dest, f"{name}[transfer_data][destination]")
            if name == "payment_intent_data" and data.get("application_fee_amount") not in (
                None,
                "",
            ):
                fee = _int(
                    data["application_fee_amount"], f"{name}[application_fee_amount]", minimum=0
                )
                if fee > amount:
                    raise ApiError(
                        400,
                        "The application fee amount cannot exceed the total amount.",
                        param=f"{name}[application_fee_amount]",
                    )
            if name == "subscription_data" and data.get("application_fee_percent") not in (
                None,
                "",
            ):
                try:
                    pct = float(data["application_fee_percent"])
                except ValueError:
                    pct = -1
                if not 0 <= pct <= 100:
                    raise ApiError(
                        400,
                        "application_fee_percent must be between 0 and 100.",
                        param=f"{name}[application_fee_percent]",
                    )
            if data.get("metadata") is not None:
                data["metadata"] = _metadata(data)
        t = now()
        if params.get("expires_at") not in (None, ""):
            expires = _int(params["expires_at"], "expires_at")
            if not t + 30 * 60 - 5 <= expires <= t + 24 * 3600 + 5:
                raise ApiError(
                    400,
                    "The `expires_at` timestamp must be at least 30 minutes and at most 24 hours "
                    "from Checkout Session creation.",
                    param="expires_at",
                )
        params["metadata"] = _metadata(params)
        cs_id = new_id("cs_test_", 58)
        session = objects.checkout_session(
            params,
            amount=amount,
            currency=currencies.pop(),
            url=f"{req.base_url}/checkout/{cs_id}",
            cs_id=cs_id,
        )
        session["_payment_intent_data"] = pi_data
        session["_subscription_data"] = sub_data
        session["_base_url"] = req.base_url
        self.state.put("checkout_sessions", session)
        self.state.put("checkout_line_items", {"id": cs_id, "data": items})
        return 200, self.out(session, params)

    def checkout_retrieve(
        self, req: Request, params: JSON, groups: tuple[str, ...]
    ) -> tuple[int, Any]:
        return 200, self.out(self.engine.checkout_session(groups[0]), params)

    def checkout_line_items(
        self, req: Request, params: JSON, groups: tuple[str, ...]
    ) -> tuple[int, Any]:
        check_params(params, {"limit", "starting_after", "ending_before"})
        self.engine.checkout_session(groups[0])
        items = (self.state.get("checkout_line_items", groups[0]) or {"data": []})["data"]
        return 200, self.paginate(items, params, f"/v1/checkout/sessions/{groups[0]}/line_items")

    def checkout_expire(
        self, req: Request, params: JSON, groups: tuple[str, ...]
    ) -> tuple[int, Any]:
        check_params(params, set())
        return 200, self.out(self.engine.expire_checkout(groups[0], req), params)

    # -- subscriptions -------------------------------------------------------------------------

    def _subscription(self, sub_id: str) -> JSON:
        sub = self.state.get("subscriptions", sub_id)
        if sub is None:
            raise missing("subscription", sub_id)
        return sub

    def subscription_update(
        self, req: Request, params: JSON, groups: tuple[str, ...]
    ) -> tuple[int, Any]:
        """`POST /v1/subscriptions/{id}`: cancel at period end (or resume), and add, swap or
        delete items with Stripe's prorations (`create_prorations` bills them on the next
        invoice, `always_invoice` at once, `none` not at all)."""
        check_params(
            params,
            {
                "cancel_at_period_end",
                "metadata",
                "description",
                "cancel_at",
                "items",
                "proration_behavior",
                "proration_date",
            },
        )
        sub = self._subscription(groups[0])
        if sub["status"] == "canceled" and ({"cancel_at_period_end", "items"} & params.keys()):
            raise ApiError(
                400,
                "A canceled subscription can only update its cancellation_details and metadata.",
                param="items" if "items" in params else "cancel_at_period_end",
            )
        changes = self._item_changes(sub, params)
        behavior = self._proration(params)
        flag = (
            _bool(params["cancel_at_period_end"], "cancel_at_period_end")
            if "cancel_at_period_end" in params
            else None
        )
        before = self.engine.render(sub)
        at = self._proration_date(params, sub)
        self._apply_changes(sub, changes, behavior=behavior, at=at, base_url=req.base_url)
        if flag is not None:
            sub["cancel_at_period_end"] = flag
            period_end = max(i["current_period_end"] for i in sub["items"]["data"])
            sub["cancel_at"] = period_end if flag else None
            sub["canceled_at"] = now() if flag else None
        if "description" in params:
            sub["description"] = params["description"] or None
        if "metadata" in params:
            _merge_metadata(sub, params)
        after = self.engine.render(sub)
        previous = {k: before[k] for k in before if before[k] != after.get(k)}
        self.engine.emit(
            "customer.subscription.updated", sub, previous_attributes=previous, request=req
        )
        billable = sub.get("_pending_lines") or sub.get("_removed_items")
        if behavior == "always_invoice" and billable:
            inv = self.engine._build_invoice(
                sub,
                billing_reason="subscription_update",
                usage_period=None,
                licensed_period=None,
                base_url=req.base_url,
            )
            inv["period_start"] = inv["period_end"] = at
            self.engine._settle_invoice(sub, inv, fail=False)
        return 200, self.out(sub, params)

    # -- subscription items --------------------------------------------------------------------

    def _item_of(self, si_id: str, param: str = "id") -> tuple[JSON, JSON]:
        """The (subscription, item) holding `si_id`; items live inside their subscription."""
        for sub in self.state.all("subscriptions"):
            for item in sub["items"]["data"]:
                if item["id"] == si_id:
                    return sub, item
        raise missing("subscription_item", si_id, param)

    def _proration(self, params: JSON) -> str:
        """Stripe's default is `create_prorations`."""
        value = str(params.get("proration_behavior") or "create_prorations")
        if value not in PRORATION_BEHAVIORS:
            raise ApiError(
                400,
                f"Invalid proration_behavior: must be one of {', '.join(PRORATION_BEHAVIORS)}",
                param="proration_behavior",
            )
        return value

    def _proration_date(self, params: JSON, sub: JSON) -> int:
        """`proration_date` (what a preview used) must fall in the current period."""
        t = now()
        if params.get("proration_date") in (None, ""):
            return t
        when = _int(params["proration_date"], "proration_date")
        start = min((i["current_period_start"] for i in sub["items"]["data"]), default=t)
        if when < start or when > t + 300:
            raise ApiError(
                400,
                "proration_date must be within the current billing period.",
                param="proration_date",
            )
        return when

    def _check_price(self, sub: JSON, like: JSON | None, price_id: Any, param: str) -> JSON:
        """Validate a price for the subscription like Stripe: known, active, recurring, and the
        same currency and interval as the rest of the subscription (`like`: an item of it)."""
        if not isinstance(price_id, str) or not price_id:
            raise ApiError(400, f"Invalid string: {price_id!r}", param=param)
        pr = self.state.get("prices", price_id)
        if pr is None:
            raise missing("price", price_id, param)
        if not pr["active"]:
            raise ApiError(
                400,
                "The price specified is inactive. This field only accepts active prices.",
                param=param,
            )
        if pr.get("recurring") is None:
            raise ApiError(
                400,
                "The price specified is set to `type=one_time` but this field only accepts "
                "prices with `type=recurring`.",
                param=param,
            )
        if pr["currency"] != sub["currency"]:
            raise ApiError(
                400,
                "Currency and interval fields must match across all plans on this "
                "subscription. Found mismatch in currency field.",
                param=param,
            )
        if like is not None:
            old = like["price"]["recurring"]
            new = pr["recurring"]
            if (new["interval"], int(new["interval_count"])) != (
                old["interval"],
                int(old["interval_count"]),
            ):
                raise ApiError(
                    400,
                    "Currency and interval fields must match across all plans on this "
                    "subscription. Found mismatch in interval field.",
                    param=param,
                )
        return pr

    def _new_price(self, sub: JSON, item: JSON, price_id: Any, param: str) -> JSON:
        pr = self._check_price(sub, item, price_id, param)
        if pr["recurring"].get("usage_type") != item["price"]["recurring"].get("usage_type"):
            raise ApiError(
                400,
                "The fake swaps a price for one of the same usage_type only.",
                param=param,
            )
        return pr

    def _item_changes(self, sub: JSON, params: JSON) -> list[JSON]:
        """Validate `items[n][...]` in full before anything changes (Stripe applies an update
        all or nothing). Each entry: {"op": update|add|delete, "item", "fields"}."""
        raw_items = params.get("items")
        if raw_items in (None, ""):
            return []
        if not isinstance(raw_items, list):
            raise ApiError(400, "Invalid array", param="items")
        changes: list[JSON] = []
        seen: set[str] = set()
        live = list(sub["items"]["data"])
        prices_after = {i["price"]["id"] for i in live}
        for i, raw in enumerate(raw_items):
            prefix = f"items[{i}]"
            if not isinstance(raw, dict):
                raise ApiError(400, f"Invalid {prefix}", param=prefix)
            check_params(raw, {"id", "price", "quantity", "metadata", "deleted"}, prefix)
            si_id = raw.get("id")
            deleted = "deleted" in raw and _bool(raw["deleted"], f"{prefix}[deleted]")
            if not si_id:
                if deleted:
                    raise ApiError(
                        400, f"{prefix}[deleted] needs {prefix}[id].", param=f"{prefix}[id]"
                    )
                changes.append(self._item_add(sub, live, raw, prefix, prices_after))
                continue
            # Look in `sub` itself: a preview works on a copy of the subscription.
            item = next((it for it in live if it["id"] == si_id), None)
            if item is None:
                self._item_of(si_id, f"{prefix}[id]")  # 404 when it exists nowhere
                raise ApiError(
                    400,
                    f"The subscription item {si_id} does not belong to subscription {sub['id']}.",
                    param=f"{prefix}[id]",
                )
            if si_id in seen:
                raise ApiError(
                    400, f"Subscription item {si_id} is listed twice.", param=f"{prefix}[id]"
                )
            seen.add(si_id)
            if deleted:
                if raw.get("price") not in (None, "") or raw.get("quantity") not in (None, ""):
                    raise ApiError(
                        400,
                        f"You cannot update {prefix} and delete it at once.",
                        param=f"{prefix}[deleted]",
                    )
                prices_after.discard(item["price"]["id"])
                changes.append({"op": "delete", "item": item, "fields": {}})
                continue
            fields = self._item_fields(sub, item, raw, prefix)
            if "price" in fields:
                if fields["price"]["id"] in prices_after:
                    raise ApiError(
                        400,
                        "Cannot add multiple subscription items with the same price: "
                        f"{fields['price']['id']}.",
                        param=f"{prefix}[price]",
                    )
                prices_after.discard(item["price"]["id"])
                prices_after.add(fields["price"]["id"])
            changes.append({"op": "update", "item": item, "fields": fields})
        remaining = len(live) - sum(1 for c in changes if c["op"] == "delete")
        remaining += sum(1 for c in changes if c["op"] == "add")
        if remaining < 1:
            raise ApiError(
                400,
                "A subscription must have at least one item; to end it, cancel it instead.",
                param="items",
            )
        return changes

    def _item_add(
        self, sub: JSON, live: list[JSON], raw: JSON, prefix: str, prices_after: set[str]
    ) -> JSON:
        """A new item (`items[n][price]` without an id): a price not yet on the subscription;
        a metered price takes no quantity, a licensed one defaults to 1."""
        if raw.get("price") in (None, ""):
            raise ApiError(
                400,
                f"Missing required param: {prefix}[price].",
                code="parameter_missing",
                param=f"{prefix}[price]",
            )
        pr = self._check_price(sub, live[0] if live else None, raw["price"], f"{prefix}[price]")
        if pr["id"] in prices_after:
            raise ApiError(
                400,
                f"Cannot add multiple subscription items with the same price: {pr['id']}.",
                param=f"{prefix}[price]",
            )
        prices_after.add(pr["id"])
        metered = pr["recurring"].get("usage_type") == "metered"
        if metered and raw.get("quantity") not in (None, ""):
            raise ApiError(
                400,
                "Quantity should not be specified where usage_type is `metered`.",
                param=f"{prefix}[quantity]",
            )
        quantity = (
            None if metered else _int(raw.get("quantity") or 1, f"{prefix}[quantity]", minimum=0)
        )
        fields: JSON = {"price": pr, "quantity": quantity}
        if "metadata" in raw:
            _metadata(raw)
            fields["metadata"] = raw["metadata"]
        return {"op": "add", "item": None, "fields": fields}

    def _item_fields(self, sub: JSON, item: JSON, raw: JSON, prefix: str) -> JSON:
        """The changes `raw` asks of `item` (`prefix` is `items[n]`, or "" on the item route)."""

        def param(name: str) -> str:
            return f"{prefix}[{name}]" if prefix else name

        fields: JSON = {}
        if raw.get("price") not in (None, ""):
            pr = self._new_price(sub, item, raw["price"], param("price"))
            if pr["id"] != item["price"]["id"]:
                fields["price"] = pr
        if raw.get("quantity") not in (None, ""):
            price = fields.get("price") or item["price"]
            if price["recurring"].get("usage_type") == "metered":
                raise ApiError(
                    400,
                    "Quantity should not be specified where usage_type is `metered`.",
                    param=param("quantity"),
                )
            fields["quantity"] = _int(raw["quantity"], param("quantity"), minimum=0)
        if "metadata" in raw:
            _metadata(raw)
            fields["metadata"] = raw["metadata"]
        return fields

    def _apply_changes(
        self, sub: JSON, changes: list[JSON], *, behavior: str, at: int, base_url: str
    ) -> None:
        """Swap, add and delete items. Swapped items keep their id and period (`advance` bills
        the new price from the next period); added items join the current period; a deleted
        metered item's usage so far stays billable on the next invoice (it is kept privately
        until then). Licensed changes are prorated unless `behavior` is `none`."""
        items: list[JSON] = sub["items"]["data"]
        period = (
            min(i["current_period_start"] for i in items),
            max(i["current_period_end"] for i in items),
        )
        pending: list[JSON] = sub.setdefault("_pending_lines", [])
        for change in changes:
            item, fields = change["item"], change["fields"]
            before = copy.deepcopy(item) if item is not None else None
            if change["op"] == "delete":
                items.remove(item)
                if item["price"]["recurring"].get("usage_type") == "metered":
                    gone = copy.deepcopy(item)
                    gone["_removed_at"] = at
                    gone["_removed_seq"] = self.state.meter_event_seq
                    sub.setdefault("_removed_items", []).append(gone)
                after = None
            elif change["op"] == "add":
                item = objects.subscription_item(
                    sub_id=sub["id"],
                    price_obj=copy.deepcopy(fields["price"]),
                    quantity=fields["quantity"],
                    start=period[0],
                    end=period[1],
                )
                # A meter's earlier usage was billed (or belongs) elsewhere: count from now.
                item["_billed_seq"] = self.state.meter_event_seq
                if "metadata" in fields:
                    _merge_metadata(item, {"metadata": fields["metadata"]})
                items.append(item)
                after = item
            else:
                self._apply_item_changes([(item, fields)])
                after = item if ("price" in fields or "quantity" in fields) else None
                if after is None:
                    before = None
            if behavior != "none" and (before is not None or after is not None):
                pending.extend(self.engine.prorate(sub, before, after, at))

    def _apply_item_changes(self, changes: list[tuple[JSON, JSON]]) -> None:
        """Swap prices in place. The item keeps its id and current period; `advance` reads the
        item's price when it bills the next period, so the new price applies from then."""
        for item, fields in changes:
            if "price" in fields:
                item["price"] = copy.deepcopy(fields["price"])
            if "quantity" in fields:
                item["quantity"] = fields["quantity"]
            if "metadata" in fields:
                _merge_metadata(item, {"metadata": fields["metadata"]})

    def subscription_item_retrieve(
        self, req: Request, params: JSON, groups: tuple[str, ...]
    ) -> tuple[int, Any]:
        _, item = self._item_of(groups[0])
        return 200, self.out(self._render_item(item), params)

    def _render_item(self, item: JSON) -> JSON:
        out = copy.deepcopy(item)
        current = self.state.get("prices", item["price"]["id"])
        if current is not None:
            out["price"] = copy.deepcopy(current)
        return out

    def subscription_item_update(
        self, req: Request, params: JSON, groups: tuple[str, ...]
    ) -> tuple[int, Any]:
        """`POST /v1/subscription_items/{id}`: the same change as `items[0]` on the
        subscription, and the same `customer.subscription.updated` event."""
        check_params(params, {"price", "quantity", "metadata", "proration_behavior"})
        sub, item = self._item_of(groups[0])
        if sub["status"] == "canceled":
            raise ApiError(400, "A canceled subscription's items cannot be updated.")
        fields = self._item_fields(sub, item, params, "")
        behavior = self._proration(params)
        before = self.engine.render(sub)
        self._apply_changes(
            sub,
            [{"op": "update", "item": item, "fields": fields}],
            behavior="none" if behavior == "none" else "create_prorations",
            at=now(),
            base_url=req.base_url,
        )
        after = self.engine.render(sub)
        previous = {k: before[k] for k in before if before[k] != after.get(k)}
        self.engine.emit(
            "customer.subscription.updated", sub, previous_attributes=previous, request=req
        )
        if behavior == "always_invoice" and sub.get("_pending_lines"):
            inv = self.engine._build_invoice(
                sub,
                billing_reason="subscription_update",
                usage_period=None,
                licensed_period=None,
                base_url=req.base_url,
            )
            self.engine._settle_invoice(sub, inv, fail=False)
        return 200, self.out(self._render_item(item), params)

    def subscription_cancel(
        self, req: Request, params: JSON, groups: tuple[str, ...]
    ) -> tuple[int, Any]:
        """`DELETE /v1/subscriptions/{id}`: ends it now. `prorate` credits the unused time of
        licensed items; `invoice_now` bills at once what is pending (usage so far, prorations);
        otherwise pending prorations are dropped with the subscription."""
        check_params(params, {"invoice_now", "prorate", "cancellation_details"})
        sub = self._subscription(groups[0])
        if sub["status"] == "canceled":
            raise ApiError(
                400,
                f"No such subscription: '{sub['id']}'; it has already been canceled.",
                code="resource_missing",
                param="id",
            )
        invoice_now = "invoice_now" in params and _bool(params["invoice_now"], "invoice_now")
        prorate = "prorate" in params and _bool(params["prorate"], "prorate")
        t = now()
        items = sub["items"]["data"]
        if prorate:
            pending: list[JSON] = sub.setdefault("_pending_lines", [])
            for item in items:
                pending.extend(self.engine.prorate(sub, item, None, t))
        if invoice_now:
            start = min(i["current_period_start"] for i in items)
            inv = self.engine._build_invoice(
                sub,
                billing_reason="subscription_cycle",
                usage_period=(start, t),
                licensed_period=None,
                base_url=req.base_url,
            )
            self.engine._settle_invoice(sub, inv, fail=False)
        sub["status"] = "canceled"
        sub["canceled_at"] = sub["canceled_at"] or t
        sub["ended_at"] = t
        sub["cancel_at_period_end"] = False
        self.engine.emit("customer.subscription.deleted", sub, request=req)
        return 200, self.out(sub, params)

    # -- invoice previews ----------------------------------------------------------------------

    def invoice_preview(self, req: Request, params: JSON, _: tuple[str, ...]) -> tuple[int, Any]:
        """`POST /v1/invoices/create_preview` for a subscription: without changes, the next
        invoice (pending prorations, usage so far, the next licensed period unless it ends at
        the period end); with `subscription_details[items]`, what that update would bill:
        at once for `always_invoice`, else the next invoice with its prorations. Stores
        nothing; the id starts `upcoming_in_` as at Stripe."""
        check_params(params, {"customer", "subscription", "subscription_details"})
        details = _nested(
            params,
            "subscription_details",
            {"items", "proration_behavior", "proration_date", "cancel_at_period_end"},
        )
        sub_id = params.get("subscription")
        if not sub_id:
            raise ApiError(
                400,
                "The fake previews subscription invoices only: pass `subscription`.",
                code="parameter_missing",
                param="subscription",
            )
        real = self._subscription(str(sub_id))
        if params.get("customer") not in (None, "", real["customer"]):
            raise ApiError(
                400,
                f"The subscription {real['id']} does not belong to customer {params['customer']}.",
                param="customer",
            )
        if real["status"] in ("canceled", "incomplete_expired"):
            raise ApiError(
                400,
                f"No upcoming invoices for customer: {real['customer']}",
                code="invoice_upcoming_none",
            )
        sub = copy.deepcopy(real)
        behavior = "create_prorations"
        if details:
            changes = self._item_changes(sub, details)
            behavior = self._proration(details)
            at = self._proration_date(details, sub)
            self._apply_changes(sub, changes, behavior=behavior, at=at, base_url=req.base_url)
            if "cancel_at_period_end" in details:
                flag = _bool(details["cancel_at_period_end"], "cancel_at_period_end")
                sub["cancel_at_period_end"] = flag
        items = sub["items"]["data"]
        start = min(i["current_period_start"] for i in items)
        end = max(i["current_period_end"] for i in items)
        if details and behavior == "always_invoice":
            inv = self.engine._build_invoice(
                sub,
                billing_reason="subscription_update",
                usage_period=None,
                licensed_period=None,
                base_url=req.base_url,
                dry_run=True,
            )
        else:
            recurring = items[0]["price"]["recurring"]
            next_end = add_interval(end, recurring["interval"], int(recurring["interval_count"]))
            inv = self.engine._build_invoice(
                sub,
                billing_reason="subscription_cycle",
                usage_period=(start, end),
                licensed_period=None if sub["cancel_at_period_end"] else (end, next_end),
                base_url=req.base_url,
                dry_run=True,
            )
        inv["hosted_invoice_url"] = None
        inv["next_payment_attempt"] = end
        if details and behavior != "none":
            # Stripe sets it on previews of prorations: the time they were computed for.
            inv["parent"]["subscription_details"]["subscription_proration_date"] = at
        return 200, strip_private(inv)

    # -- connect -------------------------------------------------------------------------------

    def account_create(self, req: Request, params: JSON, _: tuple[str, ...]) -> tuple[int, Any]:
        check_params(
            params,
            {
                "type",
                "controller",
                "country",
                "email",
                "capabilities",
                "business_type",
                "metadata",
                "business_profile",
                "default_currency",
                "tos_acceptance",
            },
        )
        controller = _nested(
            params,
            "controller",
            {"fees", "losses", "requirement_collection", "stripe_dashboard"},
        )
        account_type = params.get("type")
        if account_type and controller is not None:
            raise ApiError(400, "You cannot specify both `type` and `controller`.", param="type")
        if not account_type and controller is None:
            raise ApiError(400, "You must specify either `type` or `controller`.", param="type")
        if account_type and account_type not in ("standard", "express", "custom"):
            raise ApiError(400, f"Invalid type: {account_type}", param="type")
        if controller is not None:
            dashboard = _nested(controller, "stripe_dashboard", {"type"})
            if dashboard and dashboard.get("type") not in ("express", "full", "none"):
                raise ApiError(
                    400,
                    "Invalid controller[stripe_dashboard][type]",
                    param="controller[stripe_dashboard][type]",
                )
        capabilities = params.get("capabilities") or {}
        if not isinstance(capabilities, dict):
            raise ApiError(400, "Invalid capabilities", param="capabilities")
        express = account_type == "express" or (
            controller is not None
            and (controller.get("stripe_dashboard") or {}).get("type") == "express"
        )
        if express and not capabilities:
            raise ApiError(
                400,
                "You must request at least one capability (e.g. `transfers`) for this account.",
                param="capabilities",
            )
        params["metadata"] = _metadata(params)
        acct = self.state.put("accounts", objects.account(params))
        return 200, self.out(acct, params)

    def account_link_create(
        self, req: Request, params: JSON, _: tuple[str, ...]
    ) -> tuple[int, Any]:
        check_params(
            params,
            {"account", "type", "refresh_url", "return_url", "collect", "collection_options"},
        )
        acct_id = str(_required(params, "account"))
        link_type = str(_required(params, "type"))
        if link_type not in ("account_onboarding", "account_update"):
            raise ApiError(400, f"Invalid type: {link_type}", param="type")
        if self.state.get("accounts", acct_id) is None:
            raise missing("account", acct_id, "account")
        query = urlencode({k: params[k] for k in ("return_url", "refresh_url") if params.get(k)})
        url = f"{req.base_url}/connect/onboard/{acct_id}" + (f"?{query}" if query else "")
        return 200, objects.account_link(url=url)

    def login_link_create(
        self, req: Request, params: JSON, groups: tuple[str, ...]
    ) -> tuple[int, Any]:
        check_params(params, set())
        acct = self.state.get("accounts", groups[0])
        if acct is None:
            raise missing("account", groups[0], "account")
        if (acct["controller"].get("stripe_dashboard") or {}).get("type") != "express":
            raise ApiError(
                400,
                "Login links can only be created for accounts with access to the Express "
                "Dashboard.",
                param="account",
            )
        if not acct["details_submitted"]:
            raise ApiError(
                400,
                "Cannot create a login link for an account that has not completed onboarding.",
                param="account",
            )
        return 200, objects.login_link(url=f"{req.base_url}/connect/dashboard/{acct['id']}")

    def transfer_create(self, req: Request, params: JSON, _: tuple[str, ...]) -> tuple[int, Any]:
        check_params(
            params,
            {
                "currency",
                "destination",
                "amount",
                "source_transaction",
                "transfer_group",
                "description",
                "metadata",
            },
        )
        _required(params, "currency")
        dest = str(_required(params, "destination"))
        amount = _int(_required(params, "amount"), "amount", minimum=1)
        acct = self.state.get("accounts", dest)
        if acct is None:
            raise missing("account", dest, "destination")
        if acct["capabilities"].get("transfers") != "active":
            raise ApiError(
                400,
                "Your destination account needs to have at least one of the following "
                "capabilities enabled: transfers, crypto_transfers, legacy_payments",
                code="insufficient_capabilities_for_transfer",
                param="destination",
            )
        source = params.get("source_transaction")
        if source and self.state.get("charges", source) is None:
            raise missing("charge", source, "source_transaction")
        params["metadata"] = _metadata(params)
        tr = self.state.put("transfers", objects.transfer(params, amount=amount))
        self.engine.emit("transfer.created", tr, request=req)
        return 200, self.out(tr, params)

    # -- events --------------------------------------------------------------------------------

    def event_list(self, req: Request, params: JSON, _: tuple[str, ...]) -> tuple[int, Any]:
        """`GET /v1/events` as Stripe answers it: newest first, only the last 30 days, only the
        caller's own events (a platform key lists platform events; with `Stripe-Account`, that
        account's), filtered by `type` (with `*`) or up to 20 `types`, a `created` range and
        `delivery_success` (false = still pending or failed to some endpoint)."""
        check_params(
            params,
            {
                "type",
                "types",
                "limit",
                "starting_after",
                "ending_before",
                "created",
                "delivery_success",
            },
        )
        account = req.header("stripe-account")
        oldest = now() - EVENT_RETENTION_SECONDS
        events = [
            e
            for e in self.state.all("events")
            if e.get("account") == account and int(e["created"]) >= oldest
        ]
        if params.get("type") and params.get("types"):
            raise ApiError(
                400, "You may pass either `type` or `types`, but not both.", param="types"
            )
        if params.get("type"):
            wanted = str(params["type"])
            if wanted.endswith("*"):
                events = [e for e in events if e["type"].startswith(wanted[:-1])]
            else:
                events = [e for e in events if e["type"] == wanted]
        if params.get("types"):
            types = params["types"]
            if not isinstance(types, list) or len(types) > 20:
                raise ApiError(400, "types: an array of at most 20 event types.", param="types")
            events = [e for e in events if e["type"] in set(map(str, types))]
        if params.get("created") not in (None, ""):
            in_range = _range(params["created"])
            events = [e for e in events if in_range(int(e["created"]))]
        if params.get("delivery_success") not in (None, ""):
            delivered = _bool(params["delivery_success"], "delivery_success")
            events = [e for e in events if (int(e.get("pending_webhooks", 0)) == 0) == delivered]
        return 200, self.paginate(events, params, "/v1/events")

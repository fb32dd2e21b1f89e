"""Builders for every object the fake returns, each with every field the README lists.

Nullable fields are present as `None` (JSON null), as real Stripe sends them. Only ids, times and
the params the project sends vary; everything else is a realistic constant for test mode.
"""

from __future__ import annotations

from typing import Any

from fakes.stripe.state import JSON, new_id, now

DEFAULT_CURRENCY_BY_COUNTRY = {"US": "usd", "GB": "gbp", "CA": "cad", "AU": "aud", "JP": "jpy"}


def list_envelope(data: list[JSON], url: str, *, has_more: bool = False) -> JSON:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def customer(params: JSON) -> JSON:
    return {
        "id": new_id("cus_", 14),
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": now(),
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": params.get("description"),
        "discount": None,
        "email": params.get("email"),
        "invoice_prefix": new_id("", 8).upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": dict(params.get("metadata") or {}),
        "name": params.get("name"),
        "next_invoice_sequence": 1,
        "phone": params.get("phone"),
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def product(params: JSON, *, active: bool) -> JSON:
    t = now()
    return {
        "id": params.get("id") or new_id("prod_", 14),
        "object": "product",
        "active": active,
        "created": t,
        "default_price": None,
        "description": params.get("description"),
        "images": list(params.get("images") or []),
        "livemode": False,
        "marketing_features": [],
        "metadata": dict(params.get("metadata") or {}),
        "name": params["name"],
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": params.get("statement_descriptor"),
        "tax_code": None,
        "type": "service",
        "unit_label": params.get("unit_label"),
        "updated": t,
        "url": params.get("url"),
    }


def price(
    params: JSON, *, unit_amount: int | None, unit_amount_decimal: str | None, active: bool
) -> JSON:
    recurring_in = params.get("recurring")
    recurring: JSON | None = None
    if isinstance(recurring_in, dict):
        recurring = {
            "interval": recurring_in["interval"],
            "interval_count": int(recurring_in.get("interval_count") or 1),
            "meter": recurring_in.get("meter"),
            "trial_period_days": (
                int(recurring_in["trial_period_days"])
                if recurring_in.get("trial_period_days")
                else None
            ),
            "usage_type": recurring_in.get("usage_type") or "licensed",
        }
    return {
        "id": new_id("price_", 24),
        "object": "price",
        "active": active,
        "billing_scheme": params.get("billing_scheme") or "per_unit",
        "created": now(),
        "currency": str(params["currency"]).lower(),
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": params.get("lookup_key"),
        "metadata": dict(params.get("metadata") or {}),
        "nickname": params.get("nickname"),
        "product": params["product"],
        "recurring": recurring,
        "tax_behavior": params.get("tax_behavior") or "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring" if recurring else "one_time",
        "unit_amount": unit_amount,
        "unit_amount_decimal": unit_amount_decimal,
    }


def meter(params: JSON) -> JSON:
    t = now()
    mapping = params.get("customer_mapping") or {}
    value_settings = params.get("value_settings") or {}
    return {
        "id": new_id("mtr_", 24),
        "object": "billing.meter",
        "created": t,
        "customer_mapping": {
            "event_payload_key": mapping.get("event_payload_key") or "stripe_customer_id",
            "type": mapping.get("type") or "by_id",
        },
        "default_aggregation": {"formula": params["default_aggregation"]["formula"]},
        "display_name": params["display_name"],
        "event_name": params["event_name"],
        "event_time_window": params.get("event_time_window"),
        "livemode": False,
        "status": "active",
        "status_transitions": {"deactivated_at": None},
        "updated": t,
        "value_settings": {"event_payload_key": value_settings.get("event_payload_key") or "value"},
    }


def meter_event(
    *, event_name: str, identifier: str, payload: dict[str, str], timestamp: int
) -> JSON:
    return {
        "object": "billing.meter_event",
        "created": now(),
        "event_name": event_name,
        "identifier": identifier,
        "livemode": False,
        "payload": payload,
        "timestamp": timestamp,
    }


def meter_event_summary(
    *, meter_id: str, start_time: int, end_time: int, aggregated_value: float
) -> JSON:
    return {
        "id": new_id("mtrusg_", 24),
        "object": "billing.meter_event_summary",
        "aggregated_value": aggregated_value,
        "end_time": end_time,
        "livemode": False,
        "meter": meter_id,
        "start_time": start_time,
    }


def checkout_line_item(*, price_obj: JSON, quantity: int | None, description: str | None) -> JSON:
    metered = (price_obj.get("recurring") or {}).get("usage_type") == "metered"
    amount = 0 if metered else int(price_obj.get("unit_amount") or 0) * int(quantity or 0)
    return {
        "id": new_id("li_", 24),
        "object": "item",
        "amount_discount": 0,
        "amount_subtotal": amount,
        "amount_tax": 0,
        "amount_total": amount,
        "currency": price_obj["currency"],
        "description": description,
        "price": price_obj,
        "quantity": quantity,
    }


def checkout_session(params: JSON, *, amount: int, currency: str, url: str, cs_id: str) -> JSON:
    return {
        "id": cs_id,
        "object": "checkout.session",
        "amount_subtotal": amount,
        "amount_total": amount,
        "cancel_url": params.get("cancel_url"),
        "client_reference_id": params.get("client_reference_id"),
        "created": now(),
        "currency": currency,
        "customer": params.get("customer"),
        "customer_creation": params.get("customer_creation")
        or ("if_required" if params.get("mode") == "payment" else None),
        "customer_details": None,
        "customer_email": params.get("customer_email"),
        "expires_at": int(params.get("expires_at") or now() + 24 * 3600),
        "invoice": None,
        "livemode": False,
        "locale": params.get("locale"),
        "metadata": dict(params.get("metadata") or {}),
        "mode": params["mode"],
        "payment_intent": None,
        "payment_status": "unpaid",
        "return_url": params.get("return_url"),
        "status": "open",
        "subscription": None,
        "success_url": params.get("success_url"),
        "ui_mode": params.get("ui_mode") or "hosted_page",
        "url": url,
    }


def customer_details(*, email: str | None, name: str | None) -> JSON:
    return {
        "address": None,
        "email": email,
        "name": name,
        "phone": None,
        "tax_exempt": "none",
        "tax_ids": [],
    }


def payment_intent(
    *,
    amount: int,
    currency: str,
    customer_id: str | None,
    application_fee_amount: int | None,
    transfer_data: JSON | None,
    metadata: dict[str, str],
    on_behalf_of: str | None,
    transfer_group: str | None,
) -> JSON:
    return {
        "id": new_id("pi_", 24),
        "object": "payment_intent",
        "amount": amount,
        "amount_received": amount,
        "application_fee_amount": application_fee_amount,
        "created": now(),
        "currency": currency,
        "customer": customer_id,
        "latest_charge": None,
        "livemode": False,
        "metadata": metadata,
        "on_behalf_of": on_behalf_of,
        "status": "succeeded",
        "transfer_data": transfer_data,
        "transfer_group": transfer_group,
    }


def charge(pi: JSON) -> JSON:
    return {
        "id": new_id("ch_", 24),
        "object": "charge",
        "amount": pi["amount"],
        "amount_captured": pi["amount"],
        "amount_refunded": 0,
        "application_fee_amount": pi["application_fee_amount"],
        "captured": True,
        "created": now(),
        "currency": pi["currency"],
        "customer": pi["customer"],
        "description": None,
        "disputed": False,
        "livemode": False,
        "metadata": dict(pi["metadata"]),
        "on_behalf_of": pi["on_behalf_of"],
        "paid": True,
        "payment_intent": pi["id"],
        "refunded": False,
        "status": "succeeded",
        "transfer_data": pi["transfer_data"],
        "transfer_group": pi["transfer_group"],
    }


def dispute(ch: JSON, *, reason: str) -> JSON:
    return {
        "id": new_id("dp_", 24),
        "object": "dispute",
        "amount": ch["amount"] - ch["amount_refunded"],
        "balance_transactions": [],
        "charge": ch["id"],
        "created": now(),
        "currency": ch["currency"],
        "evidence": {},
        "evidence_details": {
            "due_by": now() + 7 * 86400,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": ch["payment_intent"],
        "reason": reason,
        "status": "needs_response",
    }


def subscription_item(
    *, sub_id: str, price_obj: JSON, quantity: int | None, start: int, end: int
) -> JSON:
    return {
        "id": new_id("si_", 14),
        "object": "subscription_item",
        "created": now(),
        "current_period_end": end,
        "current_period_start": start,
        "metadata": {},
        "price": price_obj,
        "quantity": quantity,
        "subscription": sub_id,
    }


def subscription(
    *,
    sub_id: str,
    customer_id: str,
    currency: str,
    status: str,
    start: int,
    items: list[JSON],
    data: JSON,
    trial_end: int | None,
) -> JSON:
    transfer_in = data.get("transfer_data")
    transfer: JSON | None = None
    if isinstance(transfer_in, dict):
        percent = transfer_in.get("amount_percent")
        transfer = {
            "amount_percent": float(percent) if percent not in (None, "") else None,
            "destination": transfer_in["destination"],
        }
    fee_percent = data.get("application_fee_percent")
    return {
        "id": sub_id,
        "object": "subscription",
        "application_fee_percent": float(fee_percent) if fee_percent not in (None, "") else None,
        "billing_cycle_anchor": items[0]["current_period_end"] if items else start,
        "billing_mode": {"flexible": None, "type": "classic", "updated_at": None},
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "collection_method": "charge_automatically",
        "created": start,
        "currency": currency,
        "customer": customer_id,
        "default_payment_method": None,
        "description": data.get("description"),
        "ended_at": None,
        "items": list_envelope(items, f"/v1/subscription_items?subscription={sub_id}"),
        "latest_invoice": None,
        "livemode": False,
        "metadata": dict(data.get("metadata") or {}),
        "on_behalf_of": data.get("on_behalf_of"),
        "start_date": start,
        "status": status,
        "transfer_data": transfer,
        "trial_end": trial_end,
        "trial_start": start if trial_end else None,
    }


def invoice_line(
    *,
    invoice_id: str,
    sub: JSON,
    item: JSON,
    amount: int,
    quantity: int,
    period_start: int,
    period_end: int,
    description: str,
    proration: bool = False,
) -> JSON:
    price_obj = item["price"]
    return {
        "id": new_id("il_", 24),
        "object": "line_item",
        "amount": amount,
        "currency": sub["currency"],
        "description": description,
        "discount_amounts": [],
        "discountable": not proration,
        "discounts": [],
        "invoice": invoice_id,
        "livemode": False,
        "metadata": {},
        "parent": {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": proration,
                "proration_details": {"credited_items": None} if proration else None,
                "subscription": sub["id"],
                "subscription_item": item["id"],
            },
            "type": "subscription_item_details",
        },
        "period": {"end": period_end, "start": period_start},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": price_obj["id"], "product": price_obj["product"]},
            "type": "price_details",
            "unit_amount_decimal": price_obj.get("unit_amount_decimal"),
        },
        "quantity": quantity,
        "subtotal": amount,
        "taxes": [],
    }


def invoice(
    *,
    inv_id: str,
    sub: JSON,
    lines: list[JSON],
    billing_reason: str,
    period_start: int,
    period_end: int,
    base_url: str,
) -> JSON:
    total = sum(int(line["amount"]) for line in lines)
    return {
        "id": inv_id,
        "object": "invoice",
        "amount_due": total,
        "amount_paid": 0,
        "amount_remaining": total,
        "attempt_count": 0,
        "attempted": False,
        "billing_reason": billing_reason,
        "collection_method": "charge_automatically",
        "created": now(),
        "currency": sub["currency"],
        "customer": sub["customer"],
        "ending_balance": None,
        "hosted_invoice_url": f"{base_url}/invoices/{inv_id}",
        "lines": list_envelope(lines, f"/v1/invoices/{inv_id}/lines"),
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None,
        "number": None,
        "parent": {
            "quote_details": None,
            "subscription_details": {
                "metadata": dict(sub["metadata"]),
                "subscription": sub["id"],
                "subscription_proration_date": None,
            },
            "type": "subscription_details",
        },
        "period_end": period_end,
        "period_start": period_start,
        "starting_balance": 0,
        "status": "draft",
        "status_transitions": {
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        "subtotal": total,
        "total": total,
    }


def account(params: JSON) -> JSON:
    controller_in = params.get("controller")
    account_type = params.get("type")
    controller: JSON
    if isinstance(controller_in, dict):
        dashboard = (controller_in.get("stripe_dashboard") or {}).get("type") or "full"
        account_type = {"express": "express", "full": "standard", "none": "none"}.get(
            dashboard, "none"
        )
        controller = {
            "fees": {"payer": (controller_in.get("fees") or {}).get("payer") or "account"},
            "is_controller": True,
            "losses": {"payments": (controller_in.get("losses") or {}).get("payments") or "stripe"},
            "requirement_collection": controller_in.get("requirement_collection") or "stripe",
            "stripe_dashboard": {"type": dashboard},
            "type": "application",
        }
    else:
        account_type = account_type or "standard"
        controller = {
            "fees": {"payer": "application"},
            "is_controller": True,
            "losses": {"payments": "application"},
            "requirement_collection": "stripe",
            "stripe_dashboard": {"type": "express" if account_type == "express" else "full"},
            "type": "application",
        }
    requested = params.get("capabilities") or {}
    capabilities = {
        name: "inactive"
        for name, spec in requested.items()
        if isinstance(spec, dict) and str(spec.get("requested")).lower() == "true"
    }
    country = str(params.get("country") or "US").upper()
    return {
        "id": new_id("acct_", 16),
        "object": "account",
        "business_profile": None,
        "business_type": params.get("business_type"),
        "capabilities": capabilities,
        "charges_enabled": False,
        "controller": controller,
        "country": country,
        "created": now(),
        "default_currency": DEFAULT_CURRENCY_BY_COUNTRY.get(country, "usd"),
        "details_submitted": False,
        "email": params.get("email"),
        "metadata": dict(params.get("metadata") or {}),
        "payouts_enabled": False,
        "requirements": {
            "alternatives": [],
            "current_deadline": None,
            "currently_due": ["business_profile.url", "external_account", "tos_acceptance.date"],
            "disabled_reason": "requirements.past_due",
            "errors": [],
            "eventually_due": ["business_profile.url", "external_account", "tos_acceptance.date"],
            "past_due": ["external_account", "tos_acceptance.date"],
            "pending_verification": [],
        },
        "type": account_type,
    }


def account_link(*, url: str) -> JSON:
    t = now()
    return {"object": "account_link", "created": t, "expires_at": t + 300, "url": url}


def login_link(*, url: str) -> JSON:
    return {"object": "login_link", "created": now(), "url": url}


def transfer(params: JSON, *, amount: int) -> JSON:
    return {
        "id": new_id("tr_", 24),
        "object": "transfer",
        "amount": amount,
        "amount_reversed": 0,
        "created": now(),
        "currency": str(params["currency"]).lower(),
        "description": params.get("description"),
        "destination": params["destination"],
        "destination_payment": new_id("py_", 24),
        "livemode": False,
        "metadata": dict(params.get("metadata") or {}),
        "reversed": False,
        "source_transaction": params.get("source_transaction"),
        "transfer_group": params.get("transfer_group"),
    }


def event(
    *,
    event_type: str,
    obj: JSON,
    api_version: str,
    previous_attributes: JSON | None,
    account: str | None,
    request_id: str | None,
    idempotency_key: str | None,
    pending_webhooks: int,
) -> JSON:
    data: dict[str, Any] = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    evt: JSON = {
        "id": new_id("evt_", 24),
        "object": "event",
        "api_version": api_version,
        "context": None,
        "created": now(),
        "data": data,
        "livemode": False,
        "pending_webhooks": pending_webhooks,
        "request": {"id": request_id, "idempotency_key": idempotency_key},
        "type": event_type,
    }
    if account:
        evt["account"] = account
    return evt

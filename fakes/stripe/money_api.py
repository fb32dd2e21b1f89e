"""The money endpoints a creator statement is reconciled against, with Stripe's parameters and
shapes: application fees, transfers (and their reversals), balance transactions, charges,
refunds, disputes and invoice payments. Lists are newest first with Stripe's pagination."""

from __future__ import annotations

import re
from typing import Any

from fakes.stripe import money
from fakes.stripe.api import Handler, StripeApi, _int, _metadata, check_params
from fakes.stripe.core import ApiError, Request, missing
from fakes.stripe.state import JSON

_PAGING = {"limit", "starting_after", "ending_before", "expand"}


def _in_range(value: int, spec: Any) -> bool:
    """Stripe's `created` filter: an integer (equal) or a hash of gt/gte/lt/lte."""
    if not isinstance(spec, dict):
        return value == _int(spec, "created")
    check_params(spec, {"gt", "gte", "lt", "lte"}, "created")
    bounds = {op: _int(v, f"created[{op}]") for op, v in spec.items()}
    return (
        value > bounds.get("gt", value - 1)
        and value >= bounds.get("gte", value)
        and value < bounds.get("lt", value + 1)
        and value <= bounds.get("lte", value)
    )


class MoneyApi:
    """Handlers over the same state as `StripeApi` (whose pagination and rendering they use)."""

    def __init__(self, api: StripeApi) -> None:
        self.api = api
        self.state = api.state

    def routes(self) -> list[tuple[str, re.Pattern[str], Handler]]:
        r = re.compile
        api = self.api
        return [
            ("GET", r(r"/v1/application_fees"), self.application_fee_list),
            (
                "GET",
                r(r"/v1/application_fees/([^/]+)"),
                api.retrieve("application_fees", "application_fee"),
            ),
            ("GET", r(r"/v1/transfers"), self.transfer_list),
            ("POST", r(r"/v1/transfers/([^/]+)/reversals"), self.transfer_reversal_create),
            ("GET", r(r"/v1/balance_transactions"), self.balance_transaction_list),
            (
                "GET",
                r(r"/v1/balance_transactions/([^/]+)"),
                api.retrieve("balance_transactions", "balance_transaction"),
            ),
            ("GET", r(r"/v1/charges"), self.charge_list),
            ("GET", r(r"/v1/refunds"), self.refund_list),
            ("GET", r(r"/v1/refunds/([^/]+)"), api.retrieve("refunds", "refund")),
            ("GET", r(r"/v1/disputes/([^/]+)"), api.retrieve("disputes", "dispute")),
            ("GET", r(r"/v1/invoice_payments"), self.invoice_payment_list),
        ]

    def _list(
        self, collection: str, params: JSON, url: str, filters: dict[str, Any]
    ) -> tuple[int, Any]:
        items = self.state.all(collection)
        if params.get("created") not in (None, ""):
            items = [i for i in items if _in_range(int(i["created"]), params["created"])]
        for field, wanted in filters.items():
            if wanted not in (None, ""):
                items = [i for i in items if i.get(field) == wanted]
        return 200, self.api.paginate(items, params, url)

    def application_fee_list(self, req: Request, params: JSON, _: tuple[str, ...]) -> Any:
        check_params(params, {*_PAGING, "charge", "created"})
        return self._list(
            "application_fees", params, "/v1/application_fees", {"charge": params.get("charge")}
        )

    def transfer_list(self, req: Request, params: JSON, _: tuple[str, ...]) -> Any:
        check_params(params, {*_PAGING, "destination", "created", "transfer_group"})
        filters = {
            "destination": params.get("destination"),
            "transfer_group": params.get("transfer_group"),
        }
        return self._list("transfers", params, "/v1/transfers", filters)

    def balance_transaction_list(self, req: Request, params: JSON, _: tuple[str, ...]) -> Any:
        check_params(params, {*_PAGING, "created", "currency", "payout", "source", "type"})
        if params.get("payout"):
            return 200, self.api.paginate([], params, "/v1/balance_transactions")  # no payouts
        filters = {
            "currency": params.get("currency"),
            "source": params.get("source"),
            "type": params.get("type"),
        }
        return self._list("balance_transactions", params, "/v1/balance_transactions", filters)

    def charge_list(self, req: Request, params: JSON, _: tuple[str, ...]) -> Any:
        check_params(params, {*_PAGING, "created", "customer", "payment_intent", "transfer_group"})
        filters = {
            "customer": params.get("customer"),
            "payment_intent": params.get("payment_intent"),
            "transfer_group": params.get("transfer_group"),
        }
        return self._list("charges", params, "/v1/charges", filters)

    def refund_list(self, req: Request, params: JSON, _: tuple[str, ...]) -> Any:
        check_params(params, {*_PAGING, "charge", "created", "payment_intent"})
        filters = {"charge": params.get("charge"), "payment_intent": params.get("payment_intent")}
        return self._list("refunds", params, "/v1/refunds", filters)

    def invoice_payment_list(self, req: Request, params: JSON, _: tuple[str, ...]) -> Any:
        check_params(params, {*_PAGING, "created", "invoice", "payment", "status"})
        items = self.state.all("invoice_payments")
        payment = params.get("payment")
        if payment not in (None, ""):
            if not isinstance(payment, dict):
                raise ApiError(400, "Invalid hash", param="payment")
            check_params(payment, {"type", "payment_intent", "payment_record"}, "payment")
            for key, wanted in payment.items():
                items = [i for i in items if i["payment"].get(key) == wanted]
        for field in ("invoice", "status"):
            if params.get(field):
                items = [i for i in items if i[field] == params[field]]
        if params.get("created") not in (None, ""):
            items = [i for i in items if _in_range(int(i["created"]), params["created"])]
        return 200, self.api.paginate(items, params, "/v1/invoice_payments")

    def transfer_reversal_create(
        self, req: Request, params: JSON, groups: tuple[str, ...]
    ) -> tuple[int, Any]:
        """`POST /v1/transfers/{id}/reversals`: amount (default: all that is left),
        description, metadata, refund_application_fee."""
        check_params(params, {"amount", "description", "metadata", "refund_application_fee"})
        tr = self.state.get("transfers", groups[0])
        if tr is None:
            raise missing("transfer", groups[0], "id")
        left = tr["amount"] - tr["amount_reversed"]
        amount = left if params.get("amount") in (None, "") else _int(params["amount"], "amount")
        if amount <= 0 or amount > left:
            raise ApiError(
                400,
                f"Transfer {tr['id']} has only {left} remaining to reverse; "
                f"you requested {amount}.",
                param="amount",
            )
        refund_fee = str(params.get("refund_application_fee", "false")).lower() == "true"
        reversal = money.reverse_transfer(
            self.state,
            tr,
            amount,
            refund_application_fee=refund_fee,
            metadata=_metadata(params) or {},
        )
        self.api.engine.emit("transfer.reversed", tr, request=req)
        return 200, self.api.out(reversal, params)

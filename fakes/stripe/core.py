"""The fake's engine: request/response types, Stripe-style errors, events, and the state changes
that pages and controls trigger (checkout completion, onboarding, period advance, refunds).

Everything runs under `state.lock`, so one request's changes and events are atomic.
"""

from __future__ import annotations

import copy
import html
import json
from dataclasses import dataclass, field
from typing import Any

from fakes.stripe import money, objects
from fakes.stripe.state import JSON, FakeStripeState, new_id, now
from fakes.stripe.webhooks import WebhookSender

API_VERSION = "2026-10-28.endive"  # what stripe 16.1 pins; tests check they stay equal


@dataclass
class Request:
    method: str
    path: str  # below the mount point, e.g. "/v1/customers"
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    base_url: str  # where the fake is reachable, e.g. "http://127.0.0.1:12111"
    request_id: str = field(default_factory=lambda: new_id("req_", 14))

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # fault injection: processed, but the connection closes unanswered

    @classmethod
    def json(cls, status: int, data: Any, headers: dict[str, str] | None = None) -> Response:
        out = {"Content-Type": "application/json"}
        out.update(headers or {})
        return cls(status, json.dumps(data, indent=2).encode(), out)

    @classmethod
    def html(cls, body: str, status: int = 200) -> Response:
        return cls(
            status,
            body.encode(),
            {
                "Content-Type": "text/html; charset=utf-8",
                "Content-Security-Policy": "default-src 'self'; form-action *; base-uri 'none'",
            },
        )

    @classmethod
    def redirect(cls, location: str) -> Response:
        body = (
            f'<p>Redirecting to <a href="{html.escape(location)}">{html.escape(location)}</a></p>'
        )
        return cls(303, body.encode(), {"Location": location, "Content-Type": "text/html"})


class ApiError(Exception):
    """An error answered in Stripe's envelope with Stripe's status code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param

    def envelope(self) -> JSON:
        error: JSON = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
        if self.param:
            error["param"] = self.param
        return {"error": error}


def missing(kind: str, object_id: str, param: str = "id") -> ApiError:
    return ApiError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def add_interval(ts: int, interval: str, count: int) -> int:
    """Calendar arithmetic without timezone surprises: months/years move the UTC date."""
    import calendar
    from datetime import UTC, datetime, timedelta

    dt = datetime.fromtimestamp(ts, tz=UTC)
    if interval == "day":
        return int((dt + timedelta(days=count)).timestamp())
    if interval == "week":
        return int((dt + timedelta(weeks=count)).timestamp())
    months = count if interval == "month" else 12 * count
    month_index = dt.month - 1 + months
    year, month = dt.year + month_index // 12, month_index % 12 + 1
    day = min(dt.day, calendar.monthrange(year, month)[1])
    return int(dt.replace(year=year, month=month, day=day).timestamp())


class FakeStripe:
    """State + event emission + the fake-only actions (pages and controls call these)."""

    def __init__(self, state: FakeStripeState, sender: WebhookSender) -> None:
        self.state = state
        self.sender = sender
        sender.on_delivered = self._delivered

    # -- rendering ---------------------------------------------------------------------------

    def render(self, obj: JSON) -> JSON:
        """A deep copy with live references resolved (subscription items get the current price)."""
        out = copy.deepcopy(obj)
        if out.get("object") == "subscription":
            for item in out["items"]["data"]:
                current = self.state.get("prices", item["price"]["id"])
                if current is not None:
                    item["price"] = copy.deepcopy(current)
        return out

    # -- events ------------------------------------------------------------------------------

    def emit(
        self,
        event_type: str,
        obj: JSON,
        *,
        previous_attributes: JSON | None = None,
        account: str | None = None,
        request: Request | None = None,
    ) -> JSON:
        """Store an event (snapshotting `obj`) and queue it for delivery."""
        with self.state.lock:
            evt = objects.event(
                event_type=event_type,
                obj=strip_private(self.render(obj)),
                api_version=API_VERSION,
                previous_attributes=previous_attributes,
                account=account,
                request_id=request.request_id if request else None,
                idempotency_key=request.header("idempotency-key") if request else None,
                pending_webhooks=1 if self.sender.wants(event_type) else 0,
            )
            evt["_seq"] = self.state.count("events")
            self.state.put("events", evt)
            outgoing = {k: v for k, v in evt.items() if not k.startswith("_")}
        self.sender.enqueue(outgoing)
        return evt

    def resend(self, event_id: str) -> JSON:
        evt = self.state.get("events", event_id)
        if evt is None:
            raise missing("event", event_id)
        with self.state.lock:
            if self.sender.wants(evt["type"]):
                evt["pending_webhooks"] = int(evt.get("pending_webhooks", 0)) + 1
            outgoing = {k: v for k, v in copy.deepcopy(evt).items() if not k.startswith("_")}
        self.sender.enqueue(outgoing)
        return outgoing

    def _delivered(self, event: JSON, status: int) -> None:
        with self.state.lock:
            stored = self.state.get("events", event["id"])
            if stored is not None and 200 <= status < 300:
                stored["pending_webhooks"] = max(0, int(stored.get("pending_webhooks", 0)) - 1)

    # -- checkout ----------------------------------------------------------------------------

    def checkout_session(self, cs_id: str) -> JSON:
        session = self.state.get("checkout_sessions", cs_id)
        if session is None:
            raise missing("checkout.session", cs_id, "session")
        return session

    def expire_due_sessions(self) -> None:
        """Stripe expires open sessions at `expires_at`; do it lazily on each request."""
        t = now()
        with self.state.lock:
            for session in self.state.all("checkout_sessions"):
                if session["status"] == "open" and session["expires_at"] <= t:
                    self.expire_checkout(session["id"])

    def expire_checkout(self, cs_id: str, request: Request | None = None) -> JSON:
        with self.state.lock:
            session = self.checkout_session(cs_id)
            if session["status"] != "open":
                raise ApiError(
                    400,
                    'Only Checkout Sessions with a status in ["open"] can be expired.',
                    param="session",
                )
            session["status"] = "expired"
            session["url"] = None
            self.emit("checkout.session.expired", session, request=request)
            return session

    def cancel_checkout(self, cs_id: str) -> str | None:
        session = self.checkout_session(cs_id)
        return session.get("cancel_url")

    def complete_checkout(self, cs_id: str, *, email: str | None = None) -> JSON:
        """Pay: what Stripe does when the buyer's card succeeds on the hosted page."""
        with self.state.lock:
            session = self.checkout_session(cs_id)
            if session["status"] != "open":
                raise ApiError(400, f"This Checkout Session is {session['status']}.")
            items = self.state.get("checkout_line_items", cs_id) or {"data": []}
            customer_id = session.get("customer")
            cust = self.state.get("customers", customer_id) if customer_id else None
            buyer_email = email or session.get("customer_email") or (cust or {}).get("email")
            buyer_email = buyer_email or "buyer@example.com"
            session["customer_details"] = objects.customer_details(
                email=buyer_email, name=(cust or {}).get("name")
            )
            if session["mode"] == "subscription":
                self._complete_subscription_checkout(session, items["data"], buyer_email)
            else:
                self._complete_payment_checkout(session)
            session["status"] = "complete"
            # Stripe's rule: nothing due today (usage-only subscription) is not a payment.
            session["payment_status"] = "paid" if session["amount_total"] else "no_payment_required"
            session["url"] = None
            self.emit("checkout.session.completed", session)
            return session

    def _complete_payment_checkout(self, session: JSON) -> None:
        data = session.get("_payment_intent_data") or {}
        transfer_in = data.get("transfer_data")
        transfer_data: JSON | None = None
        if isinstance(transfer_in, dict):
            amount = transfer_in.get("amount")
            transfer_data = {
                "amount": int(amount) if amount not in (None, "") else None,
                "destination": transfer_in["destination"],
            }
        fee = data.get("application_fee_amount")
        pi = objects.payment_intent(
            amount=int(session["amount_total"]),
            currency=session["currency"],
            customer_id=session.get("customer"),
            application_fee_amount=int(fee) if fee not in (None, "") else None,
            transfer_data=transfer_data,
            metadata=dict(data.get("metadata") or {}),
            on_behalf_of=data.get("on_behalf_of"),
            transfer_group=data.get("transfer_group"),
        )
        ch = objects.charge(pi)
        pi["latest_charge"] = ch["id"]
        self.state.put("payment_intents", pi)
        self.state.put("charges", ch)
        money.book_charge(self.state, ch)  # transfer to the creator, application fee
        session["payment_intent"] = pi["id"]
        self.emit("payment_intent.succeeded", pi)

    def _complete_subscription_checkout(
        self, session: JSON, line_items: list[JSON], email: str
    ) -> None:
        customer_id = session.get("customer")
        if not customer_id:
            cust = objects.customer({"email": email})
            self.state.put("customers", cust)
            customer_id = cust["id"]
            session["customer"] = customer_id
            self.emit("customer.created", cust)
        data = session.get("_subscription_data") or {}
        start = now()
        trial_days = data.get("trial_period_days")
        if trial_days in (None, ""):
            trial_days = next(
                (
                    li["price"]["recurring"]["trial_period_days"]
                    for li in line_items
                    if li["price"].get("recurring")
                    and li["price"]["recurring"].get("trial_period_days")
                ),
                None,
            )
        trial_end = start + int(trial_days) * 86400 if trial_days else None
        sub_id = new_id("sub_", 24)
        items = []
        for li in line_items:
            price_obj = self.state.get("prices", li["price"]["id"]) or li["price"]
            recurring = price_obj["recurring"]
            end = trial_end or add_interval(
                start, recurring["interval"], int(recurring["interval_count"])
            )
            items.append(
                objects.subscription_item(
                    sub_id=sub_id,
                    price_obj=copy.deepcopy(price_obj),
                    quantity=li["quantity"],
                    start=start,
                    end=end,
                )
            )
        sub = objects.subscription(
            sub_id=sub_id,
            customer_id=customer_id,
            currency=session["currency"],
            status="trialing" if trial_end else "active",
            start=start,
            items=items,
            data=data,
            trial_end=trial_end,
        )
        self.state.put("subscriptions", sub)
        session["subscription"] = sub_id
        self.emit("customer.subscription.created", sub)
        inv = self._build_invoice(
            sub,
            billing_reason="subscription_create",
            usage_period=None,
            licensed_period=None if trial_end else (start, items[0]["current_period_end"]),
            base_url=session["_base_url"],
        )
        inv["period_start"] = inv["period_end"] = start
        session["invoice"] = inv["id"]
        self._settle_invoice(sub, inv, fail=False)

    # -- invoices and periods ------------------------------------------------------------------

    def _usage_for(
        self, sub: JSON, item: JSON, *, upto_seq: int | None = None
    ) -> tuple[float, list[JSON]]:
        """Unbilled meter usage of this item's customer+meter since the subscription started
        (up to meter event `upto_seq` for an item removed mid-period).

        A stand-in for test clocks: real time does not move with "advance", so usage recorded
        after one advance counts towards the next invoice instead of being lost.
        """
        meter_id = item["price"]["recurring"].get("meter")
        mtr = self.state.get("meters", meter_id) if meter_id else None
        if mtr is None:
            return 0.0, []
        watermark = int(item.get("_billed_seq", 0))
        events = [
            e
            for e in self.state.meter_events()
            if e["_seq"] > watermark
            and (upto_seq is None or e["_seq"] <= upto_seq)
            and e["event_name"] == mtr["event_name"]
            and e["_customer"] == sub["customer"]
            and e["timestamp"] >= sub["start_date"]
        ]
        return aggregate(mtr["default_aggregation"]["formula"], events), events

    def _usage_line(
        self,
        sub: JSON,
        item: JSON,
        *,
        inv_id: str,
        period: tuple[int, int],
        dry_run: bool,
        upto_seq: int | None = None,
    ) -> JSON:
        price_obj = self.state.get("prices", item["price"]["id"]) or item["price"]
        value, events = self._usage_for(sub, item, upto_seq=upto_seq)
        quantity = round(value)
        if events and not dry_run:
            item["_billed_seq"] = max(e["_seq"] for e in events)
        return objects.invoice_line(
            invoice_id=inv_id,
            sub=sub,
            item={**item, "price": price_obj},
            amount=quantity * int(price_obj.get("unit_amount") or 0),
            quantity=quantity,
            period_start=period[0],
            period_end=period[1],
            description=f"{quantity} x {price_obj['product']} (usage)",
        )

    def prorate(self, sub: JSON, before: JSON | None, after: JSON | None, at: int) -> list[JSON]:
        """Stripe's prorations for one licensed item changed at `at`: a credit for the unused
        time of what it was and a charge for the remaining time of what it is now, each
        rounded on its own line. Metered items are never prorated. Returns pending lines
        (`sub["_pending_lines"]`), billed on the next invoice or at once (`always_invoice`)."""
        lines: list[JSON] = []
        for sign, state in ((-1, before), (1, after)):
            if state is None:
                continue
            price_obj = state["price"]
            if (price_obj.get("recurring") or {}).get("usage_type") == "metered":
                continue
            start, end = int(state["current_period_start"]), int(state["current_period_end"])
            if end <= start or at >= end:
                continue
            fraction = (end - max(at, start)) / (end - start)
            qty = int(state.get("quantity") or 1)
            amount = round(int(price_obj.get("unit_amount") or 0) * qty * fraction)
            word = "Unused" if sign < 0 else "Remaining"
            lines.append(
                {
                    "amount": sign * amount,
                    "quantity": qty,
                    "price": copy.deepcopy(price_obj),
                    "item_id": state["id"],
                    "period": [max(at, start), end],
                    "description": f"{word} time on {qty} x {price_obj['product']} after {at}",
                }
            )
        return lines

    def _build_invoice(
        self,
        sub: JSON,
        *,
        billing_reason: str,
        usage_period: tuple[int, int] | None,
        licensed_period: tuple[int, int] | None,
        base_url: str,
        dry_run: bool = False,
    ) -> JSON:
        """An invoice for `sub`: pending prorations, usage of items removed mid-period, usage
        of the period (`usage_period`) and the licensed items of `licensed_period`, less the
        customer's credit balance. `dry_run` (a preview) changes nothing and stores nothing."""
        inv_id = new_id("upcoming_in_", 24) if dry_run else new_id("in_", 24)
        lines: list[JSON] = []
        for pending in sub.get("_pending_lines") or []:
            lines.append(
                objects.invoice_line(
                    invoice_id=inv_id,
                    sub=sub,
                    item={"id": pending["item_id"], "price": pending["price"]},
                    amount=int(pending["amount"]),
                    quantity=int(pending["quantity"]),
                    period_start=int(pending["period"][0]),
                    period_end=int(pending["period"][1]),
                    description=pending["description"],
                    proration=True,
                )
            )
        for removed in sub.get("_removed_items") or []:
            lines.append(
                self._usage_line(
                    sub,
                    removed,
                    inv_id=inv_id,
                    period=(int(removed["current_period_start"]), int(removed["_removed_at"])),
                    dry_run=dry_run,
                    upto_seq=int(removed["_removed_seq"]),
                )
            )
        for item in sub["items"]["data"]:
            price_obj = self.state.get("prices", item["price"]["id"]) or item["price"]
            recurring = price_obj.get("recurring") or {}
            unit = int(price_obj.get("unit_amount") or 0)
            if recurring.get("usage_type") == "metered":
                if usage_period is None:
                    continue
                lines.append(
                    self._usage_line(sub, item, inv_id=inv_id, period=usage_period, dry_run=dry_run)
                )
            elif licensed_period is not None:
                qty = int(item.get("quantity") or 1)
                lines.append(
                    objects.invoice_line(
                        invoice_id=inv_id,
                        sub=sub,
                        item={**item, "price": price_obj},
                        amount=unit * qty,
                        quantity=qty,
                        period_start=licensed_period[0],
                        period_end=licensed_period[1],
                        description=f"{qty} x {price_obj['product']}",
                    )
                )
        period = usage_period or licensed_period or (sub["start_date"], sub["start_date"])
        inv = objects.invoice(
            inv_id=inv_id,
            sub=sub,
            lines=lines,
            billing_reason=billing_reason,
            period_start=period[0],
            period_end=period[1],
            base_url=base_url,
        )
        self._apply_balance(inv, dry_run=dry_run)
        if dry_run:
            return inv
        sub["_pending_lines"] = []
        sub["_removed_items"] = []
        self.state.put("invoices", inv)
        sub["latest_invoice"] = inv_id
        return inv

    def _apply_balance(self, inv: JSON, *, dry_run: bool) -> None:
        """The customer's balance (negative = credit) pays what it can of a positive invoice;
        a negative invoice (a downgrade's credit) adds to it and is due 0, as at Stripe."""
        cust = self.state.get("customers", inv["customer"] or "")
        balance = int(cust["balance"]) if cust else 0
        total = int(inv["total"])
        applied = min(total, -balance) if total > 0 and balance < 0 else 0
        due = max(total - applied, 0)
        ending = balance + applied + min(total, 0)
        inv["starting_balance"] = balance
        inv["ending_balance"] = ending
        inv["amount_due"] = inv["amount_remaining"] = due
        if cust is not None and not dry_run:
            cust["balance"] = ending

    def _settle_invoice(self, sub: JSON, inv: JSON, *, fail: bool) -> None:
        """created → finalized → paid | payment_failed, with the events Stripe sends."""
        self.emit("invoice.created", inv)
        t = now()
        inv["status"] = "open"
        inv["number"] = f"{new_id('', 8).upper()}-{len(self.state.collections['invoices']):04d}"
        inv["status_transitions"]["finalized_at"] = t
        self.emit("invoice.finalized", inv)
        if inv["amount_due"] > 0:
            inv["attempted"] = True
            inv["attempt_count"] = 1
        if fail and inv["amount_due"] > 0:
            self.emit("invoice.payment_failed", inv)
            return
        inv["status"] = "paid"
        inv["amount_paid"] = inv["amount_due"]
        inv["amount_remaining"] = 0
        inv["status_transitions"]["paid_at"] = t
        if inv["amount_paid"] > 0:
            money.charge_invoice(self.state, sub, inv)  # the payment, its transfer and fee
        self.emit("invoice.paid", inv)

    def advance_subscription(self, sub_id: str, *, fail: bool, base_url: str) -> JSON:
        """Close the current period: bill usage (+ next licensed period), move the periods on."""
        with self.state.lock:
            sub = self.state.get("subscriptions", sub_id)
            if sub is None:
                raise missing("subscription", sub_id)
            if sub["status"] in ("canceled", "incomplete_expired"):
                raise ApiError(400, f"Subscription {sub_id} is {sub['status']}.")
            before = self.render(sub)
            items = sub["items"]["data"]
            period_start = min(i["current_period_start"] for i in items)
            period_end = max(i["current_period_end"] for i in items)
            ending = bool(sub["cancel_at_period_end"])
            next_end = period_end
            for item in items:
                recurring = item["price"]["recurring"]
                next_end = add_interval(
                    period_end, recurring["interval"], int(recurring["interval_count"])
                )
            inv = self._build_invoice(
                sub,
                billing_reason="subscription_cycle",
                usage_period=(period_start, period_end),
                licensed_period=None if ending else (period_end, next_end),
                base_url=base_url,
            )
            self._settle_invoice(sub, inv, fail=fail)
            if ending:
                sub["status"] = "canceled"
                sub["canceled_at"] = sub["canceled_at"] or now()
                sub["ended_at"] = period_end
                self.emit("customer.subscription.deleted", sub)
                return {"subscription": self.render(sub), "invoice": copy.deepcopy(inv)}
            for item in items:
                recurring = item["price"]["recurring"]
                item["current_period_start"] = period_end
                item["current_period_end"] = add_interval(
                    period_end, recurring["interval"], int(recurring["interval_count"])
                )
            sub["billing_cycle_anchor"] = sub["billing_cycle_anchor"] or period_end
            sub["status"] = "past_due" if fail and inv["amount_due"] > 0 else "active"
            previous: JSON = {"items": before["items"], "latest_invoice": before["latest_invoice"]}
            if before["status"] != sub["status"]:
                previous["status"] = before["status"]
            self.emit("customer.subscription.updated", sub, previous_attributes=previous)
            return {"subscription": self.render(sub), "invoice": copy.deepcopy(inv)}

    # -- connect -------------------------------------------------------------------------------

    def complete_onboarding(self, acct_id: str) -> JSON:
        with self.state.lock:
            acct = self.state.get("accounts", acct_id)
            if acct is None:
                raise missing("account", acct_id, "account")
            previous: JSON = {
                "charges_enabled": acct["charges_enabled"],
                "payouts_enabled": acct["payouts_enabled"],
                "details_submitted": acct["details_submitted"],
                "capabilities": copy.deepcopy(acct["capabilities"]),
                "requirements": copy.deepcopy(acct["requirements"]),
            }
            acct["charges_enabled"] = acct["payouts_enabled"] = acct["details_submitted"] = True
            acct["capabilities"] = dict.fromkeys(acct["capabilities"], "active") or {
                "transfers": "active"
            }
            acct["requirements"].update(
                currently_due=[], eventually_due=[], past_due=[], disabled_reason=None
            )
            self.emit("account.updated", acct, previous_attributes=previous, account=acct_id)
            return acct

    # -- refunds and disputes ------------------------------------------------------------------

    def _charge_for(self, pi_id: str) -> tuple[JSON, JSON]:
        pi = self.state.get("payment_intents", pi_id)
        if pi is None:
            raise missing("payment_intent", pi_id, "payment_intent")
        ch = self.state.get("charges", pi.get("latest_charge") or "")
        if ch is None:
            raise ApiError(400, f"PaymentIntent {pi_id} has no charge.")
        return pi, ch

    def refund(
        self,
        pi_id: str,
        *,
        amount: int | None = None,
        reverse_transfer: bool = False,
        refund_application_fee: bool = False,
    ) -> JSON:
        """`POST /v1/refunds` on the payment's charge; like Stripe, a destination charge's
        transfer and fee stay where they are unless asked (`reverse_transfer`,
        `refund_application_fee`: both proportional to the amount refunded)."""
        with self.state.lock:
            _, ch = self._charge_for(pi_id)
            refundable = ch["amount"] - ch["amount_refunded"]
            amount = refundable if amount is None else amount
            if amount <= 0 or amount > refundable:
                raise ApiError(
                    400,
                    f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                    f"({refundable})",
                    code="amount_too_large" if amount > 0 else "parameter_invalid_integer",
                    param="amount",
                )
            previous = {"amount_refunded": ch["amount_refunded"], "refunded": ch["refunded"]}
            money.refund_charge(
                self.state,
                ch,
                amount,
                reverse=reverse_transfer,
                refund_application_fee=refund_application_fee,
            )
            ch["amount_refunded"] += amount
            ch["refunded"] = ch["amount_refunded"] >= ch["amount"]
            self.emit("charge.refunded", ch, previous_attributes=previous)
            return ch

    def dispute(self, pi_id: str, *, reason: str = "fraudulent") -> JSON:
        with self.state.lock:
            _, ch = self._charge_for(pi_id)
            if ch["disputed"]:
                raise ApiError(400, f"Charge {ch['id']} is already disputed.")
            dp = money.open_dispute(self.state, ch, reason=reason)
            ch["disputed"] = True
            self.emit("charge.dispute.created", dp)
            self.emit("charge.dispute.funds_withdrawn", dp)
            return dp

    def close_dispute(self, dp_id: str, *, won: bool) -> JSON:
        """The card network decided: `won` reinstates the funds, `lost` keeps them withdrawn;
        either way `charge.dispute.closed` with the final status."""
        with self.state.lock:
            dp = self.state.get("disputes", dp_id)
            if dp is None:
                raise missing("dispute", dp_id, "dispute")
            if dp["status"] in ("won", "lost", "warning_closed"):
                raise ApiError(400, f"Dispute {dp_id} is already closed ({dp['status']}).")
            previous = {"status": dp["status"]}
            money.close_dispute(self.state, dp, won=won)
            if won:
                self.emit("charge.dispute.funds_reinstated", dp)
            self.emit("charge.dispute.closed", dp, previous_attributes=previous)
            return dp


def strip_private(obj: Any) -> Any:
    """Drop the fake's bookkeeping keys (`_seq`, `_base_url`, ...) before answering."""
    if isinstance(obj, dict):
        return {k: strip_private(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [strip_private(v) for v in obj]
    return obj


def aggregate(formula: str, events: list[JSON]) -> float:
    """A meter's default_aggregation over events (values are strings on the wire)."""
    if formula == "count":
        return float(len(events))
    if not events:
        return 0.0
    if formula == "last":
        latest = max(events, key=lambda e: (e["timestamp"], e["_seq"]))
        return float(latest["_value"])
    return float(sum(float(e["_value"]) for e in events))

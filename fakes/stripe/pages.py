"""Fake-only HTML pages and controls: hosted Checkout, Connect onboarding, and the
"advance billing period" / refund / dispute / expire / resend controls that stand in for Stripe's
dashboard and test clocks. Plain forms, no script, everything escaped.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any
from urllib.parse import parse_qsl

from fakes.stripe.core import ApiError, FakeStripe, Request, Response, strip_private
from fakes.stripe.forms import parse_form
from fakes.stripe.state import JSON

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem}"
    "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;"
    "text-align:left}button{padding:.5rem 1.2rem;margin:.3rem .3rem 0 0}.banner{background:#fff3cd;"
    "padding:.5rem}"
)


def _money(amount: int | None, currency: str | None) -> str:
    if amount is None:
        return "metered"
    return f"{amount / 100:.2f} {(currency or '').upper()}"


def _page(title: str, body: str) -> Response:
    return Response.html(
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        '<p class="banner">Toolbooth fake Stripe (test mode): no real money moves.</p>'
        f"<h1>{escape(title)}</h1>{body}</body></html>"
    )


def _form(action: str, label: str, fields: dict[str, str] | None = None, name: str = "") -> str:
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
        for k, v in (fields or {}).items()
    )
    data_name = f' name="{escape(name)}"' if name else ""
    return (
        f'<form method="post" action="{escape(action)}" style="display:inline">{hidden}'
        f"<button type=submit{data_name}>{escape(label)}</button></form>"
    )


class Pages:
    """Routes the non-`/v1` paths."""

    def __init__(self, engine: FakeStripe) -> None:
        self.engine = engine
        self.state = engine.state

    def handle(self, req: Request) -> Response | None:
        path, method = req.path.rstrip("/") or "/", req.method
        if m := re.fullmatch(r"/checkout/([^/]+)", path):
            return self.checkout_page(req, m[1]) if method == "GET" else None
        if m := re.fullmatch(r"/checkout/([^/]+)/(pay|cancel)", path):
            if method != "POST":
                return None
            return self.checkout_pay(req, m[1]) if m[2] == "pay" else self.checkout_cancel(m[1])
        if m := re.fullmatch(r"/connect/onboard/([^/]+)", path):
            return self.onboard(req, m[1])
        if m := re.fullmatch(r"/connect/dashboard/([^/]+)", path):
            return _page("Express dashboard", f"<p>Account <code>{escape(m[1])}</code></p>")
        if m := re.fullmatch(r"/invoices/([^/]+)", path):
            return self.invoice_page(m[1])
        if path == "/control" and method == "GET":
            return self.control_page(req)
        if path.startswith("/control/") and method == "POST":
            return self.control(req, path)
        if path == "/" and method == "GET":
            return _page(
                "Fake Stripe", f'<p><a href="{escape(req.base_url)}/control">Controls</a></p>'
            )
        return None

    # -- checkout ------------------------------------------------------------------------------

    def checkout_page(self, req: Request, cs_id: str) -> Response:
        session = self.engine.checkout_session(cs_id)
        items = (self.state.get("checkout_line_items", cs_id) or {"data": []})["data"]
        rows = "".join(
            "<tr>"
            f"<td>{escape(str(li.get('description') or li['price']['product']))}</td>"
            f"<td>{escape(str(li['quantity'] if li['quantity'] is not None else '—'))}</td>"
            f"<td>{escape(_price_label(li['price']))}</td>"
            f"<td>{escape(_money(li['amount_total'], li['currency']))}</td>"
            "</tr>"
            for li in items
        )
        body = (
            "<table><thead><tr><th>Item</th><th>Qty</th><th>Price</th><th>Amount</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
            f'<p>Total due today: <strong id="total">'
            f"{escape(_money(session['amount_total'], session['currency']))}</strong></p>"
        )
        if session["status"] != "open":
            body += f"<p id=status>This Checkout Session is {escape(session['status'])}.</p>"
            return _page("Checkout", body)
        base = f"{req.base_url}/checkout/{cs_id}"
        email = session.get("customer_email") or ""
        body += (
            f'<form method="post" action="{escape(base)}/pay">'
            f'<label>Email <input type="email" name="email" value="{escape(email)}"></label> '
            '<label>Card <input name="card" value="4242 4242 4242 4242" readonly></label><br>'
            '<button type="submit" id="pay">Pay</button></form>'
            f'<form method="post" action="{escape(base)}/cancel">'
            '<button type="submit" id="cancel">Cancel</button></form>'
        )
        return _page("Checkout", body)

    def checkout_pay(self, req: Request, cs_id: str) -> Response:
        form = parse_form(req.body)
        email = str(form.get("email") or "") or None
        session = self.engine.complete_checkout(cs_id, email=email)
        success = session.get("success_url")
        if success:
            return Response.redirect(success.replace("{CHECKOUT_SESSION_ID}", cs_id))
        return _page(
            "Payment complete", f"<p id=status>Checkout Session {escape(cs_id)} is complete.</p>"
        )

    def checkout_cancel(self, cs_id: str) -> Response:
        cancel_url = self.engine.cancel_checkout(cs_id)
        if cancel_url:
            return Response.redirect(cancel_url.replace("{CHECKOUT_SESSION_ID}", cs_id))
        return _page("Checkout canceled", "<p id=status>You left the checkout.</p>")

    # -- connect -------------------------------------------------------------------------------

    def onboard(self, req: Request, acct_id: str) -> Response:
        acct = self.state.get("accounts", acct_id)
        if acct is None:
            raise ApiError(404, f"No such account: '{acct_id}'", code="resource_missing")
        if req.method == "POST":
            form = parse_form(req.body)
            self.engine.complete_onboarding(acct_id)
            return_url = str(form.get("return_url") or "")
            if return_url:
                return Response.redirect(return_url)
            return _page("Onboarding complete", "<p id=status>Your account is ready.</p>")
        query = dict(parse_qsl(req.query))
        fields = {"return_url": query.get("return_url", "")}
        body = (
            f"<p>Account <code>{escape(acct_id)}</code> ({escape(str(acct.get('email') or ''))})"
            f" — charges enabled: {escape(str(acct['charges_enabled']).lower())}</p>"
            + _form(f"{req.base_url}/connect/onboard/{acct_id}", "Complete onboarding", fields)
        )
        if query.get("refresh_url"):
            body += f'<p><a href="{escape(query["refresh_url"])}">Link expired? Start again</a></p>'
        return _page("Connect onboarding", body)

    def invoice_page(self, inv_id: str) -> Response:
        inv = self.state.get("invoices", inv_id)
        if inv is None:
            raise ApiError(404, f"No such invoice: '{inv_id}'", code="resource_missing")
        rows = "".join(
            f"<tr><td>{escape(line['description'])}</td><td>{line['quantity']}</td>"
            f"<td>{escape(_money(line['amount'], line['currency']))}</td></tr>"
            for line in inv["lines"]["data"]
        )
        return _page(
            f"Invoice {inv.get('number') or inv_id}",
            f"<table><tbody>{rows}</tbody></table><p>Status: {escape(str(inv['status']))}; due "
            f"{escape(_money(inv['amount_due'], inv['currency']))}</p>",
        )

    # -- controls ------------------------------------------------------------------------------

    def control(self, req: Request, path: str) -> Response:
        form = parse_form(req.body) if req.body else {}
        form.update(dict(parse_qsl(req.query)))
        result: Any
        if m := re.fullmatch(r"/control/subscriptions/([^/]+)/advance", path):
            fail = str(form.get("fail", "")).lower() in ("1", "true", "yes")
            result = self.engine.advance_subscription(m[1], fail=fail, base_url=req.base_url)
        elif m := re.fullmatch(r"/control/payment_intents/([^/]+)/refund", path):
            amount = form.get("amount")
            result = self.engine.refund(m[1], amount=int(amount) if amount else None)
        elif m := re.fullmatch(r"/control/payment_intents/([^/]+)/dispute", path):
            result = self.engine.dispute(m[1], reason=str(form.get("reason") or "fraudulent"))
        elif m := re.fullmatch(r"/control/checkout/sessions/([^/]+)/expire", path):
            result = self.engine.expire_checkout(m[1])
        elif m := re.fullmatch(r"/control/checkout/sessions/([^/]+)/complete", path):
            result = self.engine.complete_checkout(m[1], email=form.get("email") or None)
        elif m := re.fullmatch(r"/control/accounts/([^/]+)/onboard", path):
            result = self.engine.complete_onboarding(m[1])
        elif m := re.fullmatch(r"/control/events/([^/]+)/resend", path):
            result = self.engine.resend(m[1])
        elif path == "/control/webhooks/pause":
            self.engine.sender.pause()
            result = {"paused": True}
        elif path == "/control/webhooks/resume":
            reverse = str(form.get("reverse", "")).lower() in ("1", "true", "yes")
            self.engine.sender.resume(reverse=reverse)
            result = {"paused": False, "reversed": reverse}
        else:
            raise ApiError(404, f"Unrecognized control URL (POST: {path})")
        if form.get("return_to") == "control":
            return Response.redirect(f"{req.base_url}/control")
        return Response.json(200, strip_private(self.engine.render(result)))

    def control_page(self, req: Request) -> Response:
        base = f"{req.base_url}/control"
        back = {"return_to": "control"}
        parts = ["<h2>Subscriptions</h2><table>"]
        for sub in self.state.all("subscriptions"):
            end = max((i["current_period_end"] for i in sub["items"]["data"]), default=0)
            parts.append(
                f"<tr><td><code>{escape(sub['id'])}</code></td><td>{escape(sub['status'])}</td>"
                f"<td>period ends {end}</td><td>"
                + _form(f"{base}/subscriptions/{sub['id']}/advance", "Advance period", back)
                + _form(
                    f"{base}/subscriptions/{sub['id']}/advance",
                    "Advance (payment fails)",
                    {**back, "fail": "1"},
                )
                + "</td></tr>"
            )
        parts.append("</table><h2>Payments</h2><table>")
        for pi in self.state.all("payment_intents"):
            parts.append(
                f"<tr><td><code>{escape(pi['id'])}</code></td>"
                f"<td>{escape(_money(pi['amount'], pi['currency']))}</td><td>"
                + _form(f"{base}/payment_intents/{pi['id']}/refund", "Refund", back)
                + _form(f"{base}/payment_intents/{pi['id']}/dispute", "Dispute", back)
                + "</td></tr>"
            )
        parts.append("</table><h2>Open Checkout Sessions</h2><table>")
        for cs in self.state.all("checkout_sessions"):
            if cs["status"] == "open":
                parts.append(
                    f"<tr><td><code>{escape(cs['id'][:24])}…</code></td><td>"
                    + _form(f"{base}/checkout/sessions/{cs['id']}/expire", "Expire", back)
                    + "</td></tr>"
                )
        parts.append("</table><h2>Recent events</h2><table>")
        for evt in self.state.all("events")[:30]:
            parts.append(
                f"<tr><td><code>{escape(evt['id'])}</code></td><td>{escape(evt['type'])}</td><td>"
                + _form(f"{base}/events/{evt['id']}/resend", "Resend", back)
                + "</td></tr>"
            )
        parts.append("</table>")
        return _page("Fake Stripe controls", "".join(parts))


def _price_label(price: JSON) -> str:
    recurring = price.get("recurring")
    amount = _money(price.get("unit_amount"), price.get("currency"))
    if not recurring:
        return amount
    per = recurring["interval"]
    if recurring.get("usage_type") == "metered":
        return f"{amount} per unit (metered), billed each {per}"
    return f"{amount} / {per}"

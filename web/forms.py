"""Forms of the people pages. They only validate input; every write goes through a service."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import UserCreationForm

from billing.models import RATE_LIMIT_MAX_PER_MINUTE, PlanKind
from billing.pricing import plan_amount_errors, tool_price_refusal

MONEY_HELP = "In the plan's currency, e.g. 4.90 or 0.05 (whole cents)."


class SignUpForm(UserCreationForm):  # type: ignore[type-arg]
    email = forms.EmailField(
        label="Email", help_text="For password resets and receipts.", max_length=254
    )

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def clean_email(self) -> str:
        email = str(self.cleaned_data["email"]).strip().lower()
        if get_user_model().objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this email already exists.")
        return email


class MoneyField(forms.CharField):
    """Decimal money in, integer minor units out (the currency's exponent, 2 for usd).

    Amounts below a cent are allowed only where `minor_digits` says so (per-call prices are
    whole minor units too: 0.003 usd is refused, because Stripe bills whole cents).
    """

    def __init__(self, *, minor_digits: int = 2, **kwargs: Any) -> None:
        self.minor_digits = minor_digits
        kwargs.setdefault("help_text", MONEY_HELP)
        super().__init__(**kwargs)

    def widget_attrs(self, widget: forms.Widget) -> dict[str, Any]:
        attrs = super().widget_attrs(widget)
        attrs.update({"inputmode": "decimal", "pattern": r"[0-9]+([.,][0-9]+)?", "maxlength": "20"})
        return attrs

    def to_python(self, value: Any) -> int | None:  # type: ignore[override]
        text = (super().to_python(value) or "").strip().replace(",", ".")
        if not text:
            return None
        if len(text) > 20:
            raise forms.ValidationError("Enter an amount like 4.90.")
        try:
            amount = Decimal(text)
        except InvalidOperation as exc:
            raise forms.ValidationError("Enter an amount like 4.90.") from exc
        if amount < 0:
            raise forms.ValidationError("Amounts cannot be negative.")
        minor = amount * (10**self.minor_digits)
        if minor != minor.to_integral_value(rounding=ROUND_HALF_UP):
            raise forms.ValidationError(f"Use at most {self.minor_digits} decimals (whole cents).")
        return int(minor)


class KeyCreateForm(forms.Form):
    name = forms.CharField(label="Key name", max_length=100, required=False)
    daily_spend_cap = MoneyField(label="Daily spend cap", required=False)
    monthly_spend_cap = MoneyField(label="Monthly spend cap", required=False)


class SpendCapForm(forms.Form):
    daily_spend_cap = MoneyField(
        label="Daily spend cap", required=False, help_text="Empty for no cap."
    )
    monthly_spend_cap = MoneyField(
        label="Monthly spend cap", required=False, help_text="Empty for no cap."
    )


class BecomeCreatorForm(forms.Form):
    handle = forms.SlugField(
        label="Handle",
        max_length=50,
        min_length=3,
        help_text="Lowercase letters, digits and dashes; it names your namespace.",
    )


class ClaimForm(forms.Form):
    listing = forms.CharField(
        label="Server name",
        max_length=200,
        help_text="As in the Official MCP Registry, e.g. io.github.you/weather.",
    )


class UpstreamForm(forms.Form):
    url = forms.URLField(
        label="Upstream URL",
        max_length=500,
        assume_scheme="https",
        help_text="Your MCP server's Streamable HTTP endpoint. Public addresses only.",
    )
    secret = forms.CharField(
        label="Upstream secret",
        required=False,
        max_length=500,
        widget=forms.PasswordInput(render_value=False),
        help_text="Sent to your server as a Bearer token. Leave empty to keep the current one.",
    )
    enabled = forms.BooleanField(label="Serve calls through Toolbooth", required=False)


def _tool_prices(text: str, *, minor_digits: int = 2) -> dict[str, Any]:
    """`search=0.05, admin=excluded, ping=free` -> {"search": {"unit_amount": 5}, ...}."""
    prices: dict[str, Any] = {}
    field = MoneyField(minor_digits=minor_digits, required=False)
    for raw_item in text.replace("\n", ",").split(","):
        item = raw_item.strip()
        if not item:
            continue
        tool, sep, value = item.partition("=")
        tool, value = tool.strip(), value.strip().lower()
        if not sep or not tool:
            raise forms.ValidationError(f"“{item}” is not tool=price.")
        if value == "excluded":
            prices[tool] = {"unit_amount": 0, "excluded": True}
        elif value == "free":
            prices[tool] = {"unit_amount": 0, "excluded": False}
        else:
            prices[tool] = {"unit_amount": field.clean(value) or 0, "excluded": False}
    return prices


def tool_prices_text(tool_prices: dict[str, Any] | None, *, minor_digits: int = 2) -> str:
    parts = []
    for tool, spec in sorted((tool_prices or {}).items()):
        if not isinstance(spec, dict):
            continue
        if spec.get("excluded"):
            parts.append(f"{tool}=excluded")
        elif not spec.get("unit_amount"):
            parts.append(f"{tool}=free")
        else:
            amount = Decimal(int(spec["unit_amount"])) / (10**minor_digits)
            parts.append(f"{tool}={amount}")
    return ", ".join(parts)


class ToolPricesField(forms.CharField):
    def to_python(self, value: Any) -> dict[str, Any]:  # type: ignore[override]
        return _tool_prices(super().to_python(value) or "")


TOOL_PRICES_HELP = (
    "Optional, per tool: name=price, name=free or name=excluded, separated by commas. "
    "Prices apply to pay-per-call plans, and to subscriptions past their included calls "
    "(overage); free tiers, one-time licenses and capped subscriptions take only free or "
    "excluded. Calls within the included calls cost nothing. Other tools your server lists now "
    "cost the plan's per-call or overage price; a tool it starts listing later is refused "
    "until you save the prices again."
)


# Which inputs each plan kind uses (the rest are hidden by static/web/app.js and ignored here,
# so the form also works without JavaScript). Name, rate limit and tool prices apply to all.
PLAN_KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "free": ("included_calls",),
    "one_time": ("unit_amount", "included_calls"),
    "subscription": ("unit_amount", "included_calls", "hard_cap", "overage_amount"),
    "per_call": ("per_call_amount", "included_calls"),
}
PLAN_KIND_ONLY_FIELDS = frozenset(f for fields in PLAN_KIND_FIELDS.values() for f in fields)


class PlanCreateForm(forms.Form):
    """A new plan. Amounts are checked by `billing.pricing.plan_amount_errors`, the function the
    service runs too, so a minimum reads "at least $0.50 a month" here and in the API."""

    kind = forms.ChoiceField(label="Kind", choices=PlanKind.choices)
    name = forms.CharField(label="Plan name", max_length=100, required=False)
    unit_amount = MoneyField(
        label="Price", required=False, help_text="One-time price, or the monthly subscription."
    )
    per_call_amount = MoneyField(label="Price per call", required=False)
    included_calls = forms.IntegerField(
        label="Included calls a month",
        required=False,
        min_value=0,
        help_text="Empty for unlimited. On pay per call, these calls are free each month.",
    )
    hard_cap = forms.BooleanField(label="Stop at the included calls (no overage)", required=False)
    overage_amount = MoneyField(
        label="Overage per call",
        required=False,
        help_text="What each call past the included calls costs (unless you stop there).",
    )
    rate_limit_per_minute = forms.IntegerField(
        label="Rate limit (tool calls a minute)",
        help_text=(
            "Per license, all its keys together. Only tool calls count: initialize, "
            "tools/list, pings and notifications have their own generous per-key limit."
        ),
        min_value=1,
        max_value=RATE_LIMIT_MAX_PER_MINUTE,
        initial=60,
    )
    tool_prices = ToolPricesField(
        label="Tool prices", required=False, help_text=TOOL_PRICES_HELP, max_length=2000
    )

    def __init__(self, *args: Any, currency: str = "usd", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.currency = currency

    def field_rows(self) -> list[tuple[forms.BoundField, str]]:
        """Each field with the kinds it belongs to ("" = every kind), for the page's
        `data-plan-kinds` (the script shows only the chosen kind's inputs)."""
        rows = []
        for bound in self:
            kinds = [k for k, names in PLAN_KIND_FIELDS.items() if bound.name in names]
            rows.append((bound, " ".join(kinds) if bound.name in PLAN_KIND_ONLY_FIELDS else ""))
        return rows

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        kind = data.get("kind")
        if kind not in PLAN_KIND_FIELDS:
            return data
        used = PLAN_KIND_FIELDS[kind]
        for name in PLAN_KIND_ONLY_FIELDS - set(used):  # another kind's input: ignored
            data[name] = False if name == "hard_cap" else None
            self.errors.pop(name, None)
        if kind == "one_time":
            data["hard_cap"] = True  # nothing to bill overage against (plans.plan_create)
        if kind == "subscription" and data.get("included_calls") is None:
            data["hard_cap"] = False
            data["overage_amount"] = None  # unlimited calls: there is no overage
            self.errors.pop("overage_amount", None)
        if any(name in self.errors for name in used):
            return data
        problems = plan_amount_errors(
            kind=kind,
            currency=self.currency,
            unit_amount=data.get("unit_amount") or 0,
            per_call_amount=data.get("per_call_amount") or 0,
            overage_amount=data.get("overage_amount") or 0,
            hard_cap=bool(data.get("hard_cap")),
            included_calls=data.get("included_calls"),
        )
        for name, text in problems.items():
            self.add_error(None if name == "__all__" else name, text)
        if "tool_prices" in data and not problems:
            refusal = tool_price_refusal(
                kind=kind,
                hard_cap=bool(data.get("hard_cap")),
                included_calls=data.get("included_calls"),
                tool_prices=data.get("tool_prices") or {},
            )
            if refusal:
                self.add_error("tool_prices", refusal)
        return data


class PriceChangeForm(forms.Form):
    unit_amount = MoneyField(label="Price", required=False)
    per_call_amount = MoneyField(label="Price per call", required=False)
    overage_amount = MoneyField(label="Overage per call", required=False)
    tool_prices = ToolPricesField(
        label="Tool prices", required=False, help_text=TOOL_PRICES_HELP, max_length=2000
    )


def config_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2)


class ReviewForm(forms.Form):
    rating = forms.TypedChoiceField(
        label="Rating",
        choices=[(n, f"{n} star{'s' if n > 1 else ''}") for n in range(5, 0, -1)],
        coerce=int,
        widget=forms.RadioSelect,
    )
    text = forms.CharField(
        label="Your review",
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Plain text; what worked, what did not. Up to 2,000 characters.",
    )


class ReviewReplyForm(forms.Form):
    text = forms.CharField(
        label="Reply",
        required=False,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Shown under the review. Leave empty to remove your reply.",
    )

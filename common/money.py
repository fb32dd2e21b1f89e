"""Money as people read it, shared by pages, agents' text and emails (integer minor units in,
text out), so every place shows one amount the same way."""

# ISO 4217 currencies whose minor unit is not 1/100 (Stripe's list of zero-decimal and
# three-decimal currencies); everything else has two decimals.
_ZERO_DECIMAL = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga"}
    | {"pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
_THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£"}


def money_format(*, amount: int, currency: str) -> str:
    """Integer minor units as money: (3, "usd") -> "$0.03", (500, "jpy") -> "500 JPY"."""
    code = (currency or "").lower()
    decimals = 0 if code in _ZERO_DECIMAL else 3 if code in _THREE_DECIMAL else 2
    sign = "-" if amount < 0 else ""
    value = abs(int(amount))
    if decimals:
        whole, frac = divmod(value, 10**decimals)
        number = f"{whole:,}.{frac:0{decimals}d}"
    else:
        number = f"{value:,}"
    symbol = _SYMBOLS.get(code)
    if symbol:
        return f"{sign}{symbol}{number}"
    return f"{sign}{number} {code.upper()}"

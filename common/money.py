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


def currency_decimals(currency: str) -> int:
    """Digits after the decimal point of the currency's minor unit (2 for usd, 0 for jpy)."""
    code = (currency or "").lower()
    return 0 if code in _ZERO_DECIMAL else 3 if code in _THREE_DECIMAL else 2


def amount_decimal(*, amount: int, currency: str) -> str:
    """Integer minor units as a plain decimal in currency units, for files people import into
    spreadsheets: (5, "usd") -> "0.05", (500, "jpy") -> "500" (no symbol, no separators)."""
    decimals = currency_decimals(currency)
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(int(amount)), 10**decimals)
    return f"{sign}{whole}.{frac:0{decimals}d}" if decimals else f"{sign}{whole}"


def money_format(*, amount: int, currency: str) -> str:
    """Integer minor units as money: (3, "usd") -> "$0.03", (500, "jpy") -> "500 JPY"."""
    code = (currency or "").lower()
    decimals = currency_decimals(code)
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

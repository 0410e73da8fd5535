"""Exact money: integer minor units plus an ISO 4217 currency.

A float never enters. Amounts arrive as decimal strings ("100", "100.5", "100.50") and are
parsed digit by digit against the currency's exponent (USD 2, JPY 0, BHD 3), so "0.1" is
exactly ten cents and "1.005" USD is refused rather than rounded.

Limits (TigerBeetle style: a limit on everything):

- one amount is at most ``MAX_AMOUNT_MINOR`` minor units (10**15, e.g. USD 10 trillion);
- one balance is at most ``MAX_BALANCE_MINOR`` minor units (10**17), so one balance fits a
  signed 64-bit column in every engine; totals over many balances are summed exactly at any
  size (the read stores' ``totals``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from eventbank.domain.errors import InvalidAmount, UnknownCurrency

MAX_AMOUNT_MINOR = 10**15
MAX_BALANCE_MINOR = 10**17

# ISO 4217 minor-unit exponents for the currencies we accept. Extend deliberately: a wrong
# exponent silently scales money by a power of ten.
CURRENCY_EXPONENTS: dict[str, int] = {
    "AUD": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CNY": 2, "CZK": 2, "DKK": 2,
    "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2, "ISK": 0,
    "JOD": 3, "JPY": 0, "KRW": 0, "KWD": 3, "MXN": 2, "NOK": 2, "NZD": 2, "OMR": 3,
    "PLN": 2, "SEK": 2, "SGD": 2, "TND": 3, "TRY": 2, "USD": 2, "ZAR": 2,
}  # fmt: skip

_DECIMAL = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<frac>[0-9]+))?")
_MAX_AMOUNT_TEXT = 40  # longer input is refused before any parsing work


def exponent_of(currency: str) -> int:
    """The number of decimal places of ``currency``; raises UnknownCurrency."""
    if not isinstance(currency, str) or currency not in CURRENCY_EXPONENTS:
        known = ", ".join(sorted(CURRENCY_EXPONENTS))
        raise UnknownCurrency(f"unknown currency {currency!r}; supported: {known}")
    return CURRENCY_EXPONENTS[currency]


@dataclass(frozen=True, slots=True)
class Money:
    """A positive or zero amount in minor units of one currency."""

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        exponent_of(self.currency)
        if type(self.amount_minor) is not int:
            raise InvalidAmount(
                f"amount_minor must be an integer, not {type(self.amount_minor).__name__}"
            )
        if self.amount_minor < 0:
            raise InvalidAmount("amount must not be negative")

    def __str__(self) -> str:
        return format_money(self.amount_minor, self.currency)


def parse_amount(text: object, currency: str, *, allow_zero: bool = False) -> Money:
    """Parse a decimal string into a positive Money of ``currency`` (or zero, with
    ``allow_zero``: a limit may be zero, an amount that moves may not).

    Refuses, each with a message that says why: non-strings (floats above all), NaN and
    infinities, signs, exponents, zero, more decimals than the currency has, and amounts
    over ``MAX_AMOUNT_MINOR``.
    """
    exponent = exponent_of(currency)
    if isinstance(text, bool) or not isinstance(text, str):
        kind = type(text).__name__
        raise InvalidAmount(
            f'amount must be a decimal string such as "80.00", not a {kind}'
            + (" (floats are never accepted for money)" if isinstance(text, float) else "")
        )
    stripped = text.strip()
    if len(stripped) > _MAX_AMOUNT_TEXT:
        raise InvalidAmount(f"amount is too long ({len(stripped)} characters)")
    lowered = stripped.lower().lstrip("+-")
    if lowered in {"nan", "inf", "infinity", "snan"}:
        raise InvalidAmount(f"{text!r} is not a number of money")
    if stripped.startswith("-"):
        raise InvalidAmount(f"amount must be positive, got {text!r}")
    match = _DECIMAL.fullmatch(stripped)
    if match is None:
        raise InvalidAmount(
            f"{text!r} is not a decimal amount; write digits with an optional '.' "
            "(no signs, exponents or thousands separators)"
        )
    frac = match["frac"] or ""
    if len(frac) > exponent:
        places = "no decimal places" if exponent == 0 else f"at most {exponent} decimal places"
        raise InvalidAmount(f"{currency} allows {places}; {text!r} has {len(frac)}")
    amount_minor = int(match["whole"]) * 10**exponent + int(frac.ljust(exponent, "0") or "0")
    if amount_minor == 0 and not allow_zero:
        raise InvalidAmount("amount must be greater than zero")
    if amount_minor > MAX_AMOUNT_MINOR:
        limit = format_minor(MAX_AMOUNT_MINOR, currency)
        raise InvalidAmount(f"amount {text} {currency} is over the maximum of {limit} {currency}")
    return Money(amount_minor, currency)


def format_money(amount_minor: int, currency: str) -> str:
    """Minor units as people read them in messages, ``"-12.50 USD"`` (negative allowed)."""
    return f"{format_minor(amount_minor, currency)} {currency}"


def format_minor(amount_minor: int, currency: str) -> str:
    """Render minor units as a decimal string with exactly the currency's decimals."""
    exponent = CURRENCY_EXPONENTS.get(currency) if type(currency) is str else None
    if exponent is None:  # looked up once, not twice, on the common path (eleven per transfer)
        exponent = exponent_of(currency)
    sign = "-" if amount_minor < 0 else ""
    digits = str(abs(amount_minor)).rjust(exponent + 1, "0")
    if exponent == 0:
        return sign + digits
    return f"{sign}{digits[:-exponent]}.{digits[-exponent:]}"

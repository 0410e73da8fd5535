"""Exact money: parsing decimal strings per currency exponent, and every refusal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbank.domain.errors import InvalidAmount, UnknownCurrency
from eventbank.domain.money import (
    CURRENCY_EXPONENTS,
    MAX_AMOUNT_MINOR,
    Money,
    format_minor,
    parse_amount,
)


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("100", "USD", 10_000),
        ("100.5", "USD", 10_050),
        ("100.50", "USD", 10_050),
        ("0.01", "USD", 1),
        ("0.1", "USD", 10),
        ("1500", "JPY", 1_500),
        ("1.234", "BHD", 1_234),
        ("1.2", "BHD", 1_200),
        (" 7.00 ", "EUR", 700),
    ],
)
def test_decimal_strings_parse_exactly(text, currency, minor):
    assert parse_amount(text, currency) == Money(minor, currency)


@pytest.mark.parametrize(
    ("value", "currency", "message"),
    [
        (100.0, "USD", "floats are never accepted"),
        (100, "USD", "decimal string"),
        (True, "USD", "decimal string"),
        ("NaN", "USD", "not a number of money"),
        ("inf", "USD", "not a number of money"),
        ("-Infinity", "USD", "not a number of money"),
        ("-5", "USD", "must be positive"),
        ("0", "USD", "greater than zero"),
        ("0.00", "USD", "greater than zero"),
        ("1.005", "USD", "at most 2 decimal places"),
        ("1.5", "JPY", "no decimal places"),
        ("1.2345", "BHD", "at most 3 decimal places"),
        ("1e5", "USD", "not a decimal amount"),
        ("1,000", "USD", "not a decimal amount"),
        ("+5", "USD", "not a decimal amount"),
        (".5", "USD", "not a decimal amount"),
        ("", "USD", "not a decimal amount"),
        ("10000000000000.01", "USD", "over the maximum"),
        ("9" * 41, "USD", "too long"),
    ],
)
def test_bad_amounts_are_refused_with_a_reason(value, currency, message):
    with pytest.raises(InvalidAmount, match=message):
        parse_amount(value, currency)


@pytest.mark.parametrize("currency", ["XXX", "usd", "", None, 840])
def test_unknown_currencies_are_refused(currency):
    with pytest.raises(UnknownCurrency, match="unknown currency"):
        parse_amount("1", currency)


def test_the_maximum_amount_itself_is_accepted():
    assert parse_amount(format_minor(MAX_AMOUNT_MINOR, "USD"), "USD").amount_minor == (
        MAX_AMOUNT_MINOR
    )


def test_money_refuses_float_and_negative_minor_units():
    with pytest.raises(InvalidAmount, match="integer"):
        Money(1.0, "USD")  # type: ignore[arg-type]
    with pytest.raises(InvalidAmount, match="negative"):
        Money(-1, "USD")


@given(
    minor=st.integers(min_value=1, max_value=MAX_AMOUNT_MINOR),
    currency=st.sampled_from(sorted(CURRENCY_EXPONENTS)),
)
def test_format_then_parse_round_trips(minor, currency):
    text = format_minor(minor, currency)
    assert parse_amount(text, currency) == Money(minor, currency)
    assert text.count(".") == (1 if CURRENCY_EXPONENTS[currency] else 0)

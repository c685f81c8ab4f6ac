"""Money: integer minor units, one currency, formatted by the currency's decimal places."""

from dataclasses import FrozenInstanceError
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import CurrencyMismatch, Money, validate_currency
from core.money import MINOR_UNITS

amounts = st.integers(min_value=-10**15, max_value=10**15)


@pytest.mark.parametrize("minor", [1.0, 0.5, True, False, Decimal("1"), "100", None])
def test_refuses_anything_but_an_int(minor):
    with pytest.raises(TypeError):
        Money("EUR", minor)


@pytest.mark.parametrize("code", ["eur", "EU", "EURO", "E1R", "", " EUR", 978, None])
def test_refuses_malformed_currency(code):
    with pytest.raises(ValueError):
        Money(code, 100)


def test_validate_currency_returns_the_code():
    assert validate_currency("CHF") == "CHF"


def test_is_immutable():
    m = Money("EUR", 100)
    with pytest.raises(FrozenInstanceError):
        m.minor = 200


def test_arithmetic_in_one_currency():
    assert Money("EUR", 250) + Money("EUR", 175) == Money("EUR", 425)
    assert Money("EUR", 250) - Money("EUR", 300) == Money("EUR", -50)
    assert -Money("EUR", 250) == Money("EUR", -250)


def test_mismatch_is_a_value_error():
    assert issubclass(CurrencyMismatch, ValueError)


@pytest.mark.parametrize("op", [lambda a, b: a + b, lambda a, b: a - b])
def test_refuses_to_combine_currencies(op):
    with pytest.raises(CurrencyMismatch, match="EUR and USD"):
        op(Money("EUR", 100), Money("USD", 100))


@pytest.mark.parametrize(
    ("currency", "minor", "text"),
    [
        ("EUR", 1234, "12.34 EUR"),
        ("EUR", 5, "0.05 EUR"),
        ("EUR", 0, "0.00 EUR"),
        ("EUR", -5, "-0.05 EUR"),
        ("EUR", -1234, "-12.34 EUR"),
        ("USD", 100_000_00, "100000.00 USD"),
        ("JPY", 1234, "1234 JPY"),
        ("JPY", -7, "-7 JPY"),
        ("ISK", 0, "0 ISK"),
        ("BHD", 1234, "1.234 BHD"),
        ("KWD", 5, "0.005 KWD"),
        ("XTS", 1234, "12.34 XTS"),  # not in the table: two places by default
    ],
)
def test_str_formats_by_minor_units(currency, minor, text):
    assert str(Money(currency, minor)) == text


@given(st.sampled_from(["EUR", "USD", "XTS", *MINOR_UNITS]), amounts)
def test_str_parses_back_to_the_same_amount(currency, minor):
    number, code = str(Money(currency, minor)).split(" ")
    assert code == currency
    assert Decimal(number).scaleb(MINOR_UNITS.get(currency, 2)) == minor


@given(amounts, amounts, amounts)
def test_addition_is_associative_and_commutative(a, b, c):
    x, y, z = Money("EUR", a), Money("EUR", b), Money("EUR", c)
    assert (x + y) + z == x + (y + z)
    assert x + y == y + x
    assert (x + y).minor == a + b


@given(amounts, amounts)
def test_subtraction_undoes_addition(a, b):
    x, y = Money("GBP", a), Money("GBP", b)
    assert (x + y) - y == x
    assert x + (-x) == Money("GBP", 0)


def test_ordering_across_currencies_is_refused():
    with pytest.raises(CurrencyMismatch):
        _ = Money("EUR", 100) < Money("USD", 1)
    assert Money("EUR", 1) < Money("EUR", 2) and Money("EUR", 2) >= Money("EUR", 2)

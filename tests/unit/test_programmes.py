"""Programmes: card-number templates and value rules."""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum import luhn

from core import DomainError, HoldExpiryPolicy, InvalidInput, NumberTemplate, Programme, ProgrammeKind, ValueRules

# --- NumberTemplate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "length", "serial", "number"),
    [
        ("799273987", 11, 1, "79927398713"),  # the textbook Luhn example
        ("41111111111111", 16, 1, "4111111111111111"),  # the published Visa test number
    ],
)
def test_number_matches_published_luhn_examples(prefix, length, serial, number):
    assert NumberTemplate(prefix, length).number(serial) == number


def test_number_is_prefix_zero_padded_serial_and_check_digit():
    t = NumberTemplate("6001", 16)
    n = t.number(42)
    assert n[:15] == "600100000000042"
    assert n[15] == luhn.calc_check_digit("600100000000042")


@pytest.mark.parametrize("serial", [0, 1, 9, 10, 123_456, 99_999_999_999])
def test_numbers_are_luhn_valid_and_well_formed(serial):
    t = NumberTemplate("6001", 16)
    n = t.number(serial)
    assert len(n) == 16
    assert n.startswith("6001")
    assert n.isdigit()
    assert luhn.is_valid(n)
    assert t.matches(n)
    assert t.serial(n) == serial


def test_serial_width_and_capacity():
    t = NumberTemplate("6001", 16)
    assert t.serial_width == 11
    assert t.capacity == 10**11
    plain = NumberTemplate("6001", 16, luhn=False)
    assert plain.serial_width == 12
    assert plain.capacity == 10**12


def test_capacity_bounds_the_serial():
    t = NumberTemplate("60012345", 10)  # one serial digit: ten numbers
    assert t.capacity == 10
    assert len({t.number(s) for s in range(10)}) == 10
    for bad in (-1, 10, 11):
        with pytest.raises(InvalidInput):
            t.number(bad)


def test_non_luhn_template_has_no_check_digit():
    t = NumberTemplate("77", 10, luhn=False)
    assert t.number(0) == "7700000000"
    assert t.number(12345) == "7700012345"
    assert t.serial("7700012345") == 12345
    # A number that fails Luhn still belongs to a template that does not use it.
    assert not luhn.is_valid("7700000001")
    assert t.matches("7700000001")


def test_luhn_template_rejects_a_wrong_check_digit():
    t = NumberTemplate("6001", 16)
    good = t.number(7)
    bad = good[:-1] + str((int(good[-1]) + 1) % 10)
    assert not t.matches(bad)
    with pytest.raises(InvalidInput):
        t.serial(bad)


@pytest.mark.parametrize(
    "number",
    [
        "600100000000004",  # too short
        "60010000000000048",  # too long
        "6002000000000047",  # Luhn-valid, but another prefix
        "6001-00000000004",  # not digits
        "",
    ],
)
def test_foreign_numbers_do_not_match(number):
    t = NumberTemplate("6001", 16)
    assert not t.matches(number)
    with pytest.raises(InvalidInput):
        t.serial(number)


def test_other_prefix_sample_is_refused_for_its_prefix_alone():
    # Keeps the case above honest: the number would pass on length and check digit.
    assert luhn.is_valid("6002000000000047")
    assert NumberTemplate("6002", 16).matches("6002000000000047")


@pytest.mark.parametrize(
    ("prefix", "length", "use_luhn"),
    [
        ("", 16, True),
        ("60A1", 16, True),
        ("-601", 16, True),
        ("6001", 7, True),
        ("6001", 20, True),
        ("6001234", 8, True),  # prefix + check digit fill all 8 digits
        ("60012345", 8, False),  # prefix alone fills all 8 digits
    ],
)
def test_invalid_templates_raise(prefix, length, use_luhn):
    with pytest.raises(InvalidInput):
        NumberTemplate(prefix, length, use_luhn)


def test_smallest_serial_room_is_allowed():
    assert NumberTemplate("600123", 8).capacity == 10
    assert NumberTemplate("6001234", 8, luhn=False).capacity == 10


def test_invalid_input_is_a_typed_domain_error():
    with pytest.raises(DomainError) as info:
        NumberTemplate("x", 16)
    assert info.value.code == "invalid_input"
    assert info.value.message == "number prefix must be digits"


@st.composite
def template_and_serial(draw):
    use_luhn = draw(st.booleans())
    length = draw(st.integers(8, 19))
    prefix = draw(st.text("0123456789", min_size=1, max_size=length - 1 - use_luhn))
    t = NumberTemplate(prefix, length, use_luhn)
    return t, draw(st.integers(0, t.capacity - 1))


@given(template_and_serial())
def test_any_serial_in_range_round_trips(case):
    t, serial = case
    n = t.number(serial)
    assert len(n) == t.length
    assert n.startswith(t.prefix)
    assert t.matches(n)
    assert t.serial(n) == serial
    if t.luhn:
        assert luhn.is_valid(n)


@given(st.integers(0, 10**11 - 2))
def test_neighbouring_serials_give_distinct_numbers(serial):
    t = NumberTemplate("6001", 16)
    assert t.number(serial) != t.number(serial + 1)


# --- ValueRules ----------------------------------------------------------------------------------


def test_default_rules_are_open_value():
    rules = ValueRules()
    assert rules.open_value
    assert rules.min_amount == 1
    assert not rules.topup_allowed
    assert rules.max_balance is None


def test_nominal_rules_are_not_open_value():
    assert not ValueRules(nominal_values=(1000, 2500)).open_value


@pytest.mark.parametrize("nominals", [(0,), (-500,), (1000, 0), (True,), (10.0,), ("1000",)])
def test_nominal_values_are_positive_ints(nominals):
    with pytest.raises(InvalidInput):
        ValueRules(nominal_values=nominals)


@pytest.mark.parametrize(("low", "high"), [(0, 100), (-1, 100), (200, 100)])
def test_min_and_max_amount_are_ordered_and_positive(low, high):
    with pytest.raises(InvalidInput):
        ValueRules(min_amount=low, max_amount=high)


def test_min_may_equal_max():
    rules = ValueRules(min_amount=500, max_amount=500)
    assert rules.min_amount == rules.max_amount == 500


@pytest.mark.parametrize("cap", [0, -1])
def test_max_balance_is_positive(cap):
    with pytest.raises(InvalidInput):
        ValueRules(max_balance=cap)


def test_max_balance_accepts_a_positive_cap():
    assert ValueRules(max_balance=1).max_balance == 1


# --- Programme -----------------------------------------------------------------------------------


def make_programme(**overrides):
    fields = dict(id=1, code="GIFT", name="Gift card", kind=ProgrammeKind.GIFT, currency="EUR",
                  template=NumberTemplate("6001", 16))
    return Programme(**(fields | overrides))


def test_programme_defaults():
    p = make_programme()
    assert p.values == ValueRules()
    assert p.validity_months == 36
    assert p.hold_expiry_policy is HoldExpiryPolicy.REVERSE
    assert p.service_code == "120"


def test_programme_without_validity_is_allowed():
    assert make_programme(validity_months=None).validity_months is None


def test_programme_refuses_malformed_currency():
    with pytest.raises(ValueError):
        make_programme(currency="eur")


@pytest.mark.parametrize(
    "overrides",
    [
        {"hold_ttl_seconds": 0},
        {"hold_ttl_seconds": -5},
        {"validity_months": 0},
        {"validity_months": -12},
        {"service_code": "12"},
        {"service_code": "1201"},
        {"service_code": "1a0"},
    ],
)
def test_programme_validation(overrides):
    with pytest.raises(InvalidInput):
        make_programme(**overrides)


def test_non_ascii_digits_never_match_a_template():
    template = NumberTemplate("6001", 12, luhn=False)
    assert not template.matches("6001" + "\u0660" * 7 + "\u0665")
    with pytest.raises(InvalidInput):
        template.serial("6001" + "\u0660" * 7 + "\u0665")
    with pytest.raises(InvalidInput):
        NumberTemplate("6\u00b2", 16)

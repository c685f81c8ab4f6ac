"""Authorization decisions: sale, debit, credit and top-up; card expiry dates."""

import calendar
from dataclasses import replace
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import (
    CardState,
    CardView,
    Decision,
    DeclineCode,
    NumberTemplate,
    Programme,
    ProgrammeKind,
    ValueRules,
    decide_credit,
    decide_debit,
    decide_sale,
    decide_topup,
    expiry_date,
)

TODAY = date(2025, 6, 15)
STORE = 7
OPEN = ValueRules(min_amount=500, max_amount=20_000)
SINGLE_NOMINAL = ValueRules(nominal_values=(2500,))
NOMINALS = ValueRules(nominal_values=(1000, 2500, 5000))
TOPUP = ValueRules(min_amount=100, max_amount=10_000, topup_allowed=True, max_balance=15_000)


def programme(values=OPEN, validity_months=36):
    return Programme(id=1, code="GIFT", name="Gift card", kind=ProgrammeKind.GIFT, currency="EUR",
                     template=NumberTemplate("6001", 16), values=values, validity_months=validity_months)


def in_pack(values=OPEN, *, sellable=True, store=STORE, balance=0):
    """A card waiting to be sold at a till."""
    return CardView(number="6001000000000048", state=CardState.IN_PACK, programme=programme(values),
                    balance=balance, held=0, pack_sellable=sellable, pack_store_id=store)


def active(values=OPEN, *, balance=10_000, held=0, expires_on=date(2027, 1, 31), state=CardState.ACTIVE):
    """A sold card."""
    return CardView(number="6001000000000048", state=state, programme=programme(values),
                    balance=balance, held=held, expires_on=expires_on)


def assert_declined(decision, code):
    assert decision == Decision(False, 0, code, decision.message)
    assert decision.message  # every decline explains itself


def test_available_is_balance_less_held():
    assert active(balance=10_000, held=2500).available == 7500


# --- sale ----------------------------------------------------------------------------------------


def test_sale_of_single_nominal_defaults_to_it():
    assert decide_sale(in_pack(SINGLE_NOMINAL), None, STORE) == Decision(True, 2500)


def test_sale_of_a_listed_nominal():
    assert decide_sale(in_pack(NOMINALS), 5000, STORE) == Decision(True, 5000)


@pytest.mark.parametrize(("rules", "amount"), [(SINGLE_NOMINAL, 2000), (NOMINALS, 2499), (NOMINALS, None)])
def test_sale_of_another_amount_is_not_a_nominal(rules, amount):
    decision = decide_sale(in_pack(rules), amount, STORE)
    assert_declined(decision, DeclineCode.NOT_A_NOMINAL_VALUE)
    assert str(list(rules.nominal_values)) in decision.message  # tells the cashier what is allowed


@pytest.mark.parametrize("amount", [500, 501, 19_999, 20_000])
def test_open_value_sale_within_range(amount):
    assert decide_sale(in_pack(OPEN), amount, STORE) == Decision(True, amount)


@pytest.mark.parametrize("amount", [None, 0, 499, 20_001])
def test_open_value_sale_outside_range(amount):
    assert_declined(decide_sale(in_pack(OPEN), amount, STORE), DeclineCode.AMOUNT_OUT_OF_RANGE)


def test_sale_from_a_pack_not_released_for_sale():
    assert_declined(decide_sale(in_pack(sellable=False), 1000, STORE), DeclineCode.NOT_FOR_SALE)


def test_sale_at_another_store():
    assert_declined(decide_sale(in_pack(store=STORE), 1000, STORE + 1), DeclineCode.WRONG_STORE)


def test_sale_of_a_pack_not_bound_to_a_store():
    assert decide_sale(in_pack(store=None), 1000, STORE + 1) == Decision(True, 1000)


def test_sale_of_an_active_card():
    card = replace(in_pack(), state=CardState.ACTIVE)
    assert_declined(decide_sale(card, 1000, STORE), DeclineCode.ALREADY_ACTIVE)


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (CardState.GENERATED, DeclineCode.NOT_ACTIVE),
        (CardState.BLOCKED, DeclineCode.BLOCKED),
        (CardState.CLOSED, DeclineCode.CLOSED),
        (CardState.EXPIRED, DeclineCode.EXPIRED),
        (CardState.REPLACED, DeclineCode.REPLACED),
    ],
)
def test_sale_of_a_card_not_in_a_pack(state, code):
    assert_declined(decide_sale(replace(in_pack(), state=state), 1000, STORE), code)


def test_sale_checks_the_card_before_the_amount():
    # A bad amount on a card that is not for sale reports the card, which is the real problem.
    assert_declined(decide_sale(in_pack(sellable=False), 1, STORE), DeclineCode.NOT_FOR_SALE)
    assert_declined(decide_sale(in_pack(store=1), 1, 2), DeclineCode.WRONG_STORE)


def test_sale_up_to_max_balance():
    rules = ValueRules(nominal_values=(5000, 6000), max_balance=5000)
    assert decide_sale(in_pack(rules), 5000, STORE) == Decision(True, 5000)
    assert_declined(decide_sale(in_pack(rules), 6000, STORE), DeclineCode.MAX_BALANCE_EXCEEDED)


# --- debit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [1, 4000, 10_000])
def test_debit_within_balance(amount):
    assert decide_debit(active(balance=10_000), amount, TODAY) == Decision(True, amount)


def test_debit_beyond_balance_is_insufficient_funds():
    decision = decide_debit(active(balance=10_000), 10_001, TODAY)
    assert_declined(decision, DeclineCode.INSUFFICIENT_FUNDS)
    assert "10000" in decision.message


def test_debit_counts_held_funds_as_unavailable():
    card = active(balance=10_000, held=3000)
    assert decide_debit(card, 7000, TODAY) == Decision(True, 7000)
    assert_declined(decide_debit(card, 7001, TODAY), DeclineCode.INSUFFICIENT_FUNDS)


def test_partial_approval_takes_what_is_available():
    card = active(balance=10_000, held=3000)
    assert decide_debit(card, 9000, TODAY, allow_partial=True) == Decision(True, 7000)


def test_partial_approval_does_not_inflate_a_smaller_request():
    assert decide_debit(active(balance=10_000), 400, TODAY, allow_partial=True) == Decision(True, 400)


@pytest.mark.parametrize(("balance", "held"), [(0, 0), (5000, 5000)])
def test_partial_approval_of_nothing_is_a_decline(balance, held):
    card = active(balance=balance, held=held)
    assert_declined(decide_debit(card, 100, TODAY, allow_partial=True), DeclineCode.INSUFFICIENT_FUNDS)


def test_card_is_usable_on_its_expiry_date():
    assert decide_debit(active(expires_on=TODAY), 100, TODAY) == Decision(True, 100)


def test_card_is_refused_after_its_expiry_date():
    decision = decide_debit(active(expires_on=TODAY - timedelta(days=1)), 100, TODAY)
    assert_declined(decision, DeclineCode.EXPIRED)
    assert "2025-06-14" in decision.message


def test_card_without_expiry_never_expires():
    assert decide_debit(active(expires_on=None), 100, date(2099, 1, 1)) == Decision(True, 100)


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (CardState.BLOCKED, DeclineCode.BLOCKED),
        (CardState.IN_PACK, DeclineCode.NOT_ACTIVE),
        (CardState.GENERATED, DeclineCode.NOT_ACTIVE),
        (CardState.CLOSED, DeclineCode.CLOSED),
        (CardState.EXPIRED, DeclineCode.EXPIRED),
        (CardState.REPLACED, DeclineCode.REPLACED),
    ],
)
def test_debit_from_an_unusable_card(state, code):
    assert_declined(decide_debit(active(state=state), 100, TODAY), code)


def test_blocked_card_is_refused_even_with_funds_and_partial_allowed():
    card = active(state=CardState.BLOCKED, balance=10_000)
    assert_declined(decide_debit(card, 100, TODAY, allow_partial=True), DeclineCode.BLOCKED)


# --- credit --------------------------------------------------------------------------------------


def test_credit_onto_an_active_card():
    assert decide_credit(active(balance=1000), 2500, TODAY) == Decision(True, 2500)


def test_credit_respects_max_balance():
    card = active(ValueRules(max_balance=5000), balance=4000)
    assert decide_credit(card, 1000, TODAY) == Decision(True, 1000)
    assert_declined(decide_credit(card, 1001, TODAY), DeclineCode.MAX_BALANCE_EXCEEDED)


def test_credit_onto_a_blocked_or_expired_card():
    assert_declined(decide_credit(active(state=CardState.BLOCKED), 100, TODAY), DeclineCode.BLOCKED)
    assert_declined(decide_credit(active(expires_on=date(2025, 6, 14)), 100, TODAY), DeclineCode.EXPIRED)


# --- top-up --------------------------------------------------------------------------------------


def test_topup_when_the_programme_forbids_it():
    assert_declined(decide_topup(active(OPEN), 1000, TODAY), DeclineCode.TOPUP_NOT_ALLOWED)


@pytest.mark.parametrize("amount", [100, 2500, 5000])
def test_topup_within_range_and_cap(amount):
    assert decide_topup(active(TOPUP, balance=10_000), amount, TODAY) == Decision(True, amount)


@pytest.mark.parametrize("amount", [0, 99, 10_001])
def test_topup_outside_range(amount):
    assert_declined(decide_topup(active(TOPUP, balance=0), amount, TODAY), DeclineCode.AMOUNT_OUT_OF_RANGE)


def test_topup_beyond_max_balance():
    decision = decide_topup(active(TOPUP, balance=10_000), 5001, TODAY)
    assert_declined(decision, DeclineCode.MAX_BALANCE_EXCEEDED)
    assert "15000" in decision.message


def test_topup_of_an_unusable_card_reports_the_card():
    assert_declined(decide_topup(active(TOPUP, state=CardState.BLOCKED), 1000, TODAY), DeclineCode.BLOCKED)
    assert_declined(decide_topup(active(OPEN, expires_on=date(2020, 1, 1)), 1000, TODAY), DeclineCode.EXPIRED)


# --- expiry dates --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("activated", "months", "expires"),
    [
        (date(2023, 1, 31), 1, date(2023, 2, 28)),
        (date(2024, 1, 31), 1, date(2024, 2, 29)),  # leap year
        (date(1900, 1, 31), 1, date(1900, 2, 28)),  # century, not a leap year
        (date(2000, 1, 31), 1, date(2000, 2, 29)),  # divisible by 400: a leap year
        (date(2024, 2, 29), 12, date(2025, 2, 28)),
        (date(2024, 2, 29), 48, date(2028, 2, 29)),
        (date(2024, 3, 31), 1, date(2024, 4, 30)),
        (date(2024, 8, 31), 1, date(2024, 9, 30)),
        (date(2024, 1, 15), 1, date(2024, 2, 15)),
        (date(2024, 11, 15), 3, date(2025, 2, 15)),  # across a year end
        (date(2024, 12, 15), 1, date(2025, 1, 15)),
        (date(2024, 12, 31), 12, date(2025, 12, 31)),
        (date(2024, 6, 15), 36, date(2027, 6, 15)),
        (date(2024, 1, 1), 120, date(2034, 1, 1)),
    ],
)
def test_expiry_date_month_arithmetic(activated, months, expires):
    assert expiry_date(activated, months) == expires


def test_no_validity_no_expiry():
    assert expiry_date(date(2024, 1, 31), None) is None


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2900, 12, 31)), st.integers(1, 600))
def test_expiry_date_lands_the_right_number_of_months_later(activated, months):
    expires = expiry_date(activated, months)
    assert (expires.year * 12 + expires.month) - (activated.year * 12 + activated.month) == months
    last_day = calendar.monthrange(expires.year, expires.month)[1]
    assert expires.day == min(activated.day, last_day)
    assert expires > activated

"""Offline authorization limits: each limit declines just past its boundary, and never before."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import DeclineCode, InvalidInput
from core.limits import OfflineCard, OfflineLimits, StoreBudget, decide_offline_debit

# Generous everywhere, so each test moves exactly one limit to its boundary.
LIMITS = OfflineLimits(floor_limit=5000, card_amount=20000, card_count=5)
BUDGET = StoreBudget("EUR", 100000)


def card(**kw) -> OfflineCard:
    return OfflineCard(**{"available": 50000, "currency": "EUR", **kw})


def test_within_every_limit_approves_the_amount():
    decision = decide_offline_debit(card(), 1234, LIMITS, BUDGET)
    assert decision.approved and decision.amount == 1234 and decision.code is None


def test_floor_limit_boundary():
    limits = OfflineLimits(floor_limit=3000, card_amount=20000, card_count=5)
    assert decide_offline_debit(card(), 3000, limits, BUDGET).amount == 3000
    refused = decide_offline_debit(card(), 3001, limits, BUDGET)
    assert not refused.approved and refused.code is DeclineCode.OFFLINE_LIMIT and refused.amount == 0


def test_card_count_boundary():
    # card_count=5: the fifth offline debit since last online is allowed, the sixth is not.
    assert decide_offline_debit(card(offline_count=4), 100, LIMITS, BUDGET).approved
    refused = decide_offline_debit(card(offline_count=5), 100, LIMITS, BUDGET)
    assert not refused.approved and refused.code is DeclineCode.OFFLINE_LIMIT


def test_card_cumulative_amount_boundary():
    # card_amount=20000 with 17000 already spent offline: 3000 more fits exactly, 3001 does not.
    assert decide_offline_debit(card(offline_amount=17000), 3000, LIMITS, BUDGET).amount == 3000
    refused = decide_offline_debit(card(offline_amount=17000), 3001, LIMITS, BUDGET)
    assert not refused.approved and refused.code is DeclineCode.OFFLINE_LIMIT


def test_store_budget_left_boundary():
    budget = StoreBudget("EUR", 10000, used=8000)
    assert budget.left == 2000
    assert decide_offline_debit(card(), 2000, LIMITS, budget).amount == 2000
    refused = decide_offline_debit(card(), 2001, LIMITS, budget)
    assert not refused.approved and refused.code is DeclineCode.OFFLINE_LIMIT


def test_used_up_budget_declines_even_the_smallest_debit():
    refused = decide_offline_debit(card(), 1, LIMITS, StoreBudget("EUR", 10000, used=10000))
    assert not refused.approved and refused.code is DeclineCode.OFFLINE_LIMIT


def test_last_known_balance_boundary():
    assert decide_offline_debit(card(available=700), 700, LIMITS, BUDGET).amount == 700
    refused = decide_offline_debit(card(available=700), 701, LIMITS, BUDGET)
    assert not refused.approved and refused.code is DeclineCode.INSUFFICIENT_FUNDS


def test_negative_last_known_balance_declines():
    refused = decide_offline_debit(card(available=-50), 1, LIMITS, BUDGET, allow_partial=True)
    assert not refused.approved and refused.code is DeclineCode.INSUFFICIENT_FUNDS


def test_partial_approval_gives_what_is_left():
    decision = decide_offline_debit(card(available=700), 900, LIMITS, BUDGET, allow_partial=True)
    assert decision.approved and decision.amount == 700


def test_partial_approval_of_an_empty_card_declines():
    refused = decide_offline_debit(card(available=0), 900, LIMITS, BUDGET, allow_partial=True)
    assert not refused.approved and refused.code is DeclineCode.INSUFFICIENT_FUNDS


def test_partial_amount_is_still_held_to_the_offline_limits():
    # The partial amount (the whole 7000 left) is over the floor limit: decline, never approve more than allowed.
    refused = decide_offline_debit(card(available=7000), 9000, LIMITS, BUDGET, allow_partial=True)
    assert not refused.approved and refused.code is DeclineCode.OFFLINE_LIMIT


def test_deny_list_is_checked_first():
    # Every other check would decline too; the deny list names the decline.
    denied = card(deny_listed=True, available=0, currency="USD", offline_count=99, offline_amount=10**9)
    refused = decide_offline_debit(denied, 10**9, OfflineLimits(), StoreBudget("EUR", 0))
    assert not refused.approved and refused.code is DeclineCode.DENY_LISTED


def test_deny_listed_card_declines_even_within_limits():
    refused = decide_offline_debit(card(deny_listed=True), 100, LIMITS, BUDGET)
    assert not refused.approved and refused.code is DeclineCode.DENY_LISTED


def test_budget_in_another_currency_declines():
    refused = decide_offline_debit(card(currency="USD"), 100, LIMITS, BUDGET)
    assert not refused.approved and refused.code is DeclineCode.OFFLINE_LIMIT
    assert "EUR" in refused.message and "USD" in refused.message


def test_default_limits_disable_offline_debits():
    refused = decide_offline_debit(card(), 1, OfflineLimits(), BUDGET)
    assert not refused.approved and refused.code is DeclineCode.OFFLINE_LIMIT


@pytest.mark.parametrize("field", ["floor_limit", "card_amount", "card_count"])
@pytest.mark.parametrize("value", [-1, 1.0, 10.5, True, "100", None])
def test_invalid_limit_values_are_refused(field, value):
    with pytest.raises(InvalidInput):
        OfflineLimits(**{field: value})


def test_valid_limits_are_kept():
    assert OfflineLimits(1, 2, 3) == OfflineLimits(floor_limit=1, card_amount=2, card_count=3)


small = st.integers(min_value=0, max_value=20000)


@given(
    available=st.integers(min_value=-1000, max_value=20000), offline_amount=small,
    offline_count=st.integers(min_value=0, max_value=10), deny_listed=st.booleans(),
    currency=st.sampled_from(["EUR", "USD"]), amount=st.integers(min_value=1, max_value=20000),
    floor=small, card_amount=small, card_count=st.integers(min_value=0, max_value=10),
    budget_amount=small, budget_used=small, allow_partial=st.booleans(),
)
def test_an_approved_amount_respects_every_limit(available, offline_amount, offline_count, deny_listed, currency,
                                                 amount, floor, card_amount, card_count, budget_amount, budget_used,
                                                 allow_partial):
    offline = OfflineCard(available, currency, offline_amount, offline_count, deny_listed)
    limits = OfflineLimits(floor, card_amount, card_count)
    budget = StoreBudget("EUR", budget_amount, budget_used)
    decision = decide_offline_debit(offline, amount, limits, budget, allow_partial=allow_partial)
    within_all = (not deny_listed and currency == "EUR" and amount <= available and amount <= floor
                  and offline_count + 1 <= card_count and offline_amount + amount <= card_amount
                  and amount <= budget.left)
    if decision.approved:
        assert 0 < decision.amount <= amount
        assert not deny_listed and currency == budget.currency
        assert decision.amount <= available
        assert decision.amount <= floor
        assert offline_count + 1 <= card_count
        assert offline_amount + decision.amount <= card_amount
        assert decision.amount <= budget.left
        assert decision.amount == amount or allow_partial
    else:
        assert decision.code is not None and decision.amount == 0
    # Nothing within every limit is refused.
    if within_all:
        assert decision.approved and decision.amount == amount

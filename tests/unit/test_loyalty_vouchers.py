"""E-vouchers: voucher, basket and card in → approval with a discount, or a stable decline code."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import IllegalTransition, InvalidInput
from core.limits import OfflineLimits
from core.loyalty.vouchers import (
    Voucher,
    VoucherCard,
    VoucherDecline,
    VoucherEvent,
    VoucherKind,
    VoucherState,
    cancel_voucher,
    decide_voucher,
    decide_voucher_offline,
    next_voucher_state,
    offline_allowed,
    reverse_voucher_use,
    use_voucher,
)
from core.money import Money

NOW = datetime(2025, 6, 15, 12, tzinfo=UTC)
FROM, TO = datetime(2025, 6, 1, tzinfo=UTC), datetime(2025, 7, 1, tzinfo=UTC)
SECOND = timedelta(seconds=1)
MY_CARD = VoucherCard("6001000000000048", customer="C1")


def eur(minor: int) -> Money:
    return Money("EUR", minor)


def voucher(**kw) -> Voucher:
    """10.00 EUR off, single use, valid in June 2025."""
    return Voucher(**{"code": "V-1", "kind": VoucherKind.VALUE, "value": 1_000, "currency": "EUR",
                      "valid_from": FROM, "valid_to": TO, **kw})


def declined(decision, code: VoucherDecline) -> bool:
    return not decision.approved and decision.code is code and decision.discount_minor == 0 and decision.message


def test_single_use_voucher_is_used_once_and_a_reversed_use_makes_it_usable_again():
    ten_off = voucher()
    first = decide_voucher(ten_off, eur(5_000), NOW)
    assert first.approved and first.discount_minor == 1_000 and first.code is None
    used = use_voucher(ten_off)
    assert (used.state, used.uses, used.uses_left) == (VoucherState.USED, 1, 0)
    assert declined(decide_voucher(used, eur(5_000), NOW), VoucherDecline.USED_UP)
    with pytest.raises(IllegalTransition):
        use_voucher(used)
    again = reverse_voucher_use(used)
    assert (again.state, again.uses) == (VoucherState.ACTIVE, 0)
    assert decide_voucher(again, eur(5_000), NOW).approved
    with pytest.raises(IllegalTransition):
        reverse_voucher_use(again)


def test_multi_use_voucher_counts_its_uses():
    three_times = voucher(max_uses=3)
    for expected_uses in (1, 2, 3):
        assert decide_voucher(three_times, eur(5_000), NOW).approved
        three_times = use_voucher(three_times)
        assert three_times.uses == expected_uses
    assert three_times.state is VoucherState.USED
    assert declined(decide_voucher(three_times, eur(5_000), NOW), VoucherDecline.USED_UP)


@pytest.mark.parametrize("at, approved, code", [
    (FROM - SECOND, False, VoucherDecline.NOT_YET_VALID),
    (FROM, True, None),
    (TO - SECOND, True, None),
    (TO, False, VoucherDecline.EXPIRED),  # the window ends just before valid_to
])
def test_validity_window_edges(at, approved, code):
    decision = decide_voucher(voucher(), eur(5_000), at)
    assert (decision.approved, decision.code) == (approved, code)


def test_open_ended_window():
    always = voucher(valid_from=None, valid_to=None)
    assert decide_voucher(always, eur(5_000), datetime(1999, 1, 1, tzinfo=UTC)).approved
    assert decide_voucher(always, eur(5_000), datetime(2099, 1, 1, tzinfo=UTC)).approved


@pytest.mark.parametrize("bps, basket, discount", [
    (1_500, 1_999, 299),  # 299.85 floored
    (1_500, 2_000, 300),
    (10_000, 2_345, 2_345),
    (1, 9_999, 0),  # would take nothing off: declined
    (3_333, 3, 0),
])
def test_percent_voucher_rounds_down(bps, basket, discount):
    decision = decide_voucher(voucher(kind=VoucherKind.PERCENT, value=bps), eur(basket), NOW)
    if discount:
        assert decision.approved and decision.discount_minor == discount
    else:
        assert declined(decision, VoucherDecline.NOTHING_TO_DISCOUNT)


def test_value_voucher_takes_at_most_the_basket():
    assert decide_voucher(voucher(value=1_000), eur(750), NOW).discount_minor == 750
    assert declined(decide_voucher(voucher(), eur(0), NOW), VoucherDecline.NOTHING_TO_DISCOUNT)


def test_minimum_basket_is_included():
    at_least_50 = voucher(min_basket=5_000)
    assert decide_voucher(at_least_50, eur(5_000), NOW).approved
    assert declined(decide_voucher(at_least_50, eur(4_999), NOW), VoucherDecline.BELOW_MIN_BASKET)


@pytest.mark.parametrize("binding, presented, code", [
    ({"card": MY_CARD.number}, MY_CARD, None),
    ({"card": MY_CARD.number}, VoucherCard("6001000000000055", customer="C1"), VoucherDecline.WRONG_CARD),
    ({"card": MY_CARD.number}, None, VoucherDecline.CARD_REQUIRED),
    ({"customer": "C1"}, VoucherCard("6001000000000055", customer="C1"), None),  # any card of the customer
    ({"customer": "C1"}, VoucherCard("6001000000000063", customer="C2"), VoucherDecline.WRONG_CARD),
    ({"customer": "C1"}, VoucherCard("6001000000000063"), VoucherDecline.WRONG_CARD),  # anonymous card
    ({"customer": "C1"}, None, VoucherDecline.CARD_REQUIRED),
    ({}, None, None),  # a bearer voucher
    ({}, MY_CARD, None),
])
def test_binding_to_a_card_or_customer(binding, presented, code):
    decision = decide_voucher(voucher(**binding), eur(5_000), NOW, presented)
    assert (decision.approved, decision.code) == (code is None, code)


def test_cancelled_voucher_is_refused_and_stays_cancelled():
    cancelled = cancel_voucher(voucher())
    assert cancelled.state is VoucherState.CANCELLED
    assert declined(decide_voucher(cancelled, eur(5_000), NOW), VoucherDecline.CANCELLED)
    with pytest.raises(IllegalTransition):
        use_voucher(cancelled)
    with pytest.raises(IllegalTransition):
        cancel_voucher(cancelled)


def test_a_use_on_a_since_cancelled_voucher_can_still_be_reversed():
    cancelled = cancel_voucher(use_voucher(voucher(max_uses=2)))
    reversed_ = reverse_voucher_use(cancelled)
    assert (reversed_.state, reversed_.uses) == (VoucherState.CANCELLED, 0)
    assert declined(decide_voucher(reversed_, eur(5_000), NOW), VoucherDecline.CANCELLED)


def test_a_used_up_voucher_cannot_be_cancelled():
    with pytest.raises(IllegalTransition):
        cancel_voucher(use_voucher(voucher()))


@pytest.mark.parametrize("state, code", [
    (VoucherState.EXPIRED, VoucherDecline.EXPIRED),
    (VoucherState.ISSUED, VoucherDecline.NOT_ACTIVE),
])
def test_expired_and_not_yet_active(state, code):
    assert declined(decide_voucher(voucher(state=state), eur(5_000), NOW), code)


def test_lifecycle_transitions():
    assert next_voucher_state(VoucherState.ISSUED, VoucherEvent.ACTIVATE) is VoucherState.ACTIVE
    assert next_voucher_state("active", VoucherEvent.EXPIRE) is VoucherState.EXPIRED
    for state in (VoucherState.EXPIRED, VoucherState.CANCELLED, VoucherState.USED):
        with pytest.raises(IllegalTransition):
            next_voucher_state(state, VoucherEvent.ACTIVATE)


def test_currency_must_match():
    assert declined(decide_voucher(voucher(), Money("USD", 5_000), NOW), VoucherDecline.CURRENCY_MISMATCH)


def test_first_failing_check_names_the_decline():
    # Cancelled, out of its window, bound to another card and under the minimum basket: cancelled wins.
    everything_wrong = voucher(state=VoucherState.CANCELLED, card="X", min_basket=10**6)
    assert decide_voucher(everything_wrong, eur(1), TO + SECOND, MY_CARD).code is VoucherDecline.CANCELLED
    assert decide_voucher(replace(everything_wrong, state=VoucherState.ACTIVE), eur(1), TO + SECOND,
                          MY_CARD).code is VoucherDecline.EXPIRED


@pytest.mark.parametrize("kw, message", [
    ({"kind": VoucherKind.PERCENT, "value": 10_001}, "voucher value"),
    ({"value": 0}, "voucher value"),
    ({"valid_from": TO, "valid_to": FROM}, "ends after"),
    ({"valid_to": datetime(2025, 7, 1)}, "aware"),
    ({"max_uses": 0}, "maximum uses"),
    ({"uses": 2}, "uses"),
    ({"uses": 1}, "active voucher has a use left"),
    ({"state": VoucherState.USED}, "every use taken"),
    ({"state": VoucherState.ISSUED, "max_uses": 2, "uses": 1}, "issued"),
    ({"currency": "eur"}, "currency"),
    ({"kind": "gift"}, "gift"),
])
def test_voucher_validation(kw, message):
    with pytest.raises(InvalidInput, match=message):
        voucher(**kw)


def test_decision_inputs_are_validated():
    with pytest.raises(InvalidInput):
        decide_voucher(voucher(), 5_000, NOW)
    with pytest.raises(InvalidInput):
        decide_voucher(voucher(), eur(-1), NOW)
    with pytest.raises(InvalidInput):
        decide_voucher(voucher(), eur(5_000), datetime(2025, 6, 15))


# --- offline -----------------------------------------------------------------------------------------

LIMITS = OfflineLimits(floor_limit=2_000, card_amount=10_000, card_count=5)


@pytest.mark.parametrize("kw, allowed", [
    ({"value": 2_000}, True),  # single use, worth the floor limit exactly
    ({"value": 2_001}, False),
    ({"value": 500, "max_uses": 2}, False),  # uses elsewhere cannot be seen offline
    ({"kind": VoucherKind.PERCENT, "value": 500}, False),  # its worth depends on the basket
])
def test_offline_only_single_use_value_vouchers_under_the_floor_limit(kw, allowed):
    assert offline_allowed(voucher(**kw), LIMITS) is allowed
    assert offline_allowed(voucher(**kw), OfflineLimits()) is False  # offline debits disabled


def test_offline_decision():
    assert decide_voucher_offline(voucher(), eur(5_000), NOW, None, LIMITS).discount_minor == 1_000
    percent = voucher(kind=VoucherKind.PERCENT, value=500)
    assert declined(decide_voucher_offline(percent, eur(5_000), NOW, None, LIMITS), VoucherDecline.OFFLINE_NOT_ALLOWED)
    # A voucher refused anyway says why, not that central is unreachable.
    refused_anyway = decide_voucher_offline(cancel_voucher(percent), eur(5_000), NOW, None, LIMITS)
    assert declined(refused_anyway, VoucherDecline.CANCELLED)


@given(st.sampled_from(list(VoucherKind)), st.integers(1, 10**6), st.integers(0, 10**7), st.integers(1, 5))
def test_discount_never_exceeds_the_basket_or_the_voucher(kind, value, basket, max_uses):
    if kind is VoucherKind.PERCENT:
        value = value % 10_000 + 1
    the_voucher = voucher(kind=kind, value=value, max_uses=max_uses)
    decision = decide_voucher(the_voucher, eur(basket), NOW)
    expected = min(value, basket) if kind is VoucherKind.VALUE else basket * value // 10_000
    assert decision.discount_minor == expected and decision.approved is (expected > 0)
    assert decision.discount_minor <= basket
    for _ in range(max_uses):
        the_voucher = use_voucher(the_voucher)
    assert decide_voucher(the_voucher, eur(basket), NOW).code is VoucherDecline.USED_UP
    for _ in range(max_uses):
        the_voucher = reverse_voucher_use(the_voucher)
    assert the_voucher == voucher(kind=kind, value=value, max_uses=max_uses)

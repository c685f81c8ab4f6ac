"""Points lifetime: pending, available, spent first in first out, expired by lot, taken back on returns."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import DomainError, InvalidInput
from core.loyalty import (
    Combination,
    Criteria,
    EarningScheme,
    InsufficientPoints,
    Lot,
    MovementKind,
    PerValue,
    PointsBalances,
    PointsBook,
    PointsPolicy,
    Receipt,
    ReceiptLine,
    SchemeSet,
)

TZ = timezone(timedelta(hours=1))
JAN = datetime(2025, 1, 1, 12, tzinfo=TZ)
DAY = timedelta(days=1)
POLICY = PointsPolicy(pending=14 * DAY, lifetime=365 * DAY)  # spendable after two weeks, gone after a year
EARN, SPEND, EXPIRY = MovementKind.EARN, MovementKind.SPEND, MovementKind.EXPIRY
CLAWBACK, CLAWBACK_DEBT, DEBT_REPAYMENT = MovementKind.CLAWBACK, MovementKind.CLAWBACK_DEBT, MovementKind.DEBT_REPAYMENT


def book_of(*earnings: tuple[str, int, datetime], policy: PointsPolicy = POLICY) -> PointsBook:
    """A book after the given (lot id, points, when) earnings, the lot id doubling as the receipt id."""
    book = PointsBook()
    for lot_id, points, at in earnings:
        book = book.earn(lot_id, points, at, policy, receipt=lot_id).book
    return book


def moves(change) -> list[tuple[str, int, str | None]]:
    return [(m.kind.value, m.points, m.lot) for m in change.movements]


# --- pending, then available ----------------------------------------------------------------------------------------

def test_earned_points_are_pending_then_available():
    change = PointsBook().earn("L1", 100, JAN, POLICY, receipt="R1")
    assert moves(change) == [("earn", 100, "L1")]
    assert change.book.lots == (Lot("L1", 100, JAN, JAN + 14 * DAY, JAN + 365 * DAY, "R1"),)
    assert change.book.balances(JAN) == PointsBalances(available=0, pending=100, debt=0)
    assert change.book.balances(JAN + 14 * DAY - timedelta(seconds=1)).pending == 100
    assert change.book.balances(JAN + 14 * DAY) == PointsBalances(available=100, pending=0, debt=0)


def test_pending_points_cannot_be_spent():
    book = book_of(("L1", 100, JAN), ("L2", 50, JAN + 10 * DAY))
    with pytest.raises(InsufficientPoints) as refused:
        book.spend(1, JAN + 13 * DAY)
    assert (refused.value.requested, refused.value.available, refused.value.code) == (1, 0, "insufficient_points")
    assert isinstance(refused.value, DomainError)
    # Two weeks on, L1 is available and L2 still pending: 100 may be spent, not 101.
    with pytest.raises(InsufficientPoints) as refused:
        book.spend(101, JAN + 14 * DAY)
    assert refused.value.available == 100
    assert moves(book.spend(100, JAN + 14 * DAY)) == [("spend", -100, "L1")]


def test_without_a_pending_period_points_are_spendable_at_once_and_may_never_expire():
    book = PointsBook().earn("L1", 10, JAN).book
    assert book.lots[0].expires_at is None
    assert book.balances(JAN) == PointsBalances(10, 0, 0)
    assert book.expire(JAN + 100 * 365 * DAY).movements == ()


# --- spending -------------------------------------------------------------------------------------------------------

def test_spend_takes_the_lot_expiring_first_then_the_one_earned_first():
    short = PointsPolicy(lifetime=30 * DAY)
    forever = PointsPolicy()
    book = PointsBook()
    for lot_id, points, at, policy in [
        ("FOREVER", 100, JAN, forever),  # never expires: used last
        ("YEAR-A", 40, JAN + 1 * DAY, PointsPolicy(lifetime=365 * DAY)),
        ("YEAR-B", 40, JAN + 2 * DAY, PointsPolicy(lifetime=364 * DAY)),  # earned later, expires the same day as A
        ("MONTH", 30, JAN + 20 * DAY, short),  # earned last, expires first
    ]:
        book = book.earn(lot_id, points, at, policy).book
    change = book.spend(150, JAN + 21 * DAY, reference="REDEMPTION-1")
    assert moves(change) == [("spend", -30, "MONTH"), ("spend", -40, "YEAR-A"), ("spend", -40, "YEAR-B"),
                             ("spend", -40, "FOREVER")]
    assert {m.reference for m in change.movements} == {"REDEMPTION-1"}
    assert [(lot.id, lot.points) for lot in change.book.lots] == [("FOREVER", 60)]
    assert change.points == -150


def test_spend_skips_pending_lots_and_lots_past_their_expiry():
    book = book_of(("OLD", 10, JAN), ("NEW", 20, JAN + 360 * DAY), ("MID", 30, JAN + 100 * DAY))
    at = JAN + 366 * DAY  # OLD has expired (the job has not run yet), NEW is still pending
    assert book.balances(at) == PointsBalances(available=30, pending=20, debt=0)
    assert moves(book.spend(30, at)) == [("spend", -30, "MID")]


# --- expiry ---------------------------------------------------------------------------------------------------------

def test_expiry_across_lots_first_in_first_out():
    book = book_of(("JAN", 100, JAN), ("FEB", 100, JAN + 31 * DAY), ("MAR", 100, JAN + 59 * DAY))
    book = book.spend(150, JAN + 80 * DAY).book  # all of JAN and half of FEB
    assert [(lot.id, lot.points) for lot in book.lots] == [("FEB", 50), ("MAR", 100)]

    first_run = book.expire(JAN + 365 * DAY + 31 * DAY)  # FEB's last instant has passed, MAR's not yet
    assert moves(first_run) == [("expiry", -50, "FEB")]
    assert first_run.book.balances(JAN + 396 * DAY) == PointsBalances(available=100, pending=0, debt=0)
    assert first_run.book.expire(JAN + 396 * DAY).movements == ()  # the job may run again: nothing twice

    later = first_run.book.expire(JAN + 365 * DAY + 59 * DAY)  # at MAR's expiry instant exactly
    assert moves(later) == [("expiry", -100, "MAR")] and later.book == PointsBook()


def test_the_expiry_job_over_a_year_of_earning():
    # An earning on the 1st of every month, 10 points each; run the job a year and a half later.
    earnings = [(f"M{m:02d}", 10, JAN + m * 30 * DAY) for m in range(12)]
    book = book_of(*earnings)
    at = JAN + 365 * DAY + 5 * 30 * DAY + DAY  # the first six monthly lots are past their year
    change = book.expire(at)
    assert [m.lot for m in change.movements] == ["M00", "M01", "M02", "M03", "M04", "M05"]
    assert change.points == -60 and change.book.balance == 60


# --- returns --------------------------------------------------------------------------------------------------------

def test_a_return_takes_points_from_its_own_receipt_first_even_when_pending():
    book = book_of(("R1", 100, JAN), ("R2", 80, JAN + 20 * DAY))  # R2 is pending at the return
    change = book.claw_back(50, JAN + 21 * DAY, from_receipt="R2")
    assert moves(change) == [("clawback", -50, "R2")]
    assert change.book.balances(JAN + 21 * DAY) == PointsBalances(available=100, pending=30, debt=0)


def test_a_return_beyond_its_receipt_takes_first_in_first_out_then_makes_a_debt():
    book = book_of(("R1", 100, JAN), ("R2", 80, JAN + 20 * DAY), ("R3", 30, JAN + 25 * DAY))
    book = book.spend(60, JAN + 34 * DAY).book  # R1 has 40 left
    change = book.claw_back(200, JAN + 40 * DAY, from_receipt="R2")
    assert moves(change) == [("clawback", -80, "R2"), ("clawback", -40, "R1"), ("clawback", -30, "R3"),
                             ("clawback_debt", -50, None)]
    assert change.book.lots == () and change.book.debt == 50
    assert change.book.balances(JAN + 40 * DAY) == PointsBalances(available=0, pending=0, debt=50)
    assert change.book.balance == -50


def test_a_debt_is_paid_by_the_next_earnings_first():
    book = PointsBook().claw_back(70, JAN, from_receipt="R9").book  # a return with no points left at all
    assert book.debt == 70 and book.balance == -70

    first = book.earn("L1", 50, JAN + DAY, POLICY, receipt="R10")
    assert moves(first) == [("debt_repayment", 50, None)] and first.book.lots == () and first.book.debt == 20
    second = first.book.earn("L2", 50, JAN + 2 * DAY, POLICY, receipt="R11")
    assert moves(second) == [("debt_repayment", 20, None), ("earn", 30, "L2")]
    assert second.book.debt == 0 and second.book.balances(JAN + 16 * DAY) == PointsBalances(30, 0, 0)


def test_returning_one_line_takes_back_what_that_line_earned():
    scheme = EarningScheme("BASE", 1, JAN - DAY, PerValue(1, 100, "EUR"), criteria=Criteria())
    sold = Receipt("R1", "C1", "S01", JAN, "EUR", (ReceiptLine("COAT", 1000, 12999), ReceiptLine("HAT", 1000, 2550)))
    earning = SchemeSet.compile([scheme], Combination.MAX).evaluate(sold)
    book = PointsBook().earn("L1", earning.total, JAN, POLICY, receipt=sold.id).book
    returned = book.claw_back(earning.points_of_lines([0]), JAN + 3 * DAY, from_receipt=sold.id)
    assert moves(returned) == [("clawback", -129, "L1")]
    assert returned.book.balances(JAN + 14 * DAY) == PointsBalances(available=25, pending=0, debt=0)


# --- validation -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: PointsBook().earn("L1", 0, JAN),
    lambda: PointsBook().earn("L1", 1.5, JAN),
    lambda: PointsBook().earn("L1", 10, datetime(2025, 1, 1)),
    lambda: book_of(("L1", 10, JAN)).earn("L1", 10, JAN),  # the same lot twice
    lambda: PointsBook().spend(-5, JAN),
    lambda: PointsBook().claw_back(0, JAN, from_receipt="R1"),
    lambda: PointsPolicy(pending=10 * DAY, lifetime=10 * DAY),
    lambda: PointsPolicy(pending=-DAY),
    lambda: PointsBook(debt=-1),
    lambda: Lot("L1", 10, JAN, JAN - DAY),
])
def test_invalid_operations_are_refused(call):
    with pytest.raises(InvalidInput):
        call()


# --- properties -----------------------------------------------------------------------------------------------------

policies = st.builds(PointsPolicy, st.integers(0, 5).map(lambda d: d * DAY),
                     st.one_of(st.none(), st.integers(6, 40).map(lambda d: d * DAY)))
operations = st.lists(st.one_of(
    st.tuples(st.just("earn"), st.integers(1, 200), policies, st.sampled_from(["R1", "R2", "R3", None])),
    st.tuples(st.just("spend"), st.integers(1, 300)),
    st.tuples(st.just("expire")),
    st.tuples(st.just("claw_back"), st.integers(1, 300), st.sampled_from(["R1", "R2", "R3"])),
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(operations, st.lists(st.integers(0, 4 * 24), min_size=40, max_size=40))
def test_points_are_conserved_whatever_happens(ops, gaps_in_hours):
    book, at = PointsBook(), JAN
    earned = spent = expired = taken_back = movements_total = 0
    for n, (op, gap) in enumerate(zip(ops, gaps_in_hours)):
        at += timedelta(hours=gap)
        if op[0] == "earn":
            change = book.earn(f"L{n}", op[1], at, op[2], op[3])
            earned += op[1]
            assert change.points == op[1]
        elif op[0] == "spend":
            available = book.balances(at).available
            try:
                change = book.spend(op[1], at)
            except InsufficientPoints as refused:
                assert op[1] > available == refused.available
                continue
            spent += op[1]
            assert change.points == -op[1]
            assert all(m.kind is SPEND and book_lot(book, m.lot).is_available(at) for m in change.movements)
        elif op[0] == "expire":
            change = book.expire(at)
            expired -= change.points
            assert all(m.kind is EXPIRY for m in change.movements)
            assert not any(lot.is_expired(at) for lot in change.book.lots)
            # Once expired lots are gone, the balances account for every point.
            b = change.book.balances(at)
            assert b.available + b.pending - b.debt == change.book.balance
        else:
            change = book.claw_back(op[1], at, op[2])
            taken_back += op[1]
            assert change.points == -op[1]
        book = change.book
        movements_total += change.points
        assert book.balance == earned - spent - expired - taken_back == movements_total
        assert book.debt >= 0 and all(lot.points > 0 for lot in book.lots)
        if book.debt:  # a debt exists only while no live lot could have paid it
            assert not any(not lot.is_expired(at) for lot in book.lots)


def book_lot(book: PointsBook, lot_id: str | None) -> Lot:
    return next(lot for lot in book.lots if lot.id == lot_id)

"""Points lifetime: lots that are pending, then available, then expire; spending, expiry and returns.

Every earning makes a lot: it is pending until ``available_at`` (pending points cannot be spent) and
expires at ``expires_at`` (None: never). A :class:`PointsBook` is the lots of one card plus its debt,
an immutable value; each operation returns a :class:`PointsChange`: the new book and the movements it
made, one per lot touched, from which the ledger entries are written (a movement's ``points`` is its
signed change to the card's points balance).

Order of use ("first in, first out"): the lot that expires first, then the one earned first (lots
that never expire come last), then the smaller lot id. A returned purchase takes its points back from
the lots of its own receipt first, then in that order from the card's other live lots (pending ones
too), and what is still missing becomes a debt; the next earnings pay the debt before making a lot.

Conservation: ``balance`` (lots left minus debt) equals the points earned minus those spent, expired
and taken back, and equals the sum of every movement ever made.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from ..errors import DomainError, InvalidInput
from .receipts import check_code

__all__ = ["InsufficientPoints", "PointsPolicy", "Lot", "MovementKind", "PointsMovement", "PointsBalances",
           "PointsChange", "PointsBook", "MAX_POINTS"]

MAX_POINTS = 10**15


class InsufficientPoints(DomainError):
    """A spend asked for more points than the card has available now (pending points do not count)."""

    code = "insufficient_points"

    def __init__(self, requested: int, available: int) -> None:
        super().__init__(f"{requested} points requested, {available} available")
        self.requested = requested
        self.available = available


def _aware(what: str, value: object) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidInput(f"{what} is an aware datetime")
    return value


def _points(value: object) -> int:
    if type(value) is not int or not 0 < value <= MAX_POINTS:
        raise InvalidInput(f"points are a whole number from 1 to {MAX_POINTS}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class PointsPolicy:
    """How long earned points stay pending, and how long after earning they expire (None: never)."""

    pending: timedelta = timedelta(0)
    lifetime: timedelta | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pending, timedelta) or self.pending < timedelta(0):
            raise InvalidInput("the pending period is a duration of zero or more")
        if self.lifetime is not None and (not isinstance(self.lifetime, timedelta) or self.lifetime <= self.pending):
            raise InvalidInput("points must live longer than they are pending")


@dataclass(frozen=True, slots=True)
class Lot:
    """Points earned together: ``points`` is what is left of them."""

    id: str
    points: int
    earned_at: datetime
    available_at: datetime
    expires_at: datetime | None = None
    receipt: str | None = None

    def __post_init__(self) -> None:
        check_code("lot id", self.id)
        _points(self.points)
        _aware("earned_at", self.earned_at)
        if _aware("available_at", self.available_at) < self.earned_at:
            raise InvalidInput("a lot cannot be available before it is earned")
        if self.expires_at is not None and _aware("expires_at", self.expires_at) <= self.available_at:
            raise InvalidInput("a lot must expire after it becomes available")
        if self.receipt is not None:
            check_code("receipt", self.receipt)

    def is_available(self, at: datetime) -> bool:
        return self.available_at <= at and not self.is_expired(at)

    def is_pending(self, at: datetime) -> bool:
        return at < self.available_at

    def is_expired(self, at: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= at


def _fifo(lot: Lot) -> tuple:
    return lot.expires_at is None, lot.expires_at or lot.earned_at, lot.earned_at, lot.id


class MovementKind(StrEnum):
    """What a movement did to the points balance."""

    EARN = "earn"  # +points into a new lot
    DEBT_REPAYMENT = "debt_repayment"  # +points of an earning that went to the debt instead of a lot
    SPEND = "spend"  # -points out of an available lot
    EXPIRY = "expiry"  # -what was left of an expired lot
    CLAWBACK = "clawback"  # -points of a returned purchase, out of a lot
    CLAWBACK_DEBT = "clawback_debt"  # -points of a returned purchase beyond every lot: the debt grows


@dataclass(frozen=True, slots=True)
class PointsMovement:
    """One change to a card's points: ``points`` signed (credits positive); ``lot`` None for debt movements;
    ``reference`` the receipt or redemption behind it, when the caller gave one."""

    kind: MovementKind
    points: int
    lot: str | None
    at: datetime
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class PointsBalances:
    """A card's points at one time: spendable now, still pending, and owed."""

    available: int
    pending: int
    debt: int


@dataclass(frozen=True, slots=True)
class PointsChange:
    """The book after an operation and the movements the operation made."""

    book: PointsBook
    movements: tuple[PointsMovement, ...]

    @property
    def points(self) -> int:
        """The operation's net change to the balance."""
        return sum(m.points for m in self.movements)


@dataclass(frozen=True, slots=True)
class PointsBook:
    """A card's lots (kept in order of use) and its debt."""

    lots: tuple[Lot, ...] = ()
    debt: int = 0

    def __post_init__(self) -> None:
        lots = tuple(self.lots)
        if not all(isinstance(lot, Lot) for lot in lots):
            raise InvalidInput("a points book holds Lots")
        if len({lot.id for lot in lots}) != len(lots):
            raise InvalidInput("lot ids repeat")
        if type(self.debt) is not int or not 0 <= self.debt <= MAX_POINTS:
            raise InvalidInput(f"debt is a whole number of points from 0 to {MAX_POINTS}")
        object.__setattr__(self, "lots", tuple(sorted(lots, key=_fifo)))

    @property
    def balance(self) -> int:
        """Points left in lots minus the debt, whatever their state."""
        return sum(lot.points for lot in self.lots) - self.debt

    def balances(self, at: datetime) -> PointsBalances:
        """Available, pending and owed points at ``at`` (lots past expiry count in neither, job run or not)."""
        return PointsBalances(sum(lot.points for lot in self.lots if lot.is_available(at)),
                              sum(lot.points for lot in self.lots if lot.is_pending(at)), self.debt)

    def earn(self, lot_id: str, points: int, at: datetime, policy: PointsPolicy = PointsPolicy(),
             receipt: str | None = None) -> PointsChange:
        """Credit ``points`` earned at ``at``: the debt first, the rest as lot ``lot_id`` under ``policy``."""
        _points(points)
        _aware("at", at)
        check_code("lot id", lot_id)
        if any(lot.id == lot_id for lot in self.lots):
            raise InvalidInput(f"lot {lot_id} is already in the book")
        repaid = min(points, self.debt)
        movements = []
        if repaid:
            movements.append(PointsMovement(MovementKind.DEBT_REPAYMENT, repaid, None, at, receipt))
        lots = self.lots
        if points > repaid:
            expires_at = at + policy.lifetime if policy.lifetime is not None else None
            lot = Lot(lot_id, points - repaid, at, at + policy.pending, expires_at, receipt)
            lots += (lot,)
            movements.append(PointsMovement(MovementKind.EARN, lot.points, lot.id, at, receipt))
        return PointsChange(PointsBook(lots, self.debt - repaid), tuple(movements))

    def spend(self, points: int, at: datetime, reference: str | None = None) -> PointsChange:
        """Take ``points`` from the lots available at ``at``, first in first out; InsufficientPoints if short."""
        _points(points)
        _aware("at", at)
        available = self.balances(at).available
        if points > available:
            raise InsufficientPoints(points, available)
        return self._take(points, [lot for lot in self.lots if lot.is_available(at)], at, MovementKind.SPEND,
                          reference)

    def expire(self, at: datetime) -> PointsChange:
        """Remove the lots whose expiry is at or before ``at``: one EXPIRY movement per lot, with what was left."""
        _aware("at", at)
        expired = [lot for lot in self.lots if lot.is_expired(at)]
        movements = tuple(PointsMovement(MovementKind.EXPIRY, -lot.points, lot.id, at, lot.receipt) for lot in expired)
        kept = tuple(lot for lot in self.lots if not lot.is_expired(at))
        return PointsChange(PointsBook(kept, self.debt), movements)

    def claw_back(self, points: int, at: datetime, from_receipt: str) -> PointsChange:
        """Take back ``points`` for a returned purchase: from that receipt's lots, then first in first out from
        the other live lots (pending included), then as debt."""
        _points(points)
        _aware("at", at)
        check_code("receipt", from_receipt)
        live = [lot for lot in self.lots if not lot.is_expired(at)]
        order = [lot for lot in live if lot.receipt == from_receipt] + [lot for lot in live
                                                                       if lot.receipt != from_receipt]
        taken = min(points, sum(lot.points for lot in live))
        change = self._take(taken, order, at, MovementKind.CLAWBACK, from_receipt) if taken else PointsChange(self, ())
        owed = points - taken
        if not owed:
            return change
        debt = PointsMovement(MovementKind.CLAWBACK_DEBT, -owed, None, at, from_receipt)
        return PointsChange(PointsBook(change.book.lots, self.debt + owed), change.movements + (debt,))

    def _take(self, points: int, order: list[Lot], at: datetime, kind: MovementKind,
              reference: str | None) -> PointsChange:
        """Take ``points`` (no more than they hold) from the lots of ``order``, in that order."""
        left = points
        changed: dict[str, Lot | None] = {}
        movements = []
        for lot in order:
            if not left:
                break
            used = min(left, lot.points)
            left -= used
            changed[lot.id] = replace(lot, points=lot.points - used) if used < lot.points else None
            movements.append(PointsMovement(kind, -used, lot.id, at, reference))
        lots = tuple(changed.get(lot.id, lot) for lot in self.lots)
        return PointsChange(PointsBook(tuple(lot for lot in lots if lot is not None), self.debt), tuple(movements))

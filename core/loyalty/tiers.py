"""Tiers, redemption of points at the till, e-money conversion and discount levels.

Qualifying totals
    A tier plan qualifies cards on turnover (minor units) or on points earned, summed over a rolling
    window: the total at an instant ``t`` counts the facts with ``t - period < fact.at <= t``. Returns
    are negative facts and lower the total.

Reviews
    Period boundaries are ``anchor + k * period`` for every integer ``k``. A card is reviewed at each
    boundary after it entered its tier; a review at boundary ``B`` is due once ``at >= B`` (one second
    before, nothing happens) and judges the window that ends at ``B``. Upgrades happen at once when the
    rolling total reaches a higher threshold (``UpgradeRule.IMMEDIATE``, checked at every fact) or only
    at reviews (``UpgradeRule.PERIOD_END``). Downgrades only ever happen at reviews, one tier per review
    (``DowngradeRule.ONE_STEP``) or straight to the tier earned (``DowngradeRule.TO_EARNED``).

Grace
    With ``grace_days``, a downgrade found at boundary ``B`` takes effect at ``B + grace``; purchases
    made during the grace count towards the reviewed period (window ``(B - period, B + grace]``), so a
    card that catches up in time keeps its tier.

Rounding
    Points buy discounts and e-money at exact integer rates. The side credited to the customer is
    floored and the side debited is the least whole amount that pays for it, so a conversion is never in
    the customer's favour and costs them less than one unit (a point or a minor unit) of what they give.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import accumulate
from typing import NamedTuple

from ..errors import InvalidInput
from .receipts import MAX_AMOUNT, check_code

__all__ = [
    "TierBasis", "UpgradeRule", "DowngradeRule", "TierChangeReason", "RedemptionMethod", "RedemptionLimit",
    "Tier", "TierPlan", "TierFact", "TierStatus", "TierChange", "Redemption", "ExchangeRate", "EMoneyRates",
    "Conversion", "DiscountLevel", "rolling_total", "evaluate_tier", "tier_changes", "redemption",
    "emoney_to_points", "points_to_emoney", "discount_level", "discount_for",
]

_BPS = 10_000  # basis points in a whole
MAX_PERIOD_DAYS = 3660


def _int(what: str, value: object, minimum: int = 0, maximum: int = MAX_AMOUNT) -> int:
    if type(value) is not int or not minimum <= value <= maximum:
        raise InvalidInput(f"{what} must be a whole number from {minimum} to {maximum}, got {value!r}")
    return value


def _aware(what: str, value: object) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidInput(f"{what} must be an aware datetime, got {value!r}")
    return value


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


class TierBasis(StrEnum):
    TURNOVER = "turnover"  # minor units spent
    POINTS = "points"  # points earned


class UpgradeRule(StrEnum):
    IMMEDIATE = "immediate"  # as soon as the rolling total reaches a higher threshold
    PERIOD_END = "period_end"  # at the next review only


class DowngradeRule(StrEnum):
    ONE_STEP = "one_step"  # at most one tier down per review
    TO_EARNED = "to_earned"  # straight down to the tier the reviewed period earned


class TierChangeReason(StrEnum):
    THRESHOLD_REACHED = "threshold_reached"  # immediate upgrade
    REVIEW_UPGRADE = "review_upgrade"
    REVIEW_DOWNGRADE = "review_downgrade"
    GRACE_ENDED = "grace_ended"  # a downgrade postponed by the grace, not caught up in time


class RedemptionMethod(StrEnum):
    CURRENT_TIER = "current_tier"  # the card's tier decides rate and cap; a tier without redemption redeems nothing
    FALLBACK = "fallback"  # as CURRENT_TIER, but a tier without redemption redeems at the fallback tier's rate and cap


class RedemptionLimit(StrEnum):
    """What bounded a redemption, for the till's message."""

    CAP = "cap"  # the tier's maximum share of the receipt
    TOTAL = "total"  # the receipt total
    BALANCE = "balance"  # the points available
    REQUESTED = "requested"  # the points the customer chose to spend
    NOT_ALLOWED = "not_allowed"  # no tier the method may use allows redemption


@dataclass(frozen=True, slots=True)
class Tier:
    """One tier: reached at ``threshold`` (on the plan's basis); ``points_per_unit`` points are worth
    ``unit_minor`` minor units when redeemed (100 and 100: 100 points = 1.00 EUR); at most
    ``max_redemption_bps`` of a receipt may be paid with points (0: this tier does not redeem)."""

    code: str
    rank: int
    threshold: int
    points_per_unit: int = 1
    unit_minor: int = 1
    max_redemption_bps: int = 0

    def __post_init__(self) -> None:
        check_code("tier code", self.code)
        _int("tier rank", self.rank, maximum=1000)
        _int("tier threshold", self.threshold)
        _int("points per unit", self.points_per_unit, minimum=1, maximum=10**9)
        _int("unit in minor units", self.unit_minor, minimum=1, maximum=10**9)
        _int("maximum redemption share (bps)", self.max_redemption_bps, maximum=_BPS)

    @property
    def redeems(self) -> bool:
        return self.max_redemption_bps > 0

    def points_value(self, points: int) -> int:
        """Minor units that ``points`` buy, floored."""
        return points * self.unit_minor // self.points_per_unit

    def points_for(self, minor: int) -> int:
        """The fewest points that pay for ``minor`` minor units."""
        return _ceil_div(minor * self.points_per_unit, self.unit_minor)


class TierFact(NamedTuple):
    """One fact of a card's history: turnover (minor units) and points earned at an instant; negative for returns."""

    at: datetime
    turnover: int
    points: int


@dataclass(frozen=True, slots=True)
class TierStatus:
    """A card's tier and the instant it entered it (reviews start at the first boundary after)."""

    code: str
    since: datetime

    def __post_init__(self) -> None:
        check_code("tier code", self.code)
        _aware("tier since", self.since)


@dataclass(frozen=True, slots=True)
class TierChange:
    """A change of tier effective at ``at``; ``qualifying`` is the total that decided it, ``review`` the
    boundary reviewed (None for an immediate upgrade)."""

    from_code: str
    to_code: str
    at: datetime
    reason: TierChangeReason
    qualifying: int
    review: datetime | None = None

    @property
    def is_upgrade(self) -> bool:
        return self.reason in (TierChangeReason.THRESHOLD_REACHED, TierChangeReason.REVIEW_UPGRADE)

    @property
    def status(self) -> TierStatus:
        """The card's status once the change is applied."""
        return TierStatus(self.to_code, self.at)


@dataclass(frozen=True, slots=True)
class TierPlan:
    """A programme's tiers (the lowest, threshold 0, is every card's entry tier) and their rules."""

    basis: TierBasis
    period_days: int
    tiers: tuple[Tier, ...]
    anchor: datetime  # one period boundary; the others are whole periods before and after it
    upgrade: UpgradeRule = UpgradeRule.IMMEDIATE
    downgrade: DowngradeRule = DowngradeRule.ONE_STEP
    grace_days: int = 0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "basis", TierBasis(self.basis))
            object.__setattr__(self, "upgrade", UpgradeRule(self.upgrade))
            object.__setattr__(self, "downgrade", DowngradeRule(self.downgrade))
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        _int("period days", self.period_days, minimum=1, maximum=MAX_PERIOD_DAYS)
        _int("grace days", self.grace_days, maximum=self.period_days - 1)
        _aware("plan anchor", self.anchor)
        if isinstance(self.tiers, (str, bytes)) or not isinstance(self.tiers, Iterable):
            raise InvalidInput("tiers are a sequence of Tier")
        tiers = tuple(self.tiers)
        if not tiers or not all(isinstance(tier, Tier) for tier in tiers):
            raise InvalidInput("a plan has at least one Tier, and only Tiers")
        tiers = tuple(sorted(tiers, key=lambda tier: tier.rank))
        if len({tier.code for tier in tiers}) != len(tiers) or len({tier.rank for tier in tiers}) != len(tiers):
            raise InvalidInput("tier codes and ranks are unique within a plan")
        if tiers[0].threshold != 0:
            raise InvalidInput("the lowest tier is the entry tier: its threshold is 0")
        if any(low.threshold >= high.threshold for low, high in zip(tiers, tiers[1:])):
            raise InvalidInput("thresholds rise strictly with rank")
        object.__setattr__(self, "tiers", tiers)

    @property
    def period(self) -> timedelta:
        return timedelta(days=self.period_days)

    @property
    def entry(self) -> Tier:
        return self.tiers[0]

    def tier(self, code: str) -> Tier:
        """The tier called ``code``; InvalidInput if the plan has none."""
        for tier in self.tiers:
            if tier.code == code:
                return tier
        raise InvalidInput(f"the plan has no tier {code!r}")

    def earned(self, total: int) -> Tier:
        """The highest tier whose threshold ``total`` reaches (the entry tier at least)."""
        reached = self.entry
        for tier in self.tiers:
            if total >= tier.threshold:
                reached = tier
        return reached

    def next_boundary(self, after: datetime) -> datetime:
        """The first period boundary strictly after ``after``."""
        return self.anchor + ((after - self.anchor) // self.period + 1) * self.period

    def downgrade_target(self, current: Tier, earned: Tier) -> Tier:
        """Where a review takes a card of tier ``current`` whose period earned ``earned`` (a lower tier)."""
        if self.downgrade is DowngradeRule.TO_EARNED:
            return earned
        below = self.tiers[self.tiers.index(current) - 1]
        return max(below, earned, key=lambda tier: tier.rank)


class _Totals:
    """Prefix sums of a history on one basis, for window totals in O(log n)."""

    def __init__(self, history: Iterable[TierFact], basis: TierBasis) -> None:
        facts = sorted((_fact(fact) for fact in history), key=lambda fact: fact.at)
        self.times = [fact.at for fact in facts]
        values = (fact.turnover if basis is TierBasis.TURNOVER else fact.points for fact in facts)
        self.sums = [0, *accumulate(values)]

    def window(self, start: datetime, end: datetime) -> int:
        """The total of the facts with ``start < at <= end``."""
        return self.sums[bisect_right(self.times, end)] - self.sums[bisect_right(self.times, start)]


def _fact(fact: object) -> TierFact:
    if not isinstance(fact, tuple) or len(fact) != 3:
        raise InvalidInput(f"a history fact is (at, turnover, points), got {fact!r}")
    at, turnover, points = fact
    _aware("fact time", at)
    _int("fact turnover", turnover, minimum=-MAX_AMOUNT)
    _int("fact points", points, minimum=-MAX_AMOUNT)
    return TierFact(at, turnover, points)


def rolling_total(history: Iterable[TierFact], at: datetime, days: int,
                  basis: TierBasis = TierBasis.TURNOVER) -> int:
    """The total on ``basis`` of the facts in the ``days`` days up to ``at`` (``at - days < fact.at <= at``)."""
    _aware("at", at)
    _int("days", days, minimum=1, maximum=MAX_PERIOD_DAYS)
    return _Totals(history, TierBasis(basis)).window(at - timedelta(days=days), at)


def _threshold_upgrade(plan: TierPlan, totals: _Totals, current: Tier, since: datetime,
                       at: datetime) -> TierChange | None:
    first, last = bisect_right(totals.times, since), bisect_right(totals.times, at)
    for moment in totals.times[first:last]:
        total = totals.window(moment - plan.period, moment)
        earned = plan.earned(total)
        if earned.rank > current.rank:
            return TierChange(current.code, earned.code, moment, TierChangeReason.THRESHOLD_REACHED, total)
    return None


def _review_change(plan: TierPlan, totals: _Totals, current: Tier, since: datetime, at: datetime) -> TierChange | None:
    boundary = plan.next_boundary(since)
    while boundary <= at:
        start = boundary - plan.period
        total = totals.window(start, boundary)
        earned = plan.earned(total)
        if earned.rank > current.rank:
            return TierChange(current.code, earned.code, boundary, TierChangeReason.REVIEW_UPGRADE, total, boundary)
        if earned.rank < current.rank:
            if not plan.grace_days:
                return TierChange(current.code, plan.downgrade_target(current, earned).code, boundary,
                                  TierChangeReason.REVIEW_DOWNGRADE, total, boundary)
            effective = boundary + timedelta(days=plan.grace_days)
            if effective > at:
                return None  # still within the grace: the card may yet catch up
            total = totals.window(start, effective)
            earned = plan.earned(total)
            if earned.rank < current.rank:
                return TierChange(current.code, plan.downgrade_target(current, earned).code, effective,
                                  TierChangeReason.GRACE_ENDED, total, boundary)
        boundary += plan.period
    return None


def _next_change(plan: TierPlan, totals: _Totals, at: datetime, current: TierStatus) -> TierChange | None:
    if current.since > at:
        raise InvalidInput("the card's tier starts after the evaluation time")
    tier = plan.tier(current.code)
    upgrade = None
    if plan.upgrade is UpgradeRule.IMMEDIATE:
        upgrade = _threshold_upgrade(plan, totals, tier, current.since, at)
    review = _review_change(plan, totals, tier, current.since, upgrade.at if upgrade else at)
    if review is not None and (upgrade is None or review.at < upgrade.at):
        return review
    return upgrade


def evaluate_tier(plan: TierPlan, history: Iterable[TierFact], at: datetime,
                  current: TierStatus) -> TierChange | None:
    """The first tier change due to the card by ``at``, or None.

    Apply it (``change.status``) and evaluate again to catch up on several periods; :func:`tier_changes`
    does exactly that. The answer depends only on the plan, the history and ``at``, never on when or how
    often it is asked.
    """
    _aware("at", at)
    return _next_change(plan, _Totals(history, plan.basis), at, current)


def tier_changes(plan: TierPlan, history: Iterable[TierFact], at: datetime,
                 current: TierStatus) -> tuple[TierChange, ...]:
    """Every tier change due to the card by ``at``, in order: the card's tier history from ``current`` on."""
    _aware("at", at)
    totals = _Totals(history, plan.basis)
    changes: list[TierChange] = []
    while (change := _next_change(plan, totals, at, current)) is not None:
        changes.append(change)
        current = change.status
    return tuple(changes)


@dataclass(frozen=True, slots=True)
class Redemption:
    """Points to take from the card and the discount they give; ``tier_code`` names the tier whose rate
    and cap applied (None when none allowed redemption)."""

    points: int
    discount_minor: int
    tier_code: str | None
    limited_by: RedemptionLimit


def redemption(tier: Tier, receipt_total_minor: int, points_available: int,
               method: RedemptionMethod = RedemptionMethod.CURRENT_TIER, fallback_tier: Tier | None = None,
               *, points_wanted: int | None = None) -> Redemption:
    """The largest discount on a receipt that points may pay, within the tier's cap.

    The discount is bounded by the cap (``receipt total * max_redemption_bps``, floored), the receipt
    total, and what the points available (or ``points_wanted``, if fewer) buy at the tier's rate, floored;
    the points taken are the fewest that pay for the discount. With ``RedemptionMethod.FALLBACK`` a tier
    that does not redeem uses ``fallback_tier``'s rate and cap instead; a tier that redeems uses its own.
    """
    _int("receipt total", receipt_total_minor)
    _int("points available", points_available)
    if points_wanted is not None:
        _int("points wanted", points_wanted)
    try:
        method = RedemptionMethod(method)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    applied = tier
    if method is RedemptionMethod.FALLBACK:
        if fallback_tier is None:
            raise InvalidInput("the fallback method needs a fallback tier")
        if not tier.redeems:
            applied = fallback_tier
    if not applied.redeems:
        return Redemption(0, 0, None, RedemptionLimit.NOT_ALLOWED)
    spendable, by_points = points_available, RedemptionLimit.BALANCE
    if points_wanted is not None and points_wanted < points_available:
        spendable, by_points = points_wanted, RedemptionLimit.REQUESTED
    bounds = ((receipt_total_minor * applied.max_redemption_bps // _BPS, RedemptionLimit.CAP),
              (receipt_total_minor, RedemptionLimit.TOTAL),
              (applied.points_value(spendable), by_points))
    discount, limited_by = min(bounds, key=lambda bound: bound[0])
    return Redemption(applied.points_for(discount), discount, applied.code, limited_by)


@dataclass(frozen=True, slots=True)
class ExchangeRate:
    """``points`` points are worth ``minor`` minor units."""

    points: int
    minor: int

    def __post_init__(self) -> None:
        _int("rate points", self.points, minimum=1, maximum=10**9)
        _int("rate minor units", self.minor, minimum=1, maximum=10**9)


@dataclass(frozen=True, slots=True)
class EMoneyRates:
    """Configured rates between a card's e-money and its points: ``to_points`` when e-money buys points,
    ``to_emoney`` when points are cashed in. Converting there and back can never gain value."""

    to_points: ExchangeRate
    to_emoney: ExchangeRate

    def __post_init__(self) -> None:
        buy, sell = self.to_points, self.to_emoney
        # points bought per minor unit must not exceed points needed per minor unit cashed in
        if buy.points * sell.minor > sell.points * buy.minor:
            raise InvalidInput("e-money would buy more points than the same points cash in")


@dataclass(frozen=True, slots=True)
class Conversion:
    """A conversion: the points and the minor units that change hands (one debited, the other credited)."""

    points: int
    minor: int


def emoney_to_points(minor: int, rates: EMoneyRates) -> Conversion:
    """Buy points with up to ``minor`` of e-money: points floored, e-money taken is the least that pays
    for them (any remainder stays as e-money)."""
    _int("e-money amount", minor)
    rate = rates.to_points
    points = minor * rate.points // rate.minor
    return Conversion(points, _ceil_div(points * rate.minor, rate.points))


def points_to_emoney(points: int, rates: EMoneyRates) -> Conversion:
    """Cash in up to ``points`` as e-money: e-money floored, points taken are the fewest that pay for it
    (any remainder stays as points)."""
    _int("points", points)
    rate = rates.to_emoney
    minor = points * rate.minor // rate.points
    return Conversion(_ceil_div(minor * rate.points, rate.minor), minor)


@dataclass(frozen=True, slots=True)
class DiscountLevel:
    """From ``threshold`` (turnover in the period, minor units) a card's discount is ``bps`` basis points."""

    threshold: int
    bps: int

    def __post_init__(self) -> None:
        _int("discount level threshold", self.threshold)
        _int("discount (bps)", self.bps, maximum=_BPS)


def discount_level(levels: Iterable[DiscountLevel], turnover_in_period: int) -> int:
    """The discount (bps) of the highest level whose threshold the turnover reaches; 0 below every level."""
    if type(turnover_in_period) is not int:
        raise InvalidInput("turnover is a whole number of minor units")
    ordered = sorted(levels, key=lambda level: level.threshold)
    if any(low.threshold == high.threshold for low, high in zip(ordered, ordered[1:])):
        raise InvalidInput("discount level thresholds are unique")
    bps = 0
    for level in ordered:
        if turnover_in_period >= level.threshold:
            bps = level.bps
    return bps


def discount_for(amount_minor: int, bps: int) -> int:
    """``bps`` of ``amount_minor``, floored (never in the customer's favour)."""
    _int("amount", amount_minor)
    _int("discount (bps)", bps, maximum=_BPS)
    return amount_minor * bps // _BPS

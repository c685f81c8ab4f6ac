"""A loyalty programme's plan: how its cards earn, keep, redeem and qualify.

One plan per loyalty programme, versioned like the earning schemes (a new revision replaces the last
from the moment it is published). It gathers what the pure modules decide with: how competing schemes
combine, the points' pending period and lifetime, the tiers and how a receipt's points are redeemed,
the discount levels, the rates between e-money and points, and the bonuses for non-purchase events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ..errors import InvalidInput
from .points import MAX_POINTS, PointsPolicy
from .receipts import check_code
from .schemes import Combination
from .tiers import DiscountLevel, EMoneyRates, RedemptionMethod, Tier, TierPlan

__all__ = ["Bonuses", "LoyaltyPlan", "BonusKind"]


class BonusKind:
    REGISTRATION = "registration"
    FIRST_PURCHASE = "first_purchase"
    BIRTHDAY = "birthday"
    ALL = (REGISTRATION, FIRST_PURCHASE, BIRTHDAY)


@dataclass(frozen=True, slots=True)
class Bonuses:
    """Points credited for non-purchase events (0: no bonus)."""

    registration: int = 0
    first_purchase: int = 0
    birthday: int = 0

    def __post_init__(self) -> None:
        for name in BonusKind.ALL:
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= MAX_POINTS:
                raise InvalidInput(f"the {name} bonus is a whole number of points from 0")

    def points(self, kind: str) -> int:
        if kind not in BonusKind.ALL:
            raise InvalidInput(f"unknown bonus {kind!r}")
        return getattr(self, kind)


@dataclass(frozen=True, slots=True)
class LoyaltyPlan:
    """The plan of loyalty programme ``programme`` (its code).

    Without ``tiers`` every card redeems at ``redemption_tier`` (a one-tier plan), or not at all when that
    is None too. ``discount_period_days`` is the turnover window of the discount levels.
    """

    programme: str
    combination: Combination = Combination.MAX
    points: PointsPolicy = PointsPolicy()
    tiers: TierPlan | None = None
    redemption_method: RedemptionMethod = RedemptionMethod.CURRENT_TIER
    fallback_tier: str | None = None
    redemption_tier: Tier | None = None
    discount_levels: tuple[DiscountLevel, ...] = ()
    discount_period_days: int = 365
    emoney_rates: EMoneyRates | None = None
    bonuses: Bonuses = field(default_factory=Bonuses)

    def __post_init__(self) -> None:
        check_code("programme", self.programme)
        try:
            object.__setattr__(self, "combination", Combination(self.combination))
            object.__setattr__(self, "redemption_method", RedemptionMethod(self.redemption_method))
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        if not isinstance(self.points, PointsPolicy) or not isinstance(self.bonuses, Bonuses):
            raise InvalidInput("a plan's points policy and bonuses are PointsPolicy and Bonuses")
        if self.tiers is not None and not isinstance(self.tiers, TierPlan):
            raise InvalidInput("a plan's tiers are a TierPlan")
        if self.redemption_method is RedemptionMethod.FALLBACK:
            if self.tiers is None or self.fallback_tier is None:
                raise InvalidInput("the fallback redemption method needs tiers and a fallback tier")
            self.tiers.tier(self.fallback_tier)
        levels = tuple(sorted(self.discount_levels, key=lambda level: level.threshold))
        if not all(isinstance(level, DiscountLevel) for level in levels):
            raise InvalidInput("discount levels are DiscountLevels")
        if len({level.threshold for level in levels}) != len(levels):
            raise InvalidInput("discount level thresholds are unique")
        object.__setattr__(self, "discount_levels", levels)
        if type(self.discount_period_days) is not int or not 1 <= self.discount_period_days <= 3660:
            raise InvalidInput("the discount period is 1 to 3660 days")

    def tier_of(self, code: str | None) -> Tier | None:
        """The tier a card of tier ``code`` redeems by (the entry tier when it has none yet, or one the plan no
        longer has)."""
        if self.tiers is None:
            return self.redemption_tier
        known = {tier.code: tier for tier in self.tiers.tiers}
        return known.get(code, self.tiers.entry)  # a tier the plan dropped redeems as the entry tier until reviewed

    def fallback(self) -> Tier | None:
        return self.tiers.tier(self.fallback_tier) if self.tiers is not None and self.fallback_tier else None

    def entry_tier(self, since: datetime) -> tuple[str, datetime] | None:
        """A new card's tier and since when (None without tiers)."""
        return (self.tiers.entry.code, since) if self.tiers is not None else None

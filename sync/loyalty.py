"""Loyalty rules as they travel: the JSON (and msgpack) form of earning schemes and programme plans.

Head office publishes them through the admin API in this form, central keeps each version as it was
published (``loyalty_rules.body``), and stores pull them in the same form. The models check the shape;
building the domain object (``to_domain``) checks the meaning and raises the domain's InvalidInput.
Segments travel as :mod:`core.loyalty.segments` JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from core import InvalidInput
from core.loyalty import (
    Combination,
    Criteria,
    EarningScheme,
    Exclusions,
    FixedPerLine,
    FixedPerReceipt,
    Multiplier,
    Percent,
    PerQuantity,
    PerValue,
    PointsPolicy,
    SchemeSet,
)
from core.loyalty.plan import Bonuses, LoyaltyPlan
from core.loyalty.segments import SegmentRule
from core.loyalty.segments import from_data as segment_from
from core.loyalty.tiers import (
    DiscountLevel,
    DowngradeRule,
    EMoneyRates,
    ExchangeRate,
    RedemptionMethod,
    Tier,
    TierBasis,
    TierPlan,
    UpgradeRule,
)

__all__ = ["SchemeBody", "PlanBody", "RuleKind", "RuleChange", "LoyaltyRules", "scheme_from", "plan_from", "parse_body"]

Code = Annotated[str, Field(min_length=1, max_length=64)]
Codes = Annotated[list[Code], Field(max_length=1000)]
Whole = Annotated[int, Field(strict=True, ge=0)]


class RuleKind:
    SCHEME = "scheme"
    PLAN = "plan"
    SEGMENT = "segment"
    ALL = (SCHEME, PLAN, SEGMENT)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PerValueRule(_Model):
    type: Literal["per_value"]
    points: Whole
    per: Whole
    currency: str


class PerQuantityRule(_Model):
    type: Literal["per_quantity"]
    points: Whole
    per: Whole = 1000


class PercentRule(_Model):
    type: Literal["percent"]
    basis_points: Whole
    currency: str
    minor_per_point: Whole = 1


class FixedPerLineRule(_Model):
    type: Literal["fixed_per_line"]
    points: Whole


class FixedPerReceiptRule(_Model):
    type: Literal["fixed_per_receipt"]
    points: Whole
    min_value: Whole = 0
    currency: str | None = None


_RULES = {"per_value": PerValue, "per_quantity": PerQuantity, "percent": Percent, "fixed_per_line": FixedPerLine,
          "fixed_per_receipt": FixedPerReceipt}
RuleBody = Annotated[PerValueRule | PerQuantityRule | PercentRule | FixedPerLineRule | FixedPerReceiptRule,
                     Field(discriminator="type")]


class _Window(_Model):
    date_from: date | None = None
    date_to: date | None = None
    weekdays: Annotated[list[int], Field(max_length=7)] = []
    time_from: time | None = None
    time_to: time | None = None


class CriteriaBody(_Window):
    customer_groups: Codes = []
    tiers: Codes = []
    card_types: Codes = []
    stores: Codes = []
    store_groups: Codes = []
    items: Codes = []
    item_groups: Codes = []


class ExclusionsBody(_Model):
    discounted: bool = False
    promotional: bool = False
    items: Codes = []
    item_groups: Codes = []


class MultiplierBody(_Window):
    basis_points: Whole


class SchemeBody(_Model):
    """One version of an earning scheme (see :mod:`core.loyalty.schemes`)."""

    code: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
    version: Annotated[int, Field(strict=True, ge=1)]
    valid_from: AwareDatetime
    valid_to: AwareDatetime | None = None
    priority: int = 0
    rule: RuleBody
    criteria: CriteriaBody = CriteriaBody()
    exclusions: ExclusionsBody = ExclusionsBody()
    multipliers: Annotated[list[MultiplierBody], Field(max_length=16)] = []

    def to_domain(self) -> EarningScheme:
        rule = self.rule.model_dump(exclude={"type"})
        return EarningScheme(
            code=self.code, version=self.version, valid_from=self.valid_from, valid_to=self.valid_to,
            priority=self.priority, rule=_RULES[self.rule.type](**rule),
            criteria=Criteria(**self.criteria.model_dump()), exclusions=Exclusions(**self.exclusions.model_dump()),
            multipliers=tuple(Multiplier(**m.model_dump()) for m in self.multipliers))


class TierBody(_Model):
    code: Code
    rank: Whole
    threshold: Whole
    points_per_unit: Whole = 1
    unit_minor: Whole = 1
    max_redemption_bps: Whole = 0

    def to_domain(self) -> Tier:
        return Tier(**self.model_dump())


class TierPlanBody(_Model):
    basis: TierBasis
    period_days: Whole
    anchor: AwareDatetime
    tiers: Annotated[list[TierBody], Field(min_length=1, max_length=50)]
    upgrade: UpgradeRule = UpgradeRule.IMMEDIATE
    downgrade: DowngradeRule = DowngradeRule.ONE_STEP
    grace_days: Whole = 0

    def to_domain(self) -> TierPlan:
        return TierPlan(basis=self.basis, period_days=self.period_days, anchor=self.anchor,
                        tiers=tuple(t.to_domain() for t in self.tiers), upgrade=self.upgrade,
                        downgrade=self.downgrade, grace_days=self.grace_days)


class RateBody(_Model):
    points: Whole
    minor: Whole


class DiscountLevelBody(_Model):
    threshold: Whole
    bps: Whole


class BonusesBody(_Model):
    registration: Whole = 0
    first_purchase: Whole = 0
    birthday: Whole = 0



class PlanBody(_Model):
    """A loyalty programme's plan (see :mod:`core.loyalty.plan`); durations in whole days."""

    programme: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
    combination: Combination = Combination.MAX
    pending_days: Annotated[int, Field(strict=True, ge=0, le=3660)] = 0
    lifetime_days: Annotated[int, Field(strict=True, ge=1, le=36600)] | None = None
    tiers: TierPlanBody | None = None
    redemption_method: RedemptionMethod = RedemptionMethod.CURRENT_TIER
    fallback_tier: Code | None = None
    redemption_tier: TierBody | None = Field(None, description="rate and cap of a plan without tiers")
    discount_levels: Annotated[list[DiscountLevelBody], Field(max_length=50)] = []
    discount_period_days: Annotated[int, Field(strict=True, ge=1, le=3660)] = 365
    emoney_to_points: RateBody | None = None
    points_to_emoney: RateBody | None = None
    bonuses: BonusesBody = BonusesBody()

    def to_domain(self) -> LoyaltyPlan:
        if (self.emoney_to_points is None) != (self.points_to_emoney is None):
            raise InvalidInput("e-money rates come in pairs: emoney_to_points and points_to_emoney")
        rates = None
        if self.emoney_to_points is not None and self.points_to_emoney is not None:
            rates = EMoneyRates(ExchangeRate(**self.emoney_to_points.model_dump()),
                                ExchangeRate(**self.points_to_emoney.model_dump()))
        lifetime = timedelta(days=self.lifetime_days) if self.lifetime_days is not None else None
        return LoyaltyPlan(
            programme=self.programme, combination=self.combination,
            points=PointsPolicy(timedelta(days=self.pending_days), lifetime),
            tiers=self.tiers.to_domain() if self.tiers else None, redemption_method=self.redemption_method,
            fallback_tier=self.fallback_tier,
            redemption_tier=self.redemption_tier.to_domain() if self.redemption_tier else None,
            discount_levels=tuple(DiscountLevel(**d.model_dump()) for d in self.discount_levels),
            discount_period_days=self.discount_period_days, emoney_rates=rates,
            bonuses=Bonuses(**self.bonuses.model_dump()))




def _validated(model: type[_Model], data: Any) -> Any:
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"{where}: {first['msg']}", code="invalid_rule") from None
    try:
        return body, body.to_domain()
    except InvalidInput as exc:
        raise InvalidInput(str(exc), code="invalid_rule") from None


def scheme_from(data: Any) -> EarningScheme:
    """The scheme a JSON body describes; InvalidInput (code invalid_rule) naming what is wrong."""
    return _validated(SchemeBody, data)[1]


def plan_from(data: Any) -> LoyaltyPlan:
    """The plan a JSON body describes; InvalidInput (code invalid_rule) naming what is wrong."""
    return _validated(PlanBody, data)[1]


def parse_body(kind: str, data: Any) -> tuple[dict[str, Any], Any]:
    """Validate a scheme or plan body: (its canonical JSON form, the domain object)."""
    if kind == RuleKind.SCHEME:
        body, domain = _validated(SchemeBody, data)
    elif kind == RuleKind.PLAN:
        body, domain = _validated(PlanBody, data)
    else:
        raise InvalidInput(f"unknown rule kind {kind!r}", code="invalid_rule")
    return body.model_dump(mode="json", exclude_defaults=True), domain


class RuleChange(_Model):
    """One row of the versioned rules, as central keeps it and stores pull it."""

    version: Annotated[int, Field(strict=True, ge=1)]
    kind: Literal["scheme", "plan", "segment"]
    code: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
    revision: Annotated[int, Field(strict=True, ge=1)]
    body: dict[str, Any]
    retired: bool = False
    at: AwareDatetime


class LoyaltyRules:
    """Every rule in force, built from the rule rows (in version order): the plans by programme, the
    scheme versions, the segments. A scheme version ends where the next one starts, or where the code
    was retired; a retired plan or segment is gone. Scheme sets are compiled once per programme (with
    the programme plan's combination mode), when first asked for."""

    def __init__(self, rows: Iterable[RuleChange]) -> None:
        self.version = 0
        schemes: dict[str, list[tuple[EarningScheme, datetime | None]]] = {}
        self.plans: dict[str, LoyaltyPlan] = {}
        self.segments: dict[str, SegmentRule] = {}
        self.segment_names: dict[str, str] = {}
        for row in sorted(rows, key=lambda r: r.version):
            self.version = max(self.version, row.version)
            if row.kind == RuleKind.SCHEME:
                versions = schemes.setdefault(row.code, [])
                if row.retired:  # from then on nothing of the code earns: later versions never start
                    end = datetime.fromisoformat(row.body["at"])
                    versions[:] = [(scheme, min(until or end, end)) for scheme, until in versions
                                   if scheme.valid_from < end]
                    continue
                scheme = scheme_from(row.body)
                if versions:  # the version before ends where this one starts
                    last, end = versions[-1]
                    versions[-1] = (last, min(end or scheme.valid_from, scheme.valid_from))
                versions.append((scheme, None))
            elif row.kind == RuleKind.PLAN:
                if row.retired:
                    self.plans.pop(row.code, None)
                else:
                    self.plans[row.code] = plan_from(row.body)
            elif row.retired:
                self.segments.pop(row.code, None)
                self.segment_names.pop(row.code, None)
            else:
                self.segments[row.code] = segment_from(row.body["rule"])
                self.segment_names[row.code] = row.body.get("name", row.code)
        self.schemes: tuple[EarningScheme, ...] = tuple(
            _ending(scheme, end) for versions in schemes.values() for scheme, end in versions
            if end is None or end > scheme.valid_from)
        self._sets: dict[str, SchemeSet] = {}

    def plan(self, programme: str) -> LoyaltyPlan | None:
        return self.plans.get(programme)

    def scheme_set(self, programme: str) -> SchemeSet:
        """The schemes, combined by the mode of ``programme``'s plan (max without a plan)."""
        found = self._sets.get(programme)
        if found is None:
            plan = self.plans.get(programme)
            found = SchemeSet.compile(self.schemes, plan.combination if plan else Combination.MAX)
            self._sets[programme] = found
        return found


def _ending(scheme: EarningScheme, end: datetime | None) -> EarningScheme:
    if end is None or (scheme.valid_to is not None and scheme.valid_to <= end):
        return scheme
    return replace(scheme, valid_to=end)

"""Earning schemes: which receipts and lines earn points, how many, and how competing schemes combine.

A scheme is versioned: each version of a code has a validity ``[valid_from, valid_to)`` in absolute
time, versions of one code never overlap, and a receipt earns by the versions in force at its ``at``
(also when it is added long after the purchase).

Criteria and exclusions
    Every non-empty criterion restricts (an empty one means "any"); criteria on different things must
    all hold, values within one criterion are alternatives. Stores and store groups are one criterion
    (the receipt's store is listed, or one of its groups is), and so are items and item groups. Dates,
    weekdays (ISO, Monday = 1) and the time of day are read from the receipt's wall clock (its store's
    local time). Time windows are ``[time_from, time_to)`` and wrap past midnight when ``time_from`` is
    later. A rule priced in a currency (``PerValue``, ``Percent``, a ``FixedPerReceipt`` minimum) only
    applies to receipts in that currency. Exclusions remove single lines: discounted lines (a line
    discount above zero), promotional lines, chosen items and item groups.

Rules and rounding
    Line rules give each eligible line ``floor(x * rate * M)``: ``x`` is the line's value (``PerValue``,
    ``Percent``), its quantity (``PerQuantity``) or 1 (``FixedPerLine``); ``M`` is the product of the
    scheme's multipliers that apply at the receipt's time (basis points, 20000 = double). The floor is
    taken once per line, after the multipliers, in exact integer arithmetic. ``FixedPerReceipt`` gives
    ``floor(points * M)`` once per receipt that has at least one eligible line and whose eligible lines
    are worth at least ``min_value``.

Combination (one mode per scheme set, the programme's choice)
    Line schemes compete line by line: ``max`` keeps the scheme giving the line the most points,
    ``sum`` keeps them all, ``priority`` keeps the applicable scheme of highest priority, whatever it
    gives (so a zero-points scheme of high priority keeps a line from earning). Receipt schemes compete
    among themselves in the same mode, and their points are added to the lines' points: a receipt bonus
    never displaces line points. Ties go to the higher priority, then the smaller code. Awards of zero
    points are left out of the breakdown.

``SchemeSet.compile`` indexes the schemes as bitmasks (one bit per scheme version, in priority order) by
validity, store, customer group, tier, card type, currency, date, weekday, time of day, item and item
group, so that a receipt touches only the schemes that can apply to it; ``evaluate_naive`` is the plain
reading of the rules above, which the index must always agree with.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum

from ..errors import InvalidInput
from ..money import validate_currency
from .receipts import MAX_AMOUNT, QUANTITY_SCALE, Receipt, ReceiptLine, check_code, code_set

__all__ = [
    "Combination", "PerValue", "PerQuantity", "Percent", "FixedPerLine", "FixedPerReceipt", "Rule", "Criteria",
    "Exclusions", "Multiplier", "EarningScheme", "Award", "Earning", "SchemeSet", "evaluate", "evaluate_naive",
    "BASIS_POINTS",
]

BASIS_POINTS = 10_000  # 100 %
MAX_RATE = 10**9  # points or basis points in one rule
MAX_MULTIPLIERS = 16

_VALUE, _QUANTITY, _FIXED = 0, 1, 2  # what a rule's rate multiplies
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class Combination(StrEnum):
    """How applicable schemes that compete for the same line (or receipt) combine."""

    MAX = "max"
    SUM = "sum"
    PRIORITY = "priority"


def _whole(what: str, value: object, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise InvalidInput(f"{what} must be a whole number from {low} to {high}, got {value!r}")
    return value


def _currency(value: str) -> str:
    try:
        return validate_currency(value)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


@dataclass(frozen=True, slots=True)
class PerValue:
    """``points`` for every ``per`` minor units of line value: 1 point per 1.00 EUR is ``PerValue(1, 100, "EUR")``."""

    points: int
    per: int
    currency: str

    def __post_init__(self) -> None:
        _whole("points", self.points, 0, MAX_RATE)
        _whole("per", self.per, 1, MAX_AMOUNT)
        _currency(self.currency)

    per_receipt = False

    def _terms(self) -> tuple[int, int, int]:
        return _VALUE, self.points, self.per


@dataclass(frozen=True, slots=True)
class PerQuantity:
    """``points`` for every ``per`` thousandths of a unit: 2 points a piece is ``PerQuantity(2)``, 1 point per 100 g
    of goods sold by the kilogram is ``PerQuantity(1, 100)``."""

    points: int
    per: int = QUANTITY_SCALE

    def __post_init__(self) -> None:
        _whole("points", self.points, 0, MAX_RATE)
        _whole("per", self.per, 1, MAX_AMOUNT)

    currency = None
    per_receipt = False

    def _terms(self) -> tuple[int, int, int]:
        return _QUANTITY, self.points, self.per


@dataclass(frozen=True, slots=True)
class Percent:
    """``basis_points`` of a line's value, in points worth ``minor_per_point`` minor units each: 5 % back with
    1 point = 0.01 EUR is ``Percent(500, "EUR")``."""

    basis_points: int
    currency: str
    minor_per_point: int = 1

    def __post_init__(self) -> None:
        _whole("basis points", self.basis_points, 0, MAX_RATE)
        _currency(self.currency)
        _whole("minor units per point", self.minor_per_point, 1, MAX_AMOUNT)

    per_receipt = False

    def _terms(self) -> tuple[int, int, int]:
        return _VALUE, self.basis_points, BASIS_POINTS * self.minor_per_point


@dataclass(frozen=True, slots=True)
class FixedPerLine:
    """``points`` for every eligible line, whatever its value or quantity."""

    points: int

    def __post_init__(self) -> None:
        _whole("points", self.points, 0, MAX_RATE)

    currency = None
    per_receipt = False

    def _terms(self) -> tuple[int, int, int]:
        return _FIXED, self.points, 1


@dataclass(frozen=True, slots=True)
class FixedPerReceipt:
    """``points`` once for a receipt with eligible lines worth at least ``min_value`` minor units of ``currency``
    (which only a ``min_value`` needs)."""

    points: int
    min_value: int = 0
    currency: str | None = None

    def __post_init__(self) -> None:
        _whole("points", self.points, 0, MAX_RATE)
        _whole("minimum value", self.min_value, 0, MAX_AMOUNT)
        if self.currency is not None:
            _currency(self.currency)
        elif self.min_value:
            raise InvalidInput("a minimum receipt value needs a currency")

    per_receipt = True

    def _terms(self) -> tuple[int, int, int]:
        return _FIXED, self.points, 1


Rule = PerValue | PerQuantity | Percent | FixedPerLine | FixedPerReceipt
_RULES = (PerValue, PerQuantity, Percent, FixedPerLine, FixedPerReceipt)


def _check_window(owner: Criteria | Multiplier) -> None:
    """Validate and normalise the date, weekday and time-of-day window fields ``owner`` shares."""
    for name in ("date_from", "date_to"):
        value = getattr(owner, name)
        if value is not None and (not isinstance(value, date) or isinstance(value, datetime)):
            raise InvalidInput(f"{name} is a date")
    if owner.date_from is not None and owner.date_to is not None and owner.date_from > owner.date_to:
        raise InvalidInput("date_from is after date_to")
    if isinstance(owner.weekdays, str) or not isinstance(owner.weekdays, Iterable):
        raise InvalidInput("weekdays are a set of ISO weekday numbers (Monday = 1)")
    weekdays = frozenset(owner.weekdays)
    if not all(type(d) is int and 1 <= d <= 7 for d in weekdays):
        raise InvalidInput("weekdays are ISO weekday numbers 1 (Monday) to 7 (Sunday)")
    object.__setattr__(owner, "weekdays", weekdays)
    if (owner.time_from is None) != (owner.time_to is None):
        raise InvalidInput("a time window needs both time_from and time_to")
    if owner.time_from is not None:
        for value in (owner.time_from, owner.time_to):
            if not isinstance(value, time) or value.tzinfo is not None:
                raise InvalidInput("time windows are local times of day without a time zone")
        if owner.time_from == owner.time_to:
            raise InvalidInput("a time window from and to the same time is empty; leave it out for all day")


def _day_micros(t: time) -> int:
    return ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond


def _in_window(owner: Criteria | Multiplier, local: datetime) -> bool:
    """Whether the wall-clock time ``local`` falls in ``owner``'s date, weekday and time-of-day window."""
    day = local.date()
    if owner.date_from is not None and day < owner.date_from:
        return False
    if owner.date_to is not None and day > owner.date_to:
        return False
    if owner.weekdays and local.isoweekday() not in owner.weekdays:
        return False
    if owner.time_from is not None:
        now, start, end = local.time(), owner.time_from, owner.time_to
        return start <= now < end if start < end else now >= start or now < end
    return True


@dataclass(frozen=True, slots=True)
class Criteria:
    """Which receipts and lines a scheme applies to; every empty or None field means "any"."""

    customer_groups: frozenset[str] = frozenset()
    tiers: frozenset[str] = frozenset()
    card_types: frozenset[str] = frozenset()
    stores: frozenset[str] = frozenset()
    store_groups: frozenset[str] = frozenset()
    items: frozenset[str] = frozenset()
    item_groups: frozenset[str] = frozenset()
    date_from: date | None = None
    date_to: date | None = None
    weekdays: frozenset[int] = frozenset()
    time_from: time | None = None
    time_to: time | None = None

    def __post_init__(self) -> None:
        for name in ("customer_groups", "tiers", "card_types", "stores", "store_groups", "items", "item_groups"):
            object.__setattr__(self, name, code_set(name.replace("_", " "), getattr(self, name)))
        _check_window(self)

    def matches_receipt(self, receipt: Receipt) -> bool:
        """Whether the receipt as a whole (who, where, when, which card) meets the criteria."""
        if self.customer_groups and not self.customer_groups & receipt.customer_groups:
            return False
        if self.tiers and receipt.tier not in self.tiers:
            return False
        if self.card_types and receipt.card_type not in self.card_types:
            return False
        if (self.stores or self.store_groups) and receipt.store not in self.stores \
                and not self.store_groups & receipt.store_groups:
            return False
        return _in_window(self, receipt.at)

    def matches_line(self, line: ReceiptLine) -> bool:
        """Whether the line's item (or its group) is one the criteria name, when they name any."""
        if not self.items and not self.item_groups:
            return True
        return line.item in self.items or line.item_group in self.item_groups


@dataclass(frozen=True, slots=True)
class Exclusions:
    """Lines a scheme gives nothing for, even when its criteria match them."""

    discounted: bool = False
    promotional: bool = False
    items: frozenset[str] = frozenset()
    item_groups: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if type(self.discounted) is not bool or type(self.promotional) is not bool:
            raise InvalidInput("discounted and promotional exclusions are true or false")
        object.__setattr__(self, "items", code_set("excluded items", self.items))
        object.__setattr__(self, "item_groups", code_set("excluded item groups", self.item_groups))

    def excludes(self, line: ReceiptLine) -> bool:
        """Whether the line earns nothing under the scheme."""
        return ((self.discounted and line.discount > 0) or (self.promotional and line.promotional)
                or line.item in self.items or line.item_group in self.item_groups)


@dataclass(frozen=True, slots=True)
class Multiplier:
    """A factor in basis points (20000 = double points) applied when the receipt's time is in the window;
    one without a window always applies."""

    basis_points: int
    weekdays: frozenset[int] = frozenset()
    time_from: time | None = None
    time_to: time | None = None
    date_from: date | None = None
    date_to: date | None = None

    def __post_init__(self) -> None:
        _whole("multiplier", self.basis_points, 1, MAX_RATE)
        _check_window(self)

    def applies(self, local: datetime) -> bool:
        """Whether the wall-clock time ``local`` is in the multiplier's window."""
        return _in_window(self, local)


@dataclass(frozen=True, slots=True)
class EarningScheme:
    """One version of an earning scheme. ``valid_to`` None: in force until a later version replaces it (which
    then needs the earlier version closed at or before its ``valid_from``). Higher ``priority`` wins."""

    code: str
    version: int
    valid_from: datetime
    rule: Rule
    valid_to: datetime | None = None
    criteria: Criteria = Criteria()
    exclusions: Exclusions = Exclusions()
    multipliers: tuple[Multiplier, ...] = ()
    priority: int = 0

    def __post_init__(self) -> None:
        check_code("scheme code", self.code)
        _whole("version", self.version, 1, 10**9)
        for value in (self.valid_from, self.valid_to) if self.valid_to is not None else (self.valid_from,):
            if not isinstance(value, datetime) or value.utcoffset() is None:
                raise InvalidInput("a scheme's validity is bounded by aware datetimes")
        if self.valid_to is not None and self.valid_to <= self.valid_from:
            raise InvalidInput(f"scheme {self.ref} ends before it starts")
        if not isinstance(self.rule, _RULES):
            raise InvalidInput("a scheme's rule is PerValue, PerQuantity, Percent, FixedPerLine or FixedPerReceipt")
        if not isinstance(self.criteria, Criteria) or not isinstance(self.exclusions, Exclusions):
            raise InvalidInput("criteria and exclusions are Criteria and Exclusions")
        multipliers = tuple(self.multipliers)
        if len(multipliers) > MAX_MULTIPLIERS or not all(isinstance(m, Multiplier) for m in multipliers):
            raise InvalidInput(f"a scheme has up to {MAX_MULTIPLIERS} Multipliers")
        object.__setattr__(self, "multipliers", multipliers)
        _whole("priority", self.priority, -10**9, 10**9)

    @property
    def ref(self) -> str:
        """``code@version``, as awards and audit name the scheme."""
        return f"{self.code}@{self.version}"

    def in_force(self, at: datetime) -> bool:
        """Whether this version is the one in force at the instant ``at``."""
        return self.valid_from <= at and (self.valid_to is None or at < self.valid_to)

    def applies_to_receipt(self, receipt: Receipt) -> bool:
        """Whether the receipt meets the scheme's receipt criteria and currency (validity aside)."""
        currency = self.rule.currency
        return (currency is None or currency == receipt.currency) and self.criteria.matches_receipt(receipt)

    def applies_to_line(self, line: ReceiptLine) -> bool:
        """Whether the line meets the item criteria and no exclusion."""
        return self.criteria.matches_line(line) and not self.exclusions.excludes(line)

    def factor(self, local: datetime) -> tuple[int, int]:
        """The multipliers applying at ``local`` as an exact fraction (numerator, denominator)."""
        num = den = 1
        for m in self.multipliers:
            if m.applies(local):
                num *= m.basis_points
                den *= BASIS_POINTS
        return num, den

    def points(self, line: ReceiptLine | None, factor: tuple[int, int] = (1, 1)) -> int:
        """Points for one line (None: the receipt, for a per-receipt rule), floored once after the multipliers."""
        basis, rate, per = self.rule._terms()
        return _points(basis, rate, per, line, factor[0], factor[1])


def _points(basis: int, rate: int, per: int, line: ReceiptLine | None, num: int, den: int) -> int:
    x = 1 if basis == _FIXED or line is None else line.value if basis == _VALUE else line.quantity
    return x * rate * num // (per * den)


def _order(scheme: EarningScheme) -> tuple[int, str, int]:
    return -scheme.priority, scheme.code, scheme.version


@dataclass(frozen=True, slots=True)
class Award:
    """Points one scheme version gave one line (``line`` is its index; None for a per-receipt award)."""

    line: int | None
    scheme: str
    version: int
    points: int

    @property
    def ref(self) -> str:
        """``code@version`` of the scheme that gave the points."""
        return f"{self.scheme}@{self.version}"


@dataclass(frozen=True, slots=True)
class Earning:
    """What a receipt earns: the awards, line awards first (by line, then scheme order), and their total."""

    receipt: str
    awards: tuple[Award, ...]

    @property
    def total(self) -> int:
        """All the points the receipt earns."""
        return sum(a.points for a in self.awards)

    def points_of_lines(self, lines: Iterable[int]) -> int:
        """The points the given line indexes earned (per-receipt awards excluded)."""
        wanted = set(lines)
        return sum(a.points for a in self.awards if a.line in wanted)


def _pick(candidates: Sequence[tuple[EarningScheme, int]], mode: Combination) -> list[tuple[EarningScheme, int]]:
    """The winners among applicable (scheme, points) in scheme order, by the combination mode."""
    if not candidates:
        return []
    if mode is Combination.SUM:
        chosen = list(candidates)
    elif mode is Combination.PRIORITY:
        chosen = [candidates[0]]
    else:
        best = candidates[0]
        for cand in candidates[1:]:
            if cand[1] > best[1]:
                best = cand
        chosen = [best]
    return [c for c in chosen if c[1] > 0]


def evaluate_naive(receipt: Receipt, schemes: Iterable[EarningScheme], mode: Combination) -> Earning:
    """The earning rules read plainly: every scheme in force against the receipt, then against every line.

    The reference :class:`SchemeSet` is held to; too slow for a till with many schemes.
    """
    mode = Combination(mode)
    at = receipt.at
    applicable = sorted((s for s in schemes if s.in_force(at) and s.applies_to_receipt(receipt)), key=_order)
    factors = {s.ref: s.factor(at) for s in applicable}
    awards: list[Award] = []
    for index, line in enumerate(receipt.lines):
        candidates = [(s, s.points(line, factors[s.ref])) for s in applicable
                      if not s.rule.per_receipt and s.applies_to_line(line)]
        awards += [Award(index, s.code, s.version, p) for s, p in _pick(candidates, mode)]
    per_receipt = []
    for s in applicable:
        if s.rule.per_receipt:
            eligible = [line.value for line in receipt.lines if s.applies_to_line(line)]
            if eligible and sum(eligible) >= s.rule.min_value:
                per_receipt.append((s, s.points(None, factors[s.ref])))
    awards += [Award(None, s.code, s.version, p) for s, p in _pick(per_receipt, mode)]
    return Earning(receipt.id, tuple(awards))


def _undominated(rates: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """The (bit, basis, num, den) rates, in bit order, that can win a line under ``max``: a rate is dropped when an
    earlier one on the same basis has at least its ratio, as that one gives every line as many points or more
    and wins ties."""
    kept: list[tuple[int, int, int, int]] = []
    best: dict[int, tuple[int, int]] = {}
    for rate in rates:
        _, basis, num, den = rate
        top = best.get(basis)
        if top is None or num * top[1] > top[0] * den:
            best[basis] = (num, den)
            kept.append(rate)
    return kept


def _instant(at: datetime) -> int:
    return (at - _EPOCH) // _MICROSECOND


def _sweep(base: int, adds: dict[int, int], removes: dict[int, int]) -> tuple[list[int], list[int]]:
    """Bounds and masks of the elementary intervals of a line: ``masks[bisect_right(bounds, x)]`` holds the
    bits present at ``x``; ``base`` is present from minus infinity, ``adds[p]`` from ``p`` on, ``removes[p]``
    no longer from ``p`` on."""
    bounds = sorted(adds.keys() | removes.keys())
    masks = [base]
    for p in bounds:
        masks.append((masks[-1] & ~removes.get(p, 0)) | adds.get(p, 0))
    return bounds, masks


def _add(table: dict, key: object, bit: int) -> None:
    table[key] = table.get(key, 0) | bit


class SchemeSet:
    """Scheme versions compiled for evaluation, combined by ``mode``; immutable once built.

    ``schemes`` holds every version given, in the order ties are broken in: higher priority, then code.
    """

    __slots__ = ("mode", "schemes", "_versions", "_terms", "_factored", "_valid", "_dates", "_times", "_weekdays",
                 "_dims", "_items_any", "_by_item", "_by_item_group", "_ex_item", "_ex_item_group",
                 "_ex_discounted", "_ex_promotional", "_per_line", "_per_receipt", "_min_value")

    def __init__(self, schemes: Iterable[EarningScheme], mode: Combination = Combination.MAX) -> None:
        """Validate the versions (unique, never overlapping within a code) and index them."""
        schemes = tuple(schemes)
        if not all(isinstance(s, EarningScheme) for s in schemes):
            raise InvalidInput("a scheme set is made of EarningSchemes")
        versions: dict[str, list[EarningScheme]] = {}
        for s in schemes:
            versions.setdefault(s.code, []).append(s)
        for code, vs in versions.items():
            vs.sort(key=lambda s: s.valid_from)
            if len({s.version for s in vs}) != len(vs):
                raise InvalidInput(f"scheme {code} has a version number twice")
            for earlier, later in zip(vs, vs[1:]):
                if earlier.valid_to is None or earlier.valid_to > later.valid_from:
                    raise InvalidInput(f"versions {earlier.ref} and {later.ref} overlap")
        self.mode = Combination(mode)
        self.schemes = tuple(sorted(schemes, key=_order))
        self._versions = {code: ([_instant(s.valid_from) for s in vs], vs) for code, vs in versions.items()}
        self._index()

    @classmethod
    def compile(cls, schemes: Iterable[EarningScheme], mode: Combination = Combination.MAX) -> SchemeSet:
        """The scheme set of ``schemes`` (every version of every code), combined by ``mode``."""
        return cls(schemes, mode)

    def _index(self) -> None:
        self._terms = [s.rule._terms() for s in self.schemes]
        self._factored = 0
        self._per_line = self._per_receipt = 0
        self._min_value = [getattr(s.rule, "min_value", 0) for s in self.schemes]
        valid_adds: dict[int, int] = {}
        valid_removes: dict[int, int] = {}
        date_base, date_adds, date_removes = 0, {}, {}
        time_base, time_adds, time_removes = 0, {}, {}
        weekdays = [0] * 8
        # Receipt dimensions: (bits of schemes not restricted on it, {value: bits of schemes accepting it}).
        dims: dict[str, tuple[int, dict[str, int]]] = {}
        anys = dict.fromkeys(("store", "customer_group", "tier", "card_type", "currency"), 0)
        tables: dict[str, dict[str, int]] = {name: {} for name in ("store", "store_group", "customer_group", "tier",
                                                                   "card_type", "currency")}
        self._items_any = 0
        self._by_item, self._by_item_group = {}, {}
        self._ex_item, self._ex_item_group = {}, {}
        self._ex_discounted = self._ex_promotional = 0
        for i, s in enumerate(self.schemes):
            bit = 1 << i
            c, ex = s.criteria, s.exclusions
            if s.rule.per_receipt:
                self._per_receipt |= bit
            else:
                self._per_line |= bit
            if s.multipliers:
                self._factored |= bit
            _add(valid_adds, _instant(s.valid_from), bit)
            if s.valid_to is not None:
                _add(valid_removes, _instant(s.valid_to), bit)
            if c.date_from is None:
                date_base |= bit
            else:
                _add(date_adds, c.date_from.toordinal(), bit)
            if c.date_to is not None:
                _add(date_removes, c.date_to.toordinal() + 1, bit)
            if c.time_from is None:
                time_base |= bit
            else:
                start, end = _day_micros(c.time_from), _day_micros(c.time_to)
                if start > end:  # wraps past midnight: present from the day's start until ``end``
                    time_base |= bit
                _add(time_adds, start, bit)
                _add(time_removes, end, bit)
            for day in range(1, 8):
                if not c.weekdays or day in c.weekdays:
                    weekdays[day] |= bit
            if not c.stores and not c.store_groups:
                anys["store"] |= bit
            for store in c.stores:
                _add(tables["store"], store, bit)
            for group in c.store_groups:
                _add(tables["store_group"], group, bit)
            for name, values in (("customer_group", c.customer_groups), ("tier", c.tiers),
                                 ("card_type", c.card_types)):
                if not values:
                    anys[name] |= bit
                for value in values:
                    _add(tables[name], value, bit)
            if s.rule.currency is None:
                anys["currency"] |= bit
            else:
                _add(tables["currency"], s.rule.currency, bit)
            if not c.items and not c.item_groups:
                self._items_any |= bit
            for item in c.items:
                _add(self._by_item, item, bit)
            for group in c.item_groups:
                _add(self._by_item_group, group, bit)
            for item in ex.items:
                _add(self._ex_item, item, bit)
            for group in ex.item_groups:
                _add(self._ex_item_group, group, bit)
            if ex.discounted:
                self._ex_discounted |= bit
            if ex.promotional:
                self._ex_promotional |= bit
        self._valid = _sweep(0, valid_adds, valid_removes)
        self._dates = _sweep(date_base, date_adds, date_removes)
        self._times = _sweep(time_base, time_adds, time_removes)
        self._weekdays = weekdays
        dims["store"] = (anys["store"], tables["store"])
        for name in ("customer_group", "tier", "card_type", "currency"):
            dims[name] = (anys[name], tables[name])
        dims["store_group"] = (0, tables["store_group"])
        self._dims = dims

    def version_in_force(self, code: str, at: datetime) -> EarningScheme | None:
        """The version of scheme ``code`` in force at the instant ``at``, if any."""
        starts, versions = self._versions.get(code, ((), ()))
        k = bisect_right(starts, _instant(at)) - 1
        return versions[k] if k >= 0 and versions[k].in_force(at) else None

    def _receipt_mask(self, receipt: Receipt) -> int:
        """Bits of the schemes in force whose receipt criteria the receipt meets."""
        at = receipt.at
        bounds, masks = self._valid
        m = masks[bisect_right(bounds, _instant(at))]
        if not m:
            return 0
        bounds, masks = self._dates
        m &= masks[bisect_right(bounds, at.toordinal())] & self._weekdays[at.isoweekday()]
        bounds, masks = self._times
        m &= masks[bisect_right(bounds, _day_micros(at.time()))]
        dims = self._dims
        any_store, stores = dims["store"]
        accepted = any_store | stores.get(receipt.store, 0)
        groups = dims["store_group"][1]
        for group in receipt.store_groups:
            accepted |= groups.get(group, 0)
        m &= accepted
        any_group, customer_groups = dims["customer_group"]
        accepted = any_group
        for group in receipt.customer_groups:
            accepted |= customer_groups.get(group, 0)
        m &= accepted
        for name, value in (("tier", receipt.tier), ("card_type", receipt.card_type), ("currency", receipt.currency)):
            any_value, by_value = dims[name]
            m &= any_value | by_value.get(value, 0)
        return m

    def evaluate(self, receipt: Receipt) -> Earning:
        """The points ``receipt`` earns under the versions in force at its time (see the module's rules)."""
        m = self._receipt_mask(receipt)
        if not m:
            return Earning(receipt.id, ())
        mode, schemes, terms, at = self.mode, self.schemes, self._terms, receipt.at
        factored = self._factored & m
        rates: dict[int, tuple[int, int, int, int]] = {}

        def rate(i: int) -> tuple[int, int, int, int]:
            """(bit, basis, rate, per) of a scheme, its multipliers at the receipt's time folded in."""
            found = rates.get(i)
            if found is None:
                basis, num, den = terms[i]
                if factored >> i & 1:
                    factor_num, factor_den = schemes[i].factor(at)
                    num, den = num * factor_num, den * factor_den
                found = rates[i] = (i, basis, num, den)
            return found

        def listed(bits: int) -> list[tuple[int, int, int, int]]:
            out = []
            while bits:
                low = bits & -bits
                bits ^= low
                out.append(rate(low.bit_length() - 1))
            return out

        by_item, by_group, ex_item, ex_group = self._by_item, self._by_item_group, self._ex_item, self._ex_item_group
        per_line, per_receipt = self._per_line & m, self._per_receipt & m
        # Schemes without item criteria compete for every line: list them once per receipt, for each combination
        # of the discounted / promotional flags (which their exclusions may refuse).
        common = self._items_any & m
        flag_excluded = (0, self._ex_discounted, self._ex_promotional, self._ex_discounted | self._ex_promotional)
        common_rates: dict[int, list[tuple[int, int, int, int]]] = {}
        receipt_values: dict[int, int] = {}  # per-receipt schemes a line is eligible for (bits) -> those lines' value
        awards: list[Award] = []
        for index, line in enumerate(receipt.lines):
            item, group = line.item, line.item_group
            flags = (1 if line.discount else 0) | (2 if line.promotional else 0)
            item_excluded = ex_item.get(item, 0) | ex_group.get(group, 0)
            excluded = flag_excluded[flags] | item_excluded
            eligible = ((by_item.get(item, 0) | by_group.get(group, 0)) & m | common) & ~excluded
            if eligible & per_receipt:
                key = eligible & per_receipt
                receipt_values[key] = receipt_values.get(key, 0) + line.value
            bits = eligible & per_line
            if not bits:
                continue
            if mode is Combination.PRIORITY:
                i, basis, num, den = rate((bits & -bits).bit_length() - 1)
                x = line.value if basis == _VALUE else line.quantity if basis == _QUANTITY else 1
                points = x * num // den
                if points > 0:
                    awards.append(Award(index, schemes[i].code, schemes[i].version, points))
                continue
            if item_excluded & common:  # this item is excluded by some of them: no shared list
                candidates = listed(common & per_line & ~excluded)
            else:
                candidates = common_rates.get(flags)
                if candidates is None:
                    candidates = listed(common & per_line & ~flag_excluded[flags])
                    common_rates[flags] = _undominated(candidates) if mode is Combination.MAX else candidates
            specific = bits & ~common
            if specific:
                candidates = candidates + listed(specific)
            value, quantity = line.value, line.quantity
            if mode is Combination.SUM:
                won = []
                for i, basis, num, den in candidates:
                    points = (value if basis == _VALUE else quantity if basis == _QUANTITY else 1) * num // den
                    if points > 0:
                        won.append((i, points))
                won.sort()
                awards += [Award(index, schemes[i].code, schemes[i].version, p) for i, p in won]
                continue
            best_i, best = -1, 0
            for i, basis, num, den in candidates:
                points = (value if basis == _VALUE else quantity if basis == _QUANTITY else 1) * num // den
                if points > best or (points == best and i < best_i):
                    best_i, best = i, points
            if best > 0:
                awards.append(Award(index, schemes[best_i].code, schemes[best_i].version, best))
        totals: dict[int, int] = {}
        for bits, value in receipt_values.items():
            while bits:
                low = bits & -bits
                bits ^= low
                i = low.bit_length() - 1
                totals[i] = totals.get(i, 0) + value
        min_value = self._min_value
        won_receipt = _pick([(schemes[i], rate(i)[2] // rate(i)[3]) for i in sorted(totals)
                             if totals[i] >= min_value[i]], mode)
        awards += [Award(None, s.code, s.version, p) for s, p in won_receipt]
        return Earning(receipt.id, tuple(awards))


def evaluate(receipt: Receipt, schemes: SchemeSet) -> Earning:
    """The points ``receipt`` earns under the compiled ``schemes`` (their versions in force at its time)."""
    return schemes.evaluate(receipt)

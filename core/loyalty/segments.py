"""Rule-defined customer segments: a small typed rule language, its evaluation over one card's facts,
and its JSON form (stored centrally, shipped to the edge, compiled to SQL for the segment job).

Every node is a frozen dataclass validated when built; :func:`from_data` names the node that is wrong
with a JSON path (``$.rules[1].rule``). The JSON form is an object with ``op`` and the node's fields::

    {"op": "and", "rules": [{"op": "spent_over", "amount": 10000, "days": 90},
                            {"op": "not", "rule": {"op": "bought_group", "group": "WINE", "days": 30}}]}

Meanings, all relative to the facts' business date ``today``:

- windows of ``days`` days count today and the days before it (``today - days < receipt date <= today``);
- ``spent_over``: total spent in the window is strictly above ``amount``; ``spent_between``: from ``low`` to
  ``high``, both included (as SQL ``BETWEEN``); amounts are minor units of the programme's currency and
  returns (negative totals) count against them;
- ``visits_at_least``: distinct days with a purchase in the window;
- ``birthday_this_month`` / ``birthday_within`` (0 = today, up to ``days`` days ahead, across the new
  year); someone born on 29 February celebrates on 28 February in common years;
- ``tier_in``, ``customer_group_in`` (any of the card's groups), ``store_in`` (the card's home store),
  ``has_consent`` (a channel the customer currently consents to).

Channels and consents are those of :mod:`core.loyalty.customers`; a mailing export includes a customer
only on a channel whose current consent (the one given last) is a grant.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from typing import ClassVar

from ..errors import InvalidInput
from .customers import Channel, Consent, current_consents
from .receipts import MAX_AMOUNT, Receipt, check_code, code_set

__all__ = [
    "PurchaseFact", "CardFacts", "InvalidSegmentRule",
    "SpentOver", "SpentBetween", "BoughtGroup", "BoughtItem", "VisitsAtLeast", "BirthdayThisMonth",
    "BirthdayWithin", "TierIn", "HasConsent", "CustomerGroupIn", "StoreIn", "And", "Or", "Not", "SegmentRule",
    "evaluate", "segments_of", "to_data", "from_data", "to_json", "from_json", "consented_channels", "exportable",
    "MAX_DAYS", "MAX_DEPTH", "MAX_NODES",
]

MAX_DAYS = 3660  # ten years of history
MAX_DEPTH = 32
MAX_NODES = 1000
MAX_CODES = 1000  # codes in one *_in node


class InvalidSegmentRule(InvalidInput):
    """A segment rule that cannot be built; ``path`` locates the node in the JSON form, ``op`` names it."""

    code = "invalid_segment_rule"

    def __init__(self, path: str, op: str | None, reason: str) -> None:
        super().__init__(f"{path} ({op or '?'}): {reason}")
        self.path, self.op, self.reason = path, op, reason


def _int(what: str, value: object, minimum: int, maximum: int) -> int:
    if type(value) is not int or not minimum <= value <= maximum:
        raise InvalidInput(f"{what} must be a whole number from {minimum} to {maximum}, got {value!r}")
    return value


def _codes(node: object, name: str, what: str) -> None:
    values = code_set(what, getattr(node, name))
    if not 1 <= len(values) <= MAX_CODES:
        raise InvalidInput(f"{what} lists 1 to {MAX_CODES} codes")
    object.__setattr__(node, name, values)


# --- facts -------------------------------------------------------------------------------------------


def consented_channels(consents: Iterable[Consent] | Mapping[Channel, Consent]) -> frozenset[Channel]:
    """The channels a customer currently consents to, from their consent history (or its current state,
    channel → latest consent, as :func:`core.loyalty.customers.current_consents` gives it)."""
    current = consents if isinstance(consents, Mapping) else current_consents(consents)
    return frozenset(channel for channel, latest in current.items() if latest.granted)


def exportable(customer_consents: Iterable[Consent] | Mapping[Channel, Consent], channel: Channel | str) -> bool:
    """Whether a customer may be included in a mailing on ``channel``: only with a current consent
    (no record at all means no consent)."""
    try:
        channel = Channel(channel)
    except ValueError:
        raise InvalidInput(f"channel is one of {[c.value for c in Channel]}, got {channel!r}") from None
    return channel in consented_channels(customer_consents)


@dataclass(frozen=True, slots=True)
class PurchaseFact:
    """One purchase as segments see it: its business date, total (minor units, negative for a return),
    store, and the items and item groups it contained."""

    on: date
    total_minor: int
    store: str | None = None
    items: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.on, date) or isinstance(self.on, datetime):
            raise InvalidInput("a purchase's business date is a date")
        _int("purchase total", self.total_minor, -MAX_AMOUNT, MAX_AMOUNT)
        if self.store is not None:
            check_code("store", self.store)
        object.__setattr__(self, "items", code_set("item", self.items))
        object.__setattr__(self, "groups", code_set("item group", self.groups))

    @classmethod
    def of(cls, receipt: Receipt) -> PurchaseFact:
        """The facts of a receipt, dated by the store's local date."""
        return cls(receipt.at.date(), receipt.value, receipt.store,
                   frozenset(line.item for line in receipt.lines),
                   frozenset(line.item_group for line in receipt.lines if line.item_group is not None))


@dataclass(frozen=True, slots=True)
class CardFacts:
    """What segment rules may ask about one card, as of the business date ``today``."""

    today: date
    purchases: tuple[PurchaseFact, ...] = ()
    birth_date: date | None = None
    tier: str | None = None
    consents: frozenset[Channel] = frozenset()
    customer_groups: frozenset[str] = frozenset()
    home_store: str | None = None

    def __post_init__(self) -> None:
        for name in ("today", "birth_date"):
            value = getattr(self, name)
            if (value is not None or name == "today") and (not isinstance(value, date) or isinstance(value, datetime)):
                raise InvalidInput(f"{name} is a date")
        purchases = tuple(self.purchases)
        if not all(isinstance(purchase, PurchaseFact) for purchase in purchases):
            raise InvalidInput("purchases are PurchaseFacts")
        object.__setattr__(self, "purchases", purchases)
        try:
            object.__setattr__(self, "consents", frozenset(Channel(channel) for channel in self.consents))
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        object.__setattr__(self, "customer_groups", code_set("customer group", self.customer_groups))
        for name in ("tier", "home_store"):
            if getattr(self, name) is not None:
                check_code(name, getattr(self, name))

    def within(self, days: int) -> Iterable[PurchaseFact]:
        """The purchases of the last ``days`` days, today included."""
        start = self.today - timedelta(days=days)
        return (purchase for purchase in self.purchases if start < purchase.on <= self.today)


# --- rules -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpentOver:
    op: ClassVar[str] = "spent_over"
    amount: int
    days: int

    def __post_init__(self) -> None:
        _int("amount", self.amount, 0, MAX_AMOUNT)
        _int("days", self.days, 1, MAX_DAYS)


@dataclass(frozen=True, slots=True)
class SpentBetween:
    op: ClassVar[str] = "spent_between"
    low: int
    high: int
    days: int

    def __post_init__(self) -> None:
        _int("low", self.low, 0, MAX_AMOUNT)
        _int("high", self.high, self.low, MAX_AMOUNT)
        _int("days", self.days, 1, MAX_DAYS)


@dataclass(frozen=True, slots=True)
class BoughtGroup:
    op: ClassVar[str] = "bought_group"
    group: str
    days: int

    def __post_init__(self) -> None:
        check_code("group", self.group)
        _int("days", self.days, 1, MAX_DAYS)


@dataclass(frozen=True, slots=True)
class BoughtItem:
    op: ClassVar[str] = "bought_item"
    item: str
    days: int

    def __post_init__(self) -> None:
        check_code("item", self.item)
        _int("days", self.days, 1, MAX_DAYS)


@dataclass(frozen=True, slots=True)
class VisitsAtLeast:
    op: ClassVar[str] = "visits_at_least"
    n: int
    days: int

    def __post_init__(self) -> None:
        _int("n", self.n, 1, MAX_DAYS)
        _int("days", self.days, 1, MAX_DAYS)


@dataclass(frozen=True, slots=True)
class BirthdayThisMonth:
    op: ClassVar[str] = "birthday_this_month"


@dataclass(frozen=True, slots=True)
class BirthdayWithin:
    op: ClassVar[str] = "birthday_within"
    days: int

    def __post_init__(self) -> None:
        _int("days", self.days, 0, 366)


@dataclass(frozen=True, slots=True)
class TierIn:
    op: ClassVar[str] = "tier_in"
    tiers: frozenset[str]

    def __post_init__(self) -> None:
        _codes(self, "tiers", "tiers")


@dataclass(frozen=True, slots=True)
class HasConsent:
    op: ClassVar[str] = "has_consent"
    channel: Channel

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "channel", Channel(self.channel))
        except ValueError:
            raise InvalidInput(f"channel is one of {[c.value for c in Channel]}, got {self.channel!r}") from None


@dataclass(frozen=True, slots=True)
class CustomerGroupIn:
    op: ClassVar[str] = "customer_group_in"
    groups: frozenset[str]

    def __post_init__(self) -> None:
        _codes(self, "groups", "customer groups")


@dataclass(frozen=True, slots=True)
class StoreIn:
    op: ClassVar[str] = "store_in"
    stores: frozenset[str]

    def __post_init__(self) -> None:
        _codes(self, "stores", "stores")


def _children(node: object, name: str) -> None:
    value = getattr(node, name)
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise InvalidInput(f"{name} is a list of rules")
    rules = tuple(value)
    if not rules:
        raise InvalidInput(f"{name} lists at least one rule")
    if not all(isinstance(rule, _RULE_TYPES) for rule in rules):
        raise InvalidInput(f"{name} lists rules only")
    object.__setattr__(node, name, rules)


@dataclass(frozen=True, slots=True)
class And:
    op: ClassVar[str] = "and"
    rules: tuple[SegmentRule, ...]

    def __post_init__(self) -> None:
        _children(self, "rules")


@dataclass(frozen=True, slots=True)
class Or:
    op: ClassVar[str] = "or"
    rules: tuple[SegmentRule, ...]

    def __post_init__(self) -> None:
        _children(self, "rules")


@dataclass(frozen=True, slots=True)
class Not:
    op: ClassVar[str] = "not"
    rule: SegmentRule

    def __post_init__(self) -> None:
        if not isinstance(self.rule, _RULE_TYPES):
            raise InvalidInput("not takes one rule")


SegmentRule = (SpentOver | SpentBetween | BoughtGroup | BoughtItem | VisitsAtLeast | BirthdayThisMonth
               | BirthdayWithin | TierIn | HasConsent | CustomerGroupIn | StoreIn | And | Or | Not)
_RULE_TYPES = (SpentOver, SpentBetween, BoughtGroup, BoughtItem, VisitsAtLeast, BirthdayThisMonth, BirthdayWithin,
               TierIn, HasConsent, CustomerGroupIn, StoreIn, And, Or, Not)
_BY_OP = {cls.op: cls for cls in _RULE_TYPES}


# --- evaluation --------------------------------------------------------------------------------------


def _celebrated(birth: date, year: int) -> date:
    if birth.month == 2 and birth.day == 29 and not calendar.isleap(year):
        return date(year, 2, 28)
    return birth.replace(year=year)


def evaluate(rule: SegmentRule, facts: CardFacts) -> bool:
    """Whether the card described by ``facts`` is in the segment ``rule`` defines."""
    match rule:
        case And(rules=rules):
            return all(evaluate(child, facts) for child in rules)
        case Or(rules=rules):
            return any(evaluate(child, facts) for child in rules)
        case Not(rule=child):
            return not evaluate(child, facts)
        case SpentOver(amount=amount, days=days):
            return sum(p.total_minor for p in facts.within(days)) > amount
        case SpentBetween(low=low, high=high, days=days):
            return low <= sum(p.total_minor for p in facts.within(days)) <= high
        case BoughtGroup(group=group, days=days):
            return any(group in p.groups for p in facts.within(days))
        case BoughtItem(item=item, days=days):
            return any(item in p.items for p in facts.within(days))
        case VisitsAtLeast(n=n, days=days):
            return len({p.on for p in facts.within(days)}) >= n
        case BirthdayThisMonth():
            birth = facts.birth_date
            return birth is not None and _celebrated(birth, facts.today.year).month == facts.today.month
        case BirthdayWithin(days=days):
            birth = facts.birth_date
            if birth is None:
                return False
            upcoming = _celebrated(birth, facts.today.year)
            if upcoming < facts.today:
                upcoming = _celebrated(birth, facts.today.year + 1)
            return (upcoming - facts.today).days <= days
        case TierIn(tiers=tiers):
            return facts.tier in tiers
        case HasConsent(channel=channel):
            return channel in facts.consents
        case CustomerGroupIn(groups=groups):
            return not groups.isdisjoint(facts.customer_groups)
        case StoreIn(stores=stores):
            return facts.home_store in stores
    raise InvalidInput(f"not a segment rule: {rule!r}")


def segments_of(segments: Mapping[str, SegmentRule], facts: CardFacts) -> frozenset[str]:
    """The codes of the segments (code → rule) the card is in: what the till asks, online or at the edge."""
    return frozenset(code for code, rule in segments.items() if evaluate(rule, facts))


# --- JSON form ---------------------------------------------------------------------------------------


def to_data(rule: SegmentRule) -> dict[str, object]:
    """The rule as JSON-ready data (sets as sorted lists, so equal rules give equal data)."""
    if not isinstance(rule, _RULE_TYPES):
        raise InvalidInput(f"not a segment rule: {rule!r}")
    data: dict[str, object] = {"op": rule.op}
    for field in fields(rule):
        value = getattr(rule, field.name)
        if isinstance(value, _RULE_TYPES):
            value = to_data(value)
        elif isinstance(value, tuple):
            value = [to_data(child) for child in value]
        elif isinstance(value, frozenset):
            value = sorted(value)
        elif isinstance(value, Channel):
            value = value.value
        data[field.name] = value
    return data


def to_json(rule: SegmentRule) -> str:
    """The rule's canonical JSON text (sorted keys, no spaces): equal rules give equal text."""
    return json.dumps(to_data(rule), sort_keys=True, separators=(",", ":"))


_INT_FIELDS = {"amount", "low", "high", "days", "n"}
_CODE_FIELDS = {"group", "item", "channel"}
_SET_FIELDS = {"tiers", "groups", "stores"}


def _build(data: object, path: str, depth: int, budget: list[int]) -> SegmentRule:
    if not isinstance(data, dict):
        raise InvalidSegmentRule(path, None, f"a rule is a JSON object, got {type(data).__name__}")
    op = data.get("op") if isinstance(data.get("op"), str) else None
    if op not in _BY_OP:
        raise InvalidSegmentRule(path, op, f"unknown op {data.get('op')!r}; known: {sorted(_BY_OP)}")
    if depth > MAX_DEPTH:
        raise InvalidSegmentRule(path, op, f"rules nest at most {MAX_DEPTH} deep")
    budget[0] -= 1
    if budget[0] < 0:
        raise InvalidSegmentRule(path, op, f"a rule has at most {MAX_NODES} nodes")
    cls = _BY_OP[op]
    names = [field.name for field in fields(cls)]
    missing, extra = set(names) - data.keys(), data.keys() - set(names) - {"op"}
    if missing or extra:
        problems = [f"missing {sorted(missing)}"] * bool(missing) + [f"unexpected {sorted(extra)}"] * bool(extra)
        raise InvalidSegmentRule(path, op, "; ".join(problems))
    values: dict[str, object] = {}
    for name in names:
        value = data[name]
        where = f"{path}.{name}"
        if name == "rule":
            value = _build(value, where, depth + 1, budget)
        elif name == "rules":
            if not isinstance(value, list):
                raise InvalidSegmentRule(path, op, "rules is a list of rules")
            value = tuple(_build(child, f"{where}[{i}]", depth + 1, budget) for i, child in enumerate(value))
        elif name in _SET_FIELDS:
            if not isinstance(value, list) or not all(isinstance(code, str) for code in value):
                raise InvalidSegmentRule(path, op, f"{name} is a list of codes")
            if len(set(value)) != len(value):
                raise InvalidSegmentRule(path, op, f"{name} lists a code twice")
        elif name in _INT_FIELDS and type(value) is not int:
            raise InvalidSegmentRule(path, op, f"{name} is a whole number, got {value!r}")
        elif name in _CODE_FIELDS and not isinstance(value, str):
            raise InvalidSegmentRule(path, op, f"{name} is a string, got {value!r}")
        values[name] = value
    try:
        return cls(**values)
    except InvalidInput as exc:
        raise InvalidSegmentRule(path, op, str(exc)) from None


def from_data(data: object) -> SegmentRule:
    """The rule that JSON-ready ``data`` describes; InvalidSegmentRule (an InvalidInput) naming the bad node."""
    return _build(data, "$", 1, [MAX_NODES])


def from_json(text: str | bytes) -> SegmentRule:
    """The rule that JSON ``text`` describes; InvalidSegmentRule naming the bad node, or ``$`` for bad JSON."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidSegmentRule("$", None, f"not JSON: {exc}") from None
    return from_data(data)

"""Receipts as loyalty sees them: who bought what, where and when, line by line.

A receipt is validated once, when it is built; everything downstream (earning, returns) trusts it.

Quantities are integers in thousandths of the unit the item is sold by (``QUANTITY_SCALE``): 3 pieces
are 3000, and for goods sold by the kilogram 1 gram is 1, so 250 g are 250. Values and discounts are
integer minor units of the receipt's currency; a line's value is what the customer pays for it, after
its line discounts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ..errors import InvalidInput
from ..money import validate_currency

__all__ = ["QUANTITY_SCALE", "MAX_AMOUNT", "MAX_LINES", "ReceiptLine", "Receipt", "code_set", "check_code"]

QUANTITY_SCALE = 1000  # quantity units per piece (or per kg, l, m: thousandths are g, ml, mm)
MAX_AMOUNT = 10**12  # minor units, as the sync protocol carries amounts; also the largest quantity
MAX_LINES = 10_000

_CODE = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")


def check_code(what: str, value: object) -> str:
    """``value`` if it is a code (1-64 printable characters, no surrounding spaces); InvalidInput otherwise."""
    if not isinstance(value, str) or not _CODE.match(value) or value != value.strip():
        raise InvalidInput(f"{what} must be 1-64 printable characters, got {value!r}")
    return value


def code_set(what: str, values: Iterable[str]) -> frozenset[str]:
    """The codes of ``values`` as a frozenset (a lone string is refused: it would be read letter by letter)."""
    if isinstance(values, str):
        raise InvalidInput(f"{what} is a set of codes, not one string")
    return frozenset(check_code(what, v) for v in values)


def _amount(what: str, value: object, minimum: int = 0) -> int:
    if type(value) is not int or not minimum <= value <= MAX_AMOUNT:
        raise InvalidInput(f"{what} must be a whole number from {minimum} to {MAX_AMOUNT}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ReceiptLine:
    """One line of a receipt: ``quantity`` in thousandths of the sale unit, ``value`` and ``discount`` in minor
    units (``value`` already net of ``discount``); ``promotional`` marks items sold under a promotion."""

    item: str
    quantity: int
    value: int
    item_group: str | None = None
    discount: int = 0
    promotional: bool = False

    def __post_init__(self) -> None:
        check_code("item", self.item)
        if self.item_group is not None:
            check_code("item group", self.item_group)
        _amount("quantity", self.quantity, minimum=1)
        _amount("line value", self.value)
        _amount("line discount", self.discount)
        if type(self.promotional) is not bool:
            raise InvalidInput("promotional is true or false")


@dataclass(frozen=True, slots=True)
class Receipt:
    """A purchase on a card.

    ``at`` is when it happened, an aware datetime carrying the store's local offset: schemes read its
    wall clock for date, weekday and time-of-day windows, and the instant for which scheme version is
    in force. ``store_groups`` and ``customer_groups`` are the groups the store and the customer were
    in at that time; ``tier`` the card's tier and ``card_type`` its programme, as the till saw them.
    """

    id: str
    card: str
    store: str
    at: datetime
    currency: str
    lines: tuple[ReceiptLine, ...]
    store_groups: frozenset[str] = frozenset()
    customer_groups: frozenset[str] = frozenset()
    tier: str | None = None
    card_type: str | None = None

    def __post_init__(self) -> None:
        check_code("receipt id", self.id)
        check_code("card", self.card)
        check_code("store", self.store)
        if not isinstance(self.at, datetime) or self.at.utcoffset() is None:
            raise InvalidInput("a receipt's time is an aware datetime (with the store's offset)")
        try:
            validate_currency(self.currency)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        if isinstance(self.lines, (str, bytes)) or not isinstance(self.lines, Iterable):
            raise InvalidInput("lines are a sequence of receipt lines")
        lines = tuple(self.lines)
        if not 1 <= len(lines) <= MAX_LINES:
            raise InvalidInput(f"a receipt has 1 to {MAX_LINES} lines, got {len(lines)}")
        if not all(isinstance(line, ReceiptLine) for line in lines):
            raise InvalidInput("every line must be a ReceiptLine")
        object.__setattr__(self, "lines", lines)
        object.__setattr__(self, "store_groups", code_set("store group", self.store_groups))
        object.__setattr__(self, "customer_groups", code_set("customer group", self.customer_groups))
        if self.tier is not None:
            check_code("tier", self.tier)
        if self.card_type is not None:
            check_code("card type", self.card_type)

    @property
    def value(self) -> int:
        """What the customer paid for all lines, in minor units."""
        return sum(line.value for line in self.lines)

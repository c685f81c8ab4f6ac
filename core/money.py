"""Money as integer minor units with a currency; never a float."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Money", "CurrencyMismatch", "validate_currency", "MINOR_UNITS"]

_CURRENCY = re.compile(r"^[A-Z]{3}$")

# Decimal places of the currencies a chain is likely to run; others default to 2.
MINOR_UNITS = {"JPY": 0, "KRW": 0, "HUF": 2, "ISK": 0, "BHD": 3, "KWD": 3, "OMR": 3, "TND": 3}


class CurrencyMismatch(ValueError):
    """Two amounts in different currencies were combined."""


def validate_currency(code: str) -> str:
    """Return an ISO 4217-shaped currency code, or raise ValueError."""
    if not isinstance(code, str) or not _CURRENCY.match(code):
        raise ValueError(f"currency must be three upper-case letters, got {code!r}")
    return code


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in minor units (cents) of one currency."""

    currency: str
    minor: int

    def __post_init__(self) -> None:
        validate_currency(self.currency)
        if type(self.minor) is not int:  # bool and float are both refused
            raise TypeError("money amounts are integers in minor units")

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"{self.currency} and {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.currency, self.minor + other.minor)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.currency, self.minor - other.minor)

    # Ordering only makes sense within one currency.
    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor < other.minor

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.minor <= other.minor

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor > other.minor

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.minor >= other.minor

    def __neg__(self) -> Money:
        return Money(self.currency, -self.minor)

    def __str__(self) -> str:
        places = MINOR_UNITS.get(self.currency, 2)
        sign = "-" if self.minor < 0 else ""
        whole, frac = divmod(abs(self.minor), 10**places)
        return f"{sign}{whole}.{frac:0{places}d} {self.currency}" if places else f"{sign}{whole} {self.currency}"

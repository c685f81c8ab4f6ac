"""Card programmes: how their numbers are made and which values their cards may carry."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from stdnum import luhn

from .errors import InvalidInput
from .money import validate_currency

__all__ = ["ProgrammeKind", "HoldExpiryPolicy", "NumberTemplate", "ValueRules", "Programme", "is_digits"]

_DIGITS = re.compile(r"^[0-9]+$")


def is_digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts other scripts' digits)."""
    return bool(_DIGITS.match(text))


class ProgrammeKind(StrEnum):
    GIFT = "gift"
    LOYALTY = "loyalty"
    VOUCHER = "voucher"
    EMPLOYEE = "employee"


class HoldExpiryPolicy(StrEnum):
    """What happens to a hold the till never confirmed or voided."""

    REVERSE = "reverse"  # release the held amount automatically
    CLARIFY = "clarify"  # keep it held and hand it to an operator


@dataclass(frozen=True, slots=True)
class NumberTemplate:
    """Card numbers are ``prefix + serial (zero-padded) [+ Luhn check digit]`` of a fixed length."""

    prefix: str
    length: int
    luhn: bool = True

    def __post_init__(self) -> None:
        if not is_digits(self.prefix):
            raise InvalidInput("number prefix must be digits")
        if not 8 <= self.length <= 19:
            raise InvalidInput("card numbers are 8 to 19 digits long")
        if self.serial_width < 1:
            raise InvalidInput("prefix leaves no room for a serial number")

    @property
    def serial_width(self) -> int:
        return self.length - len(self.prefix) - (1 if self.luhn else 0)

    @property
    def capacity(self) -> int:
        """How many distinct numbers the template can make."""
        return 10**self.serial_width

    def number(self, serial: int) -> str:
        """The card number for a serial; serials start at 0."""
        if not 0 <= serial < self.capacity:
            raise InvalidInput(f"serial {serial} is outside the template's range")
        body = f"{self.prefix}{serial:0{self.serial_width}d}"
        return body + luhn.calc_check_digit(body) if self.luhn else body

    def serial(self, number: str) -> int:
        """The serial of a number the template made; InvalidInput otherwise."""
        if not self.matches(number):
            raise InvalidInput("card number does not belong to this programme")
        end = len(number) - 1 if self.luhn else len(number)
        return int(number[len(self.prefix):end])

    def matches(self, number: str) -> bool:
        """Whether ``number`` is well-formed for this template (prefix, length, check digit)."""
        if len(number) != self.length or not is_digits(number) or not number.startswith(self.prefix):
            return False
        return luhn.is_valid(number) if self.luhn else True


@dataclass(frozen=True, slots=True)
class ValueRules:
    """Which amounts a card may be sold, topped up or charged with (minor units)."""

    nominal_values: tuple[int, ...] = ()
    min_amount: int = 1
    max_amount: int = 50_000_00
    topup_allowed: bool = False
    max_balance: int | None = None

    def __post_init__(self) -> None:
        if any(type(v) is not int or v <= 0 for v in self.nominal_values):
            raise InvalidInput("nominal values are positive integers in minor units")
        if any(type(v) is not int for v in (self.min_amount, self.max_amount)) or (
                self.max_balance is not None and type(self.max_balance) is not int):
            raise InvalidInput("amounts are integers in minor units")
        if not 0 < self.min_amount <= self.max_amount:
            raise InvalidInput("min_amount must be positive and not above max_amount")
        if self.max_balance is not None and self.max_balance <= 0:
            raise InvalidInput("max_balance must be positive")

    @property
    def open_value(self) -> bool:
        return not self.nominal_values


@dataclass(frozen=True, slots=True)
class Programme:
    """A card programme as the domain sees it; persisted by the server that owns it."""

    id: int
    code: str
    name: str
    kind: ProgrammeKind
    currency: str
    template: NumberTemplate
    values: ValueRules = field(default_factory=ValueRules)
    validity_months: int | None = 36
    hold_ttl_seconds: int = 900
    hold_expiry_policy: HoldExpiryPolicy = HoldExpiryPolicy.REVERSE
    service_code: str = "120"
    pin_required: bool = False  # debits need the card's PIN (entered on a PIN pad)

    def __post_init__(self) -> None:
        validate_currency(self.currency)
        if type(self.pin_required) is not bool:
            raise InvalidInput("pin_required is true or false")
        if self.hold_ttl_seconds <= 0:
            raise InvalidInput("hold_ttl_seconds must be positive")
        if self.validity_months is not None and self.validity_months <= 0:
            raise InvalidInput("validity_months must be positive")
        if len(self.service_code) != 3 or not is_digits(self.service_code):
            raise InvalidInput("service_code is three digits")

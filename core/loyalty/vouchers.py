"""E-vouchers: value or percentage discounts issued to a card or a customer, their lifecycle, the
decision to accept one on a basket, and whether an edge may accept one while central is unreachable.

Validity is the half-open window ``valid_from <= at < valid_to`` (either end may be open). A value
voucher takes at most its value off the basket, and what the basket does not use is forfeited; a
percentage voucher takes its share of the basket, floored to the minor unit.

Offline, an edge cannot see uses made at other stores, so it accepts only vouchers whose worst case
is small and known in advance: single-use value vouchers worth no more than the programme's floor
limit. Percentage vouchers (whose worth depends on the basket) and multi-use vouchers wait for central.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from ..errors import IllegalTransition, InvalidInput
from ..limits import OfflineLimits
from ..money import Money, validate_currency
from .receipts import MAX_AMOUNT, check_code

__all__ = ["VoucherKind", "VoucherState", "VoucherEvent", "VoucherDecline", "Voucher", "VoucherCard",
           "VoucherDecision", "VOUCHER_TRANSITIONS", "next_voucher_state", "use_voucher", "reverse_voucher_use",
           "cancel_voucher",
           "decide_voucher", "offline_allowed", "decide_voucher_offline"]

_BPS = 10_000
MAX_USES = 1_000_000


def _int(what: str, value: object, minimum: int, maximum: int) -> int:
    if type(value) is not int or not minimum <= value <= maximum:
        raise InvalidInput(f"{what} must be a whole number from {minimum} to {maximum}, got {value!r}")
    return value


class VoucherKind(StrEnum):
    VALUE = "value"  # a fixed amount off, in minor units
    PERCENT = "percent"  # a share of the basket, in basis points


class VoucherState(StrEnum):
    ISSUED = "issued"  # made, not yet usable (waiting for activation)
    ACTIVE = "active"
    USED = "used"  # every use taken
    CANCELLED = "cancelled"
    EXPIRED = "expired"  # marked by the expiry job; a voucher past valid_to is refused before that too


class VoucherEvent(StrEnum):
    ACTIVATE = "activate"
    USE = "use"
    REVERSE_USE = "reverse_use"  # the till cancelled the sale the voucher was used on
    CANCEL = "cancel"
    EXPIRE = "expire"


class VoucherDecline(StrEnum):
    """Stable reasons for refusing a voucher at a till or on the web."""

    NOT_ACTIVE = "voucher_not_active"  # issued but not activated
    CANCELLED = "voucher_cancelled"
    USED_UP = "voucher_used_up"  # every use already taken
    EXPIRED = "voucher_expired"  # past its window, or marked expired
    NOT_YET_VALID = "voucher_not_yet_valid"  # before its window
    CARD_REQUIRED = "voucher_card_required"  # bound to a card or customer, and no card was presented
    WRONG_CARD = "voucher_wrong_card"  # bound to another card or customer
    CURRENCY_MISMATCH = "voucher_currency_mismatch"
    BELOW_MIN_BASKET = "voucher_below_min_basket"
    NOTHING_TO_DISCOUNT = "voucher_nothing_to_discount"  # it would take nothing off this basket
    OFFLINE_NOT_ALLOWED = "voucher_offline_not_allowed"  # central is unreachable and this voucher needs it


S, E = VoucherState, VoucherEvent
VOUCHER_TRANSITIONS: dict[tuple[VoucherState, VoucherEvent], VoucherState] = {
    (S.ISSUED, E.ACTIVATE): S.ACTIVE,
    (S.ISSUED, E.CANCEL): S.CANCELLED,
    (S.ISSUED, E.EXPIRE): S.EXPIRED,
    (S.ACTIVE, E.CANCEL): S.CANCELLED,
    (S.ACTIVE, E.EXPIRE): S.EXPIRED,
}
del S, E


def next_voucher_state(state: VoucherState | str, event: VoucherEvent) -> VoucherState:
    """The state after a lifecycle event (uses are counted by :func:`use_voucher` and :func:`reverse_voucher_use`);
    IllegalTransition when the lifecycle does not allow it."""
    try:
        return VOUCHER_TRANSITIONS[(VoucherState(state), VoucherEvent(event))]
    except (KeyError, ValueError):
        raise IllegalTransition(f"a voucher that is {state} cannot {event}") from None


@dataclass(frozen=True, slots=True)
class Voucher:
    """An e-voucher. ``code`` is the reference the voucher is known by here (the printed code is hashed
    before it reaches the domain); ``value`` is minor units for VALUE vouchers and basis points for PERCENT;
    ``max_uses`` 1 is single use. A voucher bound to a card or a customer needs that card, or any card of
    that customer."""

    code: str
    kind: VoucherKind
    value: int
    currency: str
    max_uses: int = 1
    uses: int = 0
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    min_basket: int = 0
    card: str | None = None
    customer: str | None = None
    state: VoucherState = VoucherState.ACTIVE

    def __post_init__(self) -> None:
        check_code("voucher code", self.code)
        try:
            object.__setattr__(self, "kind", VoucherKind(self.kind))
            object.__setattr__(self, "state", VoucherState(self.state))
            validate_currency(self.currency)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        _int("voucher value", self.value, 1, _BPS if self.kind is VoucherKind.PERCENT else MAX_AMOUNT)
        _int("maximum uses", self.max_uses, 1, MAX_USES)
        _int("uses", self.uses, 0, self.max_uses)
        _int("minimum basket", self.min_basket, 0, MAX_AMOUNT)
        for name in ("valid_from", "valid_to"):
            moment = getattr(self, name)
            if moment is not None and (not isinstance(moment, datetime) or moment.utcoffset() is None):
                raise InvalidInput(f"{name} is an aware datetime")
        if self.valid_from is not None and self.valid_to is not None and self.valid_from >= self.valid_to:
            raise InvalidInput("a voucher's window ends after it starts")
        for name in ("card", "customer"):
            if getattr(self, name) is not None:
                check_code(name, getattr(self, name))
        if self.state is VoucherState.ISSUED and self.uses:
            raise InvalidInput("an issued voucher has no uses yet")
        if self.state is VoucherState.ACTIVE and self.uses == self.max_uses:
            raise InvalidInput("an active voucher has a use left")
        if self.state is VoucherState.USED and self.uses < self.max_uses:
            raise InvalidInput("a used voucher has every use taken")

    @property
    def uses_left(self) -> int:
        return self.max_uses - self.uses


def use_voucher(voucher: Voucher) -> Voucher:
    """The voucher after one approved use (USED once every use is taken)."""
    if voucher.state is not VoucherState.ACTIVE:
        raise IllegalTransition(f"a voucher that is {voucher.state} cannot be used")
    uses = voucher.uses + 1
    return replace(voucher, uses=uses, state=VoucherState.USED if uses == voucher.max_uses else VoucherState.ACTIVE)


def reverse_voucher_use(voucher: Voucher) -> Voucher:
    """The voucher after a use is reversed: the use is given back, and a used-up voucher is active again.
    A cancelled or expired voucher keeps its state (the use is still given back)."""
    if voucher.uses == 0:
        raise IllegalTransition("the voucher has no use to reverse")
    state = VoucherState.ACTIVE if voucher.state is VoucherState.USED else voucher.state
    return replace(voucher, uses=voucher.uses - 1, state=state)


def cancel_voucher(voucher: Voucher) -> Voucher:
    """The voucher cancelled: never usable again. A used-up voucher cannot be cancelled (reverse a use first)."""
    return replace(voucher, state=next_voucher_state(voucher.state, VoucherEvent.CANCEL))


@dataclass(frozen=True, slots=True)
class VoucherCard:
    """The card presented with a voucher, and the customer it belongs to (if any)."""

    number: str
    customer: str | None = None


@dataclass(frozen=True, slots=True)
class VoucherDecision:
    approved: bool
    discount_minor: int = 0
    code: VoucherDecline | None = None
    message: str = ""


def _decline(code: VoucherDecline, message: str) -> VoucherDecision:
    return VoucherDecision(False, 0, code, message)


def _refusal(voucher: Voucher, basket_total: Money, at: datetime, card: VoucherCard | None) -> VoucherDecision | None:
    # Checked in this order; the first that fails names the decline.
    state = voucher.state
    if state is VoucherState.CANCELLED:
        return _decline(VoucherDecline.CANCELLED, "voucher was cancelled")
    if state is VoucherState.USED or voucher.uses >= voucher.max_uses:
        return _decline(VoucherDecline.USED_UP, f"voucher's {voucher.max_uses} use(s) are taken")
    if state is VoucherState.EXPIRED:
        return _decline(VoucherDecline.EXPIRED, "voucher has expired")
    if state is VoucherState.ISSUED:
        return _decline(VoucherDecline.NOT_ACTIVE, "voucher is not active yet")
    if voucher.valid_from is not None and at < voucher.valid_from:
        return _decline(VoucherDecline.NOT_YET_VALID, f"voucher is valid from {voucher.valid_from.isoformat()}")
    if voucher.valid_to is not None and at >= voucher.valid_to:
        return _decline(VoucherDecline.EXPIRED, f"voucher was valid until {voucher.valid_to.isoformat()}")
    if (voucher.card or voucher.customer) and card is None:
        return _decline(VoucherDecline.CARD_REQUIRED, "voucher is personal: present the card")
    if voucher.card is not None and card is not None and card.number != voucher.card:
        return _decline(VoucherDecline.WRONG_CARD, "voucher belongs to another card")
    if voucher.customer is not None and card is not None and card.customer != voucher.customer:
        return _decline(VoucherDecline.WRONG_CARD, "voucher belongs to another customer")
    if basket_total.currency != voucher.currency:
        return _decline(VoucherDecline.CURRENCY_MISMATCH, f"voucher is in {voucher.currency}")
    if basket_total.minor < voucher.min_basket:
        return _decline(VoucherDecline.BELOW_MIN_BASKET,
                        f"basket must be at least {Money(voucher.currency, voucher.min_basket)}")
    return None


def decide_voucher(voucher: Voucher, basket_total: Money, at: datetime,
                   card: VoucherCard | None = None) -> VoucherDecision:
    """Whether ``voucher`` may be used on a basket of ``basket_total`` at ``at`` with ``card`` presented,
    and the discount it gives (value: at most the basket; percent: the share, floored)."""
    if not isinstance(basket_total, Money) or basket_total.minor < 0:
        raise InvalidInput("basket total is a non-negative Money")
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise InvalidInput("at is an aware datetime")
    refused = _refusal(voucher, basket_total, at, card)
    if refused is not None:
        return refused
    if voucher.kind is VoucherKind.VALUE:
        discount = min(voucher.value, basket_total.minor)
    else:
        discount = basket_total.minor * voucher.value // _BPS
    if discount == 0:
        return _decline(VoucherDecline.NOTHING_TO_DISCOUNT, "voucher would take nothing off this basket")
    return VoucherDecision(True, discount)


def offline_allowed(voucher: Voucher, limits: OfflineLimits) -> bool:
    """Whether an edge may accept ``voucher`` while central is unreachable: a single-use value voucher
    worth no more than the programme's floor limit."""
    return (voucher.kind is VoucherKind.VALUE and voucher.max_uses == 1
            and voucher.value <= limits.floor_limit)


def decide_voucher_offline(voucher: Voucher, basket_total: Money, at: datetime, card: VoucherCard | None,
                           limits: OfflineLimits) -> VoucherDecision:
    """:func:`decide_voucher` at an edge that cannot reach central: a voucher refused anyway says why;
    one that would be accepted is, if :func:`offline_allowed`."""
    decision = decide_voucher(voucher, basket_total, at, card)
    if decision.approved and not offline_allowed(voucher, limits):
        return _decline(VoucherDecline.OFFLINE_NOT_ALLOWED, "this voucher needs central, which is unreachable")
    return decision

"""Pure decisions for till and web operations: approve (with an amount) or decline (with a code)."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date

from .cards import CardState, usable_decline
from .errors import DeclineCode
from .programmes import Programme

__all__ = ["CardView", "Decision", "approve", "decline", "decide_sale", "decide_debit", "decide_credit",
           "decide_topup", "expiry_date"]


@dataclass(frozen=True, slots=True)
class CardView:
    """What a decision needs to know about a card and its stored-value account."""

    number: str
    state: CardState
    programme: Programme
    balance: int
    held: int
    expires_on: date | None = None
    pack_sellable: bool = False
    pack_store_id: int | None = None

    @property
    def available(self) -> int:
        return self.balance - self.held


@dataclass(frozen=True, slots=True)
class Decision:
    approved: bool
    amount: int = 0
    code: DeclineCode | None = None
    message: str = ""


def approve(amount: int) -> Decision:
    return Decision(True, amount)


def decline(code: DeclineCode, message: str) -> Decision:
    return Decision(False, 0, code, message)


def expiry_date(activated_on: date, validity_months: int | None) -> date | None:
    """The last day a card activated on ``activated_on`` may be used."""
    if validity_months is None:
        return None
    months = activated_on.month - 1 + validity_months
    year, month = activated_on.year + months // 12, months % 12 + 1
    day = min(activated_on.day, calendar.monthrange(year, month)[1])
    return date(year, month, day)


def _usable(card: CardView, today: date) -> Decision | None:
    code = usable_decline(card.state)
    if code is not None:
        return decline(code, f"card is {card.state}")
    if card.expires_on is not None and today > card.expires_on:
        return decline(DeclineCode.EXPIRED, f"card expired on {card.expires_on.isoformat()}")
    return None


def _within_max_balance(card: CardView, amount: int) -> Decision | None:
    cap = card.programme.values.max_balance
    if cap is not None and card.balance + amount > cap:
        return decline(DeclineCode.MAX_BALANCE_EXCEEDED, f"balance would exceed {cap}")
    return None


def decide_sale(card: CardView, amount: int | None, store_id: int | None) -> Decision:
    """Selling (activating) a card at a till, with a nominal or an open value."""
    if card.state == CardState.ACTIVE:
        return decline(DeclineCode.ALREADY_ACTIVE, "card is already active")
    if card.state != CardState.IN_PACK:
        return decline(usable_decline(card.state) or DeclineCode.NOT_ACTIVE, f"card is {card.state}")
    if not card.pack_sellable:
        return decline(DeclineCode.NOT_FOR_SALE, "card's pack is not authorized for sale")
    if card.pack_store_id is not None and store_id is not None and card.pack_store_id != store_id:
        return decline(DeclineCode.WRONG_STORE, "card's pack was delivered to another store")
    rules = card.programme.values
    if rules.open_value:
        if amount is None or not rules.min_amount <= amount <= rules.max_amount:
            return decline(DeclineCode.AMOUNT_OUT_OF_RANGE,
                           f"amount must be between {rules.min_amount} and {rules.max_amount}")
    else:
        if amount is None and len(rules.nominal_values) == 1:
            amount = rules.nominal_values[0]
        if amount not in rules.nominal_values:
            return decline(DeclineCode.NOT_A_NOMINAL_VALUE,
                           f"amount must be one of {list(rules.nominal_values)}")
    return _within_max_balance(card, amount) or approve(amount)


def decide_debit(card: CardView, amount: int, today: date, allow_partial: bool = False) -> Decision:
    """A payment or an authorization hold: never below the available balance."""
    refused = _usable(card, today)
    if refused:
        return refused
    if amount > card.available:
        if allow_partial and card.available > 0:
            return approve(card.available)
        return decline(DeclineCode.INSUFFICIENT_FUNDS, f"available balance is {card.available}")
    return approve(amount)


def decide_credit(card: CardView, amount: int, today: date) -> Decision:
    """A refund (or other credit) onto an active card."""
    return _usable(card, today) or _within_max_balance(card, amount) or approve(amount)


def decide_topup(card: CardView, amount: int, today: date) -> Decision:
    """Loading more value onto an active card, if the programme allows it."""
    refused = _usable(card, today)
    if refused:
        return refused
    rules = card.programme.values
    if not rules.topup_allowed:
        return decline(DeclineCode.TOPUP_NOT_ALLOWED, "programme does not allow top-ups")
    if not rules.min_amount <= amount <= rules.max_amount:
        return decline(DeclineCode.AMOUNT_OUT_OF_RANGE,
                       f"amount must be between {rules.min_amount} and {rules.max_amount}")
    return _within_max_balance(card, amount) or approve(amount)

"""Offline authorization limits: what an edge node may approve alone while central is unreachable.

Limits are set centrally per programme (floor limit, per-card cumulative amount and count since the
card was last seen online) and per store (a total exposure budget); the edge ships them from central
and decides with :func:`decide_offline_debit`. Worst-case exposure is the sum of those bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

from .authorization import Decision, approve, decline
from .errors import DeclineCode, InvalidInput

__all__ = ["OfflineLimits", "OfflineCard", "StoreBudget", "decide_offline_debit"]


@dataclass(frozen=True, slots=True)
class OfflineLimits:
    """A programme's offline limits, in the programme's minor units; zero disables offline debits."""

    floor_limit: int = 0  # largest single offline debit
    card_amount: int = 0  # cumulative offline debits on one card since it was last seen online
    card_count: int = 0  # consecutive offline debits on one card since it was last seen online

    def __post_init__(self) -> None:
        for name in ("floor_limit", "card_amount", "card_count"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise InvalidInput(f"{name} must be a non-negative integer")


@dataclass(frozen=True, slots=True)
class StoreBudget:
    """A store's total offline exposure budget: debits approved offline that central has not seen."""

    currency: str
    amount: int
    used: int = 0

    @property
    def left(self) -> int:
        return self.amount - self.used


@dataclass(frozen=True, slots=True)
class OfflineCard:
    """What the edge knows of a card: the last known available balance (central's balance minus
    holds, less what this store spent since) and its offline use since it was last seen online."""

    available: int
    currency: str
    offline_amount: int = 0
    offline_count: int = 0
    deny_listed: bool = False


def decide_offline_debit(card: OfflineCard, amount: int, limits: OfflineLimits, budget: StoreBudget,
                         allow_partial: bool = False) -> Decision:
    """Approve a debit offline only within every limit; the first limit exceeded names the decline."""
    if type(amount) is not int or amount <= 0:
        raise InvalidInput("amount must be a positive number of minor units")
    if card.deny_listed:
        return decline(DeclineCode.DENY_LISTED, "card is on the deny list")
    if budget.currency != card.currency:
        return decline(DeclineCode.OFFLINE_LIMIT, f"offline budget is in {budget.currency}, card in {card.currency}")
    if allow_partial and 0 < card.available < amount:
        amount = card.available
    if amount > card.available:
        return decline(DeclineCode.INSUFFICIENT_FUNDS, f"last known available balance is {card.available}")
    if amount > limits.floor_limit:
        return decline(DeclineCode.OFFLINE_LIMIT, f"offline floor limit is {limits.floor_limit}")
    if card.offline_count + 1 > limits.card_count:
        return decline(DeclineCode.OFFLINE_LIMIT, f"at most {limits.card_count} offline debits per card")
    if card.offline_amount + amount > limits.card_amount:
        return decline(DeclineCode.OFFLINE_LIMIT, f"at most {limits.card_amount} offline per card")
    if amount > budget.left:
        return decline(DeclineCode.OFFLINE_LIMIT, "the store's offline exposure budget is used up")
    return approve(amount)

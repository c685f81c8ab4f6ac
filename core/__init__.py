"""Tessera's pure domain: money, programmes, cards, the ledger and authorization decisions.

Nothing here does I/O; servers and nodes persist and transport what these modules decide.
"""

from .authorization import CardView, Decision, decide_credit, decide_debit, decide_sale, decide_topup, expiry_date
from .cards import CardEvent, CardState, next_state, usable_decline
from .errors import DeclineCode, DomainError, IdempotencyConflict, IllegalTransition, InvalidInput
from .ledger import CANCELS, REVERSALS, Entry, EntryKind, OperationKind, balances, fingerprint
from .limits import OfflineCard, OfflineLimits, StoreBudget, decide_offline_debit
from .money import CurrencyMismatch, Money, validate_currency
from .programmes import HoldExpiryPolicy, NumberTemplate, Programme, ProgrammeKind, ValueRules
from .ranges import BlocksExhausted, NumberBlock, needs_block, next_number

__all__ = [
    "BlocksExhausted", "CANCELS", "REVERSALS", "CardEvent", "CardState", "CardView", "CurrencyMismatch", "Decision",
    "DeclineCode", "DomainError", "Entry", "EntryKind", "HoldExpiryPolicy", "IdempotencyConflict",
    "IllegalTransition", "InvalidInput", "Money", "NumberBlock", "NumberTemplate", "OfflineCard", "OfflineLimits",
    "OperationKind", "Programme", "ProgrammeKind", "StoreBudget", "ValueRules", "balances", "decide_credit",
    "decide_debit", "decide_offline_debit", "decide_sale", "decide_topup", "expiry_date", "fingerprint",
    "needs_block", "next_number", "next_state", "usable_decline", "validate_currency",
]

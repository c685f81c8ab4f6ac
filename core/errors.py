"""Typed domain errors. Each carries a stable machine code; adapters translate them once."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DomainError", "IllegalTransition", "InvalidInput", "IdempotencyConflict", "DeclineCode"]


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    code = "domain_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class InvalidInput(DomainError):
    """A value that can never be valid (malformed number, negative amount...)."""

    code = "invalid_input"


class IllegalTransition(DomainError):
    """A card (or pack, or hold) was asked to move to a state its current state does not allow."""

    code = "illegal_transition"


class IdempotencyConflict(DomainError):
    """A client id was reused with a different request."""

    code = "idempotency_conflict"


class DeclineCode(StrEnum):
    """Stable reasons for declining a till or web transaction."""

    UNKNOWN_CARD = "unknown_card"
    NOT_ACTIVE = "not_active"
    BLOCKED = "blocked"
    EXPIRED = "expired"
    REPLACED = "replaced"
    CLOSED = "closed"
    ALREADY_ACTIVE = "already_active"
    NOT_FOR_SALE = "not_authorized_for_sale"
    WRONG_STORE = "wrong_store"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
    NOT_A_NOMINAL_VALUE = "not_a_nominal_value"
    MAX_BALANCE_EXCEEDED = "max_balance_exceeded"
    TOPUP_NOT_ALLOWED = "topup_not_allowed"
    CURRENCY_MISMATCH = "currency_mismatch"
    ORIGINAL_NOT_FOUND = "original_not_found"
    ORIGINAL_MISMATCH = "original_mismatch"
    ALREADY_CANCELLED = "already_cancelled"
    CARD_USED = "card_used"
    CANCEL_NOT_ALLOWED = "cancel_not_allowed"
    HOLD_NOT_PENDING = "hold_not_pending"
    AMOUNT_EXCEEDS_HOLD = "amount_exceeds_hold"
    REFUND_EXCEEDS_PAYMENT = "refund_exceeds_payment"
    WRONG_PROGRAMME = "wrong_programme"
    HOLDS_PENDING = "holds_pending"
    DENY_LISTED = "deny_listed"
    OFFLINE_LIMIT = "offline_limit"  # an offline decision would exceed a limit set by central
    UNKNOWN_OFFLINE = "card_unknown_offline"  # central is unreachable and the store has never seen it
    PIN_REQUIRED = "pin_required"  # the programme needs the card's PIN (none sent, or none set for the card)
    PIN_INCORRECT = "pin_incorrect"
    INSUFFICIENT_POINTS = "insufficient_points"  # fewer available points than the redemption asks
    REDEMPTION_NOT_ALLOWED = "redemption_not_allowed"  # the card's tier does not redeem (or nothing to redeem)
    NOT_LOYALTY = "not_a_loyalty_card"  # points, tiers and receipts need a loyalty programme's card
    RETURN_EXCEEDS_RECEIPT = "return_exceeds_receipt"  # more goods brought back than the receipt had
    REWARD_OUT_OF_STOCK = "reward_out_of_stock"
    PIN_TRIES_EXCEEDED = "pin_tries_exceeded"  # too many wrong PINs in a row: staff must reset the PIN

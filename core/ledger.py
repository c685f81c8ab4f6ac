"""The append-only ledger: operations (client-identified), the entries they post, idempotency."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "OperationKind",
    "EntryKind",
    "CANCELS",
    "REVERSALS",
    "Entry",
    "fingerprint",
    "balances",
]


class OperationKind(StrEnum):
    """What a client asked for; each is one idempotent operation with a client-generated id."""

    SALE = "sale"
    SALE_CANCEL = "sale_cancel"
    PAYMENT = "payment"
    PAYMENT_CANCEL = "payment_cancel"
    TOPUP = "topup"
    TOPUP_CANCEL = "topup_cancel"
    REFUND = "refund"
    REFUND_CANCEL = "refund_cancel"
    AUTHORIZE = "authorize"
    CONFIRM = "confirm"
    VOID = "void"
    HOLD_EXPIRY = "hold_expiry"
    HOLD_RESOLUTION = "hold_resolution"
    PACK_ACTIVATION = "pack_activation"
    DUPLICATE = "duplicate"
    LOAD = "load"
    BLOCK = "block"
    UNBLOCK = "unblock"
    CARD_EXPIRY = "card_expiry"
    STORE_ISSUE = "store_issue"  # a store issued a card from its number block
    # loyalty
    RECEIPT = "receipt"  # a purchase registered on a card: it earns points
    RECEIPT_RETURN = "receipt_return"  # goods of a receipt brought back: their points are taken back
    POINTS_REDEEM = "points_redeem"  # points spent as a discount on a receipt
    POINTS_REDEEM_REVERSAL = "points_redeem_reversal"  # the till takes a redemption back: points return
    REWARD = "reward"  # points spent on a reward from the catalogue
    POINTS_BONUS = "points_bonus"  # registration, first purchase, birthday
    POINTS_ADJUST = "points_adjust"  # staff credit or debit with a reason
    POINTS_EXPIRY = "points_expiry"
    POINTS_CONVERT = "points_convert"  # between a card's points and its e-money
    VOUCHER_ISSUE = "voucher_issue"
    VOUCHER_REDEEM = "voucher_redeem"
    VOUCHER_REDEEM_REVERSAL = "voucher_redeem_reversal"  # the till takes a voucher use back
    VOUCHER_REVOKE = "voucher_revoke"  # head office withdraws a voucher
    POOL_JOIN = "pool_join"  # a card starts spending a master card's e-money
    POOL_LEAVE = "pool_leave"


# A cancellation names the operation it compensates; this is which kind it may name.
CANCELS: dict[OperationKind, OperationKind] = {
    OperationKind.SALE_CANCEL: OperationKind.SALE,
    OperationKind.PAYMENT_CANCEL: OperationKind.PAYMENT,
    OperationKind.TOPUP_CANCEL: OperationKind.TOPUP,
    OperationKind.REFUND_CANCEL: OperationKind.REFUND,
}

# Loyalty's reversals likewise name the operation they take back (kept apart from the stored-value
# cancellations, whose rules differ).
REVERSALS: dict[OperationKind, OperationKind] = {
    OperationKind.POINTS_REDEEM_REVERSAL: OperationKind.POINTS_REDEEM,
    OperationKind.VOUCHER_REDEEM_REVERSAL: OperationKind.VOUCHER_REDEEM,
}


class EntryKind(StrEnum):
    """What one ledger line did to one account."""

    ACTIVATION = "activation"
    ACTIVATION_CANCEL = "activation_cancel"
    PAYMENT = "payment"
    PAYMENT_CANCEL = "payment_cancel"
    TOPUP = "topup"
    TOPUP_CANCEL = "topup_cancel"
    REFUND = "refund"
    REFUND_CANCEL = "refund_cancel"
    HOLD = "hold"  # reserves funds: held grows, balance does not move
    CAPTURE = "capture"  # a confirmed hold: balance and held both shrink
    RELEASE = "release"  # a voided or expired hold: held shrinks
    TRANSFER_OUT = "transfer_out"  # balance moved to a replacement card
    TRANSFER_IN = "transfer_in"
    LOAD = "load"  # bulk credit (e.g. employee-welfare transfers)
    # points accounts (core.loyalty.points.MovementKind, one entry per lot touched)
    EARN = "earn"
    DEBT_REPAYMENT = "debt_repayment"
    SPEND = "spend"
    SPEND_CANCEL = "spend_cancel"  # a cancelled redemption gives its points back (a new lot)
    EXPIRY = "expiry"
    CLAWBACK = "clawback"
    CLAWBACK_DEBT = "clawback_debt"
    BONUS = "bonus"
    ADJUSTMENT = "adjustment"
    CONVERSION = "conversion"  # points to or from e-money (the e-money side is a LOAD or PAYMENT-like line)


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger line: ``amount`` moves the balance, ``held_delta`` moves the reserved part."""

    account_id: int
    kind: EntryKind
    amount: int
    held_delta: int = 0


def fingerprint(payload: Mapping[str, Any]) -> str:
    """A stable digest of a request, to tell a true replay from a reused id."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def balances(entries: Iterable[Entry]) -> dict[int, tuple[int, int]]:
    """(balance, held) per account, derived from entries alone."""
    out: dict[int, tuple[int, int]] = {}
    for e in entries:
        bal, held = out.get(e.account_id, (0, 0))
        out[e.account_id] = (bal + e.amount, held + e.held_delta)
    return out

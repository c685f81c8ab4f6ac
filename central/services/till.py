"""Till operations authorized online by central: sale, payment, top-up, refund, their
cancellations, balance inquiry and the two-phase authorize / confirm / void."""

from __future__ import annotations

import asyncio
import functools
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core import (
    CANCELS,
    CardEvent,
    CardState,
    DeclineCode,
    EntryKind,
    InvalidInput,
    OperationKind,
    ProgrammeKind,
    decide_credit,
    decide_debit,
    decide_sale,
    decide_topup,
    expiry_date,
    usable_decline,
)
from core.pin import PIN_BLOCK_SIZE, pin_from_block

from ..db.tables import cards, entries, holds, operations, programmes
from .ledger import CardRow, Ledger, Origin, Outcome, card_declined, mask, unknown_card
from .loyalty import loyalty_snapshots
from .pins import MAX_PIN_TRIES, hash_pin, pin_matches

__all__ = ["TillRequest", "TillService", "TILL_OPERATIONS", "PinCheckNeeded"]

K = OperationKind
TILL_OPERATIONS = (K.SALE, K.SALE_CANCEL, K.PAYMENT, K.PAYMENT_CANCEL, K.TOPUP, K.TOPUP_CANCEL, K.REFUND,
                   K.REFUND_CANCEL, K.AUTHORIZE, K.CONFIRM, K.VOID)
_NEEDS_CARD = {K.SALE, K.PAYMENT, K.TOPUP, K.REFUND, K.AUTHORIZE}
_NEEDS_AMOUNT = {K.PAYMENT, K.TOPUP, K.REFUND, K.AUTHORIZE}
_NEEDS_ORIGINAL = {K.SALE_CANCEL, K.PAYMENT_CANCEL, K.TOPUP_CANCEL, K.REFUND_CANCEL, K.CONFIRM, K.VOID}
# Entry kinds written by an operation and by its cancellation.
_ENTRY = {K.SALE: EntryKind.ACTIVATION, K.PAYMENT: EntryKind.PAYMENT, K.TOPUP: EntryKind.TOPUP,
          K.REFUND: EntryKind.REFUND}
_CANCEL_ENTRY = {K.SALE_CANCEL: EntryKind.ACTIVATION_CANCEL, K.PAYMENT_CANCEL: EntryKind.PAYMENT_CANCEL,
                 K.TOPUP_CANCEL: EntryKind.TOPUP_CANCEL, K.REFUND_CANCEL: EntryKind.REFUND_CANCEL}
_TAKES_PIN = {K.SALE, K.PAYMENT, K.AUTHORIZE}  # debits check the PIN; a sale may set the first one


class PinCheckNeeded(RuntimeError):
    """A payment with a PIN block reached the grouped path, which does not verify PINs: it runs alone."""


@dataclass(frozen=True, slots=True)
class _PinWork:
    """What a request's PIN block came to before its transaction: argon2 is slow, so it runs in a
    thread and outside the card lock. Checked again under the lock (the PIN may have changed since)."""

    pin: str | None = field(repr=False)  # None: not a format 0 PIN block for this card
    stored: str | None = field(repr=False)  # the hash ``matched`` was computed against
    matched: bool = False
    new_hash: str | None = field(default=None, repr=False)  # a sale's first PIN, hashed


@dataclass(frozen=True, slots=True)
class TillRequest:
    """One till (or website) request, validated at the HTTP boundary."""

    kind: OperationKind
    txn_id: uuid.UUID
    card_number: str | None = None
    amount: int | None = None
    currency: str | None = None
    original_txn_id: uuid.UUID | None = None
    allow_partial: bool = False
    device_time: datetime | None = None
    # The pad's ISO 9564 format 0 block. Deliberately not in payload(): it is no part of the request's
    # identity (a repeat returns the first result whatever block it carries) and is never recorded.
    pin_block: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in TILL_OPERATIONS:
            raise InvalidInput(f"{self.kind} is not a till operation")
        if self.pin_block is not None:
            if self.kind not in _TAKES_PIN:
                raise InvalidInput("pin_block goes with a sale, payment or authorization only")
            if not isinstance(self.pin_block, bytes) or len(self.pin_block) != PIN_BLOCK_SIZE:
                raise InvalidInput("pin_block is 8 bytes")
        if self.kind in _NEEDS_CARD and not self.card_number:
            raise InvalidInput(f"{self.kind} needs card_number")
        if self.kind in _NEEDS_AMOUNT and self.amount is None:
            raise InvalidInput(f"{self.kind} needs amount")
        if self.amount is not None and self.amount <= 0:
            raise InvalidInput("amount must be a positive number of minor units")
        if self.kind in _NEEDS_ORIGINAL and self.original_txn_id is None:
            raise InvalidInput(f"{self.kind} needs original_txn_id")

    def payload(self) -> dict[str, Any]:
        return {"card": self.card_number, "amount": self.amount, "currency": self.currency,
                "original": str(self.original_txn_id) if self.original_txn_id else None,
                "partial": self.allow_partial}


class TillService:
    """Decides and records till operations through the :class:`Ledger`."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def execute(self, req: TillRequest, origin: Origin) -> tuple[dict[str, Any], bool]:
        handler = getattr(self, f"_{req.kind.value}")
        if req.pin_block is not None:
            handler = functools.partial(handler, pin=await self._pin_work(req))

        async def run(conn: AsyncConnection, op_id: uuid.UUID, now: datetime) -> Outcome:
            return await handler(conn, req, origin, now)

        return await self.ledger.execute(op_id=req.txn_id, kind=req.kind, payload=req.payload(), origin=origin,
                                         handler=run, device_time=req.device_time)

    async def balance(self, card_number: str) -> dict[str, Any]:
        """Balance inquiry: a read, not an operation (nothing is recorded)."""
        async with self.ledger.db.reader() as conn:
            card = await self.ledger.lock_card(conn, number=card_number, lock=False)
            if card is None:
                return {"card": mask(card_number), "found": False, "decline_code": DeclineCode.UNKNOWN_CARD.value}
            summary = card_summary(card)
            if card.programme.kind is ProgrammeKind.LOYALTY:  # points and tier, as price checkers show them
                summary.update((await loyalty_snapshots(conn, [card.id])).get(card.id, {}))
        return summary

    # -- PINs ------------------------------------------------------------------------------------

    async def _pin_work(self, req: TillRequest) -> _PinWork:
        """Decode the block and hash or verify its PIN, before the transaction and off the event loop."""
        assert req.pin_block is not None and req.card_number is not None
        try:
            pin = pin_from_block(req.pin_block, req.card_number)
        except InvalidInput:
            return _PinWork(None, None)
        async with self.ledger.db.reader() as conn:
            row = (await conn.execute(
                sa.select(cards.c.pin_hash, programmes.c.pin_required)
                .join(programmes, programmes.c.id == cards.c.programme_id)
                .where(cards.c.number == req.card_number))).first()
        if row is None:
            return _PinWork(pin, None)
        if req.kind == K.SALE:
            if row.pin_hash is not None:  # it has a PIN already: a sale only sets the first one
                return _PinWork(pin, row.pin_hash)
            return _PinWork(pin, None, new_hash=await asyncio.to_thread(hash_pin, req.card_number, pin))
        if not row.pin_required or row.pin_hash is None:
            return _PinWork(pin, row.pin_hash)
        matched = await asyncio.to_thread(pin_matches, row.pin_hash, req.card_number, pin)
        return _PinWork(pin, row.pin_hash, matched)

    async def _pin_refusal(self, conn: AsyncConnection, card: CardRow, req: TillRequest,
                           work: _PinWork | None) -> Outcome | None:
        """On a locked card whose debit would be approved: None if its programme needs no PIN or the
        right one came (clearing the wrong-PIN count), else the decline (counting a wrong PIN)."""
        if not card.programme.pin_required:
            return None
        if req.pin_block is None:
            return card_declined(card, DeclineCode.PIN_REQUIRED, "the card's PIN is needed")
        row = (await conn.execute(sa.select(cards.c.pin_hash, cards.c.pin_failures)
                                  .where(cards.c.id == card.id))).one()
        if row.pin_failures >= MAX_PIN_TRIES:
            return card_declined(card, DeclineCode.PIN_TRIES_EXCEEDED,
                                 "too many wrong PINs: staff must reset the card's PIN")
        if row.pin_hash is None:
            return card_declined(card, DeclineCode.PIN_REQUIRED, "the card has no PIN yet: staff can set one")
        if work is not None and work.stored == row.pin_hash:
            matched = work.matched
        else:  # the PIN was set or reset since the check (rare): check again, under the lock
            matched = work is not None and work.pin is not None and await asyncio.to_thread(
                pin_matches, row.pin_hash, card.number, work.pin)
        if matched:
            if row.pin_failures:
                await conn.execute(sa.update(cards).where(cards.c.id == card.id).values(pin_failures=0))
            return None
        failures = row.pin_failures + 1
        await conn.execute(sa.update(cards).where(cards.c.id == card.id).values(pin_failures=failures))
        left = MAX_PIN_TRIES - failures
        if not left:
            return card_declined(card, DeclineCode.PIN_INCORRECT, "wrong PIN, no tries left: staff must reset it")
        tries = "1 try" if left == 1 else f"{left} tries"
        return card_declined(card, DeclineCode.PIN_INCORRECT, f"wrong PIN, {tries} left")

    async def _first_pin(self, conn: AsyncConnection, card: CardRow, work: _PinWork) -> bool:
        """Set the PIN of a card sold with a PIN block, unless it has one; whether it was set."""
        current = (await conn.execute(sa.select(cards.c.pin_hash).where(cards.c.id == card.id))).scalar_one()
        if current is not None or work.pin is None:
            return False
        digest = work.new_hash or await asyncio.to_thread(hash_pin, card.number, work.pin)
        await conn.execute(sa.update(cards).where(cards.c.id == card.id).values(pin_hash=digest, pin_failures=0))
        return True

    # -- helpers ---------------------------------------------------------------------------------

    async def _card(self, conn: AsyncConnection, req: TillRequest) -> CardRow | Outcome:
        card = await self.ledger.lock_card(conn, number=req.card_number)
        if card is None:
            return unknown_card()
        return _currency_declined(card, req) or card

    async def _original(self, conn: AsyncConnection, req: TillRequest, expected: OperationKind
                        ) -> tuple[Any, CardRow] | Outcome:
        """The approved operation a cancel/confirm/void names, with its card locked."""
        orig = await self.ledger.original(conn, req.original_txn_id)
        if orig is None or orig.kind != expected.value or not orig.approved:
            return Outcome.declined(DeclineCode.ORIGINAL_NOT_FOUND, f"no approved {expected} with that id")
        card = await self.ledger.lock_card(conn, card_id=orig.card_id)
        if req.card_number and req.card_number != card.number:
            return card_declined(card, DeclineCode.ORIGINAL_MISMATCH, "original was made with another card")
        return orig, card

    # -- operations ------------------------------------------------------------------------------

    async def _sale(self, conn, req: TillRequest, origin: Origin, now: datetime, pin: _PinWork | None = None
                    ) -> Outcome:
        card = await self._card(conn, req)
        if isinstance(card, Outcome):
            return card
        if pin is not None and pin.pin is None:
            raise InvalidInput("pin_block is not a format 0 PIN block for this card")
        decision = decide_sale(card.view(), req.amount, origin.store_id)
        if not decision.approved:
            return Outcome.from_decision(decision, card)
        await self._activate(conn, card, now)
        out = Outcome(True, card, decision.amount)
        out.entries.append(self.ledger.entry(card, EntryKind.ACTIVATION, decision.amount))
        if pin is not None:
            out.extra["pin_set"] = await self._first_pin(conn, card, pin)
        return out

    async def _activate(self, conn, card: CardRow, now: datetime) -> None:
        await self.ledger.ensure_account(conn, card)
        await self.ledger.move_card(conn, card, CardEvent.ACTIVATE, activated_at=now,
                                    expires_on=expiry_date(now.date(), card.programme.validity_months))

    async def _payment(self, conn, req: TillRequest, origin: Origin, now: datetime, pin: _PinWork | None = None
                       ) -> Outcome:
        return await self._debit(conn, req, now, pin, hold=False)

    async def _authorize(self, conn, req: TillRequest, origin: Origin, now: datetime, pin: _PinWork | None = None
                         ) -> Outcome:
        return await self._debit(conn, req, now, pin, hold=True, store_id=origin.store_id)

    def decide_on(self, card: CardRow, req: TillRequest, now: datetime, *, pin_checked: bool = False) -> Outcome:
        """Payment or top-up on an already locked card: the part of the operation that group
        commit runs for many requests in one transaction (no I/O of its own).

        PINs take I/O to check, so a payment on a PIN programme is decided here only when it has no
        PIN block (declined) or ``pin_checked``; otherwise PinCheckNeeded sends it down the single path."""
        declined = _currency_declined(card, req)
        if declined:
            return declined
        if req.kind == K.PAYMENT:
            decision = decide_debit(card.view(), req.amount, now.date(), req.allow_partial)
            kind, sign = EntryKind.PAYMENT, -1
        elif req.kind == K.TOPUP:
            decision = decide_topup(card.view(), req.amount, now.date())
            kind, sign = EntryKind.TOPUP, 1
        else:
            raise ValueError(f"{req.kind} is not decided on a locked card alone")
        if not decision.approved:
            return Outcome.from_decision(decision, card)
        if req.kind == K.PAYMENT and card.programme.pin_required and not pin_checked:
            if req.pin_block is None:
                return card_declined(card, DeclineCode.PIN_REQUIRED, "the card's PIN is needed")
            raise PinCheckNeeded("a payment with a PIN is decided on its own")
        out = Outcome(True, card, decision.amount)
        out.entries.append(self.ledger.entry(card, kind, sign * decision.amount))
        return out

    async def _debit(self, conn, req: TillRequest, now: datetime, pin: _PinWork | None, *, hold: bool,
                     store_id: int | None = None) -> Outcome:
        card = await self._card(conn, req)
        if isinstance(card, Outcome):
            return card
        # The PIN is asked for only of a debit that would otherwise go through: a blocked card or a
        # short balance is declined for that, without counting a PIN.
        decision = decide_debit(card.view(), req.amount, now.date(), req.allow_partial)
        if not decision.approved:
            return Outcome.from_decision(decision, card)
        refusal = await self._pin_refusal(conn, card, req, pin)
        if refusal is not None:
            return refusal
        if not hold:
            return self.decide_on(card, req, now, pin_checked=True)
        out = Outcome(True, card, decision.amount)
        out.entries.append(self.ledger.entry(card, EntryKind.HOLD, 0, decision.amount))
        p = card.programme
        expires = now + timedelta(seconds=p.hold_ttl_seconds)
        out.after.append(sa.insert(holds).values(
            operation_id=req.txn_id, card_id=card.id, account_id=card.account_id, amount=decision.amount,
            currency=p.currency, status="pending", policy=p.hold_expiry_policy.value, store_id=store_id,
            expires_at=expires, created_at=now))
        out.extra["hold_expires_at"] = expires.isoformat()
        return out

    async def _topup(self, conn, req: TillRequest, origin: Origin, now: datetime) -> Outcome:
        card = await self._card(conn, req)
        return card if isinstance(card, Outcome) else self.decide_on(card, req, now)

    async def _refund(self, conn, req: TillRequest, origin: Origin, now: datetime) -> Outcome:
        """Refund onto the card paid with, or onto a new card from the store's stock (activating it)."""
        orig = None
        if req.original_txn_id is not None:
            orig = await self.ledger.original(conn, req.original_txn_id)
            if orig is None or orig.kind != K.PAYMENT.value or not orig.approved:
                return Outcome.declined(DeclineCode.ORIGINAL_NOT_FOUND, "no approved payment with that id")
        target_id = (await conn.execute(sa.select(cards.c.id).where(cards.c.number == req.card_number))).scalar()
        if target_id is None:
            return unknown_card()
        # Lock the paid-with card and the refunded card in id order: no deadlock with another refund.
        ids = sorted({target_id} | ({orig.card_id} if orig is not None else set()))
        locked = {cid: await self.ledger.lock_card(conn, card_id=cid) for cid in ids}
        card = locked[target_id]
        if req.currency is not None and req.currency != card.programme.currency:
            return card_declined(card, DeclineCode.CURRENCY_MISMATCH, f"card is in {card.programme.currency}")
        if orig is not None:
            paid_with = locked[orig.card_id]
            if card.id != paid_with.id and card.state != CardState.IN_PACK:
                return card_declined(card, DeclineCode.ORIGINAL_MISMATCH,
                                     "refund goes onto the card paid with or onto a new card")
            if card.programme.id != paid_with.programme.id:
                return card_declined(card, DeclineCode.WRONG_PROGRAMME, "new card is of another programme")
            if await self.ledger.settled(conn, orig.id):
                return card_declined(card, DeclineCode.ALREADY_CANCELLED, "that payment was cancelled")
            limit = orig.amount - await self._refunded(conn, orig.id)
            if req.amount > limit:
                return card_declined(card, DeclineCode.REFUND_EXCEEDS_PAYMENT, f"at most {limit} can be refunded")
        if card.state == CardState.IN_PACK:
            # Only the pack and store checks of a sale apply: a refund is not a nominal value.
            decision = decide_sale(card.view(), None, origin.store_id)
            if not decision.approved and decision.code not in (DeclineCode.NOT_A_NOMINAL_VALUE,
                                                               DeclineCode.AMOUNT_OUT_OF_RANGE):
                return Outcome.from_decision(decision, card)
            rules = card.programme.values
            cap = rules.max_balance if rules.max_balance is not None else rules.max_amount
            if req.amount > cap:
                return card_declined(card, DeclineCode.MAX_BALANCE_EXCEEDED, f"a new card holds at most {cap}")
            await self._activate(conn, card, now)
        else:
            decision = decide_credit(card.view(), req.amount, now.date())
            if not decision.approved:
                return Outcome.from_decision(decision, card)
        out = Outcome(True, card, req.amount, reference=req.original_txn_id)
        out.entries.append(self.ledger.entry(card, EntryKind.REFUND, req.amount))
        return out

    async def _refunded(self, conn, payment_id: uuid.UUID) -> int:
        cancel = operations.alias("cancel")
        query = sa.select(sa.func.coalesce(sa.func.sum(operations.c.amount), 0)).where(
            operations.c.reference == payment_id, operations.c.kind == K.REFUND.value, operations.c.approved,
            ~sa.exists().where(cancel.c.settles == operations.c.id))
        return (await conn.execute(query)).scalar_one()

    def cancel_refusal(self, req: TillRequest, orig: Any, card: CardRow, *, settled: bool,
                       refunded: int) -> Outcome | None:
        """Why a cancellation cannot be made on its locked card, given whether the original was
        closed already and how much of it was refunded; None if it can."""
        target = CANCELS[req.kind]
        if settled:
            return card_declined(card, DeclineCode.ALREADY_CANCELLED, f"that {target} was already cancelled")
        if card.state in (CardState.REPLACED, CardState.CLOSED):
            return card_declined(card, usable_decline(card.state), f"card is {card.state}")
        if req.kind == K.PAYMENT_CANCEL and refunded:
            return card_declined(card, DeclineCode.CANCEL_NOT_ALLOWED, "payment was partly refunded already")
        if req.kind != K.PAYMENT_CANCEL and card.balance - card.held < orig.amount:
            return card_declined(card, DeclineCode.INSUFFICIENT_FUNDS, "the value was already spent")
        return None

    def cancel_posting(self, req: TillRequest, orig: Any, card: CardRow) -> Outcome:
        """The compensating entry: a payment cancel credits, the other cancels debit."""
        amount = orig.amount if req.kind == K.PAYMENT_CANCEL else -orig.amount
        out = Outcome(True, card, orig.amount, settles=orig.id)
        out.entries.append(self.ledger.entry(card, _CANCEL_ENTRY[req.kind], amount))
        return out

    async def _cancel(self, conn, req: TillRequest, now: datetime) -> Outcome:
        found = await self._original(conn, req, CANCELS[req.kind])
        if isinstance(found, Outcome):
            return found
        orig, card = found
        refunded = await self._refunded(conn, orig.id) if req.kind == K.PAYMENT_CANCEL else 0
        refusal = self.cancel_refusal(req, orig, card, settled=await self.ledger.settled(conn, orig.id),
                                      refunded=refunded)
        if refusal:
            return refusal
        if req.kind == K.SALE_CANCEL:
            later = await conn.execute(sa.select(entries.c.id).where(
                entries.c.card_id == card.id, entries.c.operation_id != orig.id,
                entries.c.id > sa.select(sa.func.max(entries.c.id)).where(entries.c.operation_id == orig.id)
                .scalar_subquery()).limit(1))
            if later.first() is not None or card.state != CardState.ACTIVE:
                return card_declined(card, DeclineCode.CARD_USED, "card was used after it was sold")
            # Back in stock: the buyer's PIN goes with the sale, so the next sale can set its own.
            await self.ledger.move_card(conn, card, CardEvent.CANCEL_SALE, expires_on=None, activated_at=None,
                                        pin_hash=None, pin_failures=0)
        return self.cancel_posting(req, orig, card)

    async def _sale_cancel(self, conn, req, origin, now):
        return await self._cancel(conn, req, now)

    async def _payment_cancel(self, conn, req, origin, now):
        return await self._cancel(conn, req, now)

    async def _topup_cancel(self, conn, req, origin, now):
        return await self._cancel(conn, req, now)

    async def _refund_cancel(self, conn, req, origin, now):
        return await self._cancel(conn, req, now)

    async def _hold(self, conn, req: TillRequest) -> tuple[Any, CardRow] | Outcome:
        found = await self._original(conn, req, K.AUTHORIZE)
        if isinstance(found, Outcome):
            return found
        orig, card = found
        hold = (await conn.execute(sa.select(holds).where(holds.c.operation_id == orig.id))).one()
        if hold.status != "pending":
            return card_declined(card, DeclineCode.HOLD_NOT_PENDING, f"authorization is {hold.status}")
        return hold, card

    async def _confirm(self, conn, req: TillRequest, origin: Origin, now: datetime) -> Outcome:
        found = await self._hold(conn, req)
        if isinstance(found, Outcome):
            return found
        hold, card = found
        amount = req.amount if req.amount is not None else hold.amount
        if amount > hold.amount:
            return card_declined(card, DeclineCode.AMOUNT_EXCEEDS_HOLD, f"authorization was for {hold.amount}")
        return close_hold(self.ledger, card, hold, req.txn_id, "confirmed", now, capture=amount)

    async def _void(self, conn, req: TillRequest, origin: Origin, now: datetime) -> Outcome:
        found = await self._hold(conn, req)
        if isinstance(found, Outcome):
            return found
        hold, card = found
        return close_hold(self.ledger, card, hold, req.txn_id, "voided", now)


def close_hold(ledger: Ledger, card: CardRow, hold: Any, op_id: uuid.UUID, status: str, now: datetime, *,
               capture: int | None = None) -> Outcome:
    """Capture part or all of a hold (releasing the rest), or release it whole; exactly once."""
    out = Outcome(True, card, capture or 0, reference=hold.operation_id, settles=hold.operation_id)
    if capture is None:
        out.entries.append(ledger.entry(card, EntryKind.RELEASE, 0, -hold.amount))
    else:
        out.entries.append(ledger.entry(card, EntryKind.CAPTURE, -capture, -hold.amount))
    # Conditional on the status it was read with: a second closer updates nothing.
    out.after.append(sa.update(holds).where(holds.c.operation_id == hold.operation_id,
                                            holds.c.status == hold.status)
                     .values(status=status, resolved_by=op_id, resolved_at=now))
    out.extra["authorization"] = str(hold.operation_id)
    return out


def _currency_declined(card: CardRow, req: TillRequest) -> Outcome | None:
    if req.currency is not None and req.currency != card.programme.currency:
        return card_declined(card, DeclineCode.CURRENCY_MISMATCH,
                             f"card is in {card.programme.currency}, not {req.currency}")
    return None


def card_summary(card: CardRow) -> dict[str, Any]:
    return {
        "card": mask(card.number), "found": True, "state": card.state.value,
        "programme": card.programme.code, "currency": card.programme.currency, "balance": card.balance,
        "held": card.held, "available": card.balance - card.held,
        "expires_on": card.expires_on.isoformat() if card.expires_on else None,
    }

"""Card administration: block, unblock, duplicate, card details, and search of cards and transactions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa

from core import CardEvent, CardState, DeclineCode, EntryKind, IllegalTransition, InvalidInput, OperationKind

from ..db.tables import cards, entries, operations, packs, programmes, stores
from .admin import NotFound, audit
from .ledger import Ledger, Origin, Outcome, card_declined, mask, system_id
from .offline import OVERDRAFT, list_card, unlist_card
from .till import card_summary

__all__ = ["CardService", "TransactionQuery", "CardQuery"]


@dataclass(frozen=True, slots=True)
class CardQuery:
    number_prefix: str | None = None
    programme: str | None = None
    state: str | None = None
    store: str | None = None
    after_id: int = 0
    limit: int = 100


@dataclass(frozen=True, slots=True)
class TransactionQuery:
    """The complex key head office searches transactions by; every field optional."""

    card_number: str | None = None
    number_prefix: str | None = None
    store: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    kinds: tuple[str, ...] = ()
    min_amount: int | None = None
    max_amount: int | None = None
    status: str | None = None  # approved | declined
    before: datetime | None = None  # keyset cursor: created_at of the last row seen
    limit: int = 100


class CardService:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        # Called in a duplicate's transaction with (conn, old card, new card, now): the ledger lines
        # they add move what else the card carries (loyalty's points).
        self.after_duplicate: list = []

    async def _state_change(self, number: str, kind: OperationKind, event: CardEvent, origin: Origin,
                            op_id: uuid.UUID, reason: str) -> dict[str, Any]:
        async def run(conn, _op, now):
            card = await self.ledger.lock_card(conn, number=number)
            if card is None:
                raise NotFound("no such card")
            await self.ledger.move_card(conn, card, event)
            # The deny list follows the card's state in the same transaction: stores learn of it on pull.
            if event == CardEvent.BLOCK:
                await list_card(conn, card.id, card.number, "blocked", now)
            elif event == CardEvent.UNBLOCK:
                if card.balance < 0:  # still owes an offline overdraft: stays listed, for that reason
                    await list_card(conn, card.id, card.number, OVERDRAFT, now)
                else:
                    await unlist_card(conn, card.id, "unblocked", now)
            out = Outcome(True, card)
            out.extra["reason"] = reason
            return out

        result, _ = await self.ledger.execute(op_id=op_id, kind=kind, payload={"card": number, "reason": reason},
                                              origin=origin, handler=run)
        return result

    async def block(self, number: str, reason: str, origin: Origin, op_id: uuid.UUID) -> dict[str, Any]:
        return await self._state_change(number, OperationKind.BLOCK, CardEvent.BLOCK, origin, op_id, reason)

    async def unblock(self, number: str, reason: str, origin: Origin, op_id: uuid.UUID) -> dict[str, Any]:
        return await self._state_change(number, OperationKind.UNBLOCK, CardEvent.UNBLOCK, origin, op_id, reason)

    async def duplicate(self, number: str, new_number: str, origin: Origin, op_id: uuid.UUID) -> dict[str, Any]:
        """Replace a card: its balance moves to a stock card of the same programme, history stays linked."""
        if number == new_number:
            raise InvalidInput("the replacement must be another card")

        async def run(conn, _op, now):
            # Lock both cards in id order so two duplicates never deadlock each other.
            ids = (await conn.execute(sa.select(cards.c.number, cards.c.id)
                                      .where(cards.c.number.in_([number, new_number])))).all()
            by_number = dict(ids)
            if number not in by_number or new_number not in by_number:
                raise NotFound("no such card")
            locked = {}
            for cid in sorted(by_number.values()):
                row = await self.ledger.lock_card(conn, card_id=cid)
                locked[row.number] = row
            old, new = locked[number], locked[new_number]
            if new.programme.id != old.programme.id:
                return card_declined(old, DeclineCode.WRONG_PROGRAMME, "replacement is of another programme")
            if old.held:
                return card_declined(old, DeclineCode.HOLDS_PENDING, "card has unconfirmed authorizations")
            pool = (await conn.execute(sa.select(cards.c.pool_id).where(cards.c.id == old.id))).scalar()
            await self.ledger.move_card(conn, old, CardEvent.REPLACE, replaced_by=new.id)
            if pool is not None:  # a pool member: the replacement spends the same master's e-money
                await conn.execute(sa.update(cards).where(cards.c.id == new.id).values(pool_id=pool))
                new = await self.ledger.lock_card(conn, card_id=new.id)
            await self.ledger.ensure_account(conn, new)
            await self.ledger.move_card(conn, new, CardEvent.ACTIVATE_REPLACEMENT, replaces=old.id,
                                        activated_at=now, expires_on=old.expires_on)
            # A master's members follow it to its replacement.
            await conn.execute(sa.update(cards).where(cards.c.pool_id == old.id).values(pool_id=new.id))
            moved = old.balance if pool is None else 0
            out = Outcome(True, new, moved)
            if old.account_id is not None and moved:
                out.entries.append(self.ledger.entry(old, EntryKind.TRANSFER_OUT, -moved))
                out.entries.append(self.ledger.entry(new, EntryKind.TRANSFER_IN, moved))
            out.extra["replaced_card"] = mask(old.number)
            for hook in self.after_duplicate:  # loyalty: points, tier and the customer go along
                out.entries += await hook(conn, old, new, now)
            return out

        result, _ = await self.ledger.execute(op_id=op_id, kind=OperationKind.DUPLICATE,
                                              payload={"card": number, "new_card": new_number}, origin=origin,
                                              handler=run)
        return result

    # -- pools of e-money ----------------------------------------------------------------------------

    async def join_pool(self, number: str, master_number: str, origin: Origin, op_id: uuid.UUID) -> dict[str, Any]:
        """Make ``number`` spend and load ``master_number``'s e-money: its own balance moves to the master
        (a transfer pair), and from then on its payments, top-ups and balance are the master's."""
        if number == master_number:
            raise InvalidInput("a card cannot pool with itself")

        async def run(conn, _op, now):
            pair = await self.ledger.lock_any_cards(conn, [number, master_number])
            by_number = {c.number: c for c in pair}
            if number not in by_number or master_number not in by_number:
                raise NotFound("no such card")
            member, master = by_number[number], by_number[master_number]
            pools = dict((await conn.execute(sa.select(cards.c.id, cards.c.pool_id).where(
                cards.c.id.in_([member.id, master.id])))).all())
            if pools[master.id] is not None:
                return card_declined(master, DeclineCode.WRONG_PROGRAMME, "the master card is itself in a pool")
            if pools[member.id] is not None:
                return card_declined(member, DeclineCode.WRONG_PROGRAMME, "the card is in a pool already")
            if (await conn.execute(sa.select(cards.c.id).where(cards.c.pool_id == member.id).limit(1))).first():
                return card_declined(member, DeclineCode.WRONG_PROGRAMME, "the card is the master of a pool")
            if member.programme.currency != master.programme.currency:
                return card_declined(member, DeclineCode.CURRENCY_MISMATCH, "the cards are in other currencies")
            for card in (member, master):
                if card.state is not CardState.ACTIVE:
                    return card_declined(card, DeclineCode.NOT_ACTIVE, f"card {mask(card.number)} is not active")
            if member.held:
                return card_declined(member, DeclineCode.HOLDS_PENDING, "card has unconfirmed authorizations")
            out = Outcome(True, member, member.balance)
            if member.balance:
                out.entries.append(self.ledger.entry(member, EntryKind.TRANSFER_OUT, -member.balance))
                out.entries.append(self.ledger.entry(master, EntryKind.TRANSFER_IN, -out.entries[0].amount))
            await conn.execute(sa.update(cards).where(cards.c.id == member.id).values(pool_id=master.id))
            await audit(conn, origin.actor or origin.channel, "card_pool_join", f"card:{mask(number)}",
                        {"master": mask(master_number), "moved": member.balance})
            out.extra.update(master=mask(master_number), pool_balance=master.balance)
            return out

        result, _ = await self.ledger.execute(op_id=op_id, kind=OperationKind.POOL_JOIN,
                                              payload={"card": number, "master": master_number}, origin=origin,
                                              handler=run)
        return result

    async def leave_pool(self, number: str, origin: Origin, op_id: uuid.UUID) -> dict[str, Any]:
        """Take a card out of its pool: the e-money stays with the master, the card has its own (empty) again."""
        async def run(conn, _op, now):
            card = await self.ledger.lock_card(conn, number=number)
            if card is None:
                raise NotFound("no such card")
            pool = (await conn.execute(sa.select(cards.c.pool_id).where(cards.c.id == card.id))).scalar()
            if pool is None:
                return card_declined(card, DeclineCode.WRONG_PROGRAMME, "the card is in no pool")
            await conn.execute(sa.update(cards).where(cards.c.id == card.id).values(pool_id=None))
            own = await self.ledger.lock_card(conn, card_id=card.id)
            await self.ledger.ensure_account(conn, own)
            await audit(conn, origin.actor or origin.channel, "card_pool_leave", f"card:{mask(number)}", {})
            return Outcome(True, own, 0)

        result, _ = await self.ledger.execute(op_id=op_id, kind=OperationKind.POOL_LEAVE, payload={"card": number},
                                              origin=origin, handler=run)
        return result

    async def detail(self, number: str, history: int = 50) -> dict[str, Any]:
        """A card's state, balance, lineage and latest entries."""
        async with self.ledger.db.connect() as conn:
            card = await self.ledger.lock_card(conn, number=number, lock=False)
            if card is None:
                raise NotFound("no such card")
            info = card_summary(card)
            info["number"] = card.number
            row = (await conn.execute(sa.select(cards.c.replaced_by, cards.c.replaces, cards.c.pack_id,
                                                cards.c.activated_at).where(cards.c.id == card.id))).one()
            for key in ("replaced_by", "replaces"):
                other = getattr(row, key)
                info[key] = (await conn.execute(sa.select(cards.c.number).where(cards.c.id == other))).scalar() \
                    if other else None
            info["pack_id"] = row.pack_id
            info["activated_at"] = row.activated_at.isoformat() if row.activated_at else None
            info["entries"] = await self._history(conn, card.id, history)
        return info

    @staticmethod
    async def _history(conn, card_id: int, limit: int) -> list[dict[str, Any]]:
        rows = await conn.execute(
            sa.select(entries.c.operation_id, entries.c.kind, entries.c.amount, entries.c.held_delta,
                      entries.c.balance_after, entries.c.currency, entries.c.created_at, stores.c.code)
            .outerjoin(stores, stores.c.id == entries.c.store_id)
            .where(entries.c.card_id == card_id).order_by(entries.c.id.desc()).limit(limit))
        return [{"txn_id": str(r.operation_id), "kind": r.kind, "amount": r.amount, "held_delta": r.held_delta,
                 "balance_after": r.balance_after, "currency": r.currency, "store": r.code,
                 "at": r.created_at.isoformat()} for r in rows]

    async def history(self, card_id: int, limit: int = 50) -> list[dict[str, Any]]:
        async with self.ledger.db.connect() as conn:
            return await self._history(conn, card_id, limit)

    async def search_cards(self, q: CardQuery) -> list[dict[str, Any]]:
        query = (sa.select(cards.c.id, cards.c.number, cards.c.state, cards.c.expires_on, programmes.c.code,
                           stores.c.code.label("store"))
                 .join(programmes, programmes.c.id == cards.c.programme_id)
                 .outerjoin(packs, packs.c.id == cards.c.pack_id).outerjoin(stores, stores.c.id == packs.c.store_id)
                 .where(cards.c.id > q.after_id).order_by(cards.c.id).limit(min(q.limit, 1000)))
        if q.number_prefix:
            query = query.where(cards.c.number.startswith(q.number_prefix, autoescape=True))
        if q.programme:
            query = query.where(programmes.c.code == q.programme)
        if q.state:
            query = query.where(cards.c.state == CardState(q.state).value)
        if q.store:
            query = query.where(stores.c.code == q.store)
        async with self.ledger.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [{"id": r.id, "number": r.number, "state": r.state, "programme": r.code, "store": r.store,
                 "expires_on": r.expires_on.isoformat() if r.expires_on else None} for r in rows]

    async def search_transactions(self, q: TransactionQuery) -> list[dict[str, Any]]:
        o = operations
        query = (sa.select(o.c.id, o.c.kind, o.c.approved, o.c.decline_code, o.c.channel, o.c.amount,
                           o.c.currency, o.c.created_at, o.c.settles, o.c.reference, cards.c.number,
                           stores.c.code.label("store"))
                 .outerjoin(cards, cards.c.id == o.c.card_id).outerjoin(stores, stores.c.id == o.c.store_id)
                 .order_by(o.c.created_at.desc(), o.c.id).limit(min(q.limit, 1000)))
        if q.card_number:
            query = query.where(cards.c.number == q.card_number)
        if q.number_prefix:
            query = query.where(cards.c.number.startswith(q.number_prefix, autoescape=True))
        if q.store:
            query = query.where(stores.c.code == q.store)
        if q.since:
            query = query.where(o.c.created_at >= q.since)
        if q.until:
            query = query.where(o.c.created_at < q.until)
        if q.before:
            query = query.where(o.c.created_at < q.before)
        if q.kinds:
            unknown = set(q.kinds) - {k.value for k in OperationKind}
            if unknown:
                raise InvalidInput(f"unknown transaction kind(s): {', '.join(sorted(unknown))}")
            query = query.where(o.c.kind.in_(q.kinds))
        if q.min_amount is not None:
            query = query.where(o.c.amount >= q.min_amount)
        if q.max_amount is not None:
            query = query.where(o.c.amount <= q.max_amount)
        if q.status:
            if q.status not in ("approved", "declined"):
                raise InvalidInput("status is approved or declined")
            query = query.where(o.c.approved == (q.status == "approved"))
        async with self.ledger.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [{"txn_id": str(r.id), "kind": r.kind, "status": "approved" if r.approved else "declined",
                 "decline_code": r.decline_code, "channel": r.channel, "amount": r.amount, "currency": r.currency,
                 "card": r.number, "store": r.store, "at": r.created_at.isoformat(),
                 "cancels": str(r.settles) if r.settles else None,
                 "reference": str(r.reference) if r.reference else None} for r in rows]

    async def expire_cards(self, today: date | None = None) -> int:
        """Move cards past their last valid day to ``expired`` (one operation per card, exactly once)."""
        today = today or datetime.now(UTC).date()
        async with self.ledger.db.connect() as conn:
            due = (await conn.execute(sa.select(cards.c.number).where(
                cards.c.state.in_([CardState.ACTIVE.value, CardState.BLOCKED.value]),
                cards.c.expires_on < today).limit(10_000))).scalars().all()
        for number in due:
            try:
                await self._state_change(number, OperationKind.CARD_EXPIRY, CardEvent.EXPIRE, Origin("system"),
                                         system_id("card-expiry", number, today), "validity ended")
            except IllegalTransition:
                continue
        return len(due)

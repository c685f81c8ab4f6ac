"""Posting operations to the ledger: idempotent, one transaction each, one card lock at a time.

Every mutating operation locks the card row first (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite
has a single writer), so the balance it reads is the balance it changes: concurrent payments on one
card queue up and can never overdraw it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pydantic_core
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from core import (
    CardEvent,
    CardState,
    CardView,
    Decision,
    DeclineCode,
    DomainError,
    EntryKind,
    IdempotencyConflict,
    InvalidInput,
    OperationKind,
    Programme,
    fingerprint,
    next_state,
)
from core.authorization import decline

from ..db import Database
from ..db.tables import accounts, cards, entries, operations, packs, programmes
from .programmes import ProgrammeCache

__all__ = ["Origin", "CardRow", "Outcome", "PendingEntry", "Ledger", "mask", "STORED_VALUE", "MANY", "insert_rows_sql",
           "OWNER"]

log = logging.getLogger("tessera.ledger")
STORED_VALUE = "stored_value"
SYSTEM_NAMESPACE = uuid.UUID("6b7d3f0e-3c8a-4a57-9a49-2f6c1e0b9d11")


def mask(number: str) -> str:
    """Card number as shown on receipts and in logs: first six and last four digits."""
    return number[:6] + "*" * max(len(number) - 10, 0) + number[-4:] if len(number) > 10 else number


def system_id(*parts: object) -> uuid.UUID:
    """A deterministic operation id for work the server starts itself (so it runs exactly once)."""
    return uuid.uuid5(SYSTEM_NAMESPACE, ":".join(str(p) for p in parts))


@dataclass(frozen=True, slots=True)
class Origin:
    """Who asked: a till of a store, a website, a staff member, a bulk file or the scheduler."""

    channel: str
    store_id: int | None = None
    terminal_id: int | None = None
    actor: str | None = None


@dataclass(slots=True)
class CardRow:
    """A locked card with its stored-value account (account_id is None before first activation)."""

    id: int
    number: str
    state: CardState
    programme: Programme
    expires_on: date | None
    pack_id: int | None
    pack_status: str | None
    pack_store_id: int | None
    account_id: int | None
    balance: int
    held: int
    replaced_by: int | None = None

    def view(self) -> CardView:
        return CardView(
            number=self.number, state=self.state, programme=self.programme, balance=self.balance,
            held=self.held, expires_on=self.expires_on, pack_sellable=self.pack_status == "authorized",
            pack_store_id=self.pack_store_id,
        )


@dataclass(frozen=True, slots=True)
class PendingEntry:
    card_id: int
    account_id: int
    kind: EntryKind
    amount: int
    held_delta: int
    balance_after: int
    currency: str


@dataclass(slots=True)
class Outcome:
    """What a handler decided; recorded (with its entries) by :meth:`Ledger.execute`."""

    approved: bool
    card: CardRow | None = None
    amount: int = 0
    code: DeclineCode | None = None
    message: str = ""
    entries: list[PendingEntry] = field(default_factory=list)
    settles: uuid.UUID | None = None
    reference: uuid.UUID | None = None
    # Statements that need the operation row to exist first (holds reference it).
    after: list[sa.Executable] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    currency: str | None = None  # for operations spanning many cards (card is None)

    @classmethod
    def declined(cls, code: DeclineCode, message: str, card: CardRow | None = None) -> Outcome:
        return cls(False, card, 0, code, message)

    @classmethod
    def from_decision(cls, decision: Decision, card: CardRow) -> Outcome:
        return cls(decision.approved, card, decision.amount, decision.code, decision.message)


Handler = Callable[[AsyncConnection, uuid.UUID, datetime], Awaitable[Outcome]]


class _AlreadyRecorded(Exception):
    """The operation id was recorded by an earlier or concurrent request: roll back and replay."""


_CARD_COLUMNS = (
    cards.c.id, cards.c.number, cards.c.state, cards.c.expires_on, cards.c.programme_id,
    cards.c.pack_id, cards.c.replaced_by, packs.c.status.label("pack_status"),
    packs.c.store_id.label("pack_store_id"), accounts.c.id.label("account_id"),
    accounts.c.balance, accounts.c.held,
)
# A card's e-money is its own stored-value account, or its master card's when it is in a pool.
OWNER = sa.func.coalesce(cards.c.pool_id, cards.c.id)
_CARD_FROM = cards.outerjoin(packs, packs.c.id == cards.c.pack_id).outerjoin(
    accounts, sa.and_(accounts.c.card_id == OWNER, accounts.c.kind == STORED_VALUE)
)
_CARD_LOCK_FROM = cards.outerjoin(packs, packs.c.id == cards.c.pack_id).join(
    accounts, sa.and_(accounts.c.card_id == OWNER, accounts.c.kind == STORED_VALUE)
)


def _card_query(by: sa.Column, source, lock_of=None) -> sa.Select:
    query = sa.select(*_CARD_COLUMNS).select_from(source).where(by == sa.bindparam("key"))
    return query.with_for_update(of=lock_of) if lock_of is not None else query


# Hot-path statements are built once: constructing Core statements per request costs more CPU
# than running them.
_CARD_QUERIES = {
    (by.name, mode): _card_query(by, *args)
    for by in (cards.c.number, cards.c.id)
    for mode, args in (("both", (_CARD_LOCK_FROM, [cards, accounts])), ("card", (_CARD_FROM, cards)),
                       ("read", (_CARD_FROM,)))
}
# Many keys: "= ANY(array)" on PostgreSQL keeps one SQL text (so one prepared statement) for any
# count; SQLite expands an IN list.
MANY = {
    "postgresql": lambda column, key="keys": column == sa.any_(
        sa.bindparam(key, type_=postgresql.ARRAY(column.type))),
    "sqlite": lambda column, key="keys": column.in_(sa.bindparam(key, expanding=True)),
}
_LOCK_MANY = {
    name: sa.select(*_CARD_COLUMNS).select_from(_CARD_LOCK_FROM)
    .where(sa.or_(many(cards.c.number), many(cards.c.id, "ids")))
    .order_by(cards.c.id).with_for_update(of=[cards, accounts])
    for name, many in MANY.items()
}
# Cards with or without an account (stock cards have none yet): only the card rows are locked.
_LOCK_MANY_BARE = {
    name: sa.select(*_CARD_COLUMNS).select_from(_CARD_FROM)
    .where(sa.or_(many(cards.c.number), many(cards.c.id, "ids")))
    .order_by(cards.c.id).with_for_update(of=cards)
    for name, many in MANY.items()
}
_closer, _referrer = operations.alias("closer"), operations.alias("referrer")
_LOOKUP = {
    name: sa.select(
        operations.c.id, operations.c.kind, operations.c.approved, operations.c.card_id, operations.c.amount,
        sa.exists().where(_closer.c.settles == operations.c.id).label("settled"),
        sa.exists().where(_referrer.c.reference == operations.c.id, _referrer.c.approved).label("referenced"),
    ).where(many(operations.c.id))
    for name, many in MANY.items()
}
_INSERT_OPERATIONS = sa.insert(operations)
_UPDATE_ACCOUNT = sa.update(accounts).where(accounts.c.id == sa.bindparam("account")).values(
    balance=accounts.c.balance + sa.bindparam("d_balance"), held=accounts.c.held + sa.bindparam("d_held"))
_INSERT_ENTRY = sa.insert(entries)
_RECORD_OPERATION = {
    name: dialect.insert(operations).on_conflict_do_nothing().returning(operations.c.id)
    for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))
}


_OPERATION_TYPES = {
    "id": "uuid", "kind": "varchar", "fingerprint": "varchar", "approved": "boolean", "decline_code": "varchar",
    "channel": "varchar", "card_id": "bigint", "store_id": "bigint", "terminal_id": "bigint", "amount": "bigint",
    "currency": "varchar", "settles": "uuid", "reference": "uuid", "result": "json",
    "device_time": "timestamptz", "created_at": "timestamptz",
}
_ENTRY_TYPES = {
    "operation_id": "uuid", "card_id": "bigint", "account_id": "bigint", "kind": "varchar", "amount": "bigint",
    "held_delta": "bigint", "balance_after": "bigint", "currency": "varchar", "store_id": "bigint",
    "created_at": "timestamptz",
}
_DELTA_TYPES = {"account": "bigint", "d_balance": "bigint", "d_held": "bigint"}


# PostgreSQL takes many rows as one JSON document, in a statement of constant text: cheaper to
# send than a parameter set per row or an array per column.
def _recordset(param: str, columns: dict[str, str]) -> str:
    record = ", ".join(f"{column} {sql_type}" for column, sql_type in columns.items())
    return f"json_to_recordset(CAST(:{param} AS json)) AS r({record})"


def insert_rows_sql(table: sa.Table, param: str, columns: dict[str, str]) -> str:
    """PostgreSQL INSERT of the rows in the JSON document bound to ``param`` (columns: name -> SQL type)."""
    names = ", ".join(columns)
    return f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {_recordset(param, columns)}"


def _move_accounts(param: str) -> str:
    return (f"UPDATE accounts AS a SET balance = a.balance + r.d_balance, held = a.held + r.d_held "
            f"FROM {_recordset(param, _DELTA_TYPES)} WHERE a.id = r.account")


_PG_INSERT_ENTRIES = sa.text(insert_rows_sql(entries, "rows", _ENTRY_TYPES))
_PG_UPDATE_ACCOUNTS = sa.text(_move_accounts("rows"))
# A whole batch in one statement: data-modifying CTEs all run, and the entries' foreign keys are
# checked at the end of the statement, when the operations exist.
_PG_WRITE_BATCH = sa.text(
    f"WITH moved AS ({_move_accounts('deltas')} RETURNING 1), "
    f"posted AS ({insert_rows_sql(entries, 'entries', _ENTRY_TYPES)} RETURNING 1) "
    f"{insert_rows_sql(operations, 'operations', _OPERATION_TYPES)}")


def json_document(rows: Any) -> str:
    """Rows as one JSON document for PostgreSQL: UUIDs and timestamps as text it parses. pydantic-core's
    serializer knows those types natively, several times faster than json.dumps with a fallback."""
    return pydantic_core.to_json(rows).decode()


def _json_rows(rows: list[dict[str, Any]]) -> dict[str, str]:
    return {"rows": json_document(rows)}


class Ledger:
    """Records operations and their entries; the handlers of each operation live in other modules."""

    def __init__(self, db: Database, programmes_cache: ProgrammeCache) -> None:
        self.db = db
        self.programmes = programmes_cache

    # -- reading cards ---------------------------------------------------------------------------

    async def lock_card(self, conn: AsyncConnection, *, number: str | None = None,
                        card_id: int | None = None, lock: bool = True) -> CardRow | None:
        """Load and lock one card (by number or id) with its stored-value account."""
        by, params = ("number", {"key": number}) if number is not None else ("id", {"key": card_id})
        row = None
        if lock:
            # Lock the card and its account together: PostgreSQL then re-reads both rows if a
            # concurrent transaction changed them while we waited, so the balance is current.
            row = (await conn.execute(_CARD_QUERIES[by, "both"], params)).first()
        if row is None:  # not locking, or a card with no account yet (only its own row to lock)
            row = (await conn.execute(_CARD_QUERIES[by, "card" if lock else "read"], params)).first()
        return None if row is None else await self.card_row(conn, row)

    @property
    def _dialect(self) -> str:
        return "sqlite" if self.db.sqlite else "postgresql"

    async def lock_cards(self, conn: AsyncConnection, numbers: Sequence[str],
                         ids: Sequence[int] = ()) -> list[CardRow]:
        """Lock many cards that have accounts (by number or id), in id order, so batches never
        deadlock each other."""
        rows = (await conn.execute(_LOCK_MANY[self._dialect], {"keys": list(numbers), "ids": list(ids)})).all()
        return [await self.card_row(conn, row) for row in rows]

    async def lock_any_cards(self, conn: AsyncConnection, numbers: Sequence[str],
                             ids: Sequence[int] = ()) -> list[CardRow]:
        """Lock many cards whether or not they have an account yet (stock cards in packs)."""
        locked = await self.lock_cards(conn, numbers, ids)
        have_numbers, have_ids = {c.number for c in locked}, {c.id for c in locked}
        rest_numbers = [n for n in numbers if n not in have_numbers]
        rest_ids = [i for i in ids if i not in have_ids]
        if not rest_numbers and not rest_ids:
            return locked
        rows = (await conn.execute(_LOCK_MANY_BARE[self._dialect],
                                   {"keys": rest_numbers, "ids": rest_ids})).all()
        # A card that got its account while we waited for it is read again with the account locked.
        grown = [r.id for r in rows if r.account_id is not None and r.id not in have_ids]
        locked += [await self.card_row(conn, r) for r in rows if r.account_id is None and r.id not in have_ids]
        if grown:
            locked += await self.lock_cards(conn, (), grown)
        return locked

    async def lookup(self, conn: AsyncConnection, op_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Any]:
        """The recorded operations among ``op_ids``, each with whether another operation closed it
        (``settled``: a cancel, confirm, void or expiry) or refers to it (``referenced``: a refund)."""
        rows = await conn.execute(_LOOKUP[self._dialect], {"keys": list(op_ids)})
        return {row.id: row for row in rows}

    async def write_batch(self, conn: AsyncConnection, rows: list[dict[str, Any]],
                          lines: Sequence[tuple[uuid.UUID, int | None, PendingEntry]], now: datetime) -> None:
        """Record many operations with their entries; an id recorded meanwhile raises IntegrityError.

        On PostgreSQL it is one statement: the account deltas, the entries and the operations
        travel as three JSON documents.
        """
        if self.db.sqlite:
            await conn.execute(_INSERT_OPERATIONS, rows)
            if lines:
                await self.post(conn, lines, now)
            return
        deltas, entry_rows = self._entry_rows(lines, now)
        documents = {"deltas": deltas, "entries": entry_rows, "operations": rows}
        await conn.execute(_PG_WRITE_BATCH, {k: json_document(v) for k, v in documents.items()})

    async def card_row(self, conn: AsyncConnection, row: Any) -> CardRow:
        return CardRow(
            id=row.id, number=row.number, state=CardState(row.state),
            programme=await self.programmes.get(conn, row.programme_id), expires_on=row.expires_on,
            pack_id=row.pack_id, pack_status=row.pack_status, pack_store_id=row.pack_store_id,
            account_id=row.account_id, balance=row.balance or 0, held=row.held or 0,
            replaced_by=row.replaced_by,
        )

    async def ensure_account(self, conn: AsyncConnection, card: CardRow) -> int:
        """The card's stored-value account, opened on its first activation."""
        if card.account_id is None:
            card.account_id = (await conn.execute(
                sa.insert(accounts).values(card_id=card.id, kind=STORED_VALUE,
                                           currency=card.programme.currency, balance=0, held=0)
                .returning(accounts.c.id))).scalar_one()
        return card.account_id

    async def move_card(self, conn: AsyncConnection, card: CardRow, event: CardEvent, **values: Any) -> None:
        """Apply a lifecycle event to a locked card (IllegalTransition if the lifecycle forbids it)."""
        state = next_state(card.state, event)
        await conn.execute(sa.update(cards).where(cards.c.id == card.id).values(state=state.value, **values))
        card.state = state
        if "expires_on" in values:
            card.expires_on = values["expires_on"]

    @staticmethod
    def entry(card: CardRow, kind: EntryKind, amount: int, held_delta: int = 0) -> PendingEntry:
        """A ledger line for ``card``; updates the in-memory balance so several lines chain."""
        if card.account_id is None:
            raise RuntimeError("entry on a card without an account")
        card.balance += amount
        card.held += held_delta
        return PendingEntry(card.id, card.account_id, kind, amount, held_delta, card.balance,
                            card.programme.currency)

    # -- recording ---------------------------------------------------------------------------------

    async def execute(self, *, op_id: uuid.UUID, kind: OperationKind, payload: dict[str, Any],
                      origin: Origin, handler: Handler, device_time: datetime | None = None,
                      now: datetime | None = None) -> tuple[dict[str, Any], bool]:
        """Run ``handler`` and record its outcome under ``op_id`` exactly once.

        Returns ``(result, replayed)``. A repeat of ``op_id`` with the same payload returns the first
        result; with a different payload it raises IdempotencyConflict and changes nothing.
        """
        digest = self.digest(kind, payload, origin)
        now = now or datetime.now(UTC)
        try:
            async with self.db.begin() as conn:
                outcome = await handler(conn, op_id, now)
                result = self.result(op_id, kind, outcome, now)
                await self._record(conn, op_id, kind, digest, origin, outcome, result, device_time, now)
                return result, False
        except _AlreadyRecorded:
            pass
        except DomainError:
            # A repeat can fail where its first run passed (the pack is activated now): answer the
            # repeat with the first result rather than with today's error.
            replayed = await self.replay(op_id, digest, missing_ok=True)
            if replayed is None:
                raise
            return replayed, True
        return await self.replay(op_id, digest), True

    @staticmethod
    def digest(kind: OperationKind, payload: dict[str, Any], origin: Origin) -> str:
        """The request's fingerprint: who asked (channel, store, terminal) and what."""
        return fingerprint({"kind": kind.value, "channel": origin.channel, "store": origin.store_id,
                            "terminal": origin.terminal_id, **payload})

    async def replay(self, op_id: uuid.UUID, digest: str, missing_ok: bool = False) -> dict[str, Any] | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(
                sa.select(operations.c.fingerprint, operations.c.result).where(operations.c.id == op_id))).first()
        if row is None and missing_ok:
            return None
        if row.fingerprint != digest:
            raise IdempotencyConflict(f"transaction id {op_id} was already used for a different request")
        return row.result

    async def _record(self, conn: AsyncConnection, op_id: uuid.UUID, kind: OperationKind, digest: str,
                      origin: Origin, outcome: Outcome, result: dict[str, Any],
                      device_time: datetime | None, now: datetime) -> None:
        row = self.operation_row(op_id, kind, digest, origin, outcome, result, device_time, now)
        inserted = await conn.execute(self.record_statement, row)
        if inserted.first() is None:  # rowcount is not reliable for INSERT on every driver
            raise _AlreadyRecorded
        if not outcome.approved:
            return
        if outcome.entries:
            await self.post(conn, [(op_id, origin.store_id, e) for e in outcome.entries], now)
        for statement in outcome.after:
            await conn.execute(statement)

    @property
    def record_statement(self) -> sa.Insert:
        """INSERT of operation rows that skips ids already recorded and returns the ids it wrote."""
        return _RECORD_OPERATION[self._dialect]

    @staticmethod
    def operation_row(op_id: uuid.UUID, kind: OperationKind, digest: str, origin: Origin, outcome: Outcome,
                      result: dict[str, Any], device_time: datetime | None, now: datetime) -> dict[str, Any]:
        card = outcome.card
        return dict(
            id=op_id, kind=kind.value, fingerprint=digest, approved=outcome.approved,
            decline_code=outcome.code.value if outcome.code else None, channel=origin.channel,
            card_id=card.id if card else None, store_id=origin.store_id, terminal_id=origin.terminal_id,
            amount=outcome.amount, currency=card.programme.currency if card else outcome.currency,
            settles=outcome.settles if outcome.approved else None,
            reference=outcome.reference, result=result, device_time=device_time, created_at=now,
        )

    async def post(self, conn: AsyncConnection, lines: Sequence[tuple[uuid.UUID, int | None, PendingEntry]],
                   now: datetime) -> None:
        """Write entries (operation id, store id, line) and move each account's balance by their sum."""
        updates, rows = self._entry_rows(lines, now)
        if self.db.sqlite or len(rows) == 1:
            await conn.execute(_UPDATE_ACCOUNT, updates[0] if len(updates) == 1 else updates)
            await conn.execute(_INSERT_ENTRY, rows[0] if len(rows) == 1 else rows)
            return
        await conn.execute(_PG_UPDATE_ACCOUNTS, _json_rows(updates))
        await conn.execute(_PG_INSERT_ENTRIES, _json_rows(rows))

    @staticmethod
    def _entry_rows(lines: Sequence[tuple[uuid.UUID, int | None, PendingEntry]], now: datetime
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Per-account deltas and entry rows for a set of ledger lines."""
        deltas: dict[int, list[int]] = {}
        for _, _, e in lines:
            d = deltas.setdefault(e.account_id, [0, 0])
            d[0] += e.amount
            d[1] += e.held_delta
        updates = [{"account": a, "d_balance": amount, "d_held": held} for a, (amount, held) in deltas.items()]
        rows = [dict(operation_id=op_id, card_id=e.card_id, account_id=e.account_id, kind=e.kind.value,
                     amount=e.amount, held_delta=e.held_delta, balance_after=e.balance_after,
                     currency=e.currency, store_id=store_id, created_at=now) for op_id, store_id, e in lines]
        return updates, rows

    @staticmethod
    def result(op_id: uuid.UUID, kind: OperationKind, outcome: Outcome, now: datetime) -> dict[str, Any]:
        card = outcome.card
        result: dict[str, Any] = {
            "txn_id": str(op_id),
            "operation": kind.value,
            "approved": outcome.approved,
            "decline_code": outcome.code.value if outcome.code else None,
            "message": outcome.message or ("approved" if outcome.approved else ""),
            "amount": outcome.amount,
            "decision": "online",
            "at": now.isoformat(),
        }
        if card is not None:
            result.update(
                card=mask(card.number), card_state=card.state.value, currency=card.programme.currency,
                balance=card.balance, available=card.balance - card.held,
                expires_on=card.expires_on.isoformat() if card.expires_on else None,
            )
        result.update(outcome.extra)
        return result

    # -- shared lookups --------------------------------------------------------------------------

    async def original(self, conn: AsyncConnection, txn_id: uuid.UUID | None):
        """The recorded operation a cancel/confirm/void/refund names, or None."""
        if txn_id is None:
            return None
        return (await conn.execute(sa.select(operations).where(operations.c.id == txn_id))).first()

    async def settled(self, conn: AsyncConnection, txn_id: uuid.UUID) -> bool:
        row = await conn.execute(sa.select(operations.c.id).where(operations.c.settles == txn_id))
        return row.first() is not None

    async def programme_by_code(self, conn: AsyncConnection, code: str) -> Programme:
        pid = (await conn.execute(sa.select(programmes.c.id).where(programmes.c.code == code))).scalar()
        if pid is None:
            raise InvalidInput(f"unknown programme {code!r}", code="unknown_programme")
        return await self.programmes.get(conn, pid)


def unknown_card() -> Outcome:
    return Outcome.declined(DeclineCode.UNKNOWN_CARD, "no such card")


def card_declined(card: CardRow, code: DeclineCode, message: str) -> Outcome:
    d = decline(code, message)
    return Outcome.from_decision(d, card)

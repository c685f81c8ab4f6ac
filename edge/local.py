"""Reads and writes of the edge's SQLite database that both the till side and sync share."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core import HoldExpiryPolicy, NumberBlock, NumberTemplate, Programme, ProgrammeKind, ValueRules
from sync import ProgrammeSpec

from .db.tables import cards, holds, number_blocks, outbox, programmes, store_settings, sync_state

__all__ = ["SyncState", "programme_of", "load_programmes", "sync_position", "exposure", "unacked_deltas",
           "has_unacked", "pending_held", "upsert_card", "load_blocks", "programme_for_number"]


class SyncState(dict):
    """The ``sync_state`` row as a mapping (attribute access for readability)."""

    __getattr__ = dict.__getitem__


def programme_of(spec: ProgrammeSpec) -> Programme:
    """The core programme a shipped spec describes (its id is meaningless at the edge)."""
    return Programme(
        id=0, code=spec.code, name=spec.name, kind=ProgrammeKind(spec.kind), currency=spec.currency,
        template=NumberTemplate(spec.number_prefix, spec.number_length, spec.luhn),
        values=ValueRules(nominal_values=tuple(spec.nominal_values), min_amount=spec.min_amount,
                          max_amount=spec.max_amount, topup_allowed=spec.topup_allowed,
                          max_balance=spec.max_balance),
        validity_months=spec.validity_months, hold_ttl_seconds=spec.hold_ttl_seconds,
        hold_expiry_policy=HoldExpiryPolicy(spec.hold_expiry_policy), service_code=spec.service_code)


async def load_programmes(conn: AsyncConnection) -> dict[str, ProgrammeSpec]:
    rows = (await conn.execute(sa.select(programmes.c.spec))).scalars()
    return {spec["code"]: ProgrammeSpec.model_validate(spec) for spec in rows}


def programme_for_number(specs: dict[str, ProgrammeSpec], number: str) -> ProgrammeSpec | None:
    """The programme whose number template made ``number`` (prefixes of a chain do not overlap)."""
    for spec in specs.values():
        if NumberTemplate(spec.number_prefix, spec.number_length, spec.luhn).matches(number):
            return spec
    return None


async def sync_position(conn: AsyncConnection) -> SyncState:
    return SyncState((await conn.execute(sa.select(sync_state).where(sync_state.c.id == 1))).mappings().one())


async def settings(conn: AsyncConnection) -> Any:
    return (await conn.execute(sa.select(store_settings).where(store_settings.c.id == 1))).first()


async def exposure(conn: AsyncConnection) -> int:
    """Offline debits central has not acknowledged, plus what local holds reserve."""
    debits = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(outbox.c.amount), 0))
                                 .where(outbox.c.debit))).scalar_one()
    return int(debits) + await pending_held(conn)


async def pending_held(conn: AsyncConnection, number: str | None = None) -> int:
    query = sa.select(sa.func.coalesce(sa.func.sum(holds.c.amount), 0)).where(holds.c.status == "pending")
    if number is not None:
        query = query.where(holds.c.card == number)
    return int((await conn.execute(query)).scalar_one())


async def unacked_deltas(conn: AsyncConnection, number: str) -> int:
    """What this store's unacknowledged entries do to a card's balance."""
    return int((await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(outbox.c.delta), 0))
                                   .where(outbox.c.card == number))).scalar_one())


async def has_unacked(conn: AsyncConnection, number: str) -> bool:
    """Whether only this store knows the card's latest state (unacked entries or an offline hold)."""
    queued = await conn.execute(sa.select(outbox.c.seq).where(outbox.c.card == number).limit(1))
    if queued.first() is not None:
        return True
    held = await conn.execute(sa.select(holds.c.txn_id).where(holds.c.card == number,
                                                              holds.c.status == "pending").limit(1))
    return held.first() is not None


async def upsert_card(conn: AsyncConnection, number: str, now: datetime, **values: Any) -> None:
    """Insert or update one cached card (``programme`` and ``state`` are needed to insert)."""
    values["updated_at"] = now
    updated = await conn.execute(sa.update(cards).where(cards.c.number == number).values(**values))
    if updated.rowcount == 0:
        await conn.execute(sa.insert(cards).values(number=number, **values))


def parse_date(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


async def load_blocks(conn: AsyncConnection, programme: str | None = None) -> list[NumberBlock]:
    query = sa.select(number_blocks).order_by(number_blocks.c.id)
    if programme is not None:
        query = query.where(number_blocks.c.programme == programme)
    return [NumberBlock(r.id, r.programme, r.first_serial, r.count, r.used) for r in (await conn.execute(query))]

"""Reads and writes of the edge's SQLite database that both the till side and sync share."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core import HoldExpiryPolicy, NumberBlock, NumberTemplate, Programme, ProgrammeKind, ValueRules
from sync import ProgrammeSpec

from .db.tables import cards, holds, number_blocks, outbox, products, programmes, store_settings, sync_state, tills

__all__ = ["Configuration", "SyncState", "programme_of", "load_programmes", "sync_position", "exposure",
           "unacked_deltas", "has_unacked", "pending_held", "upsert_card", "load_blocks", "programme_for_number",
           "product"]


# Hot-path statements are built once: building Core statements per request costs more CPU than
# running them on a local SQLite file.
_SYNC_STATE = sa.select(sync_state).where(sync_state.c.id == 1)
_SETTINGS = sa.select(store_settings).where(store_settings.c.id == 1)
_PROGRAMMES = sa.select(programmes.c.spec)
_TILLS = sa.select(tills.c.token_hash, tills.c.code, tills.c.active)
_DEBITS = sa.select(sa.func.coalesce(sa.func.sum(outbox.c.amount), 0)).where(outbox.c.debit)
_HELD = sa.select(sa.func.coalesce(sa.func.sum(holds.c.amount), 0)).where(holds.c.status == "pending")
_HELD_ON_CARD = _HELD.where(holds.c.card == sa.bindparam("card"))
_UNACKED = sa.select(sa.func.coalesce(sa.func.sum(outbox.c.delta), 0)).where(outbox.c.card == sa.bindparam("card"))
_QUEUED = sa.select(outbox.c.seq).where(outbox.c.card == sa.bindparam("card")).limit(1)
_HOLDING = sa.select(holds.c.txn_id).where(holds.c.card == sa.bindparam("card"), holds.c.status == "pending").limit(1)
_UPDATE_CARD = sa.update(cards).where(cards.c.number == sa.bindparam("key"))
_PRODUCT = sa.select(products).where(products.c.key == sa.bindparam("key"), products.c.active)


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
        hold_expiry_policy=HoldExpiryPolicy(spec.hold_expiry_policy), service_code=spec.service_code,
        pin_required=spec.pin_required)


async def load_programmes(conn: AsyncConnection) -> dict[str, ProgrammeSpec]:
    rows = (await conn.execute(_PROGRAMMES)).scalars()
    return {spec["code"]: ProgrammeSpec.model_validate(spec) for spec in rows}


def programme_for_number(specs: dict[str, ProgrammeSpec], number: str) -> ProgrammeSpec | None:
    """The programme whose number template made ``number`` (prefixes of a chain do not overlap)."""
    for spec in specs.values():
        if NumberTemplate(spec.number_prefix, spec.number_length, spec.luhn).matches(number):
            return spec
    return None


async def sync_position(conn: AsyncConnection) -> SyncState:
    return SyncState((await conn.execute(_SYNC_STATE)).mappings().one())


async def settings(conn: AsyncConnection) -> Any:
    return (await conn.execute(_SETTINGS)).first()


class Configuration:
    """Programmes, the store's budget and its till tokens: they change only when a pull moves
    ``config_version``, so each version is read from the database once."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.specs: dict[str, ProgrammeSpec] = {}
        self.settings: Any = None
        self.tills: dict[str, tuple[str, bool]] = {}  # token hash -> (till code, active)
        self.templates: dict[str, NumberTemplate] = {}  # programme code -> its card number template

    async def current(self, conn: AsyncConnection, version: int) -> Configuration:
        if version != self.version:
            self.specs = await load_programmes(conn)
            self.templates = {code: NumberTemplate(spec.number_prefix, spec.number_length, spec.luhn)
                              for code, spec in self.specs.items()}
            self.settings = await settings(conn)
            self.tills = {r.token_hash: (r.code, r.active) for r in await conn.execute(_TILLS)}
            self.version = version
        return self


async def exposure(conn: AsyncConnection) -> int:
    """Offline debits central has not acknowledged, plus what local holds reserve."""
    debits = (await conn.execute(_DEBITS)).scalar_one()
    return int(debits) + await pending_held(conn)


async def pending_held(conn: AsyncConnection, number: str | None = None) -> int:
    if number is None:
        return int((await conn.execute(_HELD)).scalar_one())
    return int((await conn.execute(_HELD_ON_CARD, {"card": number})).scalar_one())


async def unacked_deltas(conn: AsyncConnection, number: str) -> int:
    """What this store's unacknowledged entries do to a card's balance."""
    return int((await conn.execute(_UNACKED, {"card": number})).scalar_one())


async def has_unacked(conn: AsyncConnection, number: str) -> bool:
    """Whether only this store knows the card's latest state (unacked entries or an offline hold)."""
    if (await conn.execute(_QUEUED, {"card": number})).first() is not None:
        return True
    return (await conn.execute(_HOLDING, {"card": number})).first() is not None


async def upsert_card(conn: AsyncConnection, number: str, now: datetime, **values: Any) -> None:
    """Insert or update one cached card (``programme`` and ``state`` are needed to insert)."""
    values["updated_at"] = now
    updated = await conn.execute(_UPDATE_CARD, {"key": number, **values})
    if updated.rowcount == 0:
        await conn.execute(sa.insert(cards).values(number=number, **values))


def parse_date(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


async def load_blocks(conn: AsyncConnection, programme: str | None = None) -> list[NumberBlock]:
    query = sa.select(number_blocks).order_by(number_blocks.c.id)
    if programme is not None:
        query = query.where(number_blocks.c.programme == programme)
    return [NumberBlock(r.id, r.programme, r.first_serial, r.count, r.used) for r in (await conn.execute(query))]


async def product(conn: AsyncConnection, key: str) -> dict[str, Any] | None:
    """The active product of a catalogue key (``core.barcodes.product_key`` of the scanned code), prices
    in minor units; None if the store does not know it or it was withdrawn."""
    row = (await conn.execute(_PRODUCT, {"key": key})).first()
    if row is None:
        return None
    return {"key": row.key, "code": row.code, "name": row.name, "currency": row.currency, "price": row.price,
            "member_price": row.member_price, "unit": row.unit, "group": row.item_group, "active": row.active,
            "version": row.version}

"""What stores need to decide offline, kept beside the ledger: the deny list and the stores' watch lists.

Both are written in the transaction of the change that causes them (a block, a pack authorization,
an overdraft), so a store never learns of a card state that was rolled back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ..db.tables import accounts, cards, deny_changes, deny_list, packs, store_cards
from .ledger import STORED_VALUE

__all__ = ["list_card", "unlist_card", "listings", "watch", "watch_pack", "release_repaid", "OVERDRAFT"]

OVERDRAFT = "overdraft"


_PG_WATCH = sa.text(
    "INSERT INTO store_cards (store_id, card_id) SELECT :store, c FROM unnest(CAST(:ids AS bigint[])) AS c "
    "WHERE NOT EXISTS (SELECT 1 FROM store_cards s WHERE s.store_id = :store AND s.card_id = c) "
    "ON CONFLICT DO NOTHING")


def _dialect(conn: AsyncConnection):
    return sqlite if conn.dialect.name == "sqlite" else postgresql


async def listings(conn: AsyncConnection, card_ids: Sequence[int]) -> dict[int, Any]:
    """The deny-list rows of these cards (reason, version), by card id."""
    if not card_ids:
        return {}
    rows = await conn.execute(sa.select(deny_list).where(deny_list.c.card_id.in_(sorted(set(card_ids)))))
    return {r.card_id: r for r in rows}


async def list_card(conn: AsyncConnection, card_id: int, number: str, reason: str,
                    now: datetime | None = None) -> int:
    """Put a card on the deny list (or change its reason); returns the new deny-list version."""
    now = now or datetime.now(UTC)
    version = (await conn.execute(sa.insert(deny_changes).values(
        card_id=card_id, number=number, listed=True, reason=reason, at=now).returning(deny_changes.c.version))
    ).scalar_one()
    upsert = _dialect(conn).insert(deny_list).values(card_id=card_id, number=number, reason=reason,
                                                     version=version, listed_at=now)
    await conn.execute(upsert.on_conflict_do_update(index_elements=[deny_list.c.card_id],
                                                    set_={"reason": reason, "version": version, "listed_at": now}))
    return version


async def unlist_card(conn: AsyncConnection, card_id: int, reason: str, now: datetime | None = None) -> int | None:
    """Take a card off the deny list; the new version, or None if it was not listed."""
    removed = (await conn.execute(sa.delete(deny_list).where(deny_list.c.card_id == card_id)
                                  .returning(deny_list.c.number))).first()
    if removed is None:
        return None
    return (await conn.execute(sa.insert(deny_changes).values(
        card_id=card_id, number=removed.number, listed=False, reason=reason, at=now or datetime.now(UTC))
        .returning(deny_changes.c.version))).scalar_one()


async def release_repaid(conn: AsyncConnection) -> int:
    """Take overdrawn cards whose debt was repaid (e.g. by an online top-up) off the deny list."""
    repaid = (await conn.execute(
        sa.select(deny_list.c.card_id).join(accounts, sa.and_(accounts.c.card_id == deny_list.c.card_id,
                                                              accounts.c.kind == STORED_VALUE))
        .where(deny_list.c.reason == OVERDRAFT, accounts.c.balance >= 0).order_by(deny_list.c.card_id)
        .with_for_update(of=deny_list))).scalars().all()
    for card_id in repaid:
        await unlist_card(conn, card_id, "repaid")
    return len(repaid)


async def watch(conn: AsyncConnection, store_id: int, card_ids: Sequence[int]) -> None:
    """Add cards to a store's watch list (cards already on it stay where they are)."""
    if not card_ids:
        return
    ids = sorted(set(card_ids))
    if conn.dialect.name == "postgresql":
        # One statement for a whole sync batch; cards watched already are skipped before the insert
        # so they take no id from the sequence.
        await conn.execute(_PG_WATCH, {"store": store_id, "ids": ids})
        return
    await conn.execute(_dialect(conn).insert(store_cards).on_conflict_do_nothing(),
                       [{"store_id": store_id, "card_id": cid} for cid in ids])


async def watch_pack(conn: AsyncConnection, pack_id: int) -> None:
    """A pack authorized for a store: the store follows its cards (to sell them offline)."""
    query = (sa.select(packs.c.store_id, cards.c.id).join(packs, packs.c.id == cards.c.pack_id)
             .where(cards.c.pack_id == pack_id, packs.c.store_id.is_not(None)).order_by(cards.c.id))
    statement = _dialect(conn).insert(store_cards).from_select(["store_id", "card_id"], query)
    await conn.execute(statement.on_conflict_do_nothing())

"""CSV reports for head office: turnover by store, day and type; outstanding liability."""

from __future__ import annotations

import csv
import io
from datetime import datetime

import sqlalchemy as sa

from ..db import Database
from ..db.tables import accounts, cards, operations, programmes, stores

__all__ = ["turnover_csv", "liability_csv"]


def _csv(header: list[str], rows) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


async def turnover_csv(db: Database, since: datetime | None = None, until: datetime | None = None) -> str:
    """Approved operations per store, UTC day, type and currency: count and amount (minor units)."""
    day = sa.func.date(operations.c.created_at).label("day")
    query = (sa.select(sa.func.coalesce(stores.c.code, "-").label("store"), day, operations.c.kind,
                       operations.c.currency, sa.func.count().label("count"),
                       sa.func.sum(operations.c.amount).label("amount"))
             .outerjoin(stores, stores.c.id == operations.c.store_id)
             .where(operations.c.approved, operations.c.amount != 0)
             .group_by("store", day, operations.c.kind, operations.c.currency)
             .order_by("store", day, operations.c.kind))
    if since:
        query = query.where(operations.c.created_at >= since)
    if until:
        query = query.where(operations.c.created_at < until)
    async with db.connect() as conn:
        rows = (await conn.execute(query)).all()
    return _csv(["store", "day", "type", "currency", "count", "amount_minor"],
                [(r.store, str(r.day), r.kind, r.currency or "", r.count, r.amount) for r in rows])


async def liability_csv(db: Database) -> str:
    """What the chain owes card holders: balances per programme, currency and card state."""
    query = (sa.select(programmes.c.code, accounts.c.currency, cards.c.state, sa.func.count().label("cards"),
                       sa.func.sum(accounts.c.balance).label("balance"), sa.func.sum(accounts.c.held).label("held"))
             .join(cards, cards.c.id == accounts.c.card_id).join(programmes, programmes.c.id == cards.c.programme_id)
             .group_by(programmes.c.code, accounts.c.currency, cards.c.state)
             .order_by(programmes.c.code, accounts.c.currency, cards.c.state))
    async with db.connect() as conn:
        rows = (await conn.execute(query)).all()
    return _csv(["programme", "currency", "card_state", "cards", "balance_minor", "held_minor"],
                [(r.code, r.currency, r.state, r.cards, r.balance, r.held) for r in rows])

"""CSV reports for head office: turnover by store, day and type; outstanding liability."""

from __future__ import annotations

import csv
import io
from datetime import datetime

import sqlalchemy as sa

from ..db import Database
from ..db.tables import accounts, cards, entries, holds, operations, programmes, stores

__all__ = ["turnover_csv", "liability_csv", "reconciliation"]


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


async def reconciliation(db: Database, limit: int = 100) -> dict:
    """Check the ledger's invariants: cached balances equal entry sums, held equals open holds."""
    sums = (sa.select(entries.c.account_id, sa.func.sum(entries.c.amount).label("amount"),
                      sa.func.sum(entries.c.held_delta).label("held"))
            .group_by(entries.c.account_id).subquery())
    open_holds = (sa.select(holds.c.account_id, sa.func.sum(holds.c.amount).label("held"))
                  .where(holds.c.status.in_(["pending", "clarification"])).group_by(holds.c.account_id).subquery())
    entry_amount = sa.func.coalesce(sums.c.amount, 0)
    entry_held = sa.func.coalesce(sums.c.held, 0)
    hold_sum = sa.func.coalesce(open_holds.c.held, 0)
    query = (sa.select(accounts.c.id, cards.c.number, accounts.c.balance, accounts.c.held,
                       entry_amount.label("entries_amount"), entry_held.label("entries_held"),
                       hold_sum.label("open_holds"))
             .join(cards, cards.c.id == accounts.c.card_id)
             .outerjoin(sums, sums.c.account_id == accounts.c.id)
             .outerjoin(open_holds, open_holds.c.account_id == accounts.c.id)
             .where(sa.or_(accounts.c.balance != entry_amount, accounts.c.held != entry_held,
                           accounts.c.held != hold_sum)))
    async with db.connect() as conn:
        bad = (await conn.execute(query.limit(limit))).all()
        totals = (await conn.execute(sa.select(
            sa.func.count(), sa.func.coalesce(sa.func.sum(accounts.c.balance), 0)))).one()
        entry_total = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(entries.c.amount), 0)))).scalar_one()
    # PostgreSQL sums bigints as numeric: bring every figure back to int.
    balance_total, entry_total = int(totals[1]), int(entry_total)
    return {"ok": not bad and balance_total == entry_total, "accounts": totals[0], "balance_total": balance_total,
            "entries_total": entry_total,
            "mismatches": [{k: v if isinstance(v, str) else int(v) for k, v in r._mapping.items()} for r in bad]}

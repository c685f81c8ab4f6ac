"""Holds the till never closed: expiry by programme policy (exactly once) and operator resolution."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from core import DeclineCode, InvalidInput, OperationKind

from ..db.tables import cards, holds
from .ledger import Ledger, Origin, Outcome, card_declined, mask, system_id
from .till import close_hold

__all__ = ["HoldService"]

log = logging.getLogger("tessera.holds")
UNCONFIRMED = ("pending", "clarification")


class HoldService:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def expire_due(self, now: datetime | None = None, batch: int = 500) -> dict[str, int]:
        """Close every pending hold past its TTL: release it, or hand it to clarification.

        Safe to run from several workers at once: each hold is closed under its card's lock by an
        operation whose id derives from the hold, so a second run finds nothing left to do.
        """
        now = now or datetime.now(UTC)
        done = {"released": 0, "clarification": 0}
        while True:
            async with self.ledger.db.connect() as conn:
                due = (await conn.execute(
                    sa.select(holds.c.operation_id).where(holds.c.status == "pending", holds.c.expires_at <= now)
                    .order_by(holds.c.expires_at).limit(batch))).scalars().all()
            for hold_id in due:
                result, replayed = await self._expire_one(hold_id, now)
                if result["approved"] and not replayed:
                    done[result["outcome"]] += 1
            if len(due) < batch:
                break
        if any(done.values()):
            log.info("holds expired released=%d clarification=%d", done["released"], done["clarification"])
        return done

    async def _expire_one(self, hold_id: uuid.UUID, now: datetime) -> tuple[dict[str, Any], bool]:
        async def run(conn, op_id, at):
            hold = (await conn.execute(sa.select(holds).where(holds.c.operation_id == hold_id))).one()
            card = await self.ledger.lock_card(conn, card_id=hold.card_id)
            hold = (await conn.execute(sa.select(holds).where(holds.c.operation_id == hold_id))).one()
            if hold.status != "pending":
                return card_declined(card, DeclineCode.HOLD_NOT_PENDING, f"hold is {hold.status}")
            if hold.policy == "clarify":
                out = Outcome(True, card, 0, reference=hold_id)
                out.after.append(sa.update(holds).where(holds.c.operation_id == hold_id, holds.c.status == "pending")
                                 .values(status="clarification"))
                out.extra["outcome"] = "clarification"
                return out
            out = close_hold(self.ledger, card, hold, op_id, "expired", at)
            out.extra["outcome"] = "released"
            return out

        return await self.ledger.execute(op_id=system_id("hold-expiry", hold_id), kind=OperationKind.HOLD_EXPIRY,
                                         payload={"hold": str(hold_id)}, origin=Origin("system"), handler=run,
                                         now=now)

    async def resolve(self, hold_id: uuid.UUID, action: str, actor: str) -> dict[str, Any]:
        """An operator confirms (captures) or reverses (releases) an unconfirmed hold."""
        if action not in ("confirm", "reverse"):
            raise InvalidInput("action is confirm or reverse")

        async def run(conn, op_id, at):
            hold = (await conn.execute(sa.select(holds).where(holds.c.operation_id == hold_id))).first()
            if hold is None:
                return Outcome.declined(DeclineCode.ORIGINAL_NOT_FOUND, "no such authorization")
            card = await self.ledger.lock_card(conn, card_id=hold.card_id)
            hold = (await conn.execute(sa.select(holds).where(holds.c.operation_id == hold_id))).one()
            if hold.status not in UNCONFIRMED:
                return card_declined(card, DeclineCode.HOLD_NOT_PENDING, f"hold is {hold.status}")
            if action == "confirm":
                return close_hold(self.ledger, card, hold, op_id, "confirmed", at, capture=hold.amount)
            return close_hold(self.ledger, card, hold, op_id, "reversed", at)

        result, _ = await self.ledger.execute(
            op_id=system_id("hold-resolution", hold_id), kind=OperationKind.HOLD_RESOLUTION,
            payload={"hold": str(hold_id), "action": action}, origin=Origin("admin", actor=actor), handler=run)
        return result

    async def unconfirmed(self, limit: int = 100, store_id: int | None = None) -> list[dict[str, Any]]:
        """Holds still awaiting a decision: pending ones and those in clarification."""
        query = (sa.select(holds, cards.c.number).join(cards, cards.c.id == holds.c.card_id)
                 .where(holds.c.status.in_(UNCONFIRMED)).order_by(holds.c.created_at).limit(limit))
        if store_id is not None:
            query = query.where(holds.c.store_id == store_id)
        async with self.ledger.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [{"authorization": str(r.operation_id), "card": mask(r.number), "amount": r.amount,
                 "currency": r.currency, "status": r.status, "policy": r.policy, "store_id": r.store_id,
                 "created_at": r.created_at.isoformat(), "expires_at": r.expires_at.isoformat()} for r in rows]

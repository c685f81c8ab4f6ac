"""The web service for websites: card number + eCode gives balance, history and payment.

eCodes are checked against their keyed hash; after ``max_failures`` wrong codes in a row a card's
web access is locked for ``lockout`` seconds, so codes cannot be guessed online.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from core import DomainError, OperationKind
from core.secrets import ecode_matches

from ..db.tables import cards
from .cards import CardService
from .ledger import Origin
from .till import TillRequest, TillService

__all__ = ["WebService", "EcodeRejected", "EcodeLocked"]


class EcodeRejected(DomainError):
    code = "invalid_card_or_ecode"


class EcodeLocked(DomainError):
    code = "ecode_locked"


class WebService:
    def __init__(self, till: TillService, cards_: CardService, pepper: bytes, max_failures: int = 5,
                 lockout_seconds: int = 900) -> None:
        self.till = till
        self.cards = cards_
        self.pepper = pepper
        self.max_failures = max_failures
        self.lockout = timedelta(seconds=lockout_seconds)

    async def _verify(self, number: str, ecode: str) -> int:
        """The card id if the eCode is right; otherwise count the failure and refuse.

        Check and count happen under the card's row lock, so parallel guesses cannot slip past
        the limit.
        """
        now = datetime.now(UTC)
        async with self.till.ledger.db.begin() as conn:
            row = (await conn.execute(
                sa.select(cards.c.id, cards.c.ecode_hash, cards.c.ecode_failures, cards.c.ecode_locked_until)
                .where(cards.c.number == number).with_for_update())).first()
            # Unknown card and wrong code answer alike, so the service does not confirm card numbers.
            if row is None or row.ecode_hash is None:
                raise EcodeRejected("card number or eCode is wrong")
            if row.ecode_locked_until is not None and row.ecode_locked_until > now:
                raise EcodeLocked(f"too many wrong eCodes; try again after {row.ecode_locked_until.isoformat()}")
            if ecode_matches(self.pepper, number, ecode, row.ecode_hash):
                if row.ecode_failures:
                    await conn.execute(sa.update(cards).where(cards.c.id == row.id)
                                       .values(ecode_failures=0, ecode_locked_until=None))
                return row.id
            failures = row.ecode_failures + 1
            locked_until = now + self.lockout if failures >= self.max_failures else None
            await conn.execute(sa.update(cards).where(cards.c.id == row.id).values(
                ecode_failures=0 if locked_until else failures, ecode_locked_until=locked_until))
        raise EcodeRejected("card number or eCode is wrong")

    async def balance(self, number: str, ecode: str) -> dict[str, Any]:
        await self._verify(number, ecode)
        return await self.till.balance(number)

    async def history(self, number: str, ecode: str, limit: int = 50) -> dict[str, Any]:
        card_id = await self._verify(number, ecode)
        summary = await self.till.balance(number)
        return {**summary, "entries": await self.cards.history(card_id, limit)}

    async def pay(self, req: TillRequest, ecode: str, origin: Origin) -> tuple[dict[str, Any], bool]:
        if req.kind != OperationKind.PAYMENT:
            raise DomainError("the web service takes payments only", code="invalid_input")
        await self._verify(req.card_number, ecode)
        return await self.till.execute(req, origin)



"""Card PINs: kept only as argon2 hashes bound to their card number, checked off the event loop,
and set or reset by staff (which also clears the card's count of wrong PINs).

A PIN never reaches a log, an audit record, an operation's result or an error message.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core import InvalidInput

from ..db import Database
from ..db.tables import cards
from .admin import NotFound, audit
from .ledger import mask

__all__ = ["MAX_PIN_TRIES", "hash_pin", "pin_matches", "set_card_pin"]

MAX_PIN_TRIES = 3  # wrong PINs in a row after which debits are refused until staff reset the PIN

# OWASP's minimum argon2id settings (19 MiB, 2 passes): every PIN payment pays for one verification,
# and the try counter, not the hash's cost, is what stands between a 4-digit PIN and a guesser.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
_PIN = re.compile(r"^[0-9]{4,12}$")


def _bound(number: str, pin: str) -> str:
    # The card number goes into the hash too: a hash copied onto another card matches nothing there.
    return f"{number}:{pin}"


def hash_pin(number: str, pin: str) -> str:
    """The argon2 hash of a card's PIN (blocking: run it in a thread)."""
    if not _PIN.match(pin):
        raise InvalidInput("PIN is 4 to 12 digits")
    return _hasher.hash(_bound(number, pin))


def pin_matches(stored: str, number: str, pin: str) -> bool:
    """Whether ``pin`` is the card's PIN (blocking: run it in a thread)."""
    try:
        return _hasher.verify(stored, _bound(number, pin))
    except (VerificationError, InvalidHashError):
        return False


async def set_card_pin(db: Database, number: str, pin: str, *, actor: str, path: str,
                       remote: str | None) -> dict[str, Any]:
    """Set (or reset) a card's PIN and clear its wrong-PIN count; audited without the PIN."""
    digest = await asyncio.to_thread(hash_pin, number, pin)
    async with db.begin() as conn:
        row = (await conn.execute(sa.select(cards.c.id, cards.c.pin_hash, cards.c.pin_failures)
                                  .where(cards.c.number == number).with_for_update())).first()
        if row is None:
            raise NotFound("no such card")
        await conn.execute(sa.update(cards).where(cards.c.id == row.id).values(pin_hash=digest, pin_failures=0))
        await audit(conn, actor, "card_pin_set", path, {
            "outcome": "ok", "method": "PUT", "path": path, "replaced": row.pin_hash is not None,
            "failures_cleared": row.pin_failures}, remote)
    return {"card": mask(number), "pin_set": True, "pin_failures": 0}

"""Edge persistence: one SQLite file (WAL, full fsync, one writer), its schema and migrations."""

from __future__ import annotations

from central.db.engine import create_engine

from . import tables
from .migrate import upgrade

__all__ = ["EdgeDatabase", "tables", "upgrade"]


class EdgeDatabase:
    """The store's SQLite engine: every transaction is BEGIN IMMEDIATE on the one connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)

    def begin(self):
        """``async with db.begin() as conn:`` — commits on success, rolls back on any error."""
        return self.engine.begin()

    async def close(self) -> None:
        await self.engine.dispose()

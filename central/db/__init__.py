"""Central persistence: schema, engine, migrations."""

from __future__ import annotations

from . import tables
from .engine import async_url, create_engine, is_sqlite, sync_url
from .migrate import upgrade

__all__ = ["Database", "tables", "upgrade", "async_url", "sync_url"]


class Database:
    """The engine plus the few dialect differences the services need to know about."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.sqlite = is_sqlite(url)
        self.engine = create_engine(url, pool_size=pool_size)
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    def begin(self):
        """``async with db.begin() as conn:`` — commits on success, rolls back on any error."""
        return self.engine.begin()

    def connect(self):
        return self.engine.connect()

    def reader(self):
        """A connection for one-statement reads: on PostgreSQL without BEGIN/ROLLBACK round trips
        (SQLite's single connection keeps its usual transactions)."""
        return self.engine.connect() if self.sqlite else self._autocommit.connect()

    async def close(self) -> None:
        await self.engine.dispose()

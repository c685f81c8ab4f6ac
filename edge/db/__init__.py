"""Edge persistence: one SQLite file (WAL, full fsync, one writer), its schema and migrations."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa

from central.db.engine import durable_sqlite, ensure_sqlite_dir, sync_url

from . import tables
from .migrate import upgrade

__all__ = ["EdgeDatabase", "EdgeConnection", "tables", "upgrade"]

# An executemany of more rows than this (a pull's card snapshots) runs in a worker thread.
_BULK_ROWS = 100


class EdgeConnection:
    """The open transaction's connection, with the awaitable ``execute`` the edge's code uses."""

    def __init__(self, sync: sa.Connection) -> None:
        self.sync = sync

    async def execute(self, statement: sa.Executable, parameters: Any = None) -> sa.Result:
        """Run one statement; rows come back buffered, so they outlive the transaction."""
        if isinstance(parameters, list) and len(parameters) > _BULK_ROWS:
            result = await asyncio.to_thread(self.sync.execute, statement, parameters)
        else:
            result = self.sync.execute(statement, parameters)
        return result.freeze()() if result.returns_rows else result


class EdgeDatabase:
    """The store's SQLite file behind one connection, one transaction at a time (SQLite has one
    writer anyway; queueing here is fairer than spinning on SQLITE_BUSY).

    A local SQLite statement takes microseconds, so statements run on the event loop's thread: a
    decision's dozen statements cost one thread hop (its commit) instead of several each. A commit
    that writes, with its fsync, runs in a worker thread, so a slow disk never stalls the tills'
    other requests; a read-only one ends at once.
    """

    def __init__(self, url: str, *, background_checkpoints: bool = False) -> None:
        self.url = url
        ensure_sqlite_dir(url)
        self.engine = sa.create_engine(sync_url(url), poolclass=sa.pool.StaticPool,
                                       connect_args={"check_same_thread": False})
        durable_sqlite(self.engine)
        if background_checkpoints:
            # SQLite copies the WAL back into the database (and fsyncs it) inside the commit that
            # crosses 1000 pages: tens of milliseconds under the lock, every few hundred decisions.
            # The server checkpoints from a second connection instead (see ``checkpoint``).
            sa.event.listen(self.engine, "connect", _no_autocheckpoint)
        self._checkpointer: sqlite3.Connection | None = None
        self._turn = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[EdgeConnection]:
        """``async with db.begin() as conn:`` — BEGIN IMMEDIATE; commits on success, rolls back on any
        error (also cancellation)."""
        async with self._turn:
            with self.engine.connect() as conn:
                conn.begin()
                sqlite = conn.connection.dbapi_connection
                changes = sqlite.total_changes
                try:
                    yield EdgeConnection(conn)
                except BaseException:
                    conn.rollback()
                    raise
                if sqlite.total_changes == changes:  # nothing written: nothing to fsync
                    conn.commit()
                    return
                commit = asyncio.ensure_future(asyncio.to_thread(conn.commit))
                try:
                    await asyncio.shield(commit)
                except asyncio.CancelledError:
                    await commit  # finish (or fail) the commit before the connection is reused
                    raise

    async def checkpoint(self) -> None:
        """Copy committed WAL pages into the database from a second connection, in a worker thread:
        a passive checkpoint never waits for, nor blocks, the writer."""
        await asyncio.to_thread(self._checkpoint)

    def _checkpoint(self) -> None:
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(self.engine.url.database, check_same_thread=False)
            self._checkpointer.execute("PRAGMA synchronous=FULL")
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        self.engine.dispose()


def _no_autocheckpoint(dbapi_connection, _record) -> None:
    dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")

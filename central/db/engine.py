"""One engine factory for PostgreSQL (psycopg 3) and embedded SQLite (aiosqlite)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

__all__ = ["async_url", "sync_url", "create_engine", "durable_sqlite", "ensure_sqlite_dir", "is_sqlite"]


def async_url(url: str) -> str:
    """Normalise a configured URL to the async driver of its database."""
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        u = u.set(drivername="postgresql+psycopg")
    elif u.drivername in ("sqlite", "sqlite+aiosqlite"):
        u = u.set(drivername="sqlite+aiosqlite")
    else:
        raise ValueError(f"unsupported database {u.drivername!r}: use postgresql:// or sqlite://")
    return u.render_as_string(hide_password=False)


def sync_url(url: str) -> str:
    """The same database through a blocking driver (for Alembic and bulk tools)."""
    u = make_url(async_url(url))
    if u.drivername == "sqlite+aiosqlite":
        u = u.set(drivername="sqlite")
    return u.render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def ensure_sqlite_dir(url: str) -> None:
    """SQLite creates the file but not its folder."""
    database = make_url(url).database
    if is_sqlite(url) and database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An async engine; SQLite gets WAL, full fsync and one serialised writer connection."""
    url = async_url(url)
    if not is_sqlite(url):
        # A fixed pool: under a burst, requests queue for a connection instead of opening overflow
        # connections that are closed again at once (a PostgreSQL connection costs milliseconds).
        # No pre-ping (a round trip per transaction): a dropped connection fails one request and
        # the pool replaces it. Sessions in UTC, so date() in reports means the UTC day.
        return create_async_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=30, pool_recycle=3600,
                                   connect_args={"options": "-c timezone=UTC"})
    ensure_sqlite_dir(url)
    # One connection: SQLite has a single writer anyway, and queueing in the pool is fairer than
    # spinning on SQLITE_BUSY. BEGIN IMMEDIATE keeps other processes (the CLI) from deadlocking us.
    engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=120)
    durable_sqlite(engine.sync_engine)
    return engine


def durable_sqlite(engine: sa.Engine) -> None:
    """WAL, a full fsync at every commit, foreign keys, a busy timeout, and BEGIN IMMEDIATE."""
    sa.event.listen(engine, "connect", _sqlite_connect)
    sa.event.listen(engine, "begin", _sqlite_begin)


def _sqlite_connect(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=FULL", "busy_timeout=30000", "foreign_keys=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")

"""Shared fixtures: real SQLite files and a real PostgreSQL database, migrated by Alembic.

PostgreSQL tests use one throwaway database per session (created here, dropped at the end) and
empty its tables before each test. Without a server they skip — except under CI, where they fail.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from central.app import create_app
from central.config import CentralConfig
from central.db import upgrade
from central.db.tables import metadata

from .support import World

PG_ADMIN_URL = os.environ.get("TESSERA_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str | None]:
    """A migrated throwaway PostgreSQL database for the session, or None without a server."""
    if not _pg_available():
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI but {PG_ADMIN_URL} does not answer")
        yield None
        return
    name = f"tessera_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """One migrated SQLite file; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "central.db"
    upgrade(f"sqlite:///{path}")
    return path


def _truncate(url: str) -> None:
    names = ", ".join(t.name for t in metadata.sorted_tables)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path, sqlite_template) -> str:
    """The database URL of one backend, empty and migrated."""
    if request.param == "sqlite":
        path = tmp_path / "central.db"
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_url")
    if url is None:
        pytest.skip("no PostgreSQL server at " + PG_ADMIN_URL)
    _truncate(url)
    return url


@pytest.fixture
def pg_only_url(request, tmp_path) -> str:
    """PostgreSQL only (for tests about concurrency the single SQLite writer makes moot)."""
    url = request.getfixturevalue("pg_url")
    if url is None:
        pytest.skip("no PostgreSQL server at " + PG_ADMIN_URL)
    _truncate(url)
    return url


def make_config(url: str, tmp_path: Path, **overrides) -> CentralConfig:
    """Test settings: no scheduler unless a test asks for it, a fixed eCode key."""
    return CentralConfig(**{"database_url": url, "data_dir": tmp_path / "data", "scheduler": False,
                            "ecode_key": "11" * 32, **overrides})


@pytest.fixture
async def client(db_url, tmp_path) -> AsyncIterator[TestClient]:
    """An HTTP client talking to a real central server on the backend under test."""
    async with TestClient(TestServer(create_app(make_config(db_url, tmp_path), migrate=False))) as c:
        yield c


@pytest.fixture
async def world(client) -> World:
    """A seeded chain: admin, programmes, a store with a till, a website client, stock cards."""
    return await World.create(client)

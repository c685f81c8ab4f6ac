"""The Alembic migrations build exactly the schema the code declares, on both backends."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from central.db import sync_url
from central.db.tables import metadata


def test_migrated_database_matches_the_declared_schema(db_url):
    engine = sa.create_engine(sync_url(db_url))
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert diff == []

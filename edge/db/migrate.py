"""Run the Alembic migrations of the edge schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from central.db.engine import ensure_sqlite_dir, sync_url

__all__ = ["upgrade"]

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the edge database at ``url`` to ``revision`` (blocking; call from a thread in async code)."""
    ensure_sqlite_dir(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    command.upgrade(cfg, revision)

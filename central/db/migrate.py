"""Run the Alembic migrations of the central schema."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from .engine import ensure_sqlite_dir, sync_url

__all__ = ["alembic_config", "upgrade"]

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` (blocking; call from a thread in async code)."""
    ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), revision)

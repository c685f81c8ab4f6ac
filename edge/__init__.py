"""The store edge node: the till API of one store, online through central first and offline within
central's limits, with a local SQLite ledger and outbox that sync pushes to central."""

from .app import create_app
from .config import EdgeConfig, load_edge_config

__all__ = ["EdgeConfig", "create_app", "load_edge_config"]

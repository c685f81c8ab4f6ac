"""``tessera edge ...``: serve a store's edge node, sync it now, or show where it stands."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

import aiohttp
import sqlalchemy as sa
from aiohttp import web

from central.logs import AccessLogger, setup_logging

from . import local
from .app import create_app
from .config import EdgeConfig, load_edge_config
from .db import EdgeDatabase, upgrade
from .db.tables import outbox
from .node import EdgeNode
from .sync_client import SyncClient, SyncError

__all__ = ["add_edge_commands", "run_edge"]

log = logging.getLogger("tessera.edge.cli")


def add_edge_commands(subparsers) -> None:
    """Register ``edge serve|sync|status`` under the ``tessera`` command's sub-parsers."""
    edge = subparsers.add_parser("edge", help="a store's edge node")
    esub = edge.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--config", help="TOML file with an [edge] section (also TESSERA_EDGE_CONFIG)")
        p.add_argument("--store", help="store code (also TESSERA_EDGE_STORE)")
        p.add_argument("--secret", help="the store's sync secret, 64 hex digits (also TESSERA_EDGE_STORE_SECRET)")
        p.add_argument("--central-url", help="central's base URL (also TESSERA_EDGE_CENTRAL_URL)")
        p.add_argument("--database", type=Path, help="SQLite file (default var/edge-<store>.db)")
        return p

    p = common(esub.add_parser("serve", help="serve the till API and sync in the background"))
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    common(esub.add_parser("sync", help="run one full sync round now and print what moved"))
    common(esub.add_parser("status", help="print the sync state as JSON"))


def _config(args: argparse.Namespace) -> EdgeConfig:
    return load_edge_config(args.config, store=args.store, store_secret=args.secret, central_url=args.central_url,
                            database=args.database, host=getattr(args, "host", None), port=getattr(args, "port", None))


def run_edge(args: argparse.Namespace) -> int:
    """Run one ``tessera edge`` command; the exit status."""
    config = _config(args)
    setup_logging(config.log_level)
    if args.command == "serve":
        try:
            config.secret()  # refuse to start without a usable secret rather than fail every sync
        except ValueError as exc:
            print(f"error: bad_configuration: {exc}", file=sys.stderr)
            return 2
        log.info("edge listening url=http://%s:%s store=%s", config.host, config.port, config.store)
        web.run_app(create_app(config), host=config.host, port=config.port, access_log_class=AccessLogger,
                    print=None)
        return 0
    if args.command == "sync":
        try:
            report = asyncio.run(sync_once(config))
        except SyncError as exc:
            print(json.dumps({"ok": False, "error": str(exc)}))
            return 1
        print(json.dumps({"ok": True, **report}, default=str))
        return 0
    print(json.dumps(asyncio.run(status(config)), default=str, indent=2))
    return 0


async def sync_once(config: EdgeConfig) -> dict:
    """One push-then-pull round against central, outside the server (the same database file)."""
    await asyncio.to_thread(upgrade, config.database_url)
    db = EdgeDatabase(config.database_url)
    try:
        async with aiohttp.ClientSession() as session:
            node = EdgeNode(config, db, session)
            await node.start()
            return (await SyncClient(config, db, session, node).round()).as_dict()
    finally:
        await db.close()


async def status(config: EdgeConfig) -> dict:
    """The store's sync position, backlog and offline exposure."""
    await asyncio.to_thread(upgrade, config.database_url)
    db = EdgeDatabase(config.database_url)
    try:
        async with db.begin() as conn:
            state = dict(await local.sync_position(conn))
            state.pop("id", None)
            backlog = (await conn.execute(sa.select(sa.func.count()).select_from(outbox))).scalar_one()
            exposure = await local.exposure(conn)
    finally:
        await db.close()
    return {"store": config.store, "database": str(config.database_path), **state, "backlog": backlog,
            "offline_exposure": exposure}

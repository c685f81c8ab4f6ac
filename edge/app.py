"""The edge node's aiohttp application factory."""

from __future__ import annotations

import asyncio
import gc
import logging
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from drivers.pricechecker import PriceCheckerOptions

from .config import EdgeConfig
from .db import EdgeDatabase, upgrade
from .devices import DeviceHub, parse_device_specs
from .http import add_routes, error_middleware
from .keys import CONFIG, DATABASE, DEVICES, HTTP, NODE, SCHEDULER, SYNC
from .lookup import CodeLookup
from .node import EdgeNode
from .pricecheck import PRICE_CHECK, PriceCheckService
from .sync_client import SyncClient

__all__ = ["create_app"]

log = logging.getLogger("tessera.edge")


def create_app(config: EdgeConfig) -> web.Application:
    """Build the app; the database, the client session to central and the sync scheduler open and
    close with it."""
    app = web.Application(middlewares=[error_middleware])
    app[CONFIG] = config
    device_specs = parse_device_specs(config.devices)  # a bad device URL stops the node here, not later
    price_options = PriceCheckerOptions.from_query(dict(parse_qsl(config.price_checker_options)))

    async def database_ctx(app: web.Application):
        await asyncio.to_thread(upgrade, config.database_url)
        db = EdgeDatabase(config.database_url, background_checkpoints=True)
        app[DATABASE] = db

        async def checkpoints() -> None:
            while True:
                await asyncio.sleep(1.0)
                try:
                    await db.checkpoint()
                except Exception:  # a failed checkpoint is retried; the WAL keeps everything
                    log.exception("WAL checkpoint failed")

        task = asyncio.create_task(checkpoints())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await db.close()

    async def central_ctx(app: web.Application):
        # No connection limit per host: tills waiting on central must not queue behind each other.
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        app[HTTP] = session
        # As at central: requests free what they make, so the cyclic collector runs far less often (its
        # full passes over the rules and caches would stall tills).
        gc.set_threshold(100_000, 50, 100)
        node = EdgeNode(config, app[DATABASE], session)
        await node.start()
        gc.freeze()
        app[NODE] = node
        app[SYNC] = SyncClient(config, app[DATABASE], session, node)
        log.info("edge started store=%s central=%s database=%s", config.store, config.central_url,
                 config.database_path)
        yield
        await session.close()

    async def devices_ctx(app: web.Application):
        node = app[NODE]
        hub = DeviceHub(device_specs, templates=lambda: node.configuration.templates,
                        pin_token_ttl=config.pin_token_ttl)
        app[DEVICES] = hub
        hub.start()
        price_check = PriceCheckService(CodeLookup(node, config.kiosk_till_token), options=price_options)
        app[PRICE_CHECK] = price_check
        if config.price_checker_port:
            await price_check.start(config.host, config.price_checker_port)
        yield
        await price_check.close()
        await hub.close()

    async def scheduler_ctx(app: web.Application):
        if not config.scheduler:
            yield
            return
        scheduler = AsyncIOScheduler(timezone="UTC")
        async def sync() -> None:
            await app[SYNC].tick()
            await app[NODE].refresh_configuration()  # new programmes reach the card readers' checks

        scheduler.add_job(sync, "interval", seconds=config.sync_interval, id="sync",
                          max_instances=1, coalesce=True, next_run_time=datetime.now(UTC))
        scheduler.add_job(app[NODE].expire_holds, "interval", seconds=config.hold_sweep_seconds, id="expire-holds",
                          max_instances=1, coalesce=True)
        scheduler.start()
        app[SCHEDULER] = scheduler
        yield
        scheduler.shutdown(wait=False)

    app.cleanup_ctx.extend([database_ctx, central_ctx, devices_ctx, scheduler_ctx])
    add_routes(app)
    return app

"""The central server's aiohttp application factory."""

from __future__ import annotations

import asyncio
import gc
import logging

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .config import CentralConfig
from .context import Central
from .db import upgrade
from .http import add_routes, error_middleware
from .keys import BACKGROUND, CENTRAL, SCHEDULER

__all__ = ["create_app"]

log = logging.getLogger("tessera.central")


def create_app(config: CentralConfig, *, migrate: bool = True) -> web.Application:
    """Build the app; the database, scheduler and background work open and close with it."""
    app = web.Application(middlewares=[error_middleware], client_max_size=32 * 1024 * 1024)
    app[BACKGROUND] = set()

    async def central_ctx(app: web.Application):
        # Batches (sync pushes, group commits) allocate thousands of short-lived objects; with the
        # default thresholds the cyclic collector runs every 700 allocations and, as the heap grows,
        # takes a tenth of a push's CPU. Requests free what they make, so collect far less often.
        gc.set_threshold(100_000, 50, 100)
        if migrate:
            await asyncio.to_thread(upgrade, config.database_url)
        central = Central.open(config)
        app[CENTRAL] = central
        log.info("central started backend=%s loop=%s", "sqlite" if central.db.sqlite else "postgresql",
                 type(asyncio.get_running_loop()).__module__.split(".")[0])
        yield
        for task in list(app[BACKGROUND]):
            task.cancel()
        await asyncio.gather(*app[BACKGROUND], return_exceptions=True)
        await central.close()

    async def scheduler_ctx(app: web.Application):
        if not config.scheduler:
            yield
            return
        central = app[CENTRAL]
        scheduler = AsyncIOScheduler(timezone="UTC")
        # Both jobs are idempotent, so running them in several workers at once is harmless.
        scheduler.add_job(central.holds.expire_due, "interval", seconds=config.hold_sweep_seconds,
                          id="expire-holds", max_instances=1, coalesce=True)
        scheduler.add_job(central.cards.expire_cards, "interval", seconds=config.card_expiry_sweep_seconds,
                          id="expire-cards", max_instances=1, coalesce=True)
        if config.voucher_expiry_sweep_seconds > 0:
            scheduler.add_job(central.vouchers.expire_due, "interval", seconds=config.voucher_expiry_sweep_seconds,
                              id="expire-vouchers", max_instances=1, coalesce=True)
        if config.segment_job_seconds > 0:  # runs of one segment are serialised; a repeat changes nothing
            scheduler.add_job(central.segments.run_all, "interval", seconds=config.segment_job_seconds,
                              id="segments", max_instances=1, coalesce=True)
        if config.tier_job_seconds > 0:  # reviews lock each card's row; a repeat changes nothing
            scheduler.add_job(central.tiers.run_scheduled, "interval", seconds=config.tier_job_seconds,
                              id="tiers", max_instances=1, coalesce=True)
        if config.points_expiry_seconds > 0:  # each card's expired lots go in one operation, exactly once
            scheduler.add_job(central.loyalty.expire_points, "interval", seconds=config.points_expiry_seconds,
                              id="points-expiry", max_instances=1, coalesce=True)
        if config.birthday_job_seconds > 0:
            scheduler.add_job(central.loyalty.birthday_bonuses, "interval", seconds=config.birthday_job_seconds,
                              id="birthday-bonuses", max_instances=1, coalesce=True)
        if config.discount_job_seconds > 0:
            scheduler.add_job(central.tiers.refresh_scheduled, "interval", seconds=config.discount_job_seconds,
                              id="discount-levels", max_instances=1, coalesce=True)
        scheduler.start()
        app[SCHEDULER] = scheduler
        yield
        scheduler.shutdown(wait=False)

    app.cleanup_ctx.append(central_ctx)
    app.cleanup_ctx.append(scheduler_ctx)
    add_routes(app)
    return app

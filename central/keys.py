"""Typed application keys of the central web app."""

from __future__ import annotations

import asyncio

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .context import Central

CENTRAL = web.AppKey("central", Central)
SCHEDULER = web.AppKey("scheduler", AsyncIOScheduler)
BACKGROUND = web.AppKey("background", set[asyncio.Task])

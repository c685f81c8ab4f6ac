"""Typed application keys of the edge web app."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from .config import EdgeConfig
from .db import EdgeDatabase
from .devices import DeviceHub
from .node import EdgeNode
from .sync_client import SyncClient

CONFIG = web.AppKey("edge_config", EdgeConfig)
DATABASE = web.AppKey("edge_database", EdgeDatabase)
HTTP = web.AppKey("edge_http", aiohttp.ClientSession)
NODE = web.AppKey("edge_node", EdgeNode)
SYNC = web.AppKey("edge_sync", SyncClient)
SCHEDULER = web.AppKey("edge_scheduler", AsyncIOScheduler)
DEVICES = web.AppKey("edge_devices", DeviceHub)

"""An edge node for integration tests: the real edge app on a SQLite file, talking over real HTTP to a
real central (through a TCP proxy the test can cut)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from edge import EdgeConfig, create_app
from edge.keys import DATABASE, NODE, SYNC
from edge.sync_client import SyncReport

from .netproxy import Mode, Proxy
from .support import INQUIRIES, World


@dataclass
class Edge:
    """Store S1's edge node; ``proxy`` sits between it and central."""

    client: TestClient
    proxy: Proxy
    world: World
    config: EdgeConfig

    @classmethod
    async def start(cls, world: World, tmp_path: Path, store: str = "S1", **overrides: Any) -> Edge:
        if "store_secret" not in overrides:  # a restarted edge keeps its secret
            rotated = await world.admin("POST", f"/api/v1/admin/stores/{store}/sync-secret")
            overrides["store_secret"] = rotated["secret"]
        proxy = await Proxy(world.client.server.port).start()
        config = EdgeConfig(**{
            "store": store, "central_url": f"http://127.0.0.1:{proxy.port}",
            "database": tmp_path / f"edge-{store}.db", "online_timeout": 1.0, "central_retry_seconds": 30.0,
            "scheduler": False, "block_low_water": 5, **overrides})
        client = TestClient(TestServer(create_app(config)))
        await client.start_server()
        return cls(client, proxy, world, config)

    async def close(self) -> None:
        await self.client.close()
        await self.proxy.close()

    @property
    def node(self):
        return self.client.server.app[NODE]

    async def sync(self) -> SyncReport:
        return await self.client.server.app[SYNC].round()

    def cut(self) -> None:
        """Central stops answering: connections to it are refused."""
        self.proxy.set(Mode.REFUSE)

    def heal(self) -> None:
        self.proxy.set(Mode.PASS)
        self.node.mark_up()

    async def till(self, op: str, expect: int = 200, headers: dict[str, str] | None = None,
                   **body: Any) -> dict[str, Any]:
        if op not in INQUIRIES:
            body.setdefault("txn_id", str(uuid.uuid4()))
        resp = await self.client.post(f"/api/v1/till/{op}", json=body, headers=headers or self.world.tills["S1"])
        data = await resp.json()
        assert resp.status == expect, (resp.status, data)
        return data

    async def rows(self, sql: str) -> list[Any]:
        async with self.client.server.app[DATABASE].begin() as conn:
            return (await conn.execute(sa.text(sql))).all()

    async def card(self, number: str) -> Any:
        rows = await self.rows(f"SELECT * FROM cards WHERE number = '{number}'")
        return rows[0] if rows else None

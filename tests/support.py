"""A seeded chain for integration tests, driven through the real HTTP APIs."""

from __future__ import annotations

import asyncio
import csv
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from central.context import Central
from central.keys import CENTRAL
from sync import MSGPACK, PullRequest, PullResponse, PushRequest, PushResponse, decode, encode, signed_headers

ADMIN_PASSWORD = "correct horse battery"

GIFT = {"code": "GIFT", "name": "Gift Card", "currency": "EUR", "number_prefix": "6034", "number_length": 16,
        "nominal_values": [2500, 5000, 10000], "hold_ttl_seconds": 60, "hold_expiry_policy": "reverse"}
FLEX = {"code": "FLEX", "name": "Flex Card", "currency": "EUR", "number_prefix": "6035", "number_length": 16,
        "min_amount": 1000, "max_amount": 50000, "topup_allowed": True, "max_balance": 100000,
        "hold_ttl_seconds": 60, "hold_expiry_policy": "clarify"}


# Till requests that only read: they take no txn_id.
INQUIRIES = {"balance", "points", "segments", "discount-level", "tier", "customers"}
LOYAL = {"code": "LOYAL", "name": "Loyalty Card", "kind": "loyalty", "currency": "EUR", "number_prefix": "7001",
         "number_length": 16, "min_amount": 1, "max_amount": 100000, "topup_allowed": True,
         "hold_ttl_seconds": 60, "hold_expiry_policy": "reverse"}


def txn() -> str:
    return str(uuid.uuid4())


@dataclass
class World:
    client: TestClient
    staff: dict[str, str] = field(default_factory=dict)
    tills: dict[str, dict[str, str]] = field(default_factory=dict)
    web: dict[str, str] = field(default_factory=dict)
    stock: dict[str, list[str]] = field(default_factory=dict)  # programme -> cards at store S1, for sale
    stock_s2: dict[str, list[str]] = field(default_factory=dict)
    spare: dict[str, list[str]] = field(default_factory=dict)  # programme -> cards in no pack
    ecodes: dict[str, str] = field(default_factory=dict)

    @property
    def central(self) -> Central:
        return self.client.server.app[CENTRAL]

    @classmethod
    async def create(cls, client: TestClient) -> World:
        w = cls(client)
        central = w.central
        async with central.db.begin() as conn:
            await central.admin.create_user(conn, "root", ADMIN_PASSWORD, "admin")
        w.staff = await w.login("root", ADMIN_PASSWORD)
        for spec in (GIFT, FLEX):
            await w.admin("POST", "/api/v1/admin/programmes", spec)
        for code in ("S1", "S2"):
            await w.admin("POST", "/api/v1/admin/stores", {"code": code, "name": f"Store {code}"})
        for store in ("S1", "S2"):
            t = await w.admin("POST", "/api/v1/admin/terminals", {"kind": "till", "code": "T1", "store_code": store})
            w.tills[store] = {"Authorization": f"Bearer {t['token']}"}
        site = await w.admin("POST", "/api/v1/admin/terminals", {"kind": "web", "code": "site"})
        w.web = {"Authorization": f"Bearer {site['token']}"}
        for programme in ("GIFT", "FLEX"):
            async with central.db.begin() as conn:
                issue_id = await central.issuing.start_issue(conn, programme, 40, "tests")
            await central.issuing.run_issue(issue_id)
            with open(central.issuing.production_path(issue_id), newline="") as f:
                rows = list(csv.DictReader(f))
            w.ecodes.update({r["card_number"]: r["ecode"] for r in rows})
            numbers = [r["card_number"] for r in rows]
            w.stock[programme], w.stock_s2[programme], w.spare[programme] = numbers[:20], numbers[20:30], numbers[30:]
            for store, cards in (("S1", w.stock[programme]), ("S2", w.stock_s2[programme])):
                pack = await w.admin("POST", "/api/v1/admin/packs", {"numbers": cards, "store_code": store})
                await w.admin("POST", f"/api/v1/admin/packs/{pack['id']}/authorize")
        return w

    async def login(self, username: str, password: str) -> dict[str, str]:
        resp = await self.client.post("/api/v1/auth/login", json={"username": username, "password": password})
        assert resp.status == 200, await resp.text()
        return {"Authorization": f"Bearer {(await resp.json())['token']}"}

    async def admin(self, method: str, path: str, body: Any = None, *, expect: int | None = 200,
                    headers: dict[str, str] | None = None, **params) -> Any:
        resp = await self.client.request(method, path, json=body, params=params or None,
                                         headers=headers or self.staff)
        data = await resp.json() if resp.content_type == "application/json" else await resp.text()
        if expect is not None:
            assert resp.status == expect, (resp.status, data)
        return data

    async def till(self, op: str, store: str = "S1", expect: int = 200, **body) -> dict[str, Any]:
        if op not in INQUIRIES:
            body.setdefault("txn_id", txn())
        resp = await self.client.post(f"/api/v1/till/{op}", json=body, headers=self.tills[store])
        data = await resp.json()
        assert resp.status == expect, (resp.status, data)
        return data

    async def sell(self, programme: str = "GIFT", amount: int | None = 5000, store: str = "S1") -> str:
        """Take a card from the store's stock and sell it; returns its number."""
        pool = self.stock if store == "S1" else self.stock_s2
        number = pool[programme].pop(0)
        body = {"card_number": number} | ({"amount": amount} if amount is not None else {})
        result = await self.till("sale", store=store, **body)
        assert result["approved"], result
        return number

    async def loyalty_cards(self, count: int = 20, store: str = "S1", sell: bool = True) -> list[str]:
        """Cards of loyalty programme LOYAL (created on first use) in a pack at ``store``, sold there with 1.00 of
        e-money unless ``sell`` is False."""
        if not await self.count("programmes", "code = 'LOYAL'"):
            await self.admin("POST", "/api/v1/admin/programmes", LOYAL)
        central = self.central
        async with central.db.begin() as conn:
            issue_id = await central.issuing.start_issue(conn, "LOYAL", count, "tests")
        await central.issuing.run_issue(issue_id)
        with open(central.issuing.production_path(issue_id), newline="") as f:
            numbers = [r["card_number"] for r in csv.DictReader(f)]
        pack = await self.admin("POST", "/api/v1/admin/packs", {"numbers": numbers, "store_code": store})
        await self.admin("POST", f"/api/v1/admin/packs/{pack['id']}/authorize")
        for number in numbers if sell else ():
            assert (await self.till("sale", store=store, card_number=number, amount=100))["approved"]
        return numbers

    async def ledger_consistent(self) -> None:
        """Invariants: balances equal entry sums, held amounts equal entry sums and open holds."""
        async with self.central.db.connect() as conn:
            bad = (await conn.execute(sa.text(
                "SELECT a.id, a.balance, a.held, COALESCE(SUM(e.amount), 0), COALESCE(SUM(e.held_delta), 0) "
                "FROM accounts a LEFT JOIN entries e ON e.account_id = a.id GROUP BY a.id, a.balance, a.held "
                "HAVING a.balance <> COALESCE(SUM(e.amount), 0) OR a.held <> COALESCE(SUM(e.held_delta), 0)"
            ))).all()
        assert bad == [], f"accounts whose cached balance differs from their entries: {bad}"
        report = await self.admin("GET", "/api/v1/admin/reports/reconciliation")
        assert report["ok"] and report["mismatches"] == [], report

    async def wait_for_issue(self, issue_id: int, seconds: float = 60) -> dict[str, Any]:
        """Poll an issue running in the background until it stops running."""
        for _ in range(int(seconds / 0.05)):
            issue = await self.admin("GET", f"/api/v1/admin/issues/{issue_id}")
            if issue["status"] != "running":
                return issue
            await asyncio.sleep(0.05)
        raise AssertionError(f"issue {issue_id} still running after {seconds} s")

    async def count(self, table: str, where: str = "1=1") -> int:
        async with self.central.db.connect() as conn:
            return (await conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {where}"))).scalar_one()


class SyncPeer:
    """A store's edge as central sees it: signs msgpack sync requests with the store's secret."""

    def __init__(self, world: World, store: str, secret: bytes) -> None:
        self.world = world
        self.store = store
        self.secret = secret

    @classmethod
    async def enrol(cls, world: World, store: str = "S1") -> SyncPeer:
        data = await world.admin("POST", f"/api/v1/admin/stores/{store}/sync-secret")
        return cls(world, store, bytes.fromhex(data["secret"]))

    async def send(self, path: str, body: bytes, *, now: float | None = None, secret: bytes | None = None,
                   signed_body: bytes | None = None, headers: dict[str, str] | None = None):
        """POST a signed body; ``signed_body`` signs other bytes than those sent (tampering)."""
        sign = signed_headers(self.store, secret or self.secret, "POST", path,
                              body if signed_body is None else signed_body, time.time() if now is None else now)
        return await self.world.client.post(path, data=body, headers={
            **sign, "Content-Type": MSGPACK, **(headers or {})})

    async def push(self, entries, *, epoch: int = 0, backlog: int | None = None, exposure: int = 0,
                   sent_at: datetime | None = None):
        request = PushRequest(store=self.store, epoch=epoch, entries=tuple(entries),
                              backlog=len(entries) if backlog is None else backlog, offline_exposure=exposure,
                              sent_at=sent_at or datetime.now(UTC))
        resp = await self.send("/api/v1/sync/push", encode(request))
        assert resp.status == 200, (resp.status, await resp.text())
        assert "X-Tessera-Time" in resp.headers
        return decode(await resp.read(), PushResponse)

    async def pull(self, **fields):
        resp = await self.send("/api/v1/sync/pull", encode(PullRequest(store=self.store, **fields)))
        assert resp.status == 200, (resp.status, await resp.text())
        return decode(await resp.read(), PullResponse)

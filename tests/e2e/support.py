"""A chain of real processes for store-sync tests: central (``tessera central serve``) and store edge
nodes (``tessera edge serve``), each edge reaching central through its own :class:`tests.netproxy.Proxy`,
tills played by aiohttp requests, and the invariants of DESIGN §6 checked on the databases themselves.

The proxies run in the test's event loop, so nothing here blocks it: CLI calls and database reads
run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

from ..netproxy import Mode, Proxy
from .test_processes import CLI, free_port, run_cli, server_env, wait_healthy

__all__ = ["Chain", "Edge", "Process", "EDGE_ENV", "LIMITS", "wait_until"]

# Fast clocks for the edges: sync often, give central half a second, retry it after a second.
EDGE_ENV = {"TESSERA_EDGE_SYNC_INTERVAL": "0.3", "TESSERA_EDGE_ONLINE_TIMEOUT": "0.5",
            "TESSERA_EDGE_CENTRAL_RETRY_SECONDS": "1", "TESSERA_EDGE_BACKOFF_BASE": "0.2",
            "TESSERA_EDGE_BACKOFF_CAP": "1", "TESSERA_EDGE_HOLD_SWEEP_SECONDS": "1"}
# Offline limits of the open-value programme: single debit, per card since last seen online, count.
LIMITS = {"floor_limit": 5000, "card_offline_amount": 8000, "card_offline_count": 3}
BUDGET = 50000
FLEX = {"code": "FLEX", "name": "Flex Card", "currency": "EUR", "number_prefix": "6035", "number_length": 16,
        "min_amount": 1000, "max_amount": 50000, "topup_allowed": True, "max_balance": 100000,
        "hold_ttl_seconds": 60, "hold_expiry_policy": "reverse"}
SYNCED = {"sale", "payment", "topup", "issue", "refund", "sale/cancel", "payment/cancel", "topup/cancel",
          "refund/cancel"}


async def wait_until(check: Callable[[], Awaitable[Any]], what: str, seconds: float = 20.0,
                     every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``seconds`` with ``what``."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"timed out after {seconds} s waiting for {what} (last: {last!r})")


@dataclass
class Process:
    """One server process whose output goes to a log file (appended across restarts)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Process:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        await wait_healthy(self.base, self.proc)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a power cut, as far as the process can tell)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Edge:
    """A store's edge node process, its proxy to central and its till's token."""

    store: str
    process: Process
    proxy: Proxy
    database: Path
    secret: str
    till_headers: dict[str, str]

    def cut(self, mode: Mode) -> None:
        self.proxy.set(mode)

    def heal(self) -> None:
        self.proxy.set(Mode.PASS)

    def rows(self, sql: str) -> list[tuple]:
        with contextlib.closing(sqlite3.connect(self.database, timeout=10)) as conn:
            return conn.execute(sql).fetchall()


@dataclass
class Chain:
    """Central, its database, the edges and a session for tills and head office."""

    tmp: Path
    db_url: str
    env: dict[str, str]
    central: Process
    session: aiohttp.ClientSession
    admin_headers: dict[str, str] = field(default_factory=dict)
    tills: dict[str, dict[str, str]] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    stock: dict[str, list[str]] = field(default_factory=dict)  # store -> FLEX cards of its authorized pack
    edges: dict[str, Edge] = field(default_factory=dict)
    approved: dict[str, str] = field(default_factory=dict)  # txn_id -> store, every synced kind a till got
    health: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)  # store -> (epoch, acked, next)
    _monitor: asyncio.Task | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, tmp: Path, db_url: str, stores: tuple[str, ...] = ("S1", "S2"), cards: int = 8):
        """Central seeded over HTTP and CLI, one edge per store; everything is stopped at the end
        (and its log printed if the test failed)."""
        env = server_env(tmp, db_url)
        await asyncio.to_thread(run_cli, "central", "create-user", "--username", "boss", "--role", "admin", env=env)
        port = free_port()
        central = Process("central", [*CLI, "central", "serve", "--port", str(port)], env, tmp / "central.log", port)
        session = aiohttp.ClientSession()
        chain = cls(tmp, db_url, env, central, session)
        failed = True
        try:
            await central.start()
            await chain._seed(stores, cards)
            for store in stores:
                await chain.start_edge(store)
            chain._monitor = asyncio.create_task(chain._watch_health())
            yield chain
            failed = False
        finally:
            await chain.close(print_logs=failed)

    async def close(self, print_logs: bool = False) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        for edge in self.edges.values():
            edge.process.kill()
            await edge.proxy.close()
        self.central.stop()
        await self.session.close()
        if print_logs:
            for process in [self.central, *(e.process for e in self.edges.values())]:
                print(f"----- {process.name} log (tail) -----\n{process.tail()}")

    async def _seed(self, stores: tuple[str, ...], per_store: int) -> None:
        login = await self.call("POST", "/api/v1/auth/login",
                                {"username": "boss", "password": self.env["TESSERA_PASSWORD"]}, headers={})
        self.admin_headers = {"Authorization": f"Bearer {login['token']}"}
        await self.call("POST", "/api/v1/admin/programmes", FLEX)
        for store in stores:
            await self.call("POST", "/api/v1/admin/stores", {"code": store, "name": f"Store {store}"})
            till = await self.call("POST", "/api/v1/admin/terminals", {"kind": "till", "code": "T1",
                                                                       "store_code": store})
            self.tills[store] = {"Authorization": f"Bearer {till['token']}"}
        # Issued by another process while central runs: both write the same database.
        out = await asyncio.to_thread(run_cli, "central", "issue-cards", "--programme", "FLEX", "--quantity",
                                      str(per_store * len(stores)), env=self.env)
        assert re.search(r"cards \d+\.\.\d+", out), out
        numbers = [c["number"] for c in await self.call("GET", "/api/v1/admin/cards?programme=FLEX&limit=1000")]
        for i, store in enumerate(stores):
            self.stock[store] = numbers[i * per_store:(i + 1) * per_store]
            pack = await self.call("POST", "/api/v1/admin/packs", {"numbers": self.stock[store], "store_code": store})
            await self.call("POST", f"/api/v1/admin/packs/{pack['id']}/authorize")
            await self.call("POST", f"/api/v1/admin/stores/{store}/offline-budget", {"amount": BUDGET,
                                                                                    "currency": "EUR"})
        await self.call("POST", "/api/v1/admin/programmes/FLEX/offline-limits", LIMITS)
        for i, store in enumerate(stores):
            if i == 0:  # one secret by CLI, the others by the admin API
                out = await asyncio.to_thread(run_cli, "central", "store-secret", "--store", store, env=self.env)
                self.secrets[store] = re.search(r"sync secret version 1: ([0-9a-f]{64})", out).group(1)
            else:
                rotated = await self.call("POST", f"/api/v1/admin/stores/{store}/sync-secret")
                self.secrets[store] = rotated["secret"]

    async def start_edge(self, store: str) -> Edge:
        """Start (or restart, on the same database and port) the store's edge; returns once it has
        pulled central's configuration."""
        edge = self.edges.get(store)
        if edge is None:
            proxy = await Proxy(self.central.port).start()
            database = self.tmp / f"edge-{store}.db"
            port = free_port()
            argv = [*CLI, "edge", "serve", "--store", store, "--secret", self.secrets[store],
                    "--central-url", f"http://127.0.0.1:{proxy.port}", "--database", str(database),
                    "--port", str(port)]
            process = Process(f"edge-{store}", argv, {**os.environ, **EDGE_ENV}, self.tmp / f"edge-{store}.log", port)
            edge = self.edges[store] = Edge(store, process, proxy, database, self.secrets[store], self.tills[store])
            self.health.setdefault(store, [])
        await edge.process.start()
        if edge.proxy.mode == Mode.PASS:
            await wait_until(lambda: self._pulled(edge), f"edge {store} to pull central's configuration")
        return edge

    async def _pulled(self, edge: Edge) -> bool:
        health = await self.edge_health(edge.store)
        return health["last_pull_at"] is not None

    async def _watch_health(self) -> None:
        """Record every edge's sync position as /health reports it, all through the test."""
        while True:
            for store in list(self.edges):
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    h = await self.edge_health(store)
                    self.health[store].append((h["epoch"], h["acked_seq"], h["next_seq"]))
            await asyncio.sleep(0.1)

    def assert_positions_never_went_back(self) -> None:
        """DESIGN §6.7: acknowledged positions and sequence numbers never go backwards."""
        for store, seen in self.health.items():
            assert seen, f"no health samples of {store}"
            for before, after in zip(seen, seen[1:]):
                assert after >= before and after[1] >= before[1] and after[2] >= before[2], (store, before, after)

    # -- HTTP --------------------------------------------------------------------------------------

    async def call(self, method: str, path: str, body: Any = None, *, headers: dict[str, str] | None = None,
                   expect: int = 200, base: str | None = None) -> Any:
        async with self.session.request(method, (base or self.central.base) + path, json=body,
                                        headers=self.admin_headers if headers is None else headers) as resp:
            data = await resp.json(content_type=None)
            assert resp.status == expect, (method, path, resp.status, data)
            return data

    async def till(self, store: str, op: str, *, expect: int = 200, **body: Any) -> dict[str, Any]:
        """A till request at the store's edge; approvals of synced kinds are remembered."""
        if op != "balance":
            body.setdefault("txn_id", str(uuid.uuid4()))
        edge = self.edges[store]
        result = await self.call("POST", f"/api/v1/till/{op}", body, headers=edge.till_headers, expect=expect,
                                 base=edge.process.base)
        if op in SYNCED and result.get("approved"):
            self.approved[result["txn_id"]] = store
        return result

    async def edge_health(self, store: str) -> dict[str, Any]:
        edge = self.edges[store]
        timeout = aiohttp.ClientTimeout(total=5)
        async with self.session.get(edge.process.base + "/health", timeout=timeout) as resp:
            assert resp.status == 200
            return await resp.json()

    async def wait_synced(self, *stores: str, seconds: float = 30.0) -> None:
        """Until every named edge has nothing left to push and central acknowledged all of it."""
        async def done() -> bool:
            for store in stores:
                h = await self.edge_health(store)
                if h["backlog"] != 0 or h["acked_seq"] != h["next_seq"] - 1 or h["quarantined"]:
                    return False
            return True

        await wait_until(done, f"edges {stores} to sync everything", seconds)

    async def wait_rounds(self, *stores: str, rounds: int = 2) -> None:
        """Until each named edge has finished ``rounds`` more sync rounds (its last pull moved)."""
        for store in stores:
            for _ in range(rounds):
                mark = (await self.edge_health(store))["last_pull_at"]
                await wait_until(functools.partial(self._pulled_since, store, mark), f"a sync round of {store}")

    async def _pulled_since(self, store: str, mark: str | None) -> bool:
        return (await self.edge_health(store))["last_pull_at"] != mark

    # -- central's database ------------------------------------------------------------------------

    def _query(self, sql: str) -> list[tuple]:
        if self.db_url.startswith("sqlite:///"):
            with contextlib.closing(sqlite3.connect(self.db_url.removeprefix("sqlite:///"), timeout=10)) as conn:
                return conn.execute(sql).fetchall()
        with psycopg.connect(self.db_url) as conn:
            return conn.execute(sql).fetchall()

    async def query(self, sql: str) -> list[tuple]:
        return await asyncio.to_thread(self._query, sql)

    async def counts(self) -> dict[str, int]:
        tables = ("operations", "entries", "store_entries", "sync_exceptions", "deny_changes", "accounts", "cards")
        return {t: (await self.query(f"SELECT count(*) FROM {t}"))[0][0] for t in tables}

    async def balances(self) -> dict[str, tuple[int, int]]:
        """Central's (balance, held) of every card with an account."""
        rows = await self.query("SELECT c.number, a.balance, a.held FROM cards c JOIN accounts a "
                                "ON a.card_id = c.id AND a.kind = 'stored_value'")
        return {number: (balance, held) for number, balance, held in rows}

    async def operations(self) -> dict[uuid.UUID, tuple[str, bool, str]]:
        rows = await self.query("SELECT id, kind, approved, channel FROM operations")
        return {uuid.UUID(str(i)): (kind, bool(approved), channel) for i, kind, approved, channel in rows}

    # -- invariants (DESIGN §6) ----------------------------------------------------------------------

    async def assert_ledger_consistent(self) -> None:
        """§6.1: every account's balance (and held amount) is the sum of its entries; totals reconcile."""
        bad = await self.query(
            "SELECT a.id, a.balance, a.held, COALESCE(SUM(e.amount), 0), COALESCE(SUM(e.held_delta), 0) "
            "FROM accounts a LEFT JOIN entries e ON e.account_id = a.id GROUP BY a.id, a.balance, a.held "
            "HAVING a.balance <> COALESCE(SUM(e.amount), 0) OR a.held <> COALESCE(SUM(e.held_delta), 0)")
        assert bad == [], f"accounts whose balance differs from their entries: {bad}"
        report = await self.call("GET", "/api/v1/admin/reports/reconciliation")
        assert report["ok"] and report["mismatches"] == [], report

    async def assert_approved_exactly_once(self) -> None:
        """§6.2: every transaction a till was told was approved is at central once, approved, and
        posted once (one entry); no store entry id was recorded twice."""
        assert self.approved, "the test approved nothing"
        ops = await self.operations()
        missing = [t for t in self.approved if uuid.UUID(t) not in ops]
        assert missing == [], f"approved at a store, unknown at central: {missing}"
        declined = [t for t in self.approved if not ops[uuid.UUID(t)][1]]
        assert declined == [], f"approved at a store, declined at central: {declined}"
        posted: dict[uuid.UUID, int] = {}
        for operation_id, n in await self.query("SELECT operation_id, count(*) FROM entries GROUP BY operation_id"):
            posted[uuid.UUID(str(operation_id))] = n
        wrong = {t: posted.get(uuid.UUID(t), 0) for t in self.approved if posted.get(uuid.UUID(t), 0) != 1}
        assert wrong == {}, f"approved transactions not posted exactly once (entries per txn): {wrong}"
        twice = await self.query("SELECT txn_id, count(*) FROM store_entries GROUP BY txn_id HAVING count(*) > 1")
        assert twice == [], twice

    async def assert_sequences_gap_free(self) -> dict[str, int]:
        """§6.3: each store's synced sequence is 1..N with no gap, N = what central acknowledged and
        what the edge numbered last; returns N per store."""
        rows = await self.query("SELECT s.code, e.seq FROM store_entries e JOIN stores s ON s.id = e.store_id "
                                "WHERE e.epoch = s.epoch ORDER BY s.code, e.seq")
        acked = dict(await self.query("SELECT code, acked_seq FROM stores"))
        seen: dict[str, list[int]] = {store: [] for store in self.edges}
        for store, seq in rows:
            seen.setdefault(store, []).append(seq)
        for store, seqs in seen.items():
            assert seqs == list(range(1, len(seqs) + 1)), (store, seqs)
            assert acked[store] == len(seqs), (store, acked[store], len(seqs))
            (next_seq,) = self.edges[store].rows("SELECT next_seq FROM sync_state")[0]
            assert next_seq == len(seqs) + 1, (store, next_seq, len(seqs))
        return {store: len(seqs) for store, seqs in seen.items()}

    async def assert_overdrafts_bounded(self) -> dict[str, int]:
        """§6.4: online debits never leave a balance below zero; a negative balance is at most what
        the stores together may spend offline on one card, and the card is deny-listed with an open
        overdraft case. Returns the overdrawn cards' balances."""
        online_below = await self.query(
            "SELECT o.id, e.balance_after FROM entries e JOIN operations o ON o.id = e.operation_id "
            "WHERE o.channel = 'till' AND e.amount < 0 AND e.balance_after < 0")
        assert online_below == [], f"online debits below zero: {online_below}"
        negative = {n: b for n, (b, _) in (await self.balances()).items() if b < 0}
        bound = len(self.edges) * LIMITS["card_offline_amount"]
        assert all(-b <= bound for b in negative.values()), (negative, bound)
        denied = dict(await self.query("SELECT number, reason FROM deny_list"))
        cases = await self.call("GET", "/api/v1/admin/sync/exceptions?kind=overdraft&status=open")
        with_case = {c["card"] for c in cases}
        for number in negative:
            assert denied.get(number) == "overdraft", (number, denied)
            assert number in with_case, (number, cases)
        return negative

    async def edges_disagree(self) -> list[tuple]:
        """§6.6: what each edge caches of its cards (balance, held, state) and of the deny list that
        central does not say; empty once they agree."""
        central = {n: (b, h, s) for n, b, h, s in await self.query(
            "SELECT c.number, COALESCE(a.balance, 0), COALESCE(a.held, 0), c.state FROM cards c "
            "LEFT JOIN accounts a ON a.card_id = c.id AND a.kind = 'stored_value'")}
        denied = {n for (n,) in await self.query("SELECT number FROM deny_list")}
        wrong: list[tuple] = []
        for store, edge in self.edges.items():
            for number, balance, held, state in edge.rows("SELECT number, balance, held, state FROM cards"):
                if central.get(number) != (balance, held, state):
                    wrong.append((store, number, (balance, held, state), central.get(number)))
            listed = {n for (n,) in edge.rows("SELECT number FROM deny_list")}
            known = {n for (n,) in edge.rows("SELECT number FROM cards")}
            if listed != denied & known:
                wrong.append((store, "deny_list", sorted(listed), sorted(denied & known)))
        return wrong

    async def assert_edges_agree(self, seconds: float = 20.0) -> None:
        async def agree() -> bool:
            return not await self.edges_disagree()

        try:
            await wait_until(agree, "edges to agree with central", seconds, every=0.2)
        except AssertionError:
            raise AssertionError(f"edges disagree with central: {await self.edges_disagree()}") from None

    async def sync_by_cli(self, store: str) -> str:
        """``tessera edge sync`` on the store's database (beside the running edge), through its proxy."""
        edge = self.edges[store]
        return await asyncio.to_thread(
            run_cli, "edge", "sync", "--store", store, "--secret", edge.secret, "--central-url",
            f"http://127.0.0.1:{edge.proxy.port}", "--database", str(edge.database), env={**os.environ, **EDGE_ENV})

"""Local authorization latency at a store's edge node, against raw SQLite durable commits.

1. Baseline: Python's sqlite3 on a file in WAL mode with synchronous=FULL (as the edge runs),
   ``--baseline-commits`` transactions one after another, each inserting a journal row and an outbox
   row and updating a card row, then COMMIT: the cost of one durable local decision's write alone.
2. Central on embedded SQLite (``tessera central serve``), seeded with ``--cards`` active cards of
   500.00 EUR in one store, offline limits raised so that the load stays within them, the store's
   sync secret; then ``tessera edge serve`` for that store, which pulls the cards.
3. A steady till load on the edge: ``--rate`` payments per second (open loop: each request leaves at
   its scheduled time, and its latency counts from then, so a stall is not hidden), 1.00 EUR on random
   cards, for ``--seconds``: first with central up (online decisions, through central), then with
   central stopped (offline decisions, within the limits).
   The first payment after the stop is timed apart: how long until the edge decides alone.
4. Central is started again; the edge pushes its offline backlog, and the ledger is checked (every
   balance equals the sum of its entries, every offline approval is at central exactly once).

Run from the repository root: ``.venv/bin/python bench/edge_latency.py [--rate 100 --seconds 20]``.
Only 127.0.0.1 traffic; everything lives in a temporary folder removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import code_version  # noqa: E402
from central_payments import PROGRAMME, STORE, TESSERA, free_port, pct, seed, start_server  # noqa: E402

from central.config import CentralConfig  # noqa: E402
from central.context import Central  # noqa: E402
from central.db import upgrade  # noqa: E402

PASSWORD = "bench-password-1"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=100, help="till payments per second (default 100)")
    p.add_argument("--seconds", type=float, default=20, help="seconds of load per phase (default 20)")
    p.add_argument("--cards", type=int, default=2000, help="active cards (default 2000)")
    p.add_argument("--baseline-commits", type=int, default=2000, help="raw SQLite commits (default 2000)")
    args = p.parse_args()
    if min(args.rate, args.seconds, args.cards, args.baseline_commits) <= 0:
        p.error("rate, seconds, cards and baseline-commits must be positive")
    return args


def sqlite_baseline(path: Path, commits: int) -> list[float]:
    """Seconds per durable commit of a journal row, an outbox row and a card update."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE cards (number TEXT PRIMARY KEY, balance INTEGER NOT NULL)")
    db.execute("CREATE TABLE journal (txn_id TEXT PRIMARY KEY, card TEXT, amount INTEGER, result TEXT)")
    db.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY, txn_id TEXT UNIQUE, entry BLOB)")
    db.executemany("INSERT INTO cards VALUES (?, 50000)", [(f"{i:016d}",) for i in range(1000)])
    out = []
    for seq in range(1, commits + 1):
        t0 = time.perf_counter()
        txn, card = str(uuid.uuid4()), f"{random.randrange(1000):016d}"
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO journal VALUES (?, ?, 100, '{\"approved\": true}')", (txn, card))
        db.execute("INSERT INTO outbox VALUES (?, ?, ?)", (seq, txn, os.urandom(200)))
        db.execute("UPDATE cards SET balance = balance - 100 WHERE number = ?", (card,))
        db.execute("COMMIT")
        out.append(time.perf_counter() - t0)
    db.close()
    return out


async def prepare_central(config: CentralConfig, n_cards: int) -> dict:
    seeded = await seed(config, n_cards)
    async with Central.session(config) as central, central.db.begin() as conn:
        await central.admin.create_user(conn, "bench", PASSWORD, "admin")
    return seeded


async def configure(base: str) -> bytes:
    """Offline limits wide enough for the load, a large budget, and the store's sync secret."""
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/api/v1/auth/login", json={"username": "bench", "password": PASSWORD}) as r:
            auth = {"Authorization": f"Bearer {(await r.json())['token']}"}
        calls = [(f"/api/v1/admin/programmes/{PROGRAMME}/offline-limits",
                  {"floor_limit": 10_000, "card_offline_amount": 10**9, "card_offline_count": 1000}),
                 (f"/api/v1/admin/stores/{STORE}/offline-budget", {"amount": 10**10, "currency": "EUR"}),
                 (f"/api/v1/admin/stores/{STORE}/sync-secret", None)]
        for path, body in calls:
            async with s.post(base + path, json=body, headers=auth) as r:
                data = await r.json()
                if r.status != 200:
                    raise SystemExit(f"{path}: {r.status} {data}")
    return bytes.fromhex(data["secret"])


def start_edge(data_dir: Path, central_port: int, secret: bytes,
               extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "TESSERA_EDGE_LOG_LEVEL": "WARNING", "TESSERA_EDGE_SYNC_INTERVAL": "1",
           "TESSERA_EDGE_ONLINE_TIMEOUT": "1.0",
           # Retry central every second at most, so the push after the outage is measured, not the backoff.
           "TESSERA_EDGE_BACKOFF_CAP": "1", **(extra_env or {})}
    log = open(data_dir / "edge.log", "wb")
    proc = subprocess.Popen([str(TESSERA), "edge", "serve", "--store", STORE, "--secret", secret.hex(),
                             "--central-url", f"http://127.0.0.1:{central_port}", "--database",
                             str(data_dir / "edge.db"), "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=data_dir)
    log.close()
    return proc, port


async def wait_edge(base: str, proc: subprocess.Popen, data_dir: Path, want: str, seconds: float = 120) -> dict:
    """Poll the edge's health until ``want`` holds: 'pulled' (first pull done) or 'drained' (backlog 0)."""
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"edge exited:\n{(data_dir / 'edge.log').read_text()[-3000:]}")
            try:
                async with s.get(f"{base}/health") as r:
                    h = await r.json()
                if (want == "pulled" and h["last_pull_at"]) or (want == "drained" and h["backlog"] == 0
                                                                and h["central"] == "reachable"):
                    return h
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"edge not {want} after {seconds} s:\n{(data_dir / 'edge.log').read_text()[-3000:]}")


async def steady_load(base: str, token: str, numbers: list[str], rate: float, seconds: float) -> dict:
    """Open-loop payments at ``rate``/s; latency from each request's scheduled start."""
    headers = {"Authorization": f"Bearer {token}"}
    latencies: dict[str, list[float]] = {}
    approved: list[str] = []
    failures: list[str] = []
    rng = random.Random(7)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:
        async def one(start: float) -> None:
            txn = str(uuid.uuid4())
            body = {"txn_id": txn, "card_number": rng.choice(numbers), "amount": 100}
            await asyncio.sleep(max(0.0, start - time.perf_counter()))
            try:
                async with s.post(f"{base}/api/v1/till/payment", json=body, headers=headers) as r:
                    data = await r.json()
            except aiohttp.ClientError as exc:
                failures.append(type(exc).__name__)
                return
            took = time.perf_counter() - start
            if r.status != 200:
                failures.append(f"http {r.status}: {data}")
                return
            latencies.setdefault(data.get("decision", "?"), []).append(took)
            if data["approved"]:
                approved.append(txn)
            else:
                failures.append(f"declined {data['decline_code']}")

        t0 = time.perf_counter() + 0.2
        n = int(rate * seconds)
        await asyncio.gather(*(one(t0 + i / rate) for i in range(n)))
    return {"latencies": latencies, "approved": approved, "failures": failures}


async def until_offline(base: str, token: str, numbers: list[str]) -> float:
    """Seconds from central's stop until the edge's first offline decision (payments one by one)."""
    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as s:
        while True:
            body = {"txn_id": str(uuid.uuid4()), "card_number": random.choice(numbers), "amount": 100}
            async with s.post(f"{base}/api/v1/till/payment", json=body,
                              headers={"Authorization": f"Bearer {token}"}) as r:
                if (await r.json()).get("decision") == "offline":
                    return time.perf_counter() - t0


def row(name: str, values: list[float]) -> str:
    v = sorted(x * 1000 for x in values)
    return f"  {name:<34} {len(v):>7,}  p50 {pct(v, 50):7.2f} ms  p99 {pct(v, 99):7.2f} ms  max {v[-1]:7.2f} ms"


def ledger_check(db: Path, approved: list[str]) -> tuple[int, int]:
    """(accounts whose balance differs from their entries, offline approvals missing at central)."""
    with sqlite3.connect(db) as conn:
        bad = conn.execute("""SELECT count(*) FROM accounts a LEFT JOIN (SELECT account_id, sum(amount) s
                              FROM entries GROUP BY account_id) e ON e.account_id = a.id
                              WHERE a.balance <> coalesce(e.s, 0)""").fetchone()[0]
        ids = {r[0].replace("-", "") for r in conn.execute("SELECT id FROM operations WHERE approved")}
    missing = sum(1 for t in approved if t.replace("-", "") not in ids)
    return bad, missing


def main() -> int:
    args = parse_args()
    print(f"edge latency: {args.rate:g} payments/s for {args.seconds:g} s per phase over {args.cards:,} cards")
    print(f"  code: {code_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        base_lat = sqlite_baseline(data_dir / "baseline.db", args.baseline_commits)
        central_db = data_dir / "central.db"
        url = f"sqlite:///{central_db}"
        config = CentralConfig(database_url=url, data_dir=data_dir, scheduler=False)
        upgrade(url)
        t0 = time.monotonic()
        seeded = asyncio.run(prepare_central(config, args.cards))
        print(f"  seeded {args.cards:,} active cards in {time.monotonic() - t0:.1f} s")
        server = start_server(url, data_dir, 1, "WARNING")
        edge = None
        try:
            central_base = f"http://127.0.0.1:{server.port}"
            secret = asyncio.run(configure(central_base))
            edge, edge_port = start_edge(data_dir, server.port, secret)
            edge_base = f"http://127.0.0.1:{edge_port}"
            asyncio.run(wait_edge(edge_base, edge, data_dir, "pulled"))
            online = asyncio.run(steady_load(edge_base, seeded["token"], seeded["numbers"], args.rate, args.seconds))
            server.stop()
            # The cut itself (requests in flight when central went, the first one to find it gone)
            # is timed apart: the steady load measures decisions once the edge knows.
            cut_s = asyncio.run(until_offline(edge_base, seeded["token"], seeded["numbers"]))
            offline = asyncio.run(steady_load(edge_base, seeded["token"], seeded["numbers"], args.rate,
                                              args.seconds))
            # Central again, on the same port: the edge pushes what it decided alone.
            server = restart_on(server, url, data_dir)
            t_sync = time.monotonic()
            asyncio.run(wait_edge(edge_base, edge, data_dir, "drained"))
            sync_s = time.monotonic() - t_sync
        finally:
            if edge is not None and edge.poll() is None:
                edge.send_signal(signal.SIGTERM)
                edge.wait(15)
            server.stop()
        bad, missing = ledger_check(central_db, offline["approved"] + online["approved"])
    print("\n  latency as the till sees it (open loop)")
    print(row("raw SQLite durable commit (baseline)", base_lat))
    for phase, result in (("central up", online), ("central stopped", offline)):
        for decision, values in sorted(result["latencies"].items()):
            print(row(f"{phase}: {decision} decisions", values))
        if result["failures"]:
            print(f"  {phase}: {len(result['failures'])} not approved, e.g. {result['failures'][:3]}")
    off = sorted(offline["latencies"].get("offline", []))
    base = sorted(base_lat)
    if off:
        print(f"\n  offline decision p50 / p99: {pct(off, 50) * 1000:.2f} / {pct(off, 99) * 1000:.2f} ms "
              f"(target p99 < 10 ms); ratio to the raw commit: p50 x{pct(off, 50) / pct(base, 50):.1f}, "
              f"p99 x{pct(off, 99) / pct(base, 99):.1f}")
    print(f"  central stopped: first offline decision {cut_s * 1000:.0f} ms after the stop")
    print(f"  offline backlog of {len(offline['approved']):,} pushed in {sync_s:.1f} s after central came back")
    print(f"  ledger: {bad} accounts differ from their entries; {missing} approvals missing at central")
    ok = bad == 0 and missing == 0 and bool(off)
    print("  checks: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


def restart_on(server, url: str, data_dir: Path):
    """Start central again on the port it had, so the running edge finds it where it was."""
    env = {**os.environ, "TESSERA_DATA_DIR": str(data_dir), "TESSERA_LOG_LEVEL": "WARNING"}
    log = open(data_dir / "server2.log", "wb")
    proc = subprocess.Popen([str(TESSERA), "central", "serve", "--database-url", url, "--host", "127.0.0.1",
                             "--port", str(server.port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=data_dir)
    log.close()
    server.proc = proc
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=2):
                return server
        except OSError:
            time.sleep(0.1)
    raise SystemExit("central did not come back")


if __name__ == "__main__":
    sys.exit(main())

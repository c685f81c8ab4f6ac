"""Sync ingest at central on PostgreSQL: how fast a store's offline backlog is applied.

1. A throwaway Tessera database, seeded like ``central_payments.py`` (an open-value programme, a
   store, ``--cards`` active cards with 500.00 EUR each), and a staff user.
2. ``tessera central serve`` as a subprocess; the store's sync secret from the admin API.
3. This script plays the store's side of the sync protocol (the same ``sync`` module the edge
   node uses): a backlog of ``--entries`` offline payments (1.00 EUR each, spread over the cards,
   sequence 1..N), pushed in signed msgpack batches of ``--batch``, one after the other as an edge
   pushes. The clock runs from the first request to the last answer.
4. The figures: entries/s, seconds for the whole backlog and for its first 50,000 entries (a day of
   a busy store), batch latency percentiles, and the checks: central acknowledged every sequence,
   holds each (store, sequence) once, and every balance equals the sum of its entries. A second push
   of the first batch must change nothing (all duplicates).

Run from the repository root: ``.venv/bin/python bench/sync_ingest.py [--entries 100000 --batch 1000]``.
Only 127.0.0.1 traffic; the database is dropped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import code_version, db_url, pg_settings, postgres_backends, proc_cpu, throwaway_db  # noqa: E402
from central_payments import STORE, check_ledger, pct, seed, start_server  # noqa: E402

import sync  # noqa: E402
from central.config import CentralConfig  # noqa: E402
from central.context import Central  # noqa: E402
from central.db import upgrade  # noqa: E402

PASSWORD = "bench-password-1"
DAY = 50_000


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=100_000, help="backlog size (default 100000)")
    p.add_argument("--batch", type=int, default=5000, help="entries per push (default 5000, as the edge)")
    p.add_argument("--cards", type=int, default=20_000, help="cards the payments spread over (default 20000)")
    p.add_argument("--workers", type=int, default=1, help="central server processes (default 1)")
    args = p.parse_args()
    if min(args.entries, args.batch, args.cards, args.workers) < 1 or args.batch > sync.messages.MAX_BATCH:
        p.error(f"entries, cards and workers must be positive; batch between 1 and {sync.messages.MAX_BATCH}")
    return args


async def staff_user(config: CentralConfig) -> None:
    async with Central.session(config) as central, central.db.begin() as conn:
        await central.admin.create_user(conn, "bench", PASSWORD, "admin")


async def store_secret(session: aiohttp.ClientSession, base: str) -> bytes:
    async with session.post(f"{base}/api/v1/auth/login", json={"username": "bench", "password": PASSWORD}) as r:
        token = (await r.json())["token"]
    async with session.post(f"{base}/api/v1/admin/stores/{STORE}/sync-secret",
                            headers={"Authorization": f"Bearer {token}"}) as r:
        body = await r.json()
        assert r.status == 200, body
    return bytes.fromhex(body["secret"])


def backlog(numbers: list[str], n: int) -> list[sync.OutboxEntry]:
    now = datetime.now(UTC)
    return [sync.OutboxEntry(seq=i + 1, txn_id=uuid.uuid4(), kind="payment", card_number=numbers[i % len(numbers)],
                             amount=100, currency="EUR", till="bench-till", decided_at=now, device_time=now)
            for i in range(n)]


async def push(session: aiohttp.ClientSession, base: str, secret: bytes, entries: list[sync.OutboxEntry],
               backlog_left: int) -> sync.PushResponse:
    exposure = sum(e.amount for e in entries)
    body = sync.encode(sync.PushRequest(store=STORE, epoch=0, entries=tuple(entries), backlog=backlog_left,
                                        offline_exposure=exposure, sent_at=datetime.now(UTC)))
    path = "/api/v1/sync/push"
    headers = {"Content-Type": sync.MSGPACK, **sync.signed_headers(STORE, secret, "POST", path, body, time.time())}
    async with session.post(base + path, data=body, headers=headers) as r:
        data = await r.read()
        if r.status != 200:
            raise SystemExit(f"push answered {r.status}: {data[:500]!r}")
    return sync.decode(data, sync.PushResponse)


async def run(base: str, numbers: list[str], args: argparse.Namespace) -> dict:
    entries = backlog(numbers, args.entries)
    batches = [entries[i:i + args.batch] for i in range(0, len(entries), args.batch)]
    async with aiohttp.ClientSession() as session:
        secret = await store_secret(session, base)
        latencies, day_seconds = [], None
        t0 = time.perf_counter()
        for i, batch in enumerate(batches):
            b0 = time.perf_counter()
            answer = await push(session, base, secret, batch, len(entries) - i * args.batch)
            latencies.append(time.perf_counter() - b0)
            if answer.acked_seq != batch[-1].seq or answer.quarantined:
                raise SystemExit(f"batch {i}: acked {answer.acked_seq}, wanted {batch[-1].seq}: {answer.message}")
            if day_seconds is None and answer.acked_seq >= DAY:
                day_seconds = time.perf_counter() - t0
            if (i + 1) % max(1, len(batches) // 10) == 0:
                print(f"\r  pushed {answer.acked_seq:,} / {len(entries):,}", end="", file=sys.stderr, flush=True)
        total = time.perf_counter() - t0
        print(file=sys.stderr)
        again = await push(session, base, secret, batches[0], 0)
    statuses = {r.status for r in again.results}
    return {"total": total, "day": day_seconds, "latencies": latencies, "resend_statuses": statuses,
            "acked": answer.acked_seq}


def cpu_split(server, dbname: str) -> tuple[float, float]:
    """CPU seconds used so far by central's processes and by the database's PostgreSQL backends."""
    return (sum(sum(proc_cpu(p)) for p in server.pids()),
            sum(sum(proc_cpu(p)) for p in postgres_backends(dbname)))


def main() -> int:
    args = parse_args()
    print(f"sync ingest: {args.entries:,} entries in batches of {args.batch:,} over {args.cards:,} cards")
    print(f"  code: {code_version()}")
    print(f"  postgresql: {pg_settings()}")
    with throwaway_db("tessera_sync_bench") as name, tempfile.TemporaryDirectory() as tmp:
        url = db_url(name)
        data_dir = Path(tmp)
        config = CentralConfig(database_url=url, data_dir=data_dir, scheduler=False)
        upgrade(url)
        t0 = time.monotonic()
        seeded = asyncio.run(seed(config, args.cards))
        asyncio.run(staff_user(config))
        print(f"  seeded {args.cards:,} active cards in {time.monotonic() - t0:.1f} s")
        server = start_server(url, data_dir, args.workers, "WARNING")
        try:
            before = cpu_split(server, name)
            result = asyncio.run(run(f"http://127.0.0.1:{server.port}", seeded["numbers"], args))
            after = cpu_split(server, name)
        finally:
            server.stop()
        ledger = check_ledger(url)
        with psycopg.connect(url) as conn:
            held = conn.execute("SELECT count(*), count(DISTINCT seq) FROM store_entries").fetchone()
    lat = sorted(x * 1000 for x in result["latencies"])
    rate = args.entries / result["total"]
    print(f"\n  backlog of {args.entries:,} applied in {result['total']:.2f} s: {rate:,.0f} entries/s")
    if result["day"] is not None:
        print(f"  first {DAY:,} entries (a busy store's day) in {result['day']:.2f} s (target < 10 s)")
    print(f"  per batch of {args.batch:,}: p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, "
          f"mean {statistics.fmean(lat):.1f} ms")
    server_cpu, pg_cpu = (after[i] - before[i] for i in range(2))
    print(f"  CPU: central {server_cpu:.1f} s ({server_cpu * 1e6 / args.entries:.0f} us/entry), "
          f"PostgreSQL {pg_cpu:.1f} s ({pg_cpu * 1e6 / args.entries:.0f} us/entry)")
    print(f"  acked up to {result['acked']:,}; store entries held {held[0]:,} ({held[1]:,} distinct sequences)")
    print(f"  resending the first batch: statuses {sorted(result['resend_statuses'])} (want only duplicate)")
    print(f"  ledger: {ledger['bad']} accounts differ from their entries, {ledger['entries']:,} entries")
    ok = (result["acked"] == args.entries and held == (args.entries, args.entries) and ledger["bad"] == 0
          and result["resend_statuses"] == {sync.EntryStatus.DUPLICATE})
    print("  checks: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

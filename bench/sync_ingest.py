"""Sync ingest at central on PostgreSQL (or SQLite): how fast a store's offline backlog is applied.

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

With ``--receipts N`` the same run then measures a loyalty backlog, with the payments above as its
baseline (sequences go on after them): a loyalty programme with ``--loyalty-cards`` active cards sold in
the store, a plan with three tiers (so central's tier review runs after every receipt) and 20 earning
schemes published through the admin API, then ``N`` offline receipts of ``--lines`` lines (item groups of
a supermarket) with the points and awards the store gave (central's own rules, evaluated here), pushed
like the payments. It prints receipts/s, ms per receipt and receipts/s / payments/s, and checks that every
receipt is recorded once (an operation and a ``receipts`` row), that each card's points balance equals
the sum of its entries and the points its receipts earned, and that central raised no exception case.
``--profile K`` then pushes K more receipts in this process under cProfile, counting SQL statements.

``--sqlite`` runs central on an SQLite file in a temporary folder instead of PostgreSQL.

Run from the repository root: ``.venv/bin/python bench/sync_ingest.py [--entries 100000 --batch 1000]``,
``.venv/bin/python bench/sync_ingest.py --entries 20000 --receipts 10000 [--sqlite] [--profile 500]``.
Only 127.0.0.1 traffic; the database is dropped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import pstats
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
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
from core.loyalty import Receipt, ReceiptLine  # noqa: E402

PASSWORD = "bench-password-1"
DAY = 50_000
LOYALTY = "LOYALTY"  # the loyalty programme (edge_earning.loyalty_cards makes it)
STORE_TZ = timezone(timedelta(hours=1))
# A supermarket's item groups; items I00000.. belong to them in turn, the first 300 sell most.
GROUPS = ("DAIRY", "BAKERY", "PRODUCE", "MEAT", "FISH", "DELI", "FROZEN", "DRINKS", "COFFEE", "SNACKS", "WINE",
          "HOUSEHOLD", "BEAUTY", "BABY", "PET")
ITEMS, BEST_SELLERS = 3000, 300
PLAN = {"programme": LOYALTY, "combination": "sum", "lifetime_days": 730, "tiers": {
    "basis": "turnover", "period_days": 365, "anchor": "2026-01-01T00:00:00Z", "upgrade": "immediate", "tiers": [
        {"code": "BRONZE", "rank": 1, "threshold": 0, "max_redemption_bps": 2000},
        {"code": "SILVER", "rank": 2, "threshold": 30_000, "max_redemption_bps": 5000},
        {"code": "GOLD", "rank": 3, "threshold": 150_000, "max_redemption_bps": 10000}]}}


def schemes(start: datetime) -> list[dict]:
    """20 earning schemes in force from ``start``: a chain-wide base rate (more at weekends), bonus rates
    on item groups, per-quantity, per-line, percent, per-receipt and best-seller schemes, a breakfast
    window, exclusions. None looks at the tier, so the points do not depend on when a review moves it."""
    def per_value(points: int) -> dict:
        return {"type": "per_value", "points": points, "per": 100, "currency": "EUR"}

    at = {"valid_from": start.isoformat()}
    out = [{"code": "BASE", "version": 1, **at, "priority": 1, "rule": per_value(1),
            "multipliers": [{"basis_points": 15000, "weekdays": [6, 7]}]}]
    for n, group in enumerate(("DAIRY", "BAKERY", "PRODUCE", "MEAT", "FISH", "DELI", "FROZEN", "COFFEE",
                               "WINE", "BEAUTY", "BABY", "PET")):
        out.append({"code": f"G-{group}", "version": 1, **at, "priority": 2, "rule": per_value(2 + n % 4),
                    "criteria": {"item_groups": [group]},
                    "exclusions": {"discounted": n % 3 == 0, "promotional": n % 2 == 0}})
    out += [
        {"code": "Q-DRINKS", "version": 1, **at, "priority": 3, "rule": {"type": "per_quantity", "points": 2},
         "criteria": {"item_groups": ["DRINKS"]}},
        {"code": "L-SNACKS", "version": 1, **at, "priority": 3, "rule": {"type": "fixed_per_line", "points": 5},
         "criteria": {"item_groups": ["SNACKS"]}},
        {"code": "P-HOUSEHOLD", "version": 1, **at, "priority": 3,
         "rule": {"type": "percent", "basis_points": 300, "currency": "EUR"},
         "criteria": {"item_groups": ["HOUSEHOLD"]}},
        {"code": "R-BIGBASKET", "version": 1, **at, "priority": 4,
         "rule": {"type": "fixed_per_receipt", "points": 50, "min_value": 10_000, "currency": "EUR"}},
        {"code": "R-BABY", "version": 1, **at, "priority": 4,
         "rule": {"type": "fixed_per_receipt", "points": 25, "currency": "EUR"}, "criteria": {"item_groups": ["BABY"]}},
        {"code": "I-BEST", "version": 1, **at, "priority": 5, "rule": {"type": "fixed_per_line", "points": 10},
         "criteria": {"items": [item(k) for k in range(0, BEST_SELLERS, 15)]}},
        {"code": "T-BREAKFAST", "version": 1, **at, "priority": 5, "rule": per_value(3),
         "criteria": {"item_groups": ["BAKERY", "COFFEE"], "time_from": "06:00:00", "time_to": "10:00:00"}}]
    assert len(out) == 20
    return out


def item(k: int) -> str:
    return f"I{k:05d}"


def receipt_lines(rng: random.Random, lines: int) -> tuple[sync.ReceiptLineData, ...]:
    made = []
    for _ in range(lines):
        k = rng.randrange(BEST_SELLERS) if rng.random() < 0.5 else rng.randrange(ITEMS)
        price = 49 + (k * 7919) % 600  # an item keeps its price: 0.49 to 6.48
        if rng.random() < 0.1:  # weighed: quantity in thousandths of a kilo
            quantity = rng.randint(100, 2500)
            value = price * quantity // 1000 + 1
        else:
            quantity = 1000 * rng.choice((1, 1, 1, 2, 2, 3, 6))
            value = price * quantity // 1000
        discount = rng.randint(1, value // 4 + 1) if rng.random() < 0.15 else 0
        made.append(sync.ReceiptLineData(item=item(k), quantity=quantity, value=value - discount,
                                         item_group=GROUPS[k % len(GROUPS)], discount=discount,
                                         promotional=rng.random() < 0.1))
    return tuple(made)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--entries", type=int, default=100_000, help="backlog size (default 100000)")
    p.add_argument("--batch", type=int, default=5000, help="entries per push (default 5000, as the edge)")
    p.add_argument("--cards", type=int, default=20_000, help="cards the payments spread over (default 20000)")
    p.add_argument("--workers", type=int, default=1, help="central server processes (default 1)")
    p.add_argument("--receipts", type=int, default=0,
                   help="then a backlog of this many offline receipts, the payments as baseline (default 0: none)")
    p.add_argument("--lines", type=int, default=10, help="lines per receipt (default 10)")
    p.add_argument("--loyalty-cards", type=int, default=2000,
                   help="loyalty cards the receipts spread over (default 2000)")
    p.add_argument("--profile", type=int, default=0, metavar="K",
                   help="after the run, push K more receipts in this process under cProfile (default 0: no)")
    p.add_argument("--sqlite", action="store_true", help="central on an SQLite file instead of PostgreSQL")
    p.add_argument("--seed", type=int, default=1, help="random seed of the receipts (default 1)")
    args = p.parse_args()
    if min(args.entries, args.batch, args.cards, args.workers, args.lines, args.loyalty_cards) < 1 \
            or args.batch > sync.messages.MAX_BATCH or min(args.receipts, args.profile) < 0:
        p.error(f"entries, cards, workers, lines and loyalty-cards must be positive; batch between 1 and "
                f"{sync.messages.MAX_BATCH}; receipts and profile at least 0")
    if args.profile and not args.receipts:
        p.error("--profile profiles receipts: give --receipts too")
    if args.sqlite and args.workers != 1:
        p.error("--sqlite runs one worker")
    return args


async def staff_user(config: CentralConfig) -> None:
    async with Central.session(config) as central, central.db.begin() as conn:
        await central.admin.create_user(conn, "bench", PASSWORD, "admin")


async def login(session: aiohttp.ClientSession, base: str) -> dict[str, str]:
    async with session.post(f"{base}/api/v1/auth/login", json={"username": "bench", "password": PASSWORD}) as r:
        return {"Authorization": f"Bearer {(await r.json())['token']}"}


async def store_secret(session: aiohttp.ClientSession, base: str) -> bytes:
    async with session.post(f"{base}/api/v1/admin/stores/{STORE}/sync-secret",
                            headers=await login(session, base)) as r:
        body = await r.json()
        assert r.status == 200, body
    return bytes.fromhex(body["secret"])


async def publish_rules(base: str) -> datetime:
    """The loyalty plan and the 20 schemes through the admin API; when the schemes start."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    async with aiohttp.ClientSession() as session:
        auth = await login(session, base)
        for path, body in [("plans", PLAN), *(("schemes", b) for b in schemes(start))]:
            async with session.post(f"{base}/api/v1/admin/loyalty/{path}", json=body, headers=auth) as r:
                if r.status != 200:
                    raise SystemExit(f"publishing {path}: {r.status} {await r.text()}")
    return start


def backlog(numbers: list[str], n: int) -> list[sync.OutboxEntry]:
    now = datetime.now(UTC)
    return [sync.OutboxEntry(seq=i + 1, txn_id=uuid.uuid4(), kind="payment", card_number=numbers[i % len(numbers)],
                             amount=100, currency="EUR", till="bench-till", decided_at=now, device_time=now)
            for i in range(n)]


async def receipt_backlog(config: CentralConfig, numbers: list[str], n: int, first_seq: int, lines: int,
                          since: datetime, rng: random.Random) -> list[sync.OutboxEntry]:
    """``n`` offline receipts on random loyalty cards, their times spread from ``since`` to now, each with the
    points and awards central's rules give it (what an edge with the same rules gives)."""
    now = datetime.now(UTC)
    async with Central.session(config) as central:
        scheme_set = (await central.rules.current()).scheme_set(LOYALTY)
    out = []
    for i in range(n):
        number = rng.choice(numbers)
        at = (since + (now - since) * (i + 1) / n).astimezone(STORE_TZ)
        made = receipt_lines(rng, lines)
        txn_id = uuid.uuid4()
        earning = scheme_set.evaluate(Receipt(
            id=str(txn_id), card=number, store=STORE, at=at, currency="EUR",
            lines=tuple(ReceiptLine(**line.model_dump()) for line in made), card_type=LOYALTY))
        detail = sync.LoyaltyDetail(at=at, lines=made, points=earning.total,
                                    awards=tuple((a.line, a.scheme, a.version, a.points) for a in earning.awards))
        out.append(sync.OutboxEntry(seq=first_seq + i, txn_id=txn_id, kind="receipt", card_number=number,
                                    amount=sum(line.value for line in made), currency="EUR", till="bench-till",
                                    decided_at=at, device_time=at, loyalty=detail))
    return out


def push_body(entries: list[sync.OutboxEntry], backlog_left: int) -> bytes:
    exposure = sum(e.amount for e in entries if e.kind == "payment")
    return sync.encode(sync.PushRequest(store=STORE, epoch=0, entries=tuple(entries), backlog=backlog_left,
                                        offline_exposure=exposure, sent_at=datetime.now(UTC)))


async def push(session: aiohttp.ClientSession, base: str, secret: bytes, entries: list[sync.OutboxEntry],
               backlog_left: int) -> sync.PushResponse:
    body = push_body(entries, backlog_left)
    path = "/api/v1/sync/push"
    headers = {"Content-Type": sync.MSGPACK, **sync.signed_headers(STORE, secret, "POST", path, body, time.time())}
    async with session.post(base + path, data=body, headers=headers) as r:
        data = await r.read()
        if r.status != 200:
            raise SystemExit(f"push answered {r.status}: {data[:500]!r}")
    return sync.decode(data, sync.PushResponse)


async def run(base: str, entries: list[sync.OutboxEntry], args: argparse.Namespace, what: str) -> dict:
    batches = [entries[i:i + args.batch] for i in range(0, len(entries), args.batch)]
    first = entries[0].seq
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        secret = await store_secret(session, base)
        latencies, day_seconds = [], None
        t0 = time.perf_counter()
        for i, batch in enumerate(batches):
            b0 = time.perf_counter()
            answer = await push(session, base, secret, batch, len(entries) - i * args.batch)
            latencies.append(time.perf_counter() - b0)
            if answer.acked_seq != batch[-1].seq or answer.quarantined:
                raise SystemExit(f"batch {i}: acked {answer.acked_seq}, wanted {batch[-1].seq}: {answer.message}")
            if day_seconds is None and answer.acked_seq - first + 1 >= DAY:
                day_seconds = time.perf_counter() - t0
            if (i + 1) % max(1, len(batches) // 10) == 0:
                print(f"\r  {what}: pushed {answer.acked_seq - first + 1:,} / {len(entries):,}", end="",
                      file=sys.stderr, flush=True)
        total = time.perf_counter() - t0
        print(file=sys.stderr)
        again = await push(session, base, secret, batches[0], 0)
    statuses = {r.status for r in again.results}
    return {"total": total, "day": day_seconds, "latencies": latencies, "resend_statuses": statuses,
            "acked": answer.acked_seq}


def cpu_split(server, dbname: str | None) -> tuple[float, float]:
    """CPU seconds used so far by central's processes and by the database's PostgreSQL backends."""
    return (sum(sum(proc_cpu(p)) for p in server.pids()),
            sum(sum(proc_cpu(p)) for p in postgres_backends(dbname)) if dbname else 0.0)


def measured(server, dbname: str | None, base: str, entries: list[sync.OutboxEntry], args, what: str) -> dict:
    before = cpu_split(server, dbname)
    result = asyncio.run(run(base, entries, args, what))
    after = cpu_split(server, dbname)
    result["cpu"] = tuple(after[i] - before[i] for i in range(2))
    result["n"] = len(entries)
    return result


def report(result: dict, args: argparse.Namespace, what: str, sqlite: bool) -> float:
    n = result["n"]
    lat = sorted(x * 1000 for x in result["latencies"])
    rate = n / result["total"]
    print(f"\n  {what}: backlog of {n:,} applied in {result['total']:.2f} s: {rate:,.0f} entries/s, "
          f"{1000 * result['total'] / n:.3f} ms per entry")
    if result["day"] is not None:
        print(f"  first {DAY:,} entries (a busy store's day) in {result['day']:.2f} s (target < 10 s)")
    print(f"  per batch of {min(args.batch, n):,}: p50 {pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, "
          f"mean {statistics.fmean(lat):.1f} ms")
    server_cpu, pg_cpu = result["cpu"]
    if sqlite:
        print(f"  CPU: central (with SQLite in it) {server_cpu:.1f} s ({server_cpu * 1e6 / n:.0f} us/entry)")
    else:
        print(f"  CPU: central {server_cpu:.1f} s ({server_cpu * 1e6 / n:.0f} us/entry), "
              f"PostgreSQL {pg_cpu:.1f} s ({pg_cpu * 1e6 / n:.0f} us/entry)")
    print(f"  resending the first batch: statuses {sorted(result['resend_statuses'])} (want only duplicate)")
    return rate


# -- checks and the profile ----------------------------------------------------------------------------


def query(url: str, sql: str) -> list[tuple]:
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return conn.execute(sql).fetchall()
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def ledger_check(url: str) -> dict:
    """Every account's balance (e-money and points) equals the sum of its entries."""
    if not url.startswith("sqlite:///"):
        return check_ledger(url)
    bad = query(url, """
        SELECT count(*) FROM accounts a
        LEFT JOIN (SELECT account_id, sum(amount) AS amount, sum(held_delta) AS held
                   FROM entries GROUP BY account_id) e ON e.account_id = a.id
        WHERE a.balance <> coalesce(e.amount, 0) OR a.held <> coalesce(e.held, 0)""")[0][0]
    return {"bad": bad, "entries": query(url, "SELECT count(*) FROM entries")[0][0]}


def receipt_checks(url: str, entries: list[sync.OutboxEntry]) -> dict:
    """Each receipt once (operation and receipts row), points balances as the receipts earned them."""
    ops = query(url, "SELECT count(*), count(DISTINCT id), sum(CASE WHEN approved THEN 1 ELSE 0 END) "
                     "FROM operations WHERE kind = 'receipt'")[0]
    rows = query(url, "SELECT count(*), count(DISTINCT r.id), count(o.id) FROM receipts r "
                      "LEFT JOIN operations o ON o.id = r.id AND o.kind = 'receipt' WHERE r.kind = 'sale'")[0]
    want: Counter = Counter()
    for e in entries:
        want[e.card_number] += e.loyalty.points
    balances = dict(query(url, "SELECT c.number, a.balance FROM accounts a JOIN cards c ON c.id = a.card_id "
                               "WHERE a.kind = 'points'"))
    by_receipts = dict(query(url, "SELECT c.number, sum(r.points) FROM receipts r JOIN cards c ON c.id = r.card_id "
                                  "GROUP BY c.number"))
    wrong = sum(1 for number in set(want) | set(balances)
                if balances.get(number, 0) != want[number] or int(by_receipts.get(number) or 0) != want[number])
    exceptions = dict(query(url, "SELECT kind, count(*) FROM sync_exceptions GROUP BY kind"))
    tiers = dict(query(url, "SELECT coalesce(tier, '-'), count(*) FROM loyalty_cards GROUP BY 1"))
    return {"operations": ops, "rows": rows, "cards": len(want), "points": sum(want.values()),
            "wrong": wrong, "exceptions": exceptions, "tiers": tiers,
            "tier_changes": query(url, "SELECT count(*) FROM tier_changes")[0][0]}


def _statement(sql: str) -> str:
    """'INSERT points_lots', 'SELECT accounts', ...: the verb and the statement's own first table (what
    parentheses hold, subqueries and lists, is left out)."""
    flat = " ".join(sql.split())
    while "(" in flat:
        shorter = re.sub(r"\([^()]*\)", "", flat)
        if shorter == flat:
            break
        flat = shorter
    m = re.match(r"(SELECT|INSERT INTO|UPDATE|DELETE FROM|WITH)\b", flat, re.I)
    verb = m.group(1).split()[0].upper() if m else flat.split(" ", 1)[0][:20]
    if verb in ("SELECT", "WITH"):
        t = re.search(r"\bFROM\s+([a-z_]+)", flat, re.I)
    else:
        t = re.match(r"\S+(?:\s+INTO|\s+FROM)?\s+([a-z_]+)", flat, re.I)
    return f"{verb} {t.group(1) if t else '?'}"


def _package(filename: str) -> str:
    if filename == "~":
        return "C builtins (the event loop's epoll wait among them)"
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    for own in ("central", "core", "sync"):
        if f"/{own}/" in filename:
            return own
    return "python (asyncio, stdlib)" if filename.startswith(("/", "<frozen")) else filename


def profile(config: CentralConfig, entries: list[sync.OutboxEntry], batch: int, top: int = 18) -> None:
    """Push ``entries`` in batches through central's SyncService in this process, under cProfile, counting
    the SQL statements (and their time in the driver) by kind and table."""
    from sqlalchemy import event

    from central.services.sync import SyncStore

    counts: Counter = Counter()
    spent: Counter = Counter()

    async def go() -> tuple[float, cProfile.Profile]:
        central = Central.open(config)
        engine = central.db.engine.sync_engine
        started: dict[int, float] = {}

        @event.listens_for(engine, "before_cursor_execute")
        def before(conn, cursor, statement, parameters, context, executemany):
            started[id(cursor)] = time.perf_counter()

        @event.listens_for(engine, "after_cursor_execute")
        def after(conn, cursor, statement, parameters, context, executemany):
            key = _statement(statement)
            counts[key] += 1
            spent[key] += time.perf_counter() - started.pop(id(cursor), time.perf_counter())

        try:
            async with central.db.connect() as conn:
                store_id = (await conn.exec_driver_sql(f"SELECT id FROM stores WHERE code = '{STORE}'")).scalar_one()
            ref = SyncStore(store_id, STORE)
            bodies = [push_body(entries[i:i + batch], len(entries) - i) for i in range(0, len(entries), batch)]
            prof = cProfile.Profile()
            t0 = time.perf_counter()
            for body in bodies:
                prof.enable()
                answer = await central.sync.push(ref, body)
                prof.disable()
                if answer.acked_seq != sync.decode(body, sync.PushRequest).entries[-1].seq:
                    raise SystemExit(f"profiled push acked {answer.acked_seq}: {answer.message}")
            return time.perf_counter() - t0, prof
        finally:
            await central.close()

    wall, prof = asyncio.run(go())
    n = len(entries)
    db_time = sum(spent.values())
    print(f"\n  profile: {n:,} receipts sent in this process in {wall:.2f} s ({1000 * wall / n:.2f} ms each, "
          f"cProfile on); {sum(counts.values()) / n:.1f} SQL statements per receipt, "
          f"{1000 * db_time / n:.2f} ms each in the driver (execute to result)")
    print(f"    {'statement':<30} {'per receipt':>11} {'ms per receipt':>15}")
    for key, c in sorted(counts.items(), key=lambda kv: -spent[kv[0]])[:top]:
        print(f"    {key:<30} {c / n:11.2f} {1000 * spent[key] / n:15.3f}")
    stats = pstats.Stats(prof)
    total = stats.total_tt
    by_package: Counter = Counter()
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():
        by_package[_package(filename)] += tottime
    print(f"    cProfile: {total:.2f} s of CPU in this process ({1000 * total / n:.2f} ms per receipt); own time by "
          "package: " + ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in by_package.most_common(8)))
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    print("    the functions with the most own time:")
    for line in out.getvalue().splitlines():
        if re.match(r"\s*\d", line) or "ncalls" in line:
            print("    " + re.sub(r"\S*/(site-packages|lib/python3\.\d+)/", "", line.replace(
                str(Path(__file__).resolve().parent.parent) + "/", "")))


def main() -> int:
    args = parse_args()
    backend = "SQLite" if args.sqlite else "PostgreSQL"
    what = f"{args.entries:,} entries"
    if args.receipts:
        what = (f"{args.entries:,} payments, then {args.receipts:,} receipts of {args.lines} lines over "
                f"{args.loyalty_cards:,} loyalty cards")
    print(f"sync ingest ({backend}): {what} in batches of {args.batch:,} over {args.cards:,} cards")
    print(f"  code: {code_version()}")
    if not args.sqlite:
        print(f"  postgresql: {pg_settings()}")
    rng = random.Random(args.seed)
    with (contextlib.nullcontext(None) if args.sqlite else throwaway_db("tessera_sync_bench")) as name, \
            tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        url = f"sqlite:///{data_dir}/central.db" if args.sqlite else db_url(name)
        config = CentralConfig(database_url=url, data_dir=data_dir, scheduler=False)
        upgrade(url)
        t0 = time.monotonic()
        seeded = asyncio.run(seed(config, args.cards))
        asyncio.run(staff_user(config))
        print(f"  seeded {args.cards:,} active cards in {time.monotonic() - t0:.1f} s")
        loyal: list[str] = []
        if args.receipts:
            from edge_earning import loyalty_cards

            t0 = time.monotonic()
            loyal = asyncio.run(loyalty_cards(config, args.loyalty_cards))
            print(f"  seeded {len(loyal):,} loyalty cards of {LOYALTY} (sold with 1.00 EUR) in "
                  f"{time.monotonic() - t0:.1f} s")
        server = start_server(url, data_dir, args.workers, "WARNING")
        receipts: list[sync.OutboxEntry] = []
        try:
            base = f"http://127.0.0.1:{server.port}"
            if args.receipts:
                since = asyncio.run(publish_rules(base))
                print("  published the plan (tiers BRONZE, SILVER at 300.00, GOLD at 1,500.00 turnover) and 20 schemes")
                t0 = time.monotonic()
                receipts = asyncio.run(receipt_backlog(config, loyal, args.receipts + args.profile,
                                                       args.entries + 1, args.lines, since, rng))
                print(f"  made {len(receipts):,} receipts with central's points in {time.monotonic() - t0:.1f} s: "
                      f"{statistics.fmean(len(e.loyalty.awards) for e in receipts):.1f} awards and "
                      f"{statistics.fmean(e.loyalty.points for e in receipts):.0f} points per receipt on average, "
                      f"{statistics.fmean(len(sync.encode(e)) for e in receipts[:200]):,.0f} bytes each (msgpack)")
            payments = measured(server, name, base, backlog(seeded["numbers"], args.entries), args, "payments")
            done = None
            if args.receipts:
                done = measured(server, name, base, receipts[:args.receipts], args, "receipts")
        finally:
            server.stop()
        ledger = ledger_check(url)
        held = query(url, "SELECT count(*), count(DISTINCT seq) FROM store_entries")[0]
        loyalty = receipt_checks(url, receipts[:args.receipts]) if args.receipts else None
        if args.profile:
            profile(config, receipts[args.receipts:], args.batch)
    total = args.entries + args.receipts
    pay_rate = report(payments, args, "payments", args.sqlite)
    ok = (payments["acked"] == args.entries and payments["resend_statuses"] == {sync.EntryStatus.DUPLICATE})
    if done is not None:
        rate = report(done, args, "receipts", args.sqlite)
        print(f"\n  receipts/s / payments/s: {rate / pay_rate:.3f} (a receipt costs {pay_rate / rate:.1f} payments)")
        ops, rows = loyalty["operations"], loyalty["rows"]
        print(f"  receipts recorded: {ops[0]:,} operations ({ops[1]:,} distinct, {ops[2]:,} approved), "
              f"{rows[0]:,} receipts rows ({rows[1]:,} distinct, {rows[2]:,} with their operation)")
        print(f"  points: {loyalty['points']:,} earned on {loyalty['cards']:,} cards; cards whose points balance "
              f"differs from what their receipts earned: {loyalty['wrong']}")
        print(f"  tiers after the backlog: {loyalty['tiers']}; {loyalty['tier_changes']:,} tier_changes rows")
        print(f"  exception cases raised: {loyalty['exceptions'] or 'none'} (want none)")
        n = args.receipts
        ok = ok and (done["acked"] == total and ops == (n, n, n) and rows == (n, n, n) and loyalty["wrong"] == 0
                     and not loyalty["exceptions"] and done["resend_statuses"] == {sync.EntryStatus.DUPLICATE})
    print(f"\n  acked up to {(done or payments)['acked']:,}; store entries held {held[0]:,} "
          f"({held[1]:,} distinct sequences)")
    print(f"  ledger: {ledger['bad']} accounts differ from their entries, {ledger['entries']:,} entries")
    ok = ok and tuple(held) == (total, total) and ledger["bad"] == 0
    print("  checks: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

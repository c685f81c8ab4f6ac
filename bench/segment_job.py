"""The segment job on PostgreSQL: 1,000,000 loyalty cards and 10,000,000 receipts.

1. A throwaway database, migrated; then, in SQL (``INSERT ... SELECT generate_series``, in chunks with
   progress): 200 stores, ``--cards`` customers (birth dates, groups for one in five, consents to mail,
   SMS and e-mail, some withdrawn later), one active loyalty card each with a tier, and ``--receipts``
   receipts over the last two years (one in twenty a return), each with two of 60 item groups and three
   of 5,000 items as JSONB arrays, as the receipt service writes them. The receipts' indexes are built
   after the load (as a restore would), then everything is analysed.
2. Typical segments, each run by :class:`central.services.segments.SegmentService` (the code the
   scheduled job and "run now" use): spent > 150.00 in 90 days; bought group G7 in 30 days; birthday this
   month; and a combination (spent > 100.00 in 90 days or tier GOLD, with an e-mail consent, and not
   group G3 in 30 days). Each is run twice: the first run adds every member (membership rows and one feed
   row each); the second is the steady state of a nightly job (same data: computed, diffed, nothing
   written). Printed per segment: members, seconds of both runs, the seconds of the member query alone,
   and candidate cards evaluated per second.
3. Baseline in the same run: the bare aggregate ``SELECT card_id FROM receipts WHERE local_date in the 90
   days GROUP BY card_id HAVING sum(total) > 15000``, timed with psycopg (rows fetched), and the ratio of
   each segment's steady-state run to it.

Run from the repository root: ``.venv/bin/python bench/segment_job.py [--cards 1000000 --receipts 10000000]``;
smaller figures smoke-run it in seconds. The database is dropped at the end, also after a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import code_version, db_url, pg_settings, throwaway_db  # noqa: E402

from central.config import CentralConfig  # noqa: E402
from central.context import Central  # noqa: E402
from central.services.segments import member_query  # noqa: E402
from core.loyalty.segments import from_data  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 1_000_000
HISTORY_DAYS = 730
SEGMENTS = {
    "SPEND90": ("spent > 150.00 in 90 days", {"op": "spent_over", "amount": 15000, "days": 90}),
    "G7_30": ("bought group G7 in 30 days", {"op": "bought_group", "group": "G7", "days": 30}),
    "BDAY": ("birthday this month", {"op": "birthday_this_month"}),
    "COMBO": ("(spent > 100.00 in 90 days or GOLD) and e-mail consent and not G3 in 30 days", {
        "op": "and", "rules": [
            {"op": "or", "rules": [{"op": "spent_over", "amount": 10000, "days": 90},
                                   {"op": "tier_in", "tiers": ["GOLD"]}]},
            {"op": "has_consent", "channel": "email"},
            {"op": "not", "rule": {"op": "bought_group", "group": "G3", "days": 30}}]}),
}
_RECEIPT_INDEXES = ("ix_receipts_card_at", "ix_receipts_local_date", "ix_receipts_original_id")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cards", type=int, default=1_000_000, help="loyalty cards, one customer each (1,000,000)")
    p.add_argument("--receipts", type=int, default=10_000_000, help="receipts over two years (10,000,000)")
    args = p.parse_args()
    if args.cards < 1 or args.receipts < 0:
        p.error("--cards is at least 1, --receipts at least 0")
    return args


def _chunks(total: int):
    for start in range(0, total, CHUNK):
        yield start + 1, min(start + CHUNK, total)


def _timed_chunks(conn: psycopg.Connection, what: str, total: int, sql: str, **params) -> None:
    started = time.monotonic()
    for first, last in _chunks(total):
        conn.execute(sql, {"first": first, "last": last, **params})
        conn.commit()
        elapsed = time.monotonic() - started
        print(f"  {what}: {last:>12,} / {total:,}  {last / max(elapsed, 1e-9):10,.0f} rows/s  {elapsed:6.1f} s",
              flush=True)


def load(url: str, cards: int, n_receipts: int, today: date) -> float:
    """Generate the chain in SQL; returns the seconds it took."""
    started = time.monotonic()
    with psycopg.connect(url) as conn:
        conn.execute("SET synchronous_commit = off")
        programme = conn.execute(
            "INSERT INTO programmes (code, name, kind, currency, number_prefix, number_length, luhn, nominal_values,"
            " min_amount, max_amount, topup_allowed, hold_ttl_seconds, hold_expiry_policy, service_code, next_serial,"
            " created_at) VALUES ('LOYAL', 'Loyalty', 'loyalty', 'EUR', '7700', 16, false, '[]', 1, 100000, false,"
            " 60, 'reverse', '120', 0, now()) RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO stores (code, name, active, created_at) "
                     "SELECT 'S' || g, 'Store ' || g, true, now() FROM generate_series(1, 200) g")
        conn.commit()
        # Customers: birth dates over 70 years (29 February included), a registering store for half.
        _timed_chunks(conn, "customers", cards, """
            INSERT INTO customers (id, first_name, last_name, name_key, gender, birth_date, address_lines, postcode,
                city, country, phone, email, email_key, social, active, channel, store_id, created_at, updated_at)
            SELECT g, 'First' || g, 'Last' || g, 'last' || g || ' first' || g, 'unspecified',
                   DATE '1940-01-01' + (hashint(g, 1) %% 25567)::int, json_build_array(g || ' High Street'), 'AB1 2CD',
                   'Town', 'GB', '+44' || (7000000000 + g)::text, 'c' || g || '@example.com',
                   'c' || g || '@example.com', '{}', true, CASE WHEN g %% 2 = 0 THEN 'till' ELSE 'web' END,
                   CASE WHEN g %% 2 = 0 THEN 1 + hashint(g, 2) %% 200 END, now(), now()
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) g""")
        _timed_chunks(conn, "customer groups", cards, """
            INSERT INTO customer_groups (customer_id, code)
            SELECT g, (ARRAY['VIP', 'STAFF', 'YOUNG', 'FAMILY', 'STUDENT'])[1 + (hashint(g, 3) %% 5)::int]
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) g WHERE hashint(g, 4) %% 5 = 0""")
        # Consents: e-mail for 60 %, SMS for 40 %, mail for 30 %; one in ten of them withdrawn a year later.
        _timed_chunks(conn, "consents", cards, """
            INSERT INTO customer_consents (customer_id, channel, granted, source, at, recorded_at, actor)
            SELECT g, c.channel, w.granted, 'import', TIMESTAMPTZ '2024-01-01' + w.later, now(), 'bench'
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) g
            CROSS JOIN (VALUES ('email', 60, 5), ('sms', 40, 6), ('mail', 30, 7)) AS c(channel, share, salt)
            CROSS JOIN LATERAL (VALUES (true, INTERVAL '0'), (false, INTERVAL '365 days')) AS w(granted, later)
            WHERE hashint(g, c.salt) %% 100 < c.share AND (w.granted OR hashint(g, c.salt + 10) %% 10 = 0)""")
        _timed_chunks(conn, "cards", cards, """
            INSERT INTO cards (id, number, programme_id, state, ecode_failures, created_at, pin_failures, customer_id)
            SELECT g, '7700' || lpad(g::text, 12, '0'), %(programme)s, 'active', 0, now(), 0, g
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) g""", programme=programme)
        _timed_chunks(conn, "loyalty cards", cards, """
            INSERT INTO loyalty_cards (card_id, tier, discount_bps, points_debt, updated_at)
            SELECT g, (ARRAY['BRONZE', 'BRONZE', 'BRONZE', 'SILVER', 'SILVER', 'GOLD'])[1 + (hashint(g, 8) %% 6)::int],
                   0, 0, now()
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) g""")
        conn.execute("SELECT setval(pg_get_serial_sequence('cards', 'id'), %s)", (cards,))
        conn.execute("SELECT setval(pg_get_serial_sequence('customers', 'id'), %s)", (cards,))
        conn.commit()
        # Receipts: indexes built after the load; ids increase (uuid from the row number), as UUIDv7 would.
        for name in _RECEIPT_INDEXES:
            conn.execute(f"DROP INDEX {name}")
        conn.commit()
        _timed_chunks(conn, "receipts", n_receipts, """
            INSERT INTO receipts (id, card_id, customer_id, store_id, terminal_id, kind, at, local_date, utc_offset,
                currency, total, lines, items, item_groups, points, awards, channel, created_at)
            SELECT lpad(to_hex(g), 32, '0')::uuid, r.card, r.card, 1 + hashint(g, 13) %% 200, NULL,
                   CASE WHEN r.is_return THEN 'return' ELSE 'sale' END, r.day::timestamptz + INTERVAL '12 hours',
                   r.day, 60, 'EUR', CASE WHEN r.is_return THEN -1 ELSE 1 END * (100 + hashint(g, 14) %% 15000),
                   '[]', jsonb_build_array('I' || hashint(g, 15) %% 5000, 'I' || hashint(g, 16) %% 5000,
                                           'I' || hashint(g, 17) %% 5000),
                   jsonb_build_array('G' || hashint(g, 18) %% 60, 'G' || hashint(g, 19) %% 60), 0, '[]', 'store', now()
            FROM generate_series(%(first)s::bigint, %(last)s::bigint) g
            CROSS JOIN LATERAL (SELECT 1 + hashint(g, 11) %% %(cards)s AS card,
                                       %(today)s::date - (hashint(g, 12) %% %(days)s)::int AS day,
                                       hashint(g, 20) %% 20 = 0 AS is_return) r""",
                     cards=cards, today=today, days=HISTORY_DAYS)
        index_started = time.monotonic()
        conn.execute("CREATE INDEX ix_receipts_card_at ON receipts (card_id, at)")
        conn.execute("CREATE INDEX ix_receipts_local_date ON receipts (local_date)")
        conn.execute("CREATE INDEX ix_receipts_original_id ON receipts (original_id)")
        conn.commit()
        print(f"  receipt indexes built in {time.monotonic() - index_started:.1f} s", flush=True)
        conn.execute("ANALYZE")
        conn.commit()
    return time.monotonic() - started


_HASHINT = """
CREATE FUNCTION hashint(g bigint, salt int) RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT abs(hashint8(g * 1000003 + salt)::bigint) $$"""


def baseline(url: str, today: date) -> tuple[int, float]:
    """The bare aggregate behind "spent > 150.00 in 90 days", rows fetched: (rows, seconds)."""
    with psycopg.connect(url) as conn:
        started = time.monotonic()
        rows = conn.execute("SELECT card_id FROM receipts WHERE local_date > %s AND local_date <= %s "
                            "GROUP BY card_id HAVING sum(total) > 15000",
                            (today - timedelta(days=90), today)).fetchall()
        return len(rows), time.monotonic() - started


async def run_segments(url: str, data_dir: Path, today: date) -> dict[str, dict]:
    config = CentralConfig(database_url=url, data_dir=data_dir, scheduler=False, ecode_key="11" * 32,
                           sync_key="22" * 32)
    out = {}
    async with Central.session(config) as central:
        service = central.segments
        for code, (name, rule) in SEGMENTS.items():
            await service.define(code, name, rule, "bench")
            first = await service.run(code, today=today, actor="bench")
            first_s = _seconds(first)
            second = await service.run(code, today=today, actor="bench")
            async with central.db.connect() as conn:
                started = time.monotonic()
                count = len((await conn.execute(member_query(from_data(rule), today, "postgresql"))).all())
                query_s = time.monotonic() - started
            out[code] = {"name": name, "members": first["members"], "first": first_s, "second": _seconds(second),
                         "query": query_s, "changes": (second["added"], second["removed"]), "count": count}
            print(f"  {code:8} members {first['members']:>9,}  first run {first_s:7.2f} s  rerun "
                  f"{_seconds(second):7.2f} s  query alone {query_s:7.2f} s", flush=True)
    return out


def _seconds(run: dict) -> float:
    return (datetime.fromisoformat(run["finished_at"]) - datetime.fromisoformat(run["started_at"])).total_seconds()


def main() -> int:
    args = parse_args()
    today = datetime.now(UTC).date()
    print(f"Tessera segment job benchmark: {args.cards:,} loyalty cards, {args.receipts:,} receipts on PostgreSQL"
          f" (business date {today})")
    print(f"  code: {code_version()}")
    s = pg_settings()
    print(f"  PostgreSQL {s['server_version']} shared_buffers={s['shared_buffers']}; load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs", flush=True)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("tessera.segments").setLevel(logging.INFO)  # the job's own progress lines
    with tempfile.TemporaryDirectory(prefix="tessera-segment-bench-") as data_dir, \
            throwaway_db("tessera_segment_bench") as dbname:
        url = db_url(dbname)
        subprocess.run([str(ROOT / ".venv" / "bin" / "tessera"), "central", "migrate", "--database-url", url,
                        "--data-dir", data_dir], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(_HASHINT)
        print("\n[1/3] generating the chain in SQL", flush=True)
        load_s = load(url, args.cards, args.receipts, today)
        print(f"  generated in {load_s:.1f} s", flush=True)
        print("\n[2/3] segment runs (SegmentService.run: compute, diff, write members and feed)", flush=True)
        results = asyncio.run(run_segments(url, Path(data_dir), today))
        print("\n[3/3] baseline: the bare aggregate with psycopg", flush=True)
        base_rows, base_s = baseline(url, today)
        print(f"  {base_rows:,} cards in {base_s:.2f} s", flush=True)

    ok = all(r["changes"] == (0, 0) and r["count"] == r["members"] for r in results.values())
    ok = ok and results["SPEND90"]["members"] == base_rows
    print(f"\n== Results: {args.cards:,} cards, {args.receipts:,} receipts ==")
    print(f"  {'segment':8} {'members':>10} {'first run s':>12} {'rerun s':>9} {'query s':>9} {'cards/s':>12}"
          f" {'rerun/baseline':>15}")
    for code, r in results.items():
        print(f"  {code:8} {r['members']:>10,} {r['first']:>12.2f} {r['second']:>9.2f} {r['query']:>9.2f}"
              f" {args.cards / r['second']:>12,.0f} {r['second'] / base_s:>14.1f}x   {r['name']}")
    print(f"  baseline: bare aggregate (spent > 150.00 in 90 days) {base_s:.2f} s, {base_rows:,} cards")
    print(f"  reruns changed nothing, query = run members, SPEND90 = baseline: {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

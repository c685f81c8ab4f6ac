"""How fast central issues a batch of cards, and that doing so takes bounded memory.

Issues ``--quantity`` cards (default 1,000,000) of a fresh programme through the IssuingService
(what ``tessera central issue-cards`` runs): card rows into the database in chunks, the production
file (tracks, barcode, eCode) beside them. Runs on a throwaway PostgreSQL database, or with
``--sqlite`` on an SQLite file in a temporary folder; both are removed at the end.

Run from the repository root: ``.venv/bin/python bench/issue_cards.py [--quantity N] [--sqlite]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import code_version, db_url, human_bytes, machine_cpu, pg_settings, rss_bytes, throwaway_db  # noqa: E402

from central.config import CentralConfig  # noqa: E402
from central.context import Central  # noqa: E402
from central.services import create_programme  # noqa: E402
from central.services.issuing import CHUNK, MAX_ISSUE  # noqa: E402

PROGRAMME = "ISSUEBENCH"
ROOT = Path(__file__).resolve().parent.parent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quantity", type=int, default=1_000_000, help="cards to issue (default 1,000,000)")
    p.add_argument("--sqlite", action="store_true", help="issue into an SQLite file instead of PostgreSQL")
    args = p.parse_args()
    if not 1 <= args.quantity <= MAX_ISSUE:
        p.error(f"--quantity is 1 to {MAX_ISSUE:,}")
    return args


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


async def issue(config: CentralConfig, quantity: int) -> dict:
    central = Central.open(config)
    try:
        async with central.db.begin() as conn:
            await create_programme(conn, {
                "code": PROGRAMME, "name": "Issue Bench Card", "kind": "gift", "currency": "EUR",
                "number_prefix": "7791", "number_length": 16, "nominal_values": [2500, 5000]})
        # Warm up the engine and the programme cache, so the memory baseline is the steady state.
        async with central.db.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        rss: list[tuple[int, int]] = []
        next_print = [0.0]

        def progress(done: int, total: int) -> None:
            rss.append((done, rss_bytes()))
            now = time.monotonic()
            if now >= next_print[0] or done == total:
                next_print[0] = now + 5
                rate = done / max(now - started, 1e-9)
                print(f"  {done:>12,} / {total:,} cards  {rate:10,.0f} cards/s  RSS {human_bytes(rss[-1][1])}",
                      flush=True)

        rss_before = rss_bytes()
        peak_before = peak_rss()
        cpu0, self0 = machine_cpu(), resource.getrusage(resource.RUSAGE_SELF)
        started = time.monotonic()
        async with central.db.begin() as conn:
            issue_id = await central.issuing.start_issue(conn, PROGRAMME, quantity, "bench")
        result = await central.issuing.run_issue(issue_id, progress)
        seconds = time.monotonic() - started
        cpu1, self1 = machine_cpu(), resource.getrusage(resource.RUSAGE_SELF)
        async with central.db.connect() as conn:
            count = (await conn.execute(sa.text("SELECT count(*) FROM cards WHERE issue_id = :i"),
                                        {"i": issue_id})).scalar_one()
            if central.db.sqlite:
                db_size = sum(p.stat().st_size for p in Path(config.data_dir).glob("central.db*"))
            else:
                db_size = (await conn.execute(sa.text("SELECT pg_total_relation_size('cards')"))).scalar_one()
        path = central.issuing.production_path(issue_id)
        with open(path, newline="") as f:
            lines = sum(1 for _ in f) - 1  # minus the header
        return {
            "result": result, "seconds": seconds, "count": count, "db_size": db_size,
            "file": path, "file_size": path.stat().st_size, "file_lines": lines, "rss": rss,
            "rss_before": rss_before, "peak_before": peak_before, "peak": peak_rss(),
            "cpu_self": (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime),
            "machine_busy": (cpu1[0] - cpu0[0]) / max(cpu1[1] - cpu0[1], 1),
        }
    finally:
        await central.close()


def main() -> int:
    args = parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="tessera-issue-bench-"))
    backend = "SQLite" if args.sqlite else "PostgreSQL"
    print(f"Tessera card issuing benchmark: {args.quantity:,} cards on {backend}"
          f" (chunks of {CHUNK:,}; data in {data_dir})")
    print(f"  code: {code_version()}", flush=True)
    if not args.sqlite:
        s = pg_settings()
        print(f"  PostgreSQL {s['server_version']} fsync={s['fsync']} synchronous_commit={s['synchronous_commit']}"
              f" shared_buffers={s['shared_buffers']}", flush=True)
    try:
        with (contextlib.nullcontext(None) if args.sqlite else throwaway_db("tessera_issue_bench")) as dbname:
            url = f"sqlite:///{data_dir}/central.db" if args.sqlite else db_url(dbname)
            # Migrate in a child process, so this process's peak RSS is the issuing's own.
            subprocess.run([str(ROOT / ".venv" / "bin" / "tessera"), "central", "migrate", "--database-url", url,
                            "--data-dir", str(data_dir)], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            config = CentralConfig(database_url=url, data_dir=data_dir, scheduler=False)
            out = asyncio.run(issue(config, args.quantity))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    r = out["result"]
    rss = out["rss"]
    first = next((b for done, b in rss if done >= min(args.quantity, 5 * CHUNK)), rss[0][1]) if rss else 0
    last = rss[-1][1] if rss else 0
    ok = out["count"] == args.quantity == r["generated"] == out["file_lines"] and r["status"] == "completed"
    print(f"\n== Results: {args.quantity:,} cards on {backend} ==")
    print(f"  issue {r['id']}: {r['first_number']} .. {r['last_number']}, status {r['status']}")
    print(f"  total seconds:          {out['seconds']:10.1f}")
    print(f"  cards/s:                {args.quantity / out['seconds']:10,.0f}")
    share = 100 * out["cpu_self"] / out["seconds"]
    print(f"  CPU of this process:    {out['cpu_self']:10.1f} s  ({share:.0f} % of one CPU;"
          f" machine busy {100 * out['machine_busy']:.0f} % of {os.cpu_count()} CPUs)")
    print(f"  peak RSS (ru_maxrss):   {human_bytes(out['peak']):>12}"
          f"  (before issuing: RSS {human_bytes(out['rss_before'])}, peak so far {human_bytes(out['peak_before'])})")
    print(f"  RSS after {min(args.quantity, 5 * CHUNK):,} cards: {human_bytes(first)}; at the end: {human_bytes(last)};"
          f" growth over the rest: {human_bytes(max(last - first, 0))}")
    print(f"  production file:        {human_bytes(out['file_size']):>12}  ({out['file_size']:,} bytes,"
          f" {out['file_size'] / args.quantity:.0f} bytes/card, {out['file_lines']:,} card lines)")
    print(f"  database size of cards: {human_bytes(out['db_size']):>12}"
          f"  ({'the SQLite files' if args.sqlite else 'table + indexes'})")
    print(f"  cards in the database = quantity = lines in the file: {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

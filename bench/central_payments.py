"""Till throughput of the central server on PostgreSQL, against pgbench's TPC-B-like baseline.

1. pgbench (built-in TPC-B-like script) on a throwaway database: the tps this machine's PostgreSQL
   manages for small read-write transactions.
2. A throwaway Tessera database: migrated, seeded with an open-value programme, a store, a till and
   N active cards (issue -> pack -> authorize -> activate the pack with a starting value).
3. ``tessera central serve`` as a subprocess, and one load-generator process (this one) keeping
   ``--concurrency`` keep-alive requests in flight for ``--seconds``: ~75 % payments, ~10 % balance
   inquiries, ~10 % top-ups, ~5 % cancels of earlier approved payments; a fresh txn_id each.
4. The figures, the CPU split between client, server and PostgreSQL, and the ledger invariant
   (every account's balance and held equal the sums of its entries).

Run from the repository root: ``.venv/bin/python bench/central_payments.py [--seconds 20 ...]``.
Only 127.0.0.1 traffic; both databases are dropped at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psycopg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    children,
    cmdline,
    code_version,
    db_url,
    machine_cpu,
    pg_settings,
    postgres_backends,
    proc_cpu,
    throwaway_db,
)

from central.config import CentralConfig  # noqa: E402
from central.context import Central  # noqa: E402
from central.db import upgrade  # noqa: E402
from central.services import Origin, create_programme  # noqa: E402
from central.services.issuing import MAX_PACK  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TESSERA = ROOT / ".venv" / "bin" / "tessera"
PROGRAMME = "BENCH"
STORE = "B001"
START_VALUE = 50_000  # every card starts with 500.00 EUR


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=20, help="measured load duration (default 20)")
    p.add_argument("--warmup", type=float, default=2, help="unmeasured load before it (default 2)")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    p.add_argument("--workers", type=int, default=1,
                   help="central server processes (default 1: on 2 cores PostgreSQL and the load need the other)")
    p.add_argument("--cards", type=int, default=20_000, help="active cards to spread the load on (default 20000)")
    p.add_argument("--pgbench-clients", type=int, default=16, help="pgbench -c (default 16)")
    p.add_argument("--pgbench-seconds", type=float, help="pgbench -T (default: --seconds)")
    p.add_argument("--scale", type=int, default=10, help="pgbench -i -s (default 10)")
    p.add_argument("--skip-pgbench", action="store_true", help="no baseline (ratios are not printed)")
    p.add_argument("--log-level", default="INFO",
                   help="the server's log level (default INFO, the product default: one access-log line per request)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the request mix")
    p.add_argument("--profile", metavar="DIR",
                   help="sample the server workers with py-spy (pip install py-spy) during the measured window;"
                        " raw stacks go to DIR and the hottest functions are printed")
    args = p.parse_args()
    if args.seconds <= 0 or args.concurrency < 1 or args.workers < 1 or args.cards < 1:
        p.error("seconds, concurrency, workers and cards must be positive")
    args.pgbench_seconds = max(1, round(args.pgbench_seconds or args.seconds))
    return args


# -- pgbench baseline -----------------------------------------------------------------------------


def pgbench_baseline(args: argparse.Namespace) -> dict:
    url = db_url("x")
    host, port = re.match(r"postgresql://[^@]*@([^:/]+):?(\d*)/", url).groups()
    user = re.match(r"postgresql://([^@:]+)", url).group(1)
    conn_args = ["-h", host, "-p", port or "5432", "-U", user]
    with throwaway_db("tessera_pgbench") as name:
        t0 = time.monotonic()
        subprocess.run(["pgbench", *conn_args, "-i", "-q", "-s", str(args.scale), name], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        init_s = time.monotonic() - t0
        cpu0 = machine_cpu()
        out = subprocess.run(["pgbench", *conn_args, "-c", str(args.pgbench_clients), "-j", "2",
                              "-T", str(args.pgbench_seconds), name],
                             check=True, capture_output=True, text=True)
        cpu1 = machine_cpu()
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.stdout)
    if not m:
        raise SystemExit(f"could not read pgbench's tps from:\n{out.stdout}\n{out.stderr}")
    lat = re.search(r"latency average = ([\d.]+) ms", out.stdout)
    return {"tps": float(m.group(1)), "latency_avg_ms": float(lat.group(1)) if lat else None,
            "init_seconds": init_s, "cpu_busy": (cpu1[0] - cpu0[0]) / max(cpu1[1] - cpu0[1], 1)}


# -- seeding ---------------------------------------------------------------------------------------


async def seed(config: CentralConfig, n_cards: int) -> dict:
    """Programme, store, till and ``n_cards`` active cards; returns the till token and card numbers."""
    timings = {}
    central = Central.open(config)
    try:
        t0 = time.monotonic()
        async with central.db.begin() as conn:
            await create_programme(conn, {
                "code": PROGRAMME, "name": "Bench Card", "kind": "gift", "currency": "EUR",
                "number_prefix": "7790", "number_length": 16, "nominal_values": [], "min_amount": 100,
                "max_amount": 1_000_000, "topup_allowed": True, "max_balance": 10**11, "validity_months": 36})
            await central.admin.create_store(conn, STORE, "Bench Store")
            till = await central.admin.create_terminal(conn, "till", "bench-till", STORE)
            issue_id = await central.issuing.start_issue(conn, PROGRAMME, n_cards, "bench")
        issue = await central.issuing.run_issue(issue_id)
        timings["issue"] = time.monotonic() - t0
        async with central.db.connect() as conn:
            numbers = (await conn.execute(sa.text("SELECT number FROM cards WHERE issue_id = :i ORDER BY number"),
                                          {"i": issue_id})).scalars().all()
        assert len(numbers) == n_cards == issue["generated"], (len(numbers), n_cards, issue)

        # Packs of at most MAX_PACK (and a few of them, so activation runs on several connections).
        size = min(MAX_PACK, max(1000, -(-n_cards // 8)))
        t0 = time.monotonic()
        pack_ids = []
        for i in range(0, n_cards, size):
            chunk = numbers[i:i + size]
            async with central.db.begin() as conn:
                pack = await central.issuing.create_pack(conn, actor="bench", store_code=STORE,
                                                         first_number=chunk[0], last_number=chunk[-1])
                await central.issuing.authorize_pack(conn, pack["id"])
                pack_ids.append(pack["id"])
        timings["pack"] = time.monotonic() - t0
        t0 = time.monotonic()
        # Activation is CPU-bound Python: one process per CPU, each activating its share of the packs.
        procs = max(1, min(len(pack_ids), os.cpu_count() or 1))
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(procs, mp_context=ctx) as pool:
            activated = sum(pool.map(_activate_packs, [config] * procs,
                                     [pack_ids[i::procs] for i in range(procs)]))
        if activated != n_cards:
            raise SystemExit(f"activated {activated} of {n_cards} cards")
        timings["activate"] = time.monotonic() - t0
        return {"token": till["token"], "numbers": list(numbers), "timings": timings}
    finally:
        await central.close()


def _activate_packs(config: CentralConfig, pack_ids: list[int]) -> int:
    """Activate packs with the starting value (in a pool process); returns how many cards."""

    async def run() -> int:
        central = Central.open(config)
        try:
            origin = Origin("admin", actor="bench")
            results = await asyncio.gather(*(central.issuing.activate_pack(pid, START_VALUE, uuid.uuid4(), origin)
                                             for pid in pack_ids))
            return sum(r.get("activated", 0) for r in results)
        finally:
            await central.close()

    return asyncio.run(run())


# -- the server ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1:port (one per worker with SO_REUSEPORT)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return sum(1 for line in f.readlines()[1:] if line.split()[1] == want and line.split()[3] == "0A")


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log_path: Path

    def pids(self) -> list[int]:
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children(pid))
        return out

    def worker_pids(self) -> list[int]:
        """The processes that serve requests (the parent only supervises when workers > 1)."""
        found = [p for p in self.pids() if p != self.proc.pid and "resource_tracker" not in cmdline(p)]
        return found or [self.proc.pid]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own child's process group
                self.proc.wait(5)


def start_server(url: str, data_dir: Path, workers: int, log_level: str) -> Server:
    port = free_port()
    log_path = data_dir / "server.log"
    env = {**os.environ, "TESSERA_DATA_DIR": str(data_dir), "TESSERA_LOG_LEVEL": log_level}
    log = open(log_path, "wb")
    proc = subprocess.Popen([str(TESSERA), "central", "serve", "--database-url", url, "--host", "127.0.0.1",
                             "--port", str(port), "--workers", str(workers)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=data_dir)
    log.close()
    server = Server(proc, port, log_path)
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            server.stop()
            raise SystemExit(f"server did not come up in 60 s:\n{log_path.read_text()[-3000:]}")
        # Every worker must listen before the client connects, or SO_REUSEPORT puts all the
        # keep-alive connections on the first one for the whole run.
        if listeners(port) >= workers:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        return server
            except OSError:
                pass
        time.sleep(0.2)


# -- load ------------------------------------------------------------------------------------------

PAYMENT, BALANCE, TOPUP, CANCEL = "payment", "balance", "topup", "payment_cancel"
PATHS = {PAYMENT: "/api/v1/till/payment", BALANCE: "/api/v1/till/balance", TOPUP: "/api/v1/till/topup",
         CANCEL: "/api/v1/till/payment/cancel"}


@dataclass(slots=True)
class Sample:
    op: str
    start: float
    end: float
    status: int  # HTTP status; 0 for a transport error
    outcome: str  # approved | declined | ok | http_<status> | error:<kind>


def _run_fast(coro):
    """The load generator on uvloop when installed (as the server is): less of the machine's CPU
    goes to measuring."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


async def run_load(base: str, token: str, numbers: list[str], concurrency: int, warmup: float,
                   seconds: float, seed: int) -> tuple[list[Sample], float, float]:
    rng = random.Random(seed)
    paid: list[tuple[str, str]] = []  # approved payments not yet cancelled: (txn_id, card)
    samples: list[Sample] = []
    dumps, loads, uuid4, perf = json.dumps, json.loads, uuid.uuid4, time.perf_counter
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, keepalive_timeout=300,
                                     use_dns_cache=True)
    timeout = aiohttp.ClientTimeout(total=30)
    t_begin = perf()
    t_measure = t_begin + warmup
    t_end = t_measure + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        while perf() < t_end:
            r = rng.random()
            if r < 0.75 or (r >= 0.95 and not paid):
                op, body = PAYMENT, {"txn_id": str(uuid4()), "card_number": rng.choice(numbers),
                                     "amount": rng.randint(100, 5000)}
            elif r < 0.85:
                op, body = BALANCE, {"card_number": rng.choice(numbers)}
            elif r < 0.95:
                op, body = TOPUP, {"txn_id": str(uuid4()), "card_number": rng.choice(numbers),
                                   "amount": rng.randint(1000, 20000)}
            else:
                i = rng.randrange(len(paid))
                paid[i], paid[-1] = paid[-1], paid[i]
                original, card = paid.pop()
                op, body = CANCEL, {"txn_id": str(uuid4()), "original_txn_id": original, "card_number": card}
            data = dumps(body).encode()
            t0 = perf()
            try:
                async with session.post(PATHS[op], data=data, headers=headers) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                samples.append(Sample(op, t0, perf(), 0, f"error:{type(exc).__name__}"))
                continue
            t1 = perf()
            if status != 200:
                outcome = f"http_{status}"
            elif op == BALANCE:
                outcome = "ok" if loads(raw).get("found") else "declined"
            else:
                result = loads(raw)
                outcome = "approved" if result["approved"] else "declined"
                if op == PAYMENT and result["approved"]:
                    paid.append((body["txn_id"], body["card_number"]))
            samples.append(Sample(op, t0, t1, status, outcome))

    async with aiohttp.ClientSession(base_url=base, connector=connector, timeout=timeout,
                                     skip_auto_headers=("User-Agent",)) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    return samples, t_measure, t_end


# -- profiling -------------------------------------------------------------------------------------


def start_profilers(server: Server, out_dir: Path, delay: float, seconds: float) -> list[subprocess.Popen]:
    """py-spy on every worker for the measured window (started after ``delay``)."""
    py_spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    if not os.path.exists(py_spy):
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    out_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []

    def launch() -> None:
        for pid in server.worker_pids():
            procs.append(subprocess.Popen(
                [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "200",
                 "--format", "raw", "--nonblocking", "--function", "--output", str(out_dir / f"worker-{pid}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    timer = threading.Timer(delay, launch)
    timer.daemon = True
    timer.start()
    procs.append(timer)  # type: ignore[arg-type]
    return procs


def _package(frame: str) -> str:
    """'func (pkg/module.py:12)' -> 'pkg' (or the module for the standard library)."""
    where = frame.rpartition(" (")[2].rstrip(")")
    return where.split("/", 1)[0] if "/" in where else where.split(":", 1)[0]


def profile_report(out_dir: Path, top: int = 20) -> None:
    """Self time per package and per function, and inclusive time per function, over all workers."""
    own: Counter = Counter()
    packages: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    for path in sorted(out_dir.glob("worker-*.txt")):
        for line in path.read_text(errors="replace").splitlines():
            stack, _, n = line.rpartition(" ")
            if not n.isdigit():
                continue
            frames = stack.split(";")[1:]  # the first frame is the process's entry point
            if not frames:
                continue
            n = int(n)
            total += n
            own[frames[-1]] += n
            packages[_package(frames[-1])] += n
            for f in set(frames):
                inclusive[f] += n
    if not total:
        print("  (no py-spy samples)")
        return
    print(f"\n  py-spy: {total:,} samples of the workers (raw stacks in {out_dir}). These are wall-clock samples"
          " of running threads: on an oversubscribed machine a thread preempted right after waking PostgreSQL"
          " (libpq send) counts too, so compare with the CPU figures above.")
    print("  self time by package:")
    for p, n in packages.most_common(8):
        print(f"    {100 * n / total:5.1f} %  {p}")
    print("  top self time:")
    for f, n in own.most_common(top):
        print(f"    {100 * n / total:5.1f} %  {f}")
    print("  top inclusive time (below the event loop):")
    shown = 0
    for f, n in inclusive.most_common():
        if _package(f) in ("multiprocessing", "asyncio", "<string>") or "run_app" in f or "_serve_worker" in f:
            continue
        print(f"    {100 * n / total:5.1f} %  {f}")
        shown += 1
        if shown == top:
            break


# -- report ----------------------------------------------------------------------------------------


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def latency_row(name: str, values: list[float]) -> str:
    v = sorted(x * 1000 for x in values)
    return (f"  {name:<16} {len(v):>8,}  {pct(v, 50):>7.2f} {pct(v, 90):>7.2f} {pct(v, 99):>7.2f}"
            f" {pct(v, 99.9):>8.2f} {(v[-1] if v else float('nan')):>8.2f}")


def check_ledger(url: str) -> dict:
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        bad = conn.execute("""
            SELECT count(*) FROM accounts a
            LEFT JOIN (SELECT account_id, sum(amount) AS amount, sum(held_delta) AS held
                       FROM entries GROUP BY account_id) e ON e.account_id = a.id
            WHERE a.balance <> coalesce(e.amount, 0) OR a.held <> coalesce(e.held, 0)""").fetchone()[0]
        accounts = conn.execute("SELECT count(*) FROM accounts").fetchone()[0]
        negative = conn.execute("SELECT count(*) FROM accounts WHERE balance - held < 0").fetchone()[0]
        ops = dict(conn.execute("SELECT kind || ':' || approved, count(*) FROM operations GROUP BY 1").fetchall())
        entries = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    return {"bad": bad, "accounts": accounts, "negative": negative, "ops": ops, "entries": entries}


def main() -> int:
    args = parse_args()
    settings = pg_settings()
    print("Tessera central till benchmark", flush=True)
    print(f"  settings: seconds={args.seconds:g} warmup={args.warmup:g} concurrency={args.concurrency}"
          f" workers={args.workers} cards={args.cards:,} pgbench: -s {args.scale} -c {args.pgbench_clients}"
          f" -j 2 -T {args.pgbench_seconds} server log level={args.log_level} seed={args.seed}")
    print(f"  machine: {os.cpu_count()} CPUs; PostgreSQL {settings['server_version']} fsync={settings['fsync']}"
          f" synchronous_commit={settings['synchronous_commit']} shared_buffers={settings['shared_buffers']}"
          f" max_connections={settings['max_connections']}; Python {sys.version.split()[0]}")
    print(f"  code: {code_version()}", flush=True)

    baseline = None
    if not args.skip_pgbench:
        print(f"\n[1/4] pgbench baseline (-i -s {args.scale}, then -c {args.pgbench_clients} -j 2"
              f" -T {args.pgbench_seconds}) ...", flush=True)
        baseline = pgbench_baseline(args)
        print(f"      tps {baseline['tps']:,.1f}, latency avg {baseline['latency_avg_ms']} ms,"
              f" machine CPU busy {100 * baseline['cpu_busy']:.0f} %", flush=True)

    data_dir = Path(tempfile.mkdtemp(prefix="tessera-bench-"))
    server = None
    try:
        with throwaway_db("tessera_bench") as dbname:
            url = db_url(dbname)
            try:
                print(f"\n[2/4] seeding {dbname}: migrate, programme, store, till, {args.cards:,} active cards ...",
                      flush=True)
                t0 = time.monotonic()
                upgrade(url)
                config = CentralConfig(database_url=url, data_dir=data_dir, scheduler=False)
                seeded = asyncio.run(seed(config, args.cards))
                tm = seeded["timings"]
                print(f"      done in {time.monotonic() - t0:.1f} s (issue {tm['issue']:.1f} s,"
                      f" packs {tm['pack']:.1f} s, activation {tm['activate']:.1f} s)", flush=True)

                print(f"\n[3/4] serving with {args.workers} worker(s), {args.concurrency} requests in flight for"
                      f" {args.warmup:g} s warm-up + {args.seconds:g} s ...", flush=True)
                server = start_server(url, data_dir, args.workers, args.log_level)
                server_pids = server.pids()
                worker_pids = server.worker_pids()
                backends0 = {p: proc_cpu(p) for p in postgres_backends(dbname)}
                server0 = {p: proc_cpu(p) for p in server_pids}
                self0 = resource.getrusage(resource.RUSAGE_SELF)
                profilers = (start_profilers(server, Path(args.profile), args.warmup, args.seconds)
                             if args.profile else [])
                mach0 = machine_cpu()
                samples, t_measure, t_end = _run_fast(run_load(
                    f"http://127.0.0.1:{server.port}", seeded["token"], seeded["numbers"], args.concurrency,
                    args.warmup, args.seconds, args.seed))
                mach1 = machine_cpu()
                self1 = resource.getrusage(resource.RUSAGE_SELF)
                server1 = {p: proc_cpu(p) for p in server.pids()}
                backends1 = {p: proc_cpu(p) for p in postgres_backends(dbname)}
                wall = time.perf_counter() - (t_measure - args.warmup)
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=5) as r:
                    grouping = json.loads(r.read())["group_commit"]  # of the worker that answers
                for prof in profilers:
                    if isinstance(prof, subprocess.Popen):
                        try:
                            prof.wait(30)
                        except subprocess.TimeoutExpired:
                            prof.kill()
                server.stop()
                log_text = server.log_path.read_text(errors="replace")
                server_errors = [line for line in log_text.splitlines() if "level=error" in line]

                print("\n[4/4] checking the ledger ...", flush=True)
                ledger = check_ledger(url)
            finally:
                if server is not None:
                    server.stop()  # before the database goes
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    # -- figures ------------------------------------------------------------------------------------
    window = [s for s in samples if s.start >= t_measure and s.end <= t_end]
    measured = t_end - t_measure
    by_op: dict[str, list[Sample]] = defaultdict(list)
    for s in window:
        by_op[s.op].append(s)
    ok = [s for s in window if s.status == 200]
    errors = [s for s in samples if s.status != 200]
    outcomes = Counter((s.op, s.outcome) for s in window)
    payments_ps = sum(1 for s in by_op[PAYMENT] if s.status == 200) / measured
    all_ps = len(ok) / measured

    print("\n== Results (measured window: %.1f s after %.1f s warm-up) ==" % (measured, args.warmup))
    print(f"  payments/s (approved + declined): {payments_ps:10,.1f}")
    print(f"  all till requests/s (HTTP 200):   {all_ps:10,.1f}")
    print(f"  errors (non-200 or transport), whole run incl. warm-up: {len(errors)}"
          + (f"  {dict(Counter(s.outcome for s in errors))}" if errors else ""))
    print(f"  server log lines at level=error: {len(server_errors)}")
    if server_errors:
        for line in server_errors[:3]:
            print("    " + line[:300])
    print("\n  outcomes in window:")
    for op in (PAYMENT, BALANCE, TOPUP, CANCEL):
        parts = ", ".join(f"{o} {n:,}" for (o_op, o), n in sorted(outcomes.items()) if o_op == op)
        print(f"    {op:<16} {len(by_op[op]):>8,}  ({parts})")
    print("\n  latency ms         count      p50     p90     p99    p99.9      max")
    print(latency_row("all", [s.end - s.start for s in ok]))
    for op in (PAYMENT, BALANCE, TOPUP, CANCEL):
        print(latency_row(op, [s.end - s.start for s in by_op[op] if s.status == 200]))

    if baseline:
        print(f"\n  pgbench tps:                          {baseline['tps']:10,.1f}"
              f"  (latency avg {baseline['latency_avg_ms']} ms)")
        print(f"  payments/s / pgbench tps:             {payments_ps / baseline['tps']:10.3f}")
        print(f"  all till requests/s / pgbench tps:    {all_ps / baseline['tps']:10.3f}")

    def split(after: dict, before: dict) -> tuple[float, float]:
        user = sum(u - before.get(p, (0.0, 0.0))[0] for p, (u, _) in after.items())
        system = sum(k - before.get(p, (0.0, 0.0))[1] for p, (_, k) in after.items())
        return user, system

    cpu = {
        "load generator (this process)": (self1.ru_utime - self0.ru_utime, self1.ru_stime - self0.ru_stime),
        "central server processes": split(server1, server0),
        "PostgreSQL backends of the db": split(backends1, backends0),
    }
    busy = (mach1[0] - mach0[0]) / max(mach1[1] - mach0[1], 1)
    cores = os.cpu_count() or 1
    n = max(len(samples), 1)
    print(f"\n  CPU during the load ({wall:.1f} s wall, {cores} CPUs = {cores * wall:.0f} CPU-s):"
          f" machine busy {100 * busy:.0f} %")
    print(f"    {'':<34} {'CPU-s':>6} {'user':>6} {'sys':>6}  per request")
    for name, (user, system) in cpu.items():
        print(f"    {name:<34} {user + system:6.1f} {user:6.1f} {system:6.1f}  {1000 * (user + system) / n:.3f} ms")
    per_worker = [sum(server1[p]) - sum(server0.get(p, (0.0, 0.0))) for p in worker_pids if p in server1]
    if len(per_worker) > 1:
        print(f"    {'  per worker':<34} " + ", ".join(f"{w:.1f}" for w in per_worker))
    other = busy * cores * wall - sum(u + k for u, k in cpu.values())
    print(f"    {'everything else on the machine':<34} {max(other, 0):6.1f}"
          "                (other processes, PostgreSQL's background writers)")

    # Every request the client saw answered must be in the ledger as exactly one operation.
    sent = Counter((s.op, s.outcome) for s in samples if s.status == 200 and s.op != BALANCE)
    recorded = ledger["ops"]
    mismatch = []
    for op in (PAYMENT, TOPUP, CANCEL):
        for outcome, flag in (("approved", "true"), ("declined", "false")):
            got = recorded.get(f"{op}:{flag}", 0)
            if got != sent[(op, outcome)]:
                mismatch.append(f"{op} {outcome}: client {sent[(op, outcome)]}, ledger {got}")
    inv_ok = ledger["bad"] == 0 and ledger["negative"] == 0
    if grouping["batches"]:
        print(f"\n  group commit (one worker's counters): {grouping['operations']:,} operations in"
              f" {grouping['batches']:,} shared transactions, {grouping['operations'] / grouping['batches']:.1f}"
              " per transaction")
    print(f"\n  ledger invariant (balance = sum(entries.amount), held = sum(entries.held_delta)) over"
          f" {ledger['accounts']:,} accounts, {ledger['entries']:,} entries: {'OK' if inv_ok else 'FAIL'}"
          + ("" if inv_ok else f" ({ledger['bad']} accounts differ, {ledger['negative']} negative)"))
    if errors:
        print("  operations recorded vs answers seen: not compared (some requests failed)")
    else:
        print(f"  operations recorded vs answers seen: {'OK' if not mismatch else 'FAIL ' + '; '.join(mismatch)}")
    if args.profile:
        profile_report(Path(args.profile))
    return 0 if inv_ok and not mismatch else 1


if __name__ == "__main__":
    sys.exit(main())

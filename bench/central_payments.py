"""Till throughput of the central server on PostgreSQL, against pgbench's TPC-B-like baseline.

1. pgbench (built-in TPC-B-like script) on a throwaway database: the tps this machine's PostgreSQL
   manages for small read-write transactions.
2. A throwaway Tessera database: migrated, seeded with an open-value programme, a store, a till and
   N active cards (issue -> pack -> authorize -> activate the pack with a starting value).
3. ``tessera central serve`` as a subprocess, and a load generator keeping ``--concurrency`` keep-alive
   requests in flight for ``--seconds``: ~75 % payments, ~10 % balance inquiries, ~10 % top-ups, ~5 %
   cancels of earlier approved payments; a fresh txn_id each. ``--load wrk`` (the default when ``wrk`` is
   on PATH) runs wrk with a Lua script making that mix; ``--load python`` runs aiohttp in this process.
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
    p.add_argument("--workers", type=int, default=2,
                   help="central server processes (default 2; with the python load generator 1 does as well)")
    p.add_argument("--cards", type=int, default=20_000, help="active cards to spread the load on (default 20000)")
    p.add_argument("--pgbench-clients", type=int, default=16, help="pgbench -c (default 16)")
    p.add_argument("--pgbench-seconds", type=float, help="pgbench -T (default: --seconds)")
    p.add_argument("--scale", type=int, default=10, help="pgbench -i -s (default 10)")
    p.add_argument("--skip-pgbench", action="store_true", help="no baseline (ratios are not printed)")
    p.add_argument("--log-level", default="INFO",
                   help="the server's log level (default INFO, the product default: one access-log line per request)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the request mix")
    p.add_argument("--load", choices=("wrk", "python"),
                   help="load generator: wrk (C, a Lua script makes the mix; whole seconds only) or python (aiohttp"
                        " in this process, ~0.25 ms CPU per request taken from the server); default wrk when it is"
                        " on PATH, else python")
    p.add_argument("--profile", metavar="DIR",
                   help="sample the server workers with py-spy (pip install py-spy) during the measured window;"
                        " raw stacks go to DIR and the hottest functions are printed")
    args = p.parse_args()
    if args.seconds <= 0 or args.concurrency < 1 or args.workers < 1 or args.cards < 1:
        p.error("seconds, concurrency, workers and cards must be positive")
    args.pgbench_seconds = max(1, round(args.pgbench_seconds or args.seconds))
    args.load_note = ""
    args.wrk = shutil.which("wrk")
    if args.load is None:
        args.load = "wrk" if args.wrk else "python"
        if not args.wrk:
            args.load_note = "wrk is not on PATH (apt-get install wrk): the load comes from the Python generator"
    elif args.load == "wrk" and not args.wrk:
        args.load = "python"
        args.load_note = "--load wrk, but wrk is not on PATH (apt-get install wrk): the Python generator instead"
    if args.load == "wrk":  # wrk takes whole seconds
        args.seconds, args.warmup = max(1, round(args.seconds)), max(0, round(args.warmup))
        args.wrk_threads = min(2, args.concurrency)
        args.wrk_connections = args.concurrency - args.concurrency % args.wrk_threads
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


# -- load with wrk ---------------------------------------------------------------------------------

# The same mix as run_load, for wrk (one Lua state per wrk thread; setup and done run in the main one).
# init(args): args[1] the card-number file (one per line), args[2] a number unique to this wrk run, args[3]
# the seed. txn_id = <run>-<thread>-4<random>-<variant+random>-<per-thread counter>: unique across runs and
# threads. response() reads the decision from the JSON answer to count outcomes and to remember approved
# payments (with their card: the answer masks it) for later cancels, as the Python generator does. wrk
# calls request() once more in thread 1 to check the script and never sends that one: "sent" counts it.
WRK_SCRIPT = r"""
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

local PAYMENT, BALANCE = "/api/v1/till/payment", "/api/v1/till/balance"
local TOPUP, CANCEL = "/api/v1/till/topup", "/api/v1/till/payment/cancel"
local random, format = math.random, string.format
local cards, n_cards, run, counter
local pending = {}                -- txn_id of a payment in flight -> its card
local paid_txn, paid_card = {}, {} -- approved payments not cancelled yet

function init(args)
  cards = {}
  for line in io.lines(args[1]) do
    if #line > 0 then cards[#cards + 1] = line end
  end
  n_cards = #cards
  run = tonumber(args[2])
  math.randomseed(tonumber(args[3]) * 1000 + id)
  counter = 0
  counts = {}  -- global: done() collects it with thread:get
end

local function bump(key)
  counts[key] = (counts[key] or 0) + 1
end

local function txn_id()
  counter = counter + 1
  return format("%08x-%04x-4%03x-%04x-%012x", run, id, random(0, 4095), 32768 + random(0, 16383), counter)
end

function request()
  local r, n = random(), #paid_txn
  local path, body
  if r < 0.75 or (r >= 0.95 and n == 0) then
    local txn, card = txn_id(), cards[random(n_cards)]
    pending[txn] = card
    path, body = PAYMENT, format('{"txn_id":"%s","card_number":"%s","amount":%d}', txn, card, random(100, 5000))
    bump("sent:payment")
  elseif r < 0.85 then
    path, body = BALANCE, format('{"card_number":"%s"}', cards[random(n_cards)])
    bump("sent:balance")
  elseif r < 0.95 then
    path, body = TOPUP, format('{"txn_id":"%s","card_number":"%s","amount":%d}', txn_id(), cards[random(n_cards)],
                               random(1000, 20000))
    bump("sent:topup")
  else
    local i = random(n)
    local txn, card = paid_txn[i], paid_card[i]
    paid_txn[i], paid_card[i] = paid_txn[n], paid_card[n]
    paid_txn[n], paid_card[n] = nil, nil
    path, body = CANCEL, format('{"txn_id":"%s","original_txn_id":"%s","card_number":"%s"}', txn_id(), txn, card)
    bump("sent:payment_cancel")
  end
  return wrk.format("POST", path, nil, body)
end

function response(status, headers, body)
  if status ~= 200 then
    bump("http_" .. status)
    return
  end
  local op = body:match('"operation":%s*"([%w_]+)"')
  if op == nil then  -- a balance inquiry
    bump(body:find('"found":%s*true') and "balance:ok" or "balance:declined")
    return
  end
  local approved = body:match('"approved":%s*(%a+)') == "true"
  bump(op .. (approved and ":approved" or ":declined"))
  if op == "payment" then
    local txn = body:match('"txn_id":%s*"([%x-]+)"')
    local card = pending[txn]
    if card then
      pending[txn] = nil
      if approved then
        paid_txn[#paid_txn + 1], paid_card[#paid_card + 1] = txn, card
      end
    end
  end
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for key, n in pairs(thread:get("counts")) do total[key] = (total[key] or 0) + n end
  end
  for key, n in pairs(total) do io.write(format("TESSERA count %s %.0f\n", key, n)) end
  io.write(format("TESSERA duration_us %.0f\n", summary.duration))
  io.write(format("TESSERA requests %.0f\n", summary.requests))
  io.write(format("TESSERA latency_us 99.9 %.0f\n", latency:percentile(99.9)))
  io.write(format("TESSERA latency_us max %.0f\n", latency.max))
end
"""

_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass
class WrkRun:
    seconds: float  # wrk's own measured duration
    requests: int  # answered requests, any status
    requests_per_s: float  # wrk's Requests/sec (any status)
    latency_ms: dict[str, float]  # "50", "75", "90", "99" (--latency), "99.9" and "max" (from done())
    socket_errors: dict[str, int]  # connect, read, write, timeout
    non_2xx: int
    counts: Counter  # "sent:<op>", "<op>:<outcome>" (HTTP 200), "http_<status>", over all threads
    cpu: tuple[float, float]  # wrk's user and system CPU seconds
    output: str

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


def run_wrk(wrk: str, base: str, token: str, script: Path, cards_file: Path, threads: int, connections: int,
            seconds: int, seed: int, run: int) -> WrkRun:
    """One wrk run of ``seconds`` with the till mix; its figures and its own CPU (wait4 on the child)."""
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "--latency",
           "-s", str(script), "-H", f"Authorization: Bearer {token}", "-H", "Content-Type: application/json",
           f"{base}/", "--", str(cards_file), str(run), str(seed)]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")

    def need(pattern: str) -> re.Match:
        m = re.search(pattern, text, re.MULTILINE)
        if proc.returncode != 0 or not m:
            raise SystemExit(f"wrk failed (exit {proc.returncode}) or its output is not understood:\n{text[-3000:]}")
        return m

    need(r"^\s*\d+ requests in ")
    latency = {m.group(1): float(m.group(2)) * _TIME_UNITS_MS[m.group(3)]
               for m in re.finditer(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE)}
    if len(latency) != 4:
        raise SystemExit(f"no latency distribution in wrk's output:\n{text[-3000:]}")
    for name in ("99.9", "max"):
        latency[name] = int(need(rf"^TESSERA latency_us {re.escape(name)} (\d+)$").group(1)) / 1000
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    counts = Counter({m.group(1): int(m.group(2))
                      for m in re.finditer(r"^TESSERA count (\S+) (\d+)$", text, re.MULTILINE)})
    result = WrkRun(
        seconds=int(need(r"^TESSERA duration_us (\d+)$").group(1)) / 1e6,
        requests=int(need(r"^TESSERA requests (\d+)$").group(1)),
        requests_per_s=float(need(r"^Requests/sec:\s+([\d.]+)").group(1)),
        latency_ms=latency,
        socket_errors=dict(zip(("connect", "read", "write", "timeout"),
                               (int(g) for g in sock.groups()) if sock else (0, 0, 0, 0))),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        counts=counts, cpu=(usage.ru_utime, usage.ru_stime), output=text)
    answered = sum(n for k, n in counts.items() if not k.startswith("sent:"))
    if answered != result.requests:  # every answer went through response()
        raise SystemExit(f"wrk counted {result.requests} answers, the Lua script {answered}:\n{text[-3000:]}")
    return result


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


@dataclass
class Figures:
    """What the CPU table and the ledger comparison need from either load generator."""
    payments_ps: float
    all_ps: float
    answered: int  # answers over the whole run (warm-up included), for CPU per request
    errors: int  # non-200 answers and transport errors over the whole run
    seen: Counter  # (op, outcome) of the HTTP-200 answers over the whole run
    sent: Counter  # op -> requests sent over the whole run (wrk stops with requests in flight)


def print_server_errors(server_errors: list[str]) -> None:
    print(f"  server log lines at level=error: {len(server_errors)}")
    for line in server_errors[:3]:
        print("    " + line[:300])


def python_figures(samples: list[Sample], t_measure: float, t_end: float, warmup: float,
                   server_errors: list[str]) -> Figures:
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

    print("\n== Results (measured window: %.1f s after %.1f s warm-up) ==" % (measured, warmup))
    print(f"  payments/s (approved + declined): {payments_ps:10,.1f}")
    print(f"  all till requests/s (HTTP 200):   {all_ps:10,.1f}")
    print(f"  errors (non-200 or transport), whole run incl. warm-up: {len(errors)}"
          + (f"  {dict(Counter(s.outcome for s in errors))}" if errors else ""))
    print_server_errors(server_errors)
    print("\n  outcomes in window:")
    for op in (PAYMENT, BALANCE, TOPUP, CANCEL):
        parts = ", ".join(f"{o} {n:,}" for (o_op, o), n in sorted(outcomes.items()) if o_op == op)
        print(f"    {op:<16} {len(by_op[op]):>8,}  ({parts})")
    print("\n  latency ms         count      p50     p90     p99    p99.9      max")
    print(latency_row("all", [s.end - s.start for s in ok]))
    for op in (PAYMENT, BALANCE, TOPUP, CANCEL):
        print(latency_row(op, [s.end - s.start for s in by_op[op] if s.status == 200]))
    answered = [s for s in samples if s.status == 200]
    return Figures(payments_ps, all_ps, len(samples), len(errors),
                   seen=Counter((s.op, s.outcome) for s in answered), sent=Counter(s.op for s in answered))


def wrk_figures(runs: list[WrkRun], args: argparse.Namespace, server_errors: list[str]) -> Figures:
    m = runs[-1]  # the measured run; a warm-up run before it when --warmup > 0
    c = m.counts
    payments = c["payment:approved"] + c["payment:declined"]
    payments_ps = payments / m.seconds
    all_ps = (m.requests - m.non_2xx) / m.seconds
    errors = sum(r.errors for r in runs)
    error_kinds = Counter()
    for r in runs:
        error_kinds.update({k: n for k, n in r.counts.items() if k.startswith("http_")})
        error_kinds.update({f"socket_{k}": n for k, n in r.socket_errors.items() if n})

    warm = f"after a separate {args.warmup} s warm-up run" if args.warmup else "without warm-up"
    print(f"\n== Results (measured wrk run: {m.seconds:.1f} s {warm}; wrk -t{args.wrk_threads}"
          f" -c{args.wrk_connections}) ==")
    print(f"  payments/s (approved + declined): {payments_ps:10,.1f}"
          f"  ({100 * payments / max(m.requests, 1):.1f} % of the answers)")
    print(f"  all till requests/s (HTTP 200):   {all_ps:10,.1f}  (wrk's Requests/sec, any status:"
          f" {m.requests_per_s:,.1f})")
    print(f"  errors (non-2xx or socket), whole run incl. warm-up: {errors}"
          + (f"  {dict(error_kinds)}" if errors else ""))
    print_server_errors(server_errors)
    print("\n  outcomes in the measured run:")
    for op in (PAYMENT, BALANCE, TOPUP, CANCEL):
        parts = sorted((k.split(":", 1)[1], n) for k, n in c.items() if k.startswith(op + ":"))
        print(f"    {op:<16} {sum(n for _, n in parts):>8,}  ({', '.join(f'{o} {n:,}' for o, n in parts)})")
    in_flight = sum(c[f"sent:{op}"] for op in (PAYMENT, BALANCE, TOPUP, CANCEL)) - m.requests
    print(f"    sent but unanswered when wrk stopped: {in_flight} (in flight; counts the one request per run wrk"
          " builds to check the script and never sends)")
    lat = m.latency_ms
    print("\n  latency ms (wrk)   count      p50     p75     p90     p99    p99.9      max")
    print(f"  {'all (any status)':<16} {m.requests:>8,}  {lat['50']:>7.2f} {lat['75']:>7.2f} {lat['90']:>7.2f}"
          f" {lat['99']:>7.2f} {lat['99.9']:>8.2f} {lat['max']:>8.2f}")
    print("  (wrk keeps one histogram, with its coordinated-omission correction: latencies above twice the mean"
          " add synthetic samples, so the tail reads higher than --load python's; per-operation figures need"
          " --load python)")
    seen, sent = Counter(), Counter()
    for r in runs:
        for key, n in r.counts.items():
            if key.startswith("sent:"):
                sent[key[5:]] += n
            elif ":" in key:
                seen[tuple(key.split(":", 1))] += n
    return Figures(payments_ps, all_ps, sum(r.requests for r in runs), errors, seen, sent)


def main() -> int:
    args = parse_args()
    settings = pg_settings()
    print("Tessera central till benchmark", flush=True)
    load = (f"wrk (-t{args.wrk_threads} -c{args.wrk_connections}, Lua mix)" if args.load == "wrk"
            else "python (aiohttp in this process)")
    print(f"  settings: seconds={args.seconds:g} warmup={args.warmup:g} concurrency={args.concurrency}"
          f" workers={args.workers} cards={args.cards:,} pgbench: -s {args.scale} -c {args.pgbench_clients}"
          f" -j 2 -T {args.pgbench_seconds} server log level={args.log_level} seed={args.seed} load={load}")
    if args.load_note:
        print(f"  note: {args.load_note}")
    if args.load == "wrk" and args.wrk_connections != args.concurrency:
        print(f"  note: wrk spreads connections evenly over its threads: {args.wrk_connections} connections")
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
                if args.load == "wrk":
                    script, cards_file = data_dir / "till_mix.lua", data_dir / "cards.txt"
                    script.write_text(WRK_SCRIPT)
                    cards_file.write_text("\n".join(seeded["numbers"]) + "\n")

                print(f"\n[3/4] serving with {args.workers} worker(s), {args.concurrency} requests in flight for"
                      f" {args.warmup:g} s warm-up + {args.seconds:g} s ({args.load} load) ...", flush=True)
                server = start_server(url, data_dir, args.workers, args.log_level)
                base = f"http://127.0.0.1:{server.port}"
                server_pids = server.pids()
                worker_pids = server.worker_pids()
                backends0 = {p: proc_cpu(p) for p in postgres_backends(dbname)}
                server0 = {p: proc_cpu(p) for p in server_pids}
                self0 = resource.getrusage(resource.RUSAGE_SELF)
                profilers = (start_profilers(server, Path(args.profile), args.warmup, args.seconds)
                             if args.profile else [])
                mach0 = machine_cpu()
                wall0 = time.perf_counter()
                if args.load == "wrk":
                    runs = [run_wrk(args.wrk, base, seeded["token"], script, cards_file, args.wrk_threads,
                                    args.wrk_connections, seconds, args.seed, run=i + 1)
                            for i, seconds in enumerate(s for s in (args.warmup, args.seconds) if s)]
                else:
                    samples, t_measure, t_end = _run_fast(run_load(
                        base, seeded["token"], seeded["numbers"], args.concurrency, args.warmup, args.seconds,
                        args.seed))
                mach1 = machine_cpu()
                self1 = resource.getrusage(resource.RUSAGE_SELF)
                server1 = {p: proc_cpu(p) for p in server.pids()}
                backends1 = {p: proc_cpu(p) for p in postgres_backends(dbname)}
                wall = time.perf_counter() - wall0
                with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
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
    if args.load == "wrk":
        fig = wrk_figures(runs, args, server_errors)
    else:
        fig = python_figures(samples, t_measure, t_end, args.warmup, server_errors)

    if baseline:
        print(f"\n  pgbench tps:                          {baseline['tps']:10,.1f}"
              f"  (latency avg {baseline['latency_avg_ms']} ms)")
        print(f"  payments/s / pgbench tps:             {fig.payments_ps / baseline['tps']:10.3f}")
        print(f"  all till requests/s / pgbench tps:    {fig.all_ps / baseline['tps']:10.3f}")

    def split(after: dict, before: dict) -> tuple[float, float]:
        user = sum(u - before.get(p, (0.0, 0.0))[0] for p, (u, _) in after.items())
        system = sum(k - before.get(p, (0.0, 0.0))[1] for p, (_, k) in after.items())
        return user, system

    this = (self1.ru_utime - self0.ru_utime, self1.ru_stime - self0.ru_stime)
    if args.load == "wrk":
        load_cpu = {"load generator (wrk)": tuple(sum(r.cpu[i] for r in runs) for i in (0, 1)),
                    "this process (waiting for wrk)": this}
    else:
        load_cpu = {"load generator (this process)": this}
    cpu = {
        **load_cpu,
        "central server processes": split(server1, server0),
        "PostgreSQL backends of the db": split(backends1, backends0),
    }
    busy = (mach1[0] - mach0[0]) / max(mach1[1] - mach0[1], 1)
    cores = os.cpu_count() or 1
    n = max(fig.answered, 1)
    print(f"\n  CPU during the load ({wall:.1f} s wall incl. warm-up, {cores} CPUs = {cores * wall:.0f} CPU-s):"
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

    # Every request the client saw answered must be in the ledger as exactly one operation. wrk stops with
    # requests in flight: the server may record those without the client seeing the answer, so per kind
    # the ledger may hold more than was seen, but never more than was sent.
    recorded = ledger["ops"]
    mismatch = []
    for op in (PAYMENT, TOPUP, CANCEL):
        got = {o: recorded.get(f"{op}:{flag}", 0) for o, flag in (("approved", "true"), ("declined", "false"))}
        saw = {o: fig.seen[(op, o)] for o in got}
        if any(got[o] < saw[o] for o in got) or sum(got.values()) > fig.sent[op]:
            mismatch.append(f"{op}: client saw approved {saw['approved']}, declined {saw['declined']} of"
                            f" {fig.sent[op]} sent; ledger approved {got['approved']}, declined {got['declined']}")
    seen_ops = sum(n for (op, _), n in fig.seen.items() if op != BALANCE)
    unseen = sum(fig.sent[op] for op in (PAYMENT, TOPUP, CANCEL)) - seen_ops
    extra = sum(n for kind, n in recorded.items() if kind.split(":")[0] in (PAYMENT, TOPUP, CANCEL)) - seen_ops
    inv_ok = ledger["bad"] == 0 and ledger["negative"] == 0
    if grouping["batches"]:
        print(f"\n  group commit (one worker's counters): {grouping['operations']:,} operations in"
              f" {grouping['batches']:,} shared transactions, {grouping['operations'] / grouping['batches']:.1f}"
              " per transaction")
    print(f"\n  ledger invariant (balance = sum(entries.amount), held = sum(entries.held_delta)) over"
          f" {ledger['accounts']:,} accounts, {ledger['entries']:,} entries: {'OK' if inv_ok else 'FAIL'}"
          + ("" if inv_ok else f" ({ledger['bad']} accounts differ, {ledger['negative']} negative)"))
    if fig.errors:
        print("  operations recorded vs answers seen: not compared (some requests failed)")
    else:
        note = (f" (wrk stopped with {unseen} operations in flight, unseen: the ledger holds {extra} of them)"
                if unseen else "")
        print(f"  operations recorded vs answers seen: {'OK' if not mismatch else 'FAIL ' + '; '.join(mismatch)}"
              + note)
    if args.profile:
        profile_report(Path(args.profile))
    return 0 if inv_ok and not mismatch else 1


if __name__ == "__main__":
    sys.exit(main())

"""Earning at a store's edge node, offline: a 50-line receipt against 1,000 active schemes, p99 at the edge.

1. Central on embedded SQLite (``tessera central serve``), seeded as ``edge_latency.py`` seeds it (``--cards``
   gift cards of 500.00 EUR in one store, offline limits raised, the store's sync secret), plus a loyalty
   programme LOYALTY with ``--loyalty-cards`` cards sold in that store and spread over three tiers (the staff
   override API). Through the admin API: the programme's plan (``--mode`` combination, tiers BRONZE, SILVER,
   GOLD), then ``--schemes`` earning schemes made by ``earning_eval.make_schemes`` (the same mix: every rule
   kind, items, item groups, stores, tiers, card types, date, weekday and time windows, multipliers,
   exclusions, priorities, earlier versions) turned into the publish JSON, in force from now on.
2. ``tessera edge serve`` for the store pulls cards and rules; then central and the edge are stopped, and the
   edge's file is kept as the sync left it. Central stays down from then on (as in ``edge_latency.py``).
3. Each run (``--runs``) starts a fresh edge process on a copy of that file, pointed at the stopped central,
   and waits for its first offline decision (a payment). Then:
   - the first receipt, timed apart: the edge builds its rules (``RulesCache``) inside that request;
   - in this process, what that build costs: the edge's rule rows read from its SQLite file, made
     ``RuleChange``s, ``LoyaltyRules`` and the programme's ``scheme_set`` compiled (median of ``--builds``);
   - the baseline: ``SchemeSet.evaluate`` of the very receipts the edge gets (store, tier and card type as
     the edge fills them in), one after the other, in this process;
   - three phases of ``--seconds`` at ``--rate`` requests per second, open loop (each request leaves at its
     scheduled time and its latency counts from then), each after ``--warmup`` seconds not counted:
     1.00 EUR gift-card payments (``POST /api/v1/till/payment``); receipts of ``--lines`` lines
     (``earning_eval.make_receipt``, random loyalty cards, times spread over the coming week) to
     ``POST /api/v1/till/receipts``; the payments again, with the receipts now in the edge's outbox.
4. Figures per run and their medians over the runs: p50/p95/p99/max of each, the ratios of the edge
   receipt's p99 to the pure evaluation's and to the payment's, the edge process's CPU per request.

Checks (exit status 0 only if they pass): every receipt and payment approved offline, and the points the edge
gave equal the pure evaluation's on every receipt.

Run from the repository root: ``.venv/bin/python bench/edge_earning.py [--rate 50 --seconds 20 --runs 3]``.
Only 127.0.0.1 traffic; everything lives in a temporary folder removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiohttp
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import code_version, proc_cpu  # noqa: E402
from central_payments import STORE, pct, start_server  # noqa: E402
from earning_eval import NOW as EVAL_NOW  # noqa: E402
from earning_eval import TIERS, TZ, make_receipt, make_schemes  # noqa: E402
from edge_latency import PASSWORD, configure, prepare_central, start_edge, until_offline, wait_edge  # noqa: E402

from central.config import CentralConfig  # noqa: E402
from central.context import Central  # noqa: E402
from central.db import upgrade  # noqa: E402
from central.services import Origin, create_programme  # noqa: E402
from core.loyalty import (  # noqa: E402
    Combination,
    EarningScheme,
    FixedPerLine,
    FixedPerReceipt,
    Percent,
    PerQuantity,
    PerValue,
    Receipt,
    ReceiptLine,
)
from edge.db.tables import loyalty_rules  # noqa: E402
from sync.loyalty import LoyaltyRules, RuleChange  # noqa: E402

# The loyalty programme's code is the card type the edge puts on its receipts: earning_eval's "LOYALTY"
# schemes apply to it, its "STAFF" and "PARTNER" ones do not.
LOYALTY = "LOYALTY"
# The edge's store plays earning_eval's store ST000: schemes listing ST000 list the edge's store instead.
EDGE_PLAYS = "ST000"
RULE_TYPES = {PerValue: "per_value", PerQuantity: "per_quantity", Percent: "percent", FixedPerLine: "fixed_per_line",
              FixedPerReceipt: "fixed_per_receipt"}
PLAN_TIERS = [{"code": "BRONZE", "rank": 1, "threshold": 0, "max_redemption_bps": 5000},
              {"code": "SILVER", "rank": 2, "threshold": 100_000, "max_redemption_bps": 7500},
              {"code": "GOLD", "rank": 3, "threshold": 1_000_000, "max_redemption_bps": 10000}]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=50, help="requests per second in each phase (default 50)")
    p.add_argument("--seconds", type=float, default=20, help="measured seconds per phase (default 20)")
    p.add_argument("--warmup", type=float, default=1, help="unmeasured seconds at the rate first (default 1)")
    p.add_argument("--runs", type=int, default=1, help="measured runs; medians are printed over them (default 1)")
    p.add_argument("--schemes", type=int, default=1000, help="earning schemes in force (default 1000)")
    p.add_argument("--lines", type=int, default=50, help="lines per receipt (default 50)")
    p.add_argument("--mode", choices=[m.value for m in Combination], default="max",
                   help="the plan's combination mode (default max)")
    p.add_argument("--cards", type=int, default=1000, help="gift cards for the payments (default 1000)")
    p.add_argument("--loyalty-cards", type=int, default=1000, help="loyalty cards for the receipts (default 1000)")
    p.add_argument("--builds", type=int, default=3, help="in-process rule rebuilds timed per run (default 3)")
    p.add_argument("--seed", type=int, default=1, help="random seed of schemes and receipts (default 1)")
    args = p.parse_args()
    if min(args.rate, args.seconds, args.runs, args.schemes, args.lines, args.cards, args.loyalty_cards,
           args.builds) <= 0 or args.warmup < 0:
        p.error("rate, seconds, runs, schemes, lines, cards, loyalty-cards and builds must be positive")
    return args


# -- the rules as head office publishes them ---------------------------------------------------------


def _window(owner, day_shift: timedelta) -> dict:
    """An earning_eval scheme's date, weekday and time window as JSON, its dates moved by ``day_shift``."""
    out: dict = {}
    for name in ("date_from", "date_to"):
        value: date | None = getattr(owner, name)
        if value is not None:
            out[name] = (value + day_shift).isoformat()
    if owner.weekdays:
        out["weekdays"] = sorted(owner.weekdays)
    if owner.time_from is not None:
        out["time_from"], out["time_to"] = owner.time_from.isoformat(), owner.time_to.isoformat()
    return out


def scheme_json(s: EarningScheme, valid_from: datetime, valid_to: datetime | None, day_shift: timedelta) -> dict:
    """The publish body of one earning_eval scheme version, in force over [valid_from, valid_to)."""
    rule = {"type": RULE_TYPES[type(s.rule)], **{k: v for k, v in asdict(s.rule).items() if v is not None}}
    c = s.criteria
    criteria = {name: sorted(getattr(c, name)) for name in ("customer_groups", "tiers", "card_types",
                                                            "store_groups", "items", "item_groups")
                if getattr(c, name)}
    if c.stores:
        criteria["stores"] = sorted(STORE if code == EDGE_PLAYS else code for code in c.stores)
    criteria.update(_window(c, day_shift))
    x = s.exclusions
    exclusions = {k: v for k, v in (("discounted", x.discounted), ("promotional", x.promotional),
                                    ("items", sorted(x.items)), ("item_groups", sorted(x.item_groups))) if v}
    body = {"code": s.code, "version": s.version, "valid_from": valid_from.isoformat(), "priority": s.priority,
            "rule": rule, "criteria": criteria, "exclusions": exclusions,
            "multipliers": [{"basis_points": m.basis_points, **_window(m, day_shift)} for m in s.multipliers]}
    if valid_to is not None:
        body["valid_to"] = valid_to.isoformat()
    return body


def scheme_bodies(schemes: list[EarningScheme], start: datetime, day_shift: timedelta) -> list[list[dict]]:
    """earning_eval's schemes as publish bodies, by code (versions in order). The versions in force start at
    ``start``; an earlier version (one code in five) ran the minute before, so validity still takes a lookup."""
    by_code: dict[str, list[EarningScheme]] = {}
    for s in schemes:
        by_code.setdefault(s.code, []).append(s)
    out = []
    for versions in by_code.values():
        if len(versions) == 1:
            out.append([scheme_json(versions[0], start, None, day_shift)])
        else:
            earlier, current = versions
            out.append([scheme_json(earlier, start - timedelta(minutes=1), start, day_shift),
                        scheme_json(current, start, None, day_shift)])
    return out


def describe(bodies: list[list[dict]]) -> str:
    """One line on the mix of the schemes in force."""
    current = [versions[-1] for versions in bodies]
    kinds = Counter(b["rule"]["type"] for b in current)
    crit = Counter(k for b in current for k in b["criteria"])
    return (f"{len(current):,} schemes ({sum(len(v) for v in bodies):,} versions): "
            + ", ".join(f"{n} {k}" for k, n in kinds.most_common()) + "; criteria on "
            + ", ".join(f"{k} {n}" for k, n in crit.most_common()) + f"; {sum(bool(b['multipliers']) for b in current)}"
            f" with multipliers, {sum(bool(b['exclusions']) for b in current)} with exclusions")


# -- setup -------------------------------------------------------------------------------------------


async def loyalty_cards(config: CentralConfig, count: int) -> list[str]:
    """Programme LOYALTY and ``count`` of its cards, packed for the store and sold with 1.00 of e-money."""
    async with Central.session(config) as central:
        async with central.db.begin() as conn:
            await create_programme(conn, {
                "code": LOYALTY, "name": "Bench Loyalty", "kind": "loyalty", "currency": "EUR",
                "number_prefix": "7001", "number_length": 16, "nominal_values": [], "min_amount": 1,
                "max_amount": 100_000, "topup_allowed": True, "validity_months": 36})
            issue_id = await central.issuing.start_issue(conn, LOYALTY, count, "bench")
        await central.issuing.run_issue(issue_id)
        async with central.db.begin() as conn:
            numbers = (await conn.execute(sa.text("SELECT number FROM cards WHERE issue_id = :i ORDER BY number"),
                                          {"i": issue_id})).scalars().all()
            pack = await central.issuing.create_pack(conn, actor="bench", store_code=STORE, first_number=numbers[0],
                                                     last_number=numbers[-1])
            await central.issuing.authorize_pack(conn, pack["id"])
        await central.issuing.activate_pack(pack["id"], 100, uuid.uuid4(), Origin("admin", actor="bench"))
    return list(numbers)


async def publish(base: str, mode: str, tiers: dict[str, str], bodies: list[list[dict]]) -> tuple[int, float]:
    """Plan, card tiers and schemes through the admin API; (the last rule version, seconds for the schemes)."""
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/api/v1/auth/login", json={"username": "bench", "password": PASSWORD}) as r:
            auth = {"Authorization": f"Bearer {(await r.json())['token']}"}

        async def post(path: str, body: dict) -> dict:
            async with s.post(base + path, json=body, headers=auth) as r:
                data = await r.json()
                if r.status != 200:
                    raise SystemExit(f"{path}: {r.status} {data}")
                return data

        await post("/api/v1/admin/loyalty/plans", {"programme": LOYALTY, "combination": mode, "tiers": {
            "basis": "turnover", "period_days": 365, "anchor": "2026-01-01T00:00:00Z", "tiers": PLAN_TIERS}})
        gate = asyncio.Semaphore(4)

        async def tier(number: str, code: str) -> None:
            async with gate:
                await post(f"/api/v1/admin/loyalty/cards/{number}/tier", {"tier": code, "reason": "bench"})

        await asyncio.gather(*(tier(n, t) for n, t in tiers.items()))
        last = 0

        async def scheme(versions: list[dict]) -> None:
            nonlocal last
            async with gate:
                for body in versions:  # a code's versions in order
                    last = max(last, (await post("/api/v1/admin/loyalty/schemes", body))["version"])

        t0 = time.monotonic()
        await asyncio.gather(*(scheme(v) for v in bodies))
        return last, time.monotonic() - t0


def edge_holds(edge_db: Path, last_version: int, loyalty: int) -> bool:
    """Whether the edge's file has every rule row up to ``last_version`` and every loyalty card with its tier."""
    engine = sa.create_engine(f"sqlite:///{edge_db}")
    try:
        with engine.connect() as conn:
            rules = conn.execute(sa.text("SELECT coalesce(max(version), 0) FROM loyalty_rules")).scalar_one()
            tiered = conn.execute(sa.text("SELECT count(*) FROM cards WHERE programme = :p AND tier IS NOT NULL"),
                                  {"p": LOYALTY}).scalar_one()
    except sa.exc.OperationalError:  # not migrated yet
        return False
    finally:
        engine.dispose()
    return rules >= last_version and tiered == loyalty


async def wait_synced(edge_db: Path, last_version: int, loyalty: int, seconds: float = 180) -> float:
    """Seconds until the edge's file holds the rules and the tiered cards (SystemExit after ``seconds``)."""
    t0 = time.monotonic()
    while not edge_holds(edge_db, last_version, loyalty):
        if time.monotonic() - t0 > seconds:
            raise SystemExit(f"the edge did not get the rules and cards in {seconds:.0f} s")
        await asyncio.sleep(0.25)
    return time.monotonic() - t0


# -- what is measured --------------------------------------------------------------------------------


def build_rules(edge_db: Path) -> tuple[dict[str, float], LoyaltyRules]:
    """What the edge's RulesCache does after a pull brought rule rows, step by step (seconds each)."""
    engine = sa.create_engine(f"sqlite:///{edge_db}")
    try:
        t = {}
        t0 = time.perf_counter()
        with engine.connect() as conn:
            rows = conn.execute(sa.select(loyalty_rules).order_by(loyalty_rules.c.version)).all()
        t["read rows"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        changes = [RuleChange(version=r.version, kind=r.kind, code=r.code, revision=r.revision, body=r.body,
                              retired=r.retired, at=r.at) for r in rows]
        t["RuleChange rows"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        rules = LoyaltyRules(changes)
        t["LoyaltyRules"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        rules.scheme_set(LOYALTY)
        t["scheme_set compile"] = time.perf_counter() - t0
        t["total"] = sum(t.values())
        return t, rules
    finally:
        engine.dispose()


async def open_loop(base: str, path: str, token: str, bodies: list[bytes], rate: float) -> tuple[list, list]:
    """POST each body at ``rate``/s, open loop; ([(seconds from its scheduled start, answer)], failures)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    done: list[tuple[float, dict]] = []
    failures: list[str] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=128)) as s:
        async def one(start: float, body: bytes) -> None:
            await asyncio.sleep(max(0.0, start - time.perf_counter()))
            try:
                async with s.post(base + path, data=body, headers=headers) as r:
                    data = await r.json()
            except aiohttp.ClientError as exc:
                failures.append(type(exc).__name__)
                return
            took = time.perf_counter() - start
            if r.status != 200:
                failures.append(f"http {r.status}: {data}")
            elif not data.get("approved") or data.get("decision") != "offline":
                failures.append(f"{data.get('decision')} {data.get('decline_code')}")
            done.append((took, data))

        t0 = time.perf_counter() + 0.1
        await asyncio.gather(*(one(t0 + i / rate, b) for i, b in enumerate(bodies)))
    return done, failures


def receipt_json(txn: str, number: str, r: Receipt, shift: timedelta) -> bytes:
    """The till's request body for an earning_eval receipt, its time moved by ``shift``."""
    lines = []
    for li in r.lines:
        line = {"item": li.item, "quantity": li.quantity, "value": li.value, "item_group": li.item_group}
        if li.discount:
            line["discount"] = li.discount
        if li.promotional:
            line["promotional"] = True
        lines.append(line)
    return json.dumps({"txn_id": txn, "card_number": number, "at": (r.at + shift).isoformat(), "currency": "EUR",
                       "lines": lines}).encode()


def as_edge_sees(r: Receipt, number: str, tier: str, shift: timedelta) -> Receipt:
    """The receipt the edge evaluates (edge.loyalty.receipt_offline): its store, the card's tier, the programme
    as card type, no store or customer groups."""
    return Receipt(id=r.id, card=number, store=STORE, at=r.at + shift, currency="EUR",
                   lines=tuple(ReceiptLine(li.item, li.quantity, li.value, li.item_group, li.discount, li.promotional)
                               for li in r.lines), tier=tier, card_type=LOYALTY)


def run_once(args, edge_base: str, edge_pid: int, edge_db: Path, token: str, gift: list[str],
             receipts: list[tuple[str, Receipt, Receipt]], shift: timedelta, rng: random.Random) -> dict:
    """One measured run on a fresh edge process, cut off from central; its figures."""
    out: dict = {}
    per_phase = int(args.rate * args.seconds)
    warm = int(args.rate * args.warmup)
    # The first receipt the edge sees offline: RulesCache builds the rules inside that request.
    first_number, first_raw, _ = receipts[0]
    cold, failures = asyncio.run(open_loop(edge_base, "/api/v1/till/receipts", token,
                                           [receipt_json(str(uuid.uuid4()), first_number, first_raw, shift)], 1.0))
    out["first receipt"] = cold[0][0] if cold else float("nan")
    if failures:
        raise SystemExit(f"first offline receipt: {failures}")
    builds = []
    for _ in range(args.builds):
        gc.collect()  # each build starts without the garbage of the one before (a collection inside skews it)
        builds.append(build_rules(edge_db))
    out["build"] = {k: statistics.median(b[0][k] for b in builds) for k in builds[0][0]}
    scheme_set = builds[-1][1].scheme_set(LOYALTY)
    out["schemes"] = len(builds[-1][1].schemes)

    measured = receipts[1:1 + per_phase]
    pure, pure_cpu, expected = [], [], []
    for _, _, seen in measured:
        t0, c0 = time.perf_counter(), time.thread_time()
        earning = scheme_set.evaluate(seen)
        pure.append(time.perf_counter() - t0)
        pure_cpu.append(time.thread_time() - c0)  # without the time this process waited for a CPU
        expected.append(earning.total)
    out["pure"], out["pure cpu time"] = pure, pure_cpu

    def phase(path: str, warm_bodies: list[bytes], bodies: list[bytes]) -> tuple[list, list, float]:
        """Warm-up, then the measured load: (answers, failures, edge CPU seconds per answer)."""
        asyncio.run(open_loop(edge_base, path, token, warm_bodies, args.rate))
        cpu0 = sum(proc_cpu(edge_pid))
        done, failures = asyncio.run(open_loop(edge_base, path, token, bodies, args.rate))
        return done, failures, (sum(proc_cpu(edge_pid)) - cpu0) / max(len(done), 1)

    def payments(n: int) -> list[bytes]:
        return [json.dumps({"txn_id": str(uuid.uuid4()), "card_number": rng.choice(gift), "amount": 100}).encode()
                for _ in range(n)]

    def receipt_bodies(chosen: list) -> list[bytes]:
        return [receipt_json(str(uuid.uuid4()), n, raw, shift) for n, raw, _ in chosen]

    out["failures"] = []
    done, failures, out["payment cpu"] = phase("/api/v1/till/payment", payments(warm), payments(per_phase))
    out["payment"] = [took for took, _ in done]
    out["failures"] += failures
    bodies = receipt_bodies(measured)
    done, failures, out["receipt cpu"] = phase("/api/v1/till/receipts", receipt_bodies(receipts[1 + per_phase:]),
                                               bodies)
    out["receipt"] = [took for took, _ in done]
    out["failures"] += failures
    by_txn = {json.loads(b)["txn_id"]: e for b, e in zip(bodies, expected, strict=True)}
    out["points differ"] = sum(1 for _, d in done if d.get("points_earned") != by_txn.get(d.get("txn_id")))
    out["points"] = sum(d.get("points_earned") or 0 for _, d in done) / max(len(done), 1)
    out["awards"] = sum(len(d.get("awards") or ()) for _, d in done) / max(len(done), 1)
    out["answer bytes"] = sum(len(json.dumps(d)) for _, d in done) / max(len(done), 1)
    # The same payments again, now that the outbox also holds the receipts (offline exposure is a sum over it).
    done, failures, out["payment after cpu"] = phase("/api/v1/till/payment", payments(warm), payments(per_phase))
    out["payment after"] = [took for took, _ in done]
    out["failures"] += failures
    out["backlog"] = backlog(edge_db)
    return out


def backlog(edge_db: Path) -> tuple[int, int]:
    """(outbox entries, their bytes) in the edge's file."""
    engine = sa.create_engine(f"sqlite:///{edge_db}")
    try:
        with engine.connect() as conn:
            n, size = conn.execute(sa.text("SELECT count(*), coalesce(sum(length(entry)), 0) FROM outbox")).one()
    finally:
        engine.dispose()
    return n, size


def fresh_copy(pristine: Path, edge_db: Path) -> None:
    """The edge's file as it was right after the sync (no offline decision yet)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{edge_db}{suffix}").unlink(missing_ok=True)
        if Path(f"{pristine}{suffix}").exists():
            shutil.copyfile(f"{pristine}{suffix}", f"{edge_db}{suffix}")


# -- report ------------------------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max of ``values``."""
    v = sorted(values)
    return {"p50": pct(v, 50), "p95": pct(v, 95), "p99": pct(v, 99), "max": v[-1]} if v else {}


def figures(run: dict) -> dict[str, float]:
    """The run's headline figures, in milliseconds (and plain ratios)."""
    f: dict[str, float] = {}
    for name in ("receipt", "payment", "payment after", "pure", "pure cpu time"):
        for k, v in stats(run[name]).items():
            f[f"{name} {k}"] = v * 1000
    f["receipt p99 / pure p99"] = f["receipt p99"] / f["pure p99"]
    f["receipt p99 / payment p99"] = f["receipt p99"] / f["payment p99"]
    f["receipt p50 / payment p50"] = f["receipt p50"] / f["payment p50"]
    f["first receipt"] = run["first receipt"] * 1000
    for k, v in run["build"].items():
        f[f"build {k}"] = v * 1000
    for k in ("receipt", "payment", "payment after"):
        f[f"{k} cpu"] = run[f"{k} cpu"] * 1000
    return f


LABELS = [("edge receipt (HTTP, offline)", "receipt"), ("edge payment (HTTP, offline)", "payment"),
          ("edge payment after the receipts", "payment after"), ("SchemeSet.evaluate, in-process", "pure"),
          ("SchemeSet.evaluate, its CPU time", "pure cpu time")]


def report(runs: list[dict], args) -> None:
    figs = [figures(r) for r in runs]
    med = {k: statistics.median(f[k] for f in figs) for k in figs[0]}
    head = f"medians of {len(runs)} runs" if len(runs) > 1 else "one run"
    print(f"\n  latency at {args.rate:g} requests/s, open loop ({head}; ms)")
    print(f"  {'':<34} {'n':>6} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8} {'edge CPU':>9}")
    for label, key in LABELS:
        n = statistics.median(len(r[key]) for r in runs)
        cpu = f"{med[f'{key} cpu']:>9.2f}" if f"{key} cpu" in med else ""
        print(f"  {label:<34} {n:>6,.0f} " + " ".join(f"{med[f'{key} {p}']:>8.3f}" for p in ("p50", "p95", "p99",
                                                                                            "max")) + cpu)
    n, size = runs[-1]["backlog"]
    print(f"  (the last payments ran with {n:,} entries, {size / 2**20:.1f} MiB, in the edge's outbox; edge CPU is the "
          f"edge process's CPU time per request, its background tasks included)")
    print(f"\n  edge receipt p99 / pure evaluation p99:  x{med['receipt p99 / pure p99']:.1f}")
    print(f"  edge receipt p99 / edge payment p99:     x{med['receipt p99 / payment p99']:.2f}  "
          f"(p50: x{med['receipt p50 / payment p50']:.2f})")
    print(f"  first offline receipt of a fresh edge process (rules built when it started): "
          f"{med['first receipt']:.0f} ms")
    build = "; ".join(f"{k[6:]} {med[k]:.1f}" for k in med if k.startswith("build ") and k != "build total")
    print(f"  rules rebuild of {runs[0]['schemes']:,} scheme versions, in-process: {med['build total']:.0f} ms "
          f"({build} ms)")
    r = runs[-1]
    print(f"  per receipt: {r['points']:,.0f} points from {r['awards']:.0f} awards, an answer of "
          f"{r['answer bytes'] / 1024:.1f} KiB")
    if len(runs) > 1:
        print("\n  per run (ms):")
        keys = ["receipt p50", "receipt p99", "payment p50", "payment p99", "payment after p99", "pure p50",
                "pure p99", "receipt p99 / pure p99", "receipt p99 / payment p99", "first receipt", "build total"]
        for k in keys:
            print(f"    {k:<28} " + "  ".join(f"{f[k]:>8.2f}" for f in figs) + f"   median {med[k]:.2f}")


def stop(edge) -> None:
    """Stop an edge process (SIGTERM: it closes its database cleanly)."""
    if edge.poll() is None:
        edge.send_signal(signal.SIGTERM)
        edge.wait(15)


def main() -> int:
    args = parse_args()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"edge earning: {args.schemes:,} schemes, {args.lines}-line receipts at {args.rate:g}/s for "
          f"{args.seconds:g} s per phase, {args.runs} run(s), mode {args.mode}; {os.cpu_count()} CPUs, load {load}")
    print(f"  code: {code_version()}")
    rng = random.Random(args.seed)
    schemes = make_schemes(args.schemes, rng)
    # Receipts fall in the week after tomorrow's local midnight, as earning_eval's fall in the week after its
    # NOW: every date window and weekday is moved by the same number of days.
    tomorrow = (datetime.now(TZ) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    shift = tomorrow - EVAL_NOW
    day_shift = timedelta(days=shift.days)
    per_phase, warm = int(args.rate * args.seconds), int(args.rate * args.warmup)
    raw = [make_receipt(n, args.lines, rng) for n in range(1 + per_phase + warm)]
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        url = f"sqlite:///{data_dir / 'central.db'}"
        config = CentralConfig(database_url=url, data_dir=data_dir, scheduler=False)
        upgrade(url)
        t0 = time.monotonic()
        seeded = asyncio.run(prepare_central(config, args.cards))
        numbers = asyncio.run(loyalty_cards(config, args.loyalty_cards))
        tiers = {n: rng.choice(TIERS) for n in numbers}
        print(f"  seeded {args.cards:,} gift cards and {len(numbers):,} loyalty cards in {time.monotonic() - t0:.1f} s")
        receipts = []
        for r in raw:
            n = rng.choice(numbers)
            receipts.append((n, r, as_edge_sees(r, n, tiers[n], shift)))
        server = start_server(url, data_dir, 1, "WARNING")
        edge = None
        runs: list[dict] = []
        try:
            base = f"http://127.0.0.1:{server.port}"
            secret = asyncio.run(configure(base))
            # Central takes versions starting at most a few minutes back: they start now.
            bodies = scheme_bodies(schemes, datetime.now(UTC).replace(microsecond=0), day_shift)
            print(f"  {describe(bodies)}")
            t0 = time.monotonic()
            last, schemes_s = asyncio.run(publish(base, args.mode, tiers, bodies))
            print(f"  published plan, {len(tiers):,} card tiers and the schemes in {time.monotonic() - t0:.1f} s "
                  f"(schemes {schemes_s:.1f} s); last rule version {last}")
            edge, edge_port = start_edge(data_dir, server.port, secret)
            asyncio.run(wait_edge(f"http://127.0.0.1:{edge_port}", edge, data_dir, "pulled"))
            synced = asyncio.run(wait_synced(data_dir / "edge.db", last, len(numbers)))
            print(f"  the edge holds the rules and the cards ({synced:.1f} s after its first pull); central and the "
                  f"edge stopped, the edge's file kept as it is")
            server.stop()
            stop(edge)
            pristine = data_dir / "synced-edge.db"
            fresh_copy(data_dir / "edge.db", pristine)
            for i in range(args.runs):
                # Every run: the synced file, a fresh edge process pointed at the stopped central.
                fresh_copy(pristine, data_dir / "edge.db")
                edge, edge_port = start_edge(data_dir, server.port, secret)
                edge_base = f"http://127.0.0.1:{edge_port}"
                asyncio.run(wait_edge(edge_base, edge, data_dir, "pulled"))
                cut = asyncio.run(until_offline(edge_base, seeded["token"], seeded["numbers"]))
                run = run_once(args, edge_base, edge.pid, data_dir / "edge.db", seeded["token"], seeded["numbers"],
                               receipts, shift, rng)
                stop(edge)
                runs.append(run)
                f = figures(run)
                print(f"  run {i + 1}: first offline decision {cut * 1000:.0f} ms after the start; receipt p50/p99 "
                      f"{f['receipt p50']:.2f}/{f['receipt p99']:.2f} ms, payment {f['payment p50']:.2f}/"
                      f"{f['payment p99']:.2f} ms (after the receipts {f['payment after p50']:.2f}/"
                      f"{f['payment after p99']:.2f}), pure evaluation {f['pure p50']:.3f}/{f['pure p99']:.3f} ms, "
                      f"first receipt {f['first receipt']:.0f} ms, rules rebuild {f['build total']:.0f} ms")
        finally:
            if edge is not None:
                stop(edge)
            server.stop()
    report(runs, args)
    failures = [f for r in runs for f in r["failures"]]
    differ = sum(r["points differ"] for r in runs)
    print(f"\n  not approved offline: {len(failures)}" + (f", e.g. {failures[:3]}" if failures else ""))
    print(f"  receipts where the edge's points differ from the pure evaluation: {differ}")
    ok = not failures and not differ
    print("  checks: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Earning evaluation at the till: a 50-line receipt against 1,000 active earning schemes, in CPython.

1. Build ``--schemes`` schemes in force now, of every rule and criterion kind, plus an expired earlier
   version for one code in five (so validity is part of the lookup): chain-wide rates on every line (one
   scheme in 50, half of them for one tier), per-receipt bonuses above a minimum value (3 in 100, half
   of them for one item group), and rates on 1-5 items (60 % of the rest) or 1-3 item groups, some only
   in a store or store group, for a customer group or a card type. Date windows, weekday sets and
   morning, evening or night time windows on some, multipliers (double points in the morning, x1.5 at
   the weekend) on others, exclusions of discounted and promotional lines or of an item group. Schemes
   name the 2,000 best-selling of 20,000 items (in 400 groups), as campaigns do.
2. Compile them (``SchemeSet.compile``) and time it.
3. Make ``--receipts`` random receipts of ``--lines`` lines (half of the items among the best sellers,
   some discounted or promotional, some weighed), at random times within a week, in random stores of
   300 (in 12 groups), for random customers (groups, tier, card type), and time ``evaluate`` on each
   (after ``--warmup`` untimed ones): p50, p99 and max.
4. Baseline, in the same run: the naive evaluation (``evaluate_naive``: every scheme in force checked
   against the receipt, then every applicable scheme against every line) on the first
   ``--naive-receipts`` receipts, its p50 and p99, the ratios, and a check that both give the same
   earning on every one of those receipts.

Steps 2-4 run for each combination mode (max, sum, priority) unless ``--mode`` picks one. Each figure is
given in wall-clock time and in this thread's CPU time: on a shared machine the difference is time spent
waiting for a CPU, and the load average is printed first.

Run from the repository root: ``.venv/bin/python bench/earning_eval.py [--receipts 2000 --mode max]``.
Pure Python, one process, no files, no network; the exit status is 0 only if both evaluations agree.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from datetime import datetime, timedelta, timezone
from datetime import time as clock
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.loyalty import (  # noqa: E402
    Combination,
    Criteria,
    EarningScheme,
    Exclusions,
    FixedPerLine,
    FixedPerReceipt,
    Multiplier,
    Percent,
    PerQuantity,
    PerValue,
    Receipt,
    ReceiptLine,
    SchemeSet,
    evaluate,
    evaluate_naive,
)

TZ = timezone(timedelta(hours=1))
NOW = datetime(2025, 3, 3, tzinfo=TZ)  # a Monday: receipts fall in the week that follows
ITEMS, GROUPS, BEST_SELLERS = 20_000, 400, 2_000
STORES, STORE_GROUPS, CUSTOMER_GROUPS = 300, 12, 20
TIERS, CARD_TYPES = ("BRONZE", "SILVER", "GOLD"), ("LOYALTY", "STAFF", "PARTNER")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--schemes", type=int, default=1000, help="schemes in force (default 1000)")
    p.add_argument("--receipts", type=int, default=2000, help="receipts timed with the index (default 2000)")
    p.add_argument("--lines", type=int, default=50, help="lines per receipt (default 50)")
    p.add_argument("--naive-receipts", type=int, default=200, help="receipts for the naive baseline (default 200)")
    p.add_argument("--warmup", type=int, default=50, help="untimed evaluations first (default 50)")
    p.add_argument("--mode", choices=["all"] + [m.value for m in Combination], default="all",
                   help="combination mode to time (default: all three, one after the other)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = p.parse_args()
    if min(args.schemes, args.receipts, args.lines, args.naive_receipts) <= 0 or args.warmup < 0:
        p.error("schemes, receipts, lines and naive-receipts must be positive")
    args.naive_receipts = min(args.naive_receipts, args.receipts)
    return args


def item(n: int) -> str:
    return f"I{n:05d}"


def group_of(n: int) -> str:
    return f"G{n % GROUPS:03d}"


def store_groups(n: int) -> frozenset[str]:
    return frozenset({f"SG{n % STORE_GROUPS:02d}", f"SG{(n * 7) % STORE_GROUPS:02d}"})


def make_schemes(count: int, rng: random.Random) -> list[EarningScheme]:
    """``count`` schemes in force at NOW and through the next week, plus expired earlier versions."""
    schemes = []
    for n in range(count):
        code = f"S{n:04d}"
        roll = rng.random()
        crit: dict = {}
        if roll < 0.02:  # chain-wide base rate, some per tier
            rule = PerValue(rng.choice((1, 2)), 100, "EUR")
            if rng.random() < 0.5:
                crit["tiers"] = {rng.choice(TIERS)}
        elif roll < 0.05:
            rule = FixedPerReceipt(rng.choice((10, 25, 50, 100)), rng.choice((0, 2000, 5000)), "EUR")
            if rng.random() < 0.5:
                crit["item_groups"] = {group_of(rng.randrange(GROUPS))}
        else:
            rule = rng.choice((PerValue(rng.randint(1, 5), 100, "EUR"), PerQuantity(rng.randint(1, 20)),
                               Percent(rng.choice((100, 250, 500, 1000)), "EUR"), FixedPerLine(rng.randint(5, 50))))
            if rng.random() < 0.6:
                crit["items"] = {item(rng.randrange(BEST_SELLERS)) for _ in range(rng.randint(1, 5))}
            else:
                crit["item_groups"] = {group_of(rng.randrange(GROUPS)) for _ in range(rng.randint(1, 3))}
            if rng.random() < 0.10:
                crit["stores"] = {f"ST{rng.randrange(STORES):03d}" for _ in range(rng.randint(1, 10))}
            elif rng.random() < 0.10:
                crit["store_groups"] = {f"SG{rng.randrange(STORE_GROUPS):02d}"}
            if rng.random() < 0.05:
                crit["customer_groups"] = {f"CG{rng.randrange(CUSTOMER_GROUPS):02d}" for _ in range(2)}
            if rng.random() < 0.05:
                crit["card_types"] = {rng.choice(CARD_TYPES)}
        if rng.random() < 0.20:
            crit["date_from"] = (NOW - timedelta(days=rng.randint(0, 30))).date()
            crit["date_to"] = (NOW + timedelta(days=rng.randint(0, 10))).date()
        if rng.random() < 0.10:
            crit["weekdays"] = set(rng.sample(range(1, 8), rng.randint(1, 5)))
        if rng.random() < 0.15:
            crit["time_from"], crit["time_to"] = rng.choice(((clock(7), clock(10)), (clock(17), clock(20)),
                                                              (clock(22), clock(2))))
        multipliers = ()
        if rng.random() < 0.15:
            multipliers = rng.choice(((Multiplier(20000, time_from=clock(7), time_to=clock(10)),),
                                      (Multiplier(15000, weekdays=frozenset({6, 7})),)))
        exclusions = Exclusions(discounted=rng.random() < 0.3, promotional=rng.random() < 0.3,
                                item_groups={group_of(rng.randrange(GROUPS))} if rng.random() < 0.1 else set())
        start = NOW - timedelta(days=rng.randint(1, 60))
        version = 1
        if rng.random() < 0.2:  # an earlier version, replaced when this one started
            schemes.append(EarningScheme(code, 1, start - timedelta(days=90), PerValue(1, 100, "EUR"),
                                         valid_to=start, criteria=Criteria(**crit)))
            version = 2
        schemes.append(EarningScheme(code, version, start, rule, criteria=Criteria(**crit), exclusions=exclusions,
                                     multipliers=multipliers, priority=rng.randint(0, 100)))
    return schemes


def make_receipt(n: int, lines: int, rng: random.Random) -> Receipt:
    made = []
    for _ in range(lines):
        k = rng.randrange(BEST_SELLERS) if rng.random() < 0.5 else rng.randrange(ITEMS)
        weighed = rng.random() < 0.1
        value = rng.randint(20, 5000)
        discount = rng.randint(1, value // 2 + 1) if rng.random() < 0.15 else 0
        made.append(ReceiptLine(item(k), rng.randint(100, 2500) if weighed else 1000 * rng.randint(1, 4), value,
                                group_of(k), discount, rng.random() < 0.1))
    store = rng.randrange(STORES)
    return Receipt(f"R{n}", f"C{rng.randrange(10**6)}", f"ST{store:03d}",
                   NOW + timedelta(seconds=rng.randrange(7 * 86400)), "EUR", tuple(made), store_groups(store),
                   {f"CG{rng.randrange(CUSTOMER_GROUPS):02d}" for _ in range(rng.randint(0, 3))},
                   rng.choice(TIERS), rng.choice(CARD_TYPES))


def pct(sorted_values: list[float], p: float) -> float:
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def row(name: str, values: list[float]) -> str:
    v = sorted(x * 1000 for x in values)
    return f"  {name:<30} {len(v):>6,}  p50 {pct(v, 50):8.3f} ms  p99 {pct(v, 99):8.3f} ms  max {v[-1]:8.3f} ms"


def timed(fn, *args) -> tuple[object, float, float]:
    """fn(*args), its wall-clock seconds and its CPU seconds (this thread only: time spent descheduled by other
    processes on the machine counts in the first figure, not the second)."""
    w0, c0 = time.perf_counter(), time.thread_time()
    result = fn(*args)
    return result, time.perf_counter() - w0, time.thread_time() - c0


def run_mode(mode: Combination, schemes: list[EarningScheme], receipts: list[Receipt],
             args: argparse.Namespace) -> bool:
    """Time one combination mode; True if the index and the naive evaluation agree on every compared receipt."""
    compiled, compile_s, _ = timed(SchemeSet.compile, schemes, mode)
    for r in receipts[:args.warmup]:
        evaluate(r, compiled)
    wall, cpu, points = [], [], 0
    for r in receipts:
        earning, w, c = timed(evaluate, r, compiled)
        wall.append(w)
        cpu.append(c)
        points += earning.total
    naive_wall, naive_cpu, mismatches = [], [], 0
    for r in receipts[:args.naive_receipts]:
        expected, w, c = timed(evaluate_naive, r, schemes, mode)
        naive_wall.append(w)
        naive_cpu.append(c)
        mismatches += expected != evaluate(r, compiled)
    print(f"mode {mode.value}: compile {compile_s * 1000:.1f} ms, {points / len(receipts):,.0f} points per receipt")
    print(row("indexed, wall clock", wall))
    print(row("indexed, CPU", cpu))
    print(row("naive (every scheme), wall", naive_wall))
    print(row("naive (every scheme), CPU", naive_cpu))
    fast, slow = sorted(wall), sorted(naive_wall)
    print(f"  naive / indexed (wall)         p50 x{pct(slow, 50) / pct(fast, 50):,.0f}  "
          f"p99 x{pct(slow, 99) / pct(fast, 99):,.0f}")
    print(f"  the two disagree on {mismatches} of {len(naive_wall)} receipts")
    return not mismatches


def main() -> int:
    args = parse_args()
    rng = random.Random(args.seed)
    schemes = make_schemes(args.schemes, rng)
    receipts = [make_receipt(n, args.lines, rng) for n in range(args.receipts)]
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"earning evaluation: {args.schemes:,} schemes in force ({len(schemes):,} versions), {args.receipts:,} "
          f"receipts of {args.lines} lines; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {load}")
    modes = list(Combination) if args.mode == "all" else [Combination(args.mode)]
    agree = [run_mode(mode, schemes, receipts, args) for mode in modes]
    return 0 if all(agree) else 1


if __name__ == "__main__":
    raise SystemExit(main())

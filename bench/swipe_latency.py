"""Time from a card swipe to the till's answer, through the whole path, against the same payment keyed in.

1. Central on embedded SQLite (``tessera central serve``) with ``--cards`` active cards in one store,
   and that store's edge node (``tessera edge serve``, its own process) with a magnetic-stripe reader
   on a pseudo-terminal: this process plays the reader (the simulator, MagTek-style framing) and the
   till's POS, which long-polls the edge's device events as a POS would.
2. For each of ``--swipes`` customers, one after another: the POS is waiting on its event poll, the
   reader sends tracks 1 and 2, the edge's driver parses them, the POS gets ``card_read`` and sends
   the payment; the time is from the swipe's last byte to the payment's answer. The baseline is the
   same payment keyed in (no device), measured in the same run, alternating with the swipes.
3. Both with central up (online decisions) and with central stopped (offline decisions).

Run from the repository root: ``.venv/bin/python bench/swipe_latency.py [--swipes 400]``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import code_version  # noqa: E402
from central_payments import pct, start_server  # noqa: E402
from edge_latency import configure, prepare_central, start_edge, wait_edge  # noqa: E402

from central.config import CentralConfig  # noqa: E402
from central.db import upgrade  # noqa: E402
from simulators.devices import CardReaderSimulator  # noqa: E402
from simulators.ports import PtyPort  # noqa: E402
from simulators.till import TillClient  # noqa: E402

TILL = "bench-till"  # the till central_payments.seed creates


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--swipes", type=int, default=400, help="swipes per phase (default 400)")
    p.add_argument("--cards", type=int, default=1000, help="active cards (default 1000)")
    args = p.parse_args()
    if min(args.swipes, args.cards) <= 0:
        p.error("swipes and cards must be positive")
    return args


async def phase(base: str, token: str, reader: CardReaderSimulator, numbers: list[str], swipes: int) -> dict:
    """Alternate keyed and swiped payments of 1.00; latencies of each, and what was decided."""
    rng = random.Random(11)
    keyed: list[float] = []
    swiped: list[float] = []
    parse: list[float] = []  # swipe → card_read at the POS
    decisions: dict[str, int] = {}
    failures: list[str] = []
    async with aiohttp.ClientSession() as session:
        till = TillClient(session, base, token)
        await till.skip_events()
        for i in range(swipes):
            number = rng.choice(numbers)
            t0 = time.perf_counter()
            answer = await till.till("payment", card_number=number, amount=100)
            keyed.append(time.perf_counter() - t0)
            poll = asyncio.create_task(till.next_event(lambda e: e["type"] in ("card_read", "read_failed")))
            await asyncio.sleep(0.005)  # the POS's poll is waiting at the edge, as a POS's always is
            await reader.swipe(number)
            t0 = time.perf_counter()
            event = await poll
            parse.append(time.perf_counter() - t0)
            if event["type"] != "card_read" or event["card"] != number:
                failures.append(f"read: {event}")
                continue
            answer = await till.till("payment", card_number=event["card"], amount=100)
            swiped.append(time.perf_counter() - t0)
            decisions[answer.get("decision", "?")] = decisions.get(answer.get("decision", "?"), 0) + 1
            if not answer.get("approved"):
                failures.append(f"declined {answer.get('decline_code')}")
            await asyncio.sleep(rng.uniform(0.0, 0.02))
    return {"keyed": keyed, "swiped": swiped, "parse": parse, "decisions": decisions, "failures": failures}


def ms(values: list[float], p: float) -> float:
    return pct(sorted(values), p) * 1000


def report(name: str, result: dict) -> None:
    k, s, r = result["keyed"], result["swiped"], result["parse"]
    print(f"\n  {name}: {len(s)} swipes, decisions {result['decisions']}, {len(result['failures'])} failures"
          + (f" e.g. {result['failures'][:3]}" if result["failures"] else ""))
    print(f"    keyed payment (baseline)     p50 {ms(k, 50):7.2f} ms   p99 {ms(k, 99):7.2f} ms")
    print(f"    swipe → card_read at the POS p50 {ms(r, 50):7.2f} ms   p99 {ms(r, 99):7.2f} ms")
    print(f"    swipe → payment answer       p50 {ms(s, 50):7.2f} ms   p99 {ms(s, 99):7.2f} ms")
    print(f"    device path adds (median)    {(statistics.median(s) - statistics.median(k)) * 1000:7.2f} ms; "
          f"ratio swipe/keyed p50 x{statistics.median(s) / statistics.median(k):.2f}, "
          f"p99 x{ms(s, 99) / ms(k, 99):.2f}")


def main() -> int:
    args = parse_args()
    print(f"swipe latency: {args.swipes} swipes per phase over {args.cards:,} cards, one till")
    print(f"  code: {code_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        url = f"sqlite:///{data_dir / 'central.db'}"
        config = CentralConfig(database_url=url, data_dir=data_dir, scheduler=False)
        upgrade(url)
        seeded = asyncio.run(prepare_central(config, args.cards))
        server = start_server(url, data_dir, 1, "WARNING")
        edge = None
        results = {}
        try:
            secret = asyncio.run(configure(f"http://127.0.0.1:{server.port}"))

            async def run() -> None:
                nonlocal edge
                reader_port = PtyPort(data_dir / "dev" / "reader", "framing=magtek")
                await reader_port.plug()
                reader = CardReaderSimulator(reader_port)
                edge, edge_port = start_edge(data_dir, server.port, secret,
                                             {"TESSERA_EDGE_DEVICES": f"{TILL}/magstripe={reader_port.url}"})
                base = f"http://127.0.0.1:{edge_port}"
                await wait_edge(base, edge, data_dir, "pulled")
                await asyncio.sleep(1.5)  # the reader is opened and the programmes are known to its checks
                results["central up"] = await phase(base, seeded["token"], reader, seeded["numbers"], args.swipes)
                server.stop()
                async with aiohttp.ClientSession() as s:  # the first payment finds central gone
                    await TillClient(s, base, seeded["token"]).till("payment", card_number=seeded["numbers"][0],
                                                                    amount=100, txn_id=str(uuid.uuid4()))
                results["central stopped"] = await phase(base, seeded["token"], reader, seeded["numbers"],
                                                         args.swipes)
                await reader_port.unplug()

            asyncio.run(run())
        finally:
            if edge is not None and edge.poll() is None:
                edge.send_signal(signal.SIGTERM)
                edge.wait(15)
            server.stop()
    for name, result in results.items():
        report(name, result)
    ok = all(not r["failures"] for r in results.values()) and len(results) == 2
    print("\n  checks: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

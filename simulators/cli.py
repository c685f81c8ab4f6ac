"""``tessera sim``: simulated devices and a till, from the command line.

Each device plugs in where the edge node's ``devices`` setting expects it (a pty link or a TCP port),
acts on the arguments given, then on lines read from standard input until end of input:

  tessera sim scanner --pty var/devices/T1-scanner 4006381333931 6034000000000007
  tessera sim reader --pty var/devices/T1-reader --options framing=magtek  # then type card numbers
  tessera sim pinpad --listen 127.0.0.1:7003 --pin 1234                   # answers every PIN prompt
  tessera sim pricecheck --edge-host 127.0.0.1 --port 8091 4006381333931  # prints the screen
  tessera sim till --edge http://127.0.0.1:8090 --token TOKEN --cards 6034...,6034... --rate 2 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

import aiohttp

from .devices import CardReaderSimulator, PinPadSimulator, PriceCheckerSimulator, ScannerSimulator
from .ports import PtyPort, SimulatedPort, SocketPort
from .till import Cashier, TillClient, run_load

__all__ = ["add_sim_commands", "run_sim"]

DEMO_PRODUCTS = [("4006381333931", 249), ("036000291452", 399), ("96385074", 129), ("5901234123457", 1999)]


def add_sim_commands(subparsers) -> None:
    sim = subparsers.add_parser("sim", help="simulated devices and tills")
    ssub = sim.add_subparsers(dest="device", required=True)

    def port(p, options_help: str):
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--pty", type=Path, help="publish a pseudo-terminal under this path (as a serial port)")
        where.add_argument("--listen", help="HOST:PORT to accept the edge's connection on (as a device server)")
        p.add_argument("--options", default="", help=f"the device URL's query string, e.g. {options_help}")
        return p

    p = port(ssub.add_parser("scanner", help="a barcode scanner; arguments and input lines are codes"),
             "terminator=crlf&aim=1")
    p.add_argument("codes", nargs="*")
    p = port(ssub.add_parser("reader", help="a magnetic-stripe reader; arguments and input lines are card "
                                            "numbers ('error' sends a bad read)"), "framing=magtek")
    p.add_argument("cards", nargs="*")
    p = port(ssub.add_parser("pinpad", help="a PIN pad whose customer enters --pin when asked; input lines: "
                                            "'pin DIGITS', 'cancel', 'card NUMBER'"), "ack_timeout=1&retries=3")
    p.add_argument("--pin", help="PIN to enter at every prompt (none: wait for 'pin DIGITS' lines)")
    p = ssub.add_parser("pricecheck", help="a fixed price checker; arguments and input lines are codes scanned")
    p.add_argument("--edge-host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8091, help="the edge's price checker port")
    p.add_argument("codes", nargs="*")
    p = ssub.add_parser("till", help="a till under steady load: basket, card payment (keyed), repeated")
    p.add_argument("--edge", default="http://127.0.0.1:8090")
    p.add_argument("--token", required=True, help="the till's token")
    p.add_argument("--cards", required=True, help="comma-separated card numbers to pay with")
    p.add_argument("--rate", type=float, default=1.0, help="checkouts a second")
    p.add_argument("--seconds", type=float, default=30.0)


def _port(args: argparse.Namespace) -> SimulatedPort:
    if args.pty is not None:
        return PtyPort(args.pty, args.options)
    host, _, number = args.listen.rpartition(":")
    return SocketPort(host or "127.0.0.1", int(number), args.options)


async def _lines():
    """Lines of standard input, without blocking the loop."""
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.strip():
            yield line.strip()


async def _device(args: argparse.Namespace) -> None:
    port = _port(args)
    await port.plug()
    print(f"{args.device} plugged in: the edge opens {port.url}", flush=True)
    try:
        if args.device == "scanner":
            scanner = ScannerSimulator(port)
            act = scanner.scan
            first = args.codes
        elif args.device == "reader":
            reader = CardReaderSimulator(port)

            async def act(text: str) -> None:
                await (reader.fail() if text == "error" else reader.swipe(text))

            first = args.cards
        else:
            pad = PinPadSimulator(port, pin=args.pin, on_screen=lambda lines: print("pad shows:", " | ".join(lines),
                                                                                   flush=True))

            async def act(text: str) -> None:
                word, _, rest = text.partition(" ")
                if word == "pin":
                    pad.enter_pin(rest.strip())
                elif word == "cancel":
                    pad.cancel()
                elif word == "card":
                    pad.present_card(rest.strip())
                else:
                    print("commands: pin DIGITS | cancel | card NUMBER", flush=True)

            first = []
        for text in first:
            await act(text)
            print(f"sent {text}", flush=True)
        async for text in _lines():
            try:
                await act(text)
                print(f"sent {text}", flush=True)
            except Exception as exc:  # a typo must not unplug the device
                print(f"not sent: {exc}", flush=True)
        await asyncio.sleep(0.5)  # the last bytes reach the edge before the device goes
    finally:
        await port.unplug()


async def _pricecheck(args: argparse.Namespace) -> None:
    checker = PriceCheckerSimulator(args.edge_host, args.port)
    await checker.connect()
    try:
        async def show(code: str) -> None:
            print(f"{code}:\n  " + "\n  ".join(await checker.check(code)), flush=True)

        for code in args.codes:
            await show(code)
        if not args.codes:
            async for code in _lines():
                await show(code)
    finally:
        await checker.close()


async def _till(args: argparse.Namespace) -> None:
    async with aiohttp.ClientSession() as session:
        cashier = Cashier(TillClient(session, args.edge, args.token))
        cards = [c.strip() for c in args.cards.split(",") if c.strip()]
        report = await run_load(cashier, cards, DEMO_PRODUCTS, rate=args.rate, duration=args.seconds)
    print(report.summary(), flush=True)


def run_sim(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    runner = {"pricecheck": _pricecheck, "till": _till}.get(args.device, _device)
    try:
        asyncio.run(runner(args))
    except KeyboardInterrupt:
        pass
    return 0

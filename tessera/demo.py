"""The demo: central and store S001's edge node on embedded SQLite, with seeded programmes, store, staff,
stock of cards and a product catalogue; till till-1 with a simulated scanner, card reader and PIN pad,
and a simulated price checker.

Central runs in a child process so that the user can cut the store off from it (``kill -STOP``) and
watch the edge decide offline, then reconnect it (``kill -CONT``) and watch the edge's backlog drain.
The edge runs in this process; Ctrl+C or SIGTERM stops the edge first, then central.
"""

from __future__ import annotations

import asyncio
import csv
import json
import multiprocessing
import os
import signal
import socket
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import sqlalchemy as sa
from aiohttp import web

from central.app import create_app as create_central_app
from central.config import CentralConfig
from central.context import Central
from central.db import upgrade
from central.logs import AccessLogger, setup_logging
from central.services import audit, create_programme
from central.services.catalogue import CatalogueService
from core import Money
from edge.app import create_app as create_edge_app
from edge.config import EdgeConfig
from edge.keys import NODE, SYNC
from edge.sync_client import SyncError
from simulators.devices import CardReaderSimulator, PinPadSimulator, PriceCheckerSimulator, ScannerSimulator
from simulators.ports import PtyPort
from simulators.till import Cashier, TillClient

__all__ = ["run_demo", "seed_demo", "DEMO_PASSWORD", "DEMO_STORE"]

DEMO_PASSWORD = "tessera-demo"
DEMO_STORE = "S001"
SYNC_SECONDS = 2.0
# Offline limits of both demo programmes (EUR cents): 25.00 per payment, 50.00 and 3 payments per card
# between two online sightings; the store may owe central at most 500.00 of offline debits.
FLOOR_LIMIT, CARD_AMOUNT, CARD_COUNT, STORE_BUDGET = 2500, 5000, 3, 50000
TILL = "till-1"
DEMO_PRODUCT = "4006381333931"
DEMO_CATALOGUE = f"""code,name,price,member_price,currency,unit,group
{DEMO_PRODUCT},Crème brûlée dessert 2x100g,2.49,1.99,EUR,each,DESSERT
5901234123457,Espresso beans 1kg,19.99,17.49,EUR,each,COFFEE
036000291452,Tissues 3-ply,3.99,,EUR,each,HOUSEHOLD
96385074,Bananas,1.29,,EUR,kg,FRUIT
"""


async def seed_demo(config: CentralConfig) -> dict:
    """Create the demo's programmes (with offline limits), store (with a budget and a sync secret), users,
    terminals, cards and packs, and log the admin in; return what to try."""
    async with Central.session(config) as central:
        async with central.db.begin() as conn:
            if (await conn.execute(sa.text("SELECT count(*) FROM programmes"))).scalar():
                raise SystemExit(f"demo data exists already in {config.data_dir}: remove it to start fresh")
            await create_programme(conn, {
                "code": "GIFT", "name": "Gift Card", "kind": "gift", "currency": "EUR", "number_prefix": "6034",
                "number_length": 16, "nominal_values": [2500, 5000, 10000], "topup_allowed": False})
            await create_programme(conn, {
                "code": "FLEX", "name": "Flex Gift Card", "kind": "gift", "currency": "EUR",
                "number_prefix": "6035", "number_length": 16, "min_amount": 1000, "max_amount": 50000,
                "topup_allowed": True, "max_balance": 100000, "hold_expiry_policy": "clarify",
                "pin_required": True})
            await create_programme(conn, {
                "code": "LOYAL", "name": "Loyalty Card", "kind": "loyalty", "currency": "EUR",
                "number_prefix": "7001", "number_length": 16, "min_amount": 100, "max_amount": 50000,
                "topup_allowed": True})
            for programme in ("GIFT", "FLEX", "LOYAL"):
                await central.sync.set_limits(conn, programme, FLOOR_LIMIT, CARD_AMOUNT, CARD_COUNT)
            await central.admin.create_store(conn, DEMO_STORE, "Demo Store Downtown")
            await central.sync.set_budget(conn, DEMO_STORE, STORE_BUDGET, "EUR")
            secret = await central.sync.rotate_secret(conn, DEMO_STORE)
            await audit(conn, "demo", "sync_secret_rotate", f"store:{DEMO_STORE}", {"version": secret["version"]})
            await central.admin.create_user(conn, "admin", DEMO_PASSWORD, "admin")
            till = await central.admin.create_terminal(conn, "till", "till-1", DEMO_STORE)
            kiosk = await central.admin.create_terminal(conn, "till", "price-checkers", DEMO_STORE)
            website = await central.admin.create_terminal(conn, "web", "website", None)
            gift_issue = await central.issuing.start_issue(conn, "GIFT", 100, "demo")
            flex_issue = await central.issuing.start_issue(conn, "FLEX", 50, "demo")
            loyal_issue = await central.issuing.start_issue(conn, "LOYAL", 50, "demo")
        for kind, body in (("plan", DEMO_PLAN), *(("scheme", scheme) for scheme in demo_schemes())):
            await central.rules.publish(kind, body, "demo")
        packs = []
        for issue_id in (gift_issue, flex_issue, loyal_issue):
            await central.issuing.run_issue(issue_id)
            with open(central.issuing.production_path(issue_id), newline="") as f:
                stock = [row for _, row in zip(range(20), csv.DictReader(f))]
            async with central.db.begin() as conn:
                pack = await central.issuing.create_pack(conn, actor="demo", store_code=DEMO_STORE,
                                                         numbers=[row["card_number"] for row in stock])
                packs.append(await central.issuing.authorize_pack(conn, pack["id"]))
            if issue_id == gift_issue:
                first, second = stock[0], stock[1]
            elif issue_id == flex_issue:
                flex = stock[0]
            else:
                loyal, loyal_tour = stock[0], stock[1]
        await CatalogueService(central.db).import_csv(DEMO_CATALOGUE, actor="demo", source="demo-catalogue.csv")
        staff = await central.admin.login("admin", DEMO_PASSWORD)
        return {"till_token": till["token"], "web_token": website["token"], "card": first["card_number"],
                "ecode": first["ecode"], "packs": packs, "store_secret": secret["secret"],
                "staff_token": staff["token"], "kiosk_token": kiosk["token"], "tour_card": second["card_number"],
                "flex_card": flex["card_number"], "loyalty_card": loyal["card_number"],
                "loyalty_tour_card": loyal_tour["card_number"]}


# The loyalty programme's plan: Bronze and Gold on a year's turnover, 1 point = 1 cent when redeemed (at most
# a fifth of a receipt at Bronze, half at Gold), points live two years, 100 points for a registration.
DEMO_PLAN = {
    "programme": "LOYAL", "combination": "sum", "lifetime_days": 730, "bonuses": {"registration": 100},
    "tiers": {"basis": "turnover", "period_days": 365, "anchor": "2026-01-01T00:00:00Z", "tiers": [
        {"code": "BRONZE", "rank": 1, "threshold": 0, "max_redemption_bps": 2000},
        {"code": "GOLD", "rank": 2, "threshold": 100000, "max_redemption_bps": 5000}]}}


def demo_schemes() -> list[dict]:
    """1 point per euro; 5 more per euro of coffee; the base doubled before 10 in the morning."""
    start = datetime.now(UTC).isoformat()
    return [
        {"code": "BASE", "version": 1, "valid_from": start, "priority": 1,
         "rule": {"type": "per_value", "points": 1, "per": 100, "currency": "EUR"},
         "multipliers": [{"basis_points": 20000, "time_from": "06:00:00", "time_to": "10:00:00"}]},
        {"code": "COFFEE", "version": 1, "valid_from": start, "priority": 2,
         "rule": {"type": "per_value", "points": 5, "per": 100, "currency": "EUR"},
         "criteria": {"item_groups": ["COFFEE"]}}]


class _DemoAccessLogger(AccessLogger):
    """Central's access log without the edge's routine sync requests: one every 2 s would bury the
    demo's instructions. Failed sync requests are still logged."""

    def log(self, request, response, time: float) -> None:
        if response.status == 200 and request.path.startswith("/api/v1/sync/"):
            return
        super().log(request, response, time)


def _loop_factory():
    from tessera.cli import _event_loop_factory

    return _event_loop_factory()


async def _serve(app: web.Application, host: str, port: int, access_log_class, started=None,
                 signals=(signal.SIGINT, signal.SIGTERM)) -> None:
    """Serve ``app`` until one of ``signals`` arrives; ``started(app)`` runs once it listens."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:  # bound before the app starts, so that a busy port stops the demo before any work begins
        sock = socket.create_server((host, port))
    except OSError as exc:
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    # Requests still running at Ctrl+C get a few seconds (a till's waits at most the edge's online
    # timeout), not aiohttp's default minute.
    runner = web.AppRunner(app, access_log_class=access_log_class, shutdown_timeout=5.0)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        if started is not None:
            await started(app)
        await stop.wait()
    finally:
        await runner.cleanup()


async def _orphaned(parent: int) -> None:
    """SIGTERM to this process once its parent is gone (killed outright), so central does not outlive the demo."""
    while os.getppid() == parent:
        await asyncio.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)


def _central_process(config: CentralConfig, parent: int) -> None:
    """Central, in the child process. Ctrl+C reaches the whole process group: central ignores it and
    is stopped by the demo (SIGTERM) after the edge, so no till request is cut off half-way."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(config.log_level)
    app = create_central_app(config, migrate=False)

    async def main() -> None:
        watchdog = asyncio.create_task(_orphaned(parent))
        try:
            await _serve(app, config.host, config.port, _DemoAccessLogger, signals=(signal.SIGTERM,))
        finally:
            watchdog.cancel()

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main())


def _stop_central(process: multiprocessing.Process) -> None:
    """SIGTERM to central (after SIGCONT: a central frozen with kill -STOP acts on nothing else)."""
    if process.is_alive():
        for sig in (signal.SIGCONT, signal.SIGTERM):
            try:
                os.kill(process.pid, sig)
            except ProcessLookupError:
                break
    process.join(10)
    if process.is_alive():
        process.kill()
        process.join()


async def _wait_for_central(base: str, process: multiprocessing.Process, seconds: float = 30) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(int(seconds * 10)):
            if not process.is_alive():
                raise SystemExit(f"central did not start (exit status {process.exitcode})")
            try:
                async with session.get(f"{base}/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"central did not answer on {base} within {seconds:.0f} s")


def _instructions(data_dir: Path, central: str, edge: str, pid: int, seeded: dict, tour: str = "",
                  price_port: int = 0) -> str:
    card = seeded["card"]

    def txn(amount: int) -> str:
        return json.dumps({"txn_id": str(uuid.uuid4()), "card_number": card, "amount": amount})

    till = f'-H "Authorization: Bearer {seeded["till_token"]}" -H "Content-Type: application/json"'
    loyalty_sale = json.dumps({"txn_id": str(uuid.uuid4()), "card_number": seeded["loyalty_card"], "amount": 500})
    receipt = json.dumps({"txn_id": str(uuid.uuid4()), "card_number": seeded["loyalty_card"],
                          "at": datetime.now(UTC).isoformat(timespec="seconds"), "currency": "EUR", "lines": [
                              {"item": "5901234123457", "quantity": 1000, "value": 1999, "item_group": "COFFEE"},
                              {"item": "96385074", "quantity": 1250, "value": 161, "item_group": "FRUIT"}]})
    balance = f"curl -s -X POST {edge}/api/v1/till/balance {till} -d '{{\"card_number\": \"{card}\"}}'"
    web_balance = (f'curl -s -X POST {central}/api/v1/web/balance -H "Authorization: Bearer {seeded["web_token"]}" \\\n'
                   f'       -H "Content-Type: application/json" '
                   f"-d '{json.dumps({'card_number': card, 'ecode': seeded['ecode']})}'")
    return f"""
Tessera demo — central and store {DEMO_STORE}'s edge node on embedded SQLite ({data_dir})

  Central:      {central}   health: {central}/health   API: {central}/openapi.json   (process {pid})
  Edge {DEMO_STORE}:    {edge}   health: {edge}/health   API: {edge}/openapi.json
                the store's tills talk to the edge; it syncs with central every {SYNC_SECONDS:.0f} s
  Staff login:  admin / {DEMO_PASSWORD}
  Store {DEMO_STORE} has packs of GIFT (25/50/100 EUR) and FLEX (open value, PIN) cards authorized for sale.
  Store {DEMO_STORE} also has LOYAL loyalty cards: 1 point per euro (5 more on coffee, double base points before
  10:00), redeemed at 1 point = 1 cent within the tier's share of the receipt.
  Offline limits (GIFT, FLEX, LOYAL): 25.00 EUR a payment, 50.00 EUR and {CARD_COUNT} payments a card;
  store budget 500.00 EUR.
  Till {TILL} has a simulated barcode scanner, card reader and PIN pad on pseudo-terminals ({data_dir}/devices);
  a simulated price checker is on the edge's price checker port {price_port}.

At till {TILL}, through the simulated devices, just now:
{tour}

Open the kiosk page, {edge}/kiosk, and type (or scan) {card} or {DEMO_PRODUCT} into it; the same lookup:

  curl -s "{edge}/api/v1/kiosk/lookup?code={DEMO_PRODUCT}"

A fixed price checker, from another terminal:

  tessera sim pricecheck --port {price_port} {DEMO_PRODUCT} {seeded["tour_card"]}

The till's device events (what the POS reads): GET {edge}/api/v1/till/events?after=0 with the till's token below.

A cashier at store {DEMO_STORE} sells card {card} for 50.00 EUR, the customer pays 12.50 and asks the
balance — through the edge, which asks central ("decision": "online"):

  curl -s -X POST {edge}/api/v1/till/sale {till} -d '{txn(5000)}'
  curl -s -X POST {edge}/api/v1/till/payment {till} -d '{txn(1250)}'
  {balance}

The same card on a website, at central (card number + scratch-off eCode):

  {web_balance}

Cut the store off from central (freeze central's process), then pay 10.00: after 1 s without an answer
the edge decides alone within the offline limits ("decision": "offline"), and so does the balance:

  kill -STOP {pid}
  curl -s -X POST {edge}/api/v1/till/payment {till} -d '{txn(1000)}'
  {balance}

Reconnect: within about 10 s the edge pushes its offline payment to central ("backlog": 0), and the
website balance above shows 27.50 too:

  kill -CONT {pid}
  curl -s {edge}/health

Head office: log in (it answers a bearer token), then see how the store syncs — last contact, acknowledged
sequence, backlog, offline exposure (the token shown is from a login the demo made for you):

  curl -s -X POST {central}/api/v1/auth/login -H "Content-Type: application/json" \\
       -d '{{"username": "admin", "password": "{DEMO_PASSWORD}"}}'
  curl -s {central}/api/v1/admin/sync/stores -H "Authorization: Bearer {seeded["staff_token"]}"

A new loyalty customer gets card {seeded["loyalty_card"]} with 5.00 EUR of e-money, buys coffee and bananas with
it: the receipt earns points (at the edge too when central is cut off: receipts commute and sync later), and
the till asks the card's points:

  curl -s -X POST {edge}/api/v1/till/sale {till} -d '{loyalty_sale}'
  curl -s -X POST {edge}/api/v1/till/receipts {till} -d '{receipt}'
  curl -s -X POST {edge}/api/v1/till/points {till} -d '{{"card_number": "{seeded["loyalty_card"]}"}}'

Press Ctrl+C to stop (the edge, then central).
"""


class DemoDevices:
    """Till till-1's simulated scanner, card reader and PIN pad (on pseudo-terminals), and a price checker."""

    def __init__(self, data_dir: Path) -> None:
        folder = data_dir / "devices"
        self.scanner = ScannerSimulator(PtyPort(folder / f"{TILL}-scanner", "terminator=crlf&aim=1"))
        self.reader = CardReaderSimulator(PtyPort(folder / f"{TILL}-reader", "framing=magtek"))
        self.pad = PinPadSimulator(PtyPort(folder / f"{TILL}-pinpad", "pin_timeout=60"), pin="2468")
        self.ports = {"scanner": self.scanner.port, "reader": self.reader.port, "pad": self.pad.port}

    @property
    def setting(self) -> str:
        return (f"{TILL}/barcode={self.scanner.port.url} {TILL}/magstripe={self.reader.port.url} "
                f"{TILL}/pinpad={self.pad.port.url}")

    async def plug(self) -> None:
        for port in self.ports.values():
            await port.plug()

    async def unplug(self) -> None:
        for port in self.ports.values():
            await port.unplug()


def _money(minor: int) -> str:
    return str(Money("EUR", minor))


async def _tour(edge_url: str, price_port: int, seeded: dict, devices: DemoDevices) -> str:
    """A cashier's flow at till-1 through the simulated devices; what happened, as text."""
    card, flex = seeded["tour_card"], seeded["flex_card"]
    out = []
    async with aiohttp.ClientSession() as session:
        till = TillClient(session, edge_url, seeded["till_token"])
        cashier = Cashier(till, scan=devices.scanner.scan, swipe=devices.reader.swipe,
                          needs_pin=lambda number: number.startswith("6035"))
        for _ in range(100):  # the edge opens the devices as soon as it starts
            if all(d["available"] for d in await till.devices()):
                break
            await asyncio.sleep(0.1)
        await till.skip_events()
        sale = await cashier.sell(card, 5000)
        out.append(f"  1. The cashier scans gift card {card}'s barcode and sells it for 50.00 EUR: "
                   f"{'approved' if sale['approved'] else sale['decline_code']} ({sale['decision']}).")
        await till.pad_show(amount=1250, currency="EUR")
        paid = await cashier.pay(card, 1250)
        out.append(f"  2. The customer swipes it at the reader to pay 12.50 EUR (the pad shows the amount): "
                   f"{'approved' if paid['approved'] else paid['decline_code']}, balance {_money(paid['balance'])}.")
        checker = PriceCheckerSimulator("127.0.0.1", price_port)
        try:
            shown = await checker.check(card)
            out.append("  3. The customer scans the card at the price checker, which shows:  " + " | ".join(shown))
            shown = await checker.check(DEMO_PRODUCT)
            out.append("     and a product:  " + " | ".join(shown))
        finally:
            await checker.close()
        token = await till.pad_pin(flex)
        sale = await till.till("sale", card_number=flex, amount=4000, pin_token=token)
        out.append(f"  4. A FLEX card (its programme wants a PIN) is sold for 40.00 EUR; the customer chooses PIN "
                   f"{devices.pad.pin} on the pad: {'approved' if sale['approved'] else sale['decline_code']}.")
        paid = await cashier.pay(flex, 1000)
        devices.pad.pin = "1111"
        wrong = await cashier.pay(flex, 1000)
        devices.pad.pin = "2468"
        out.append(f"     Paying 10.00 EUR with it asks the PIN on the pad: "
                   f"{'approved' if paid['approved'] else paid['decline_code']}; with a wrong PIN: "
                   f"{'approved' if wrong['approved'] else wrong['decline_code']}.")
        loyal = seeded["loyalty_tour_card"]
        await cashier.sell(loyal, 500)
        earned = await till.till("receipts", card_number=loyal, at=datetime.now(UTC).isoformat(), currency="EUR",
                                 lines=[{"item": "5901234123457", "quantity": 2000, "value": 3998,
                                         "item_group": "COFFEE"}])
        redeemed = await till.till("points/redeem", card_number=loyal, receipt_total=1000, currency="EUR")
        out.append(f"  5. Loyalty card {loyal} (sold with 5.00 EUR of e-money) buys two bags of coffee for 39.98 "
                   f"EUR: it earns {earned['points_earned']} points ({earned['decision']}); on the next receipt, "
                   f"10.00 EUR, {redeemed['points_redeemed']} points take {_money(redeemed['discount'])} off "
                   f"(the tier's cap: {redeemed['limited_by'] == 'cap'}).")
    return "\n".join(out)


CONSOLE_HELP = """Type here to act as till-1's devices:  swipe CARD [CENTS]   scan CODE   check CODE   pin DIGITS
                                        unplug reader|scanner|pad   plug reader|scanner|pad   help"""


async def _console(edge_url: str, price_port: int, seeded: dict, devices: DemoDevices) -> None:
    """Commands typed into the demo's terminal drive the simulated devices."""
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        till = TillClient(session, edge_url, seeded["till_token"])
        cashier = Cashier(till, scan=devices.scanner.scan, swipe=devices.reader.swipe,
                          needs_pin=lambda number: number.startswith("6035"))
        checker = PriceCheckerSimulator("127.0.0.1", price_port)
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            word, *rest = line.split() or [""]
            try:
                if word == "swipe" and rest:
                    await till.skip_events()
                    answer = await cashier.pay(rest[0], int(rest[1]) if len(rest) > 1 else 100)
                    print(json.dumps(answer), flush=True)
                elif word == "scan" and rest:
                    await till.skip_events()
                    await devices.scanner.scan(rest[0])
                    print(json.dumps(await till.next_event(lambda e: e["type"] == "barcode")), flush=True)
                elif word == "check" and rest:
                    print(" | ".join(await checker.check(rest[0])), flush=True)
                elif word == "pin" and rest:
                    devices.pad.pin = rest[0]
                    print(f"the customer will enter PIN {rest[0]}", flush=True)
                elif word in ("unplug", "plug") and rest and rest[0] in devices.ports:
                    port = devices.ports[rest[0]]
                    await (port.unplug() if word == "unplug" else port.plug())
                    print(f"{rest[0]} {word}ged", flush=True)
                elif word:
                    print(CONSOLE_HELP, flush=True)
            except Exception as exc:  # the demo goes on whatever was typed
                print(f"{type(exc).__name__}: {exc}", flush=True)
        await checker.close()


async def _run_edge(config: EdgeConfig, central: str, process: multiprocessing.Process, banner, seeded: dict,
                    devices: DemoDevices) -> None:
    await _wait_for_central(central, process)
    await devices.plug()
    tasks = []

    async def started(app: web.Application) -> None:
        # The first sync brings the tills' tokens and the limits: until then the edge refuses the tills.
        try:
            await app[SYNC].round()
        except SyncError as exc:
            raise SystemExit(f"the edge's first sync with central failed: {exc}") from None
        await app[NODE].refresh_configuration()
        edge_url = f"http://{config.host}:{config.port}"
        tour = await _tour(edge_url, config.price_checker_port, seeded, devices)
        print(banner(tour), flush=True)
        if sys.stdin is not None and sys.stdin.isatty():
            print(CONSOLE_HELP, flush=True)
            tasks.append(asyncio.create_task(_console(edge_url, config.price_checker_port, seeded, devices)))

    try:
        await _serve(create_edge_app(config), config.host, config.port, AccessLogger, started)
    finally:
        for task in tasks:
            task.cancel()
        await devices.unplug()


def run_demo(data_dir: Path, port: int, edge_port: int = 8090) -> int:
    """Seed a fresh demo in ``data_dir``, run central (child process) and the store's edge until stopped."""
    config = CentralConfig(database_url=f"sqlite:///{data_dir}/central.db", data_dir=data_dir, port=port)
    upgrade(config.database_url)
    seeded = asyncio.run(seed_demo(config))
    devices = DemoDevices(data_dir)
    edge = EdgeConfig(store=DEMO_STORE, store_secret=seeded["store_secret"], central_url=f"http://{config.host}:{port}",
                      database=data_dir / f"edge-{DEMO_STORE}.db", port=edge_port, sync_interval=SYNC_SECONDS,
                      backoff_cap=5.0,  # back after an outage within seconds, not the production minute
                      devices=devices.setting, price_checker_port=edge_port + 1,
                      kiosk_till_token=seeded["kiosk_token"])
    setup_logging(edge.log_level)
    process = multiprocessing.get_context("spawn").Process(target=_central_process, args=(config, os.getpid()),
                                                           name="tessera-central")
    process.start()
    try:
        def banner(tour: str) -> str:
            return _instructions(data_dir, edge.central_url, f"http://{edge.host}:{edge.port}", process.pid, seeded,
                                 tour, edge.price_checker_port)

        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_run_edge(edge, edge.central_url, process, banner, seeded, devices))
    finally:
        _stop_central(process)
    return 0

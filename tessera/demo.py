"""The demo: central and store S001's edge node on embedded SQLite, with seeded programmes, store, staff
and stock of cards.

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
import uuid
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
from edge.app import create_app as create_edge_app
from edge.config import EdgeConfig
from edge.keys import SYNC
from edge.sync_client import SyncError

__all__ = ["run_demo", "seed_demo", "DEMO_PASSWORD", "DEMO_STORE"]

DEMO_PASSWORD = "tessera-demo"
DEMO_STORE = "S001"
SYNC_SECONDS = 2.0
# Offline limits of both demo programmes (EUR cents): 25.00 per payment, 50.00 and 3 payments per card
# between two online sightings; the store may owe central at most 500.00 of offline debits.
FLOOR_LIMIT, CARD_AMOUNT, CARD_COUNT, STORE_BUDGET = 2500, 5000, 3, 50000


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
                "topup_allowed": True, "max_balance": 100000, "hold_expiry_policy": "clarify"})
            for programme in ("GIFT", "FLEX"):
                await central.sync.set_limits(conn, programme, FLOOR_LIMIT, CARD_AMOUNT, CARD_COUNT)
            await central.admin.create_store(conn, DEMO_STORE, "Demo Store Downtown")
            await central.sync.set_budget(conn, DEMO_STORE, STORE_BUDGET, "EUR")
            secret = await central.sync.rotate_secret(conn, DEMO_STORE)
            await audit(conn, "demo", "sync_secret_rotate", f"store:{DEMO_STORE}", {"version": secret["version"]})
            await central.admin.create_user(conn, "admin", DEMO_PASSWORD, "admin")
            till = await central.admin.create_terminal(conn, "till", "till-1", DEMO_STORE)
            website = await central.admin.create_terminal(conn, "web", "website", None)
            gift_issue = await central.issuing.start_issue(conn, "GIFT", 100, "demo")
            flex_issue = await central.issuing.start_issue(conn, "FLEX", 50, "demo")
        packs = []
        for issue_id in (gift_issue, flex_issue):
            await central.issuing.run_issue(issue_id)
            with open(central.issuing.production_path(issue_id), newline="") as f:
                stock = [row for _, row in zip(range(20), csv.DictReader(f))]
            async with central.db.begin() as conn:
                pack = await central.issuing.create_pack(conn, actor="demo", store_code=DEMO_STORE,
                                                         numbers=[row["card_number"] for row in stock])
                packs.append(await central.issuing.authorize_pack(conn, pack["id"]))
            if issue_id == gift_issue:
                first = stock[0]
        staff = await central.admin.login("admin", DEMO_PASSWORD)
        return {"till_token": till["token"], "web_token": website["token"], "card": first["card_number"],
                "ecode": first["ecode"], "packs": packs, "store_secret": secret["secret"],
                "staff_token": staff["token"]}


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


def _instructions(data_dir: Path, central: str, edge: str, pid: int, seeded: dict) -> str:
    card = seeded["card"]

    def txn(amount: int) -> str:
        return json.dumps({"txn_id": str(uuid.uuid4()), "card_number": card, "amount": amount})

    till = f'-H "Authorization: Bearer {seeded["till_token"]}" -H "Content-Type: application/json"'
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
  Store {DEMO_STORE} has packs of GIFT (25/50/100 EUR) and FLEX (open value) cards authorized for sale.
  Offline limits (GIFT, FLEX): 25.00 EUR a payment, 50.00 EUR and {CARD_COUNT} payments a card; store budget 500.00 EUR.

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

Press Ctrl+C to stop (the edge, then central).
"""


async def _run_edge(config: EdgeConfig, central: str, process: multiprocessing.Process, banner) -> None:
    await _wait_for_central(central, process)

    async def started(app: web.Application) -> None:
        # The first sync brings the tills' tokens and the limits: until then the edge refuses the tills.
        try:
            await app[SYNC].round()
        except SyncError as exc:
            raise SystemExit(f"the edge's first sync with central failed: {exc}") from None
        print(banner, flush=True)

    await _serve(create_edge_app(config), config.host, config.port, AccessLogger, started)


def run_demo(data_dir: Path, port: int, edge_port: int = 8090) -> int:
    """Seed a fresh demo in ``data_dir``, run central (child process) and the store's edge until stopped."""
    config = CentralConfig(database_url=f"sqlite:///{data_dir}/central.db", data_dir=data_dir, port=port)
    upgrade(config.database_url)
    seeded = asyncio.run(seed_demo(config))
    edge = EdgeConfig(store=DEMO_STORE, store_secret=seeded["store_secret"], central_url=f"http://{config.host}:{port}",
                      database=data_dir / f"edge-{DEMO_STORE}.db", port=edge_port, sync_interval=SYNC_SECONDS,
                      backoff_cap=5.0)  # back after an outage within seconds, not the production minute
    setup_logging(edge.log_level)
    process = multiprocessing.get_context("spawn").Process(target=_central_process, args=(config, os.getpid()),
                                                           name="tessera-central")
    process.start()
    try:
        banner = _instructions(data_dir, edge.central_url, f"http://{edge.host}:{edge.port}", process.pid, seeded)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_run_edge(edge, edge.central_url, process, banner))
    finally:
        _stop_central(process)
    return 0

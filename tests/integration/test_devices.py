"""The edge node's devices, as the hardware would talk to it: simulated scanner, card reader and PIN pad
on real pseudo-terminals and sockets, the till's POS on the edge's HTTP API, central behind it."""

from __future__ import annotations

import asyncio
import csv
import logging
import time
import uuid

import aiohttp
import pytest

from core import InvalidInput
from core.pin import pin_from_block
from edge.keys import DEVICES
from simulators.devices import CardReaderSimulator, PinPadSimulator, ScannerSimulator
from simulators.ports import PtyPort, SocketPort
from simulators.till import Cashier, TillClient, TillError, run_load

from ..edge_support import Edge


async def wait_until(predicate, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


class Store:
    """Till T1 of store S1 with a scanner, a card reader and a PIN pad plugged into the edge."""

    def __init__(self, edge: Edge, scanner: ScannerSimulator, reader: CardReaderSimulator, pad: PinPadSimulator,
                 session: aiohttp.ClientSession) -> None:
        self.edge, self.scanner, self.reader, self.pad, self.session = edge, scanner, reader, pad, session
        token = edge.world.tills["S1"]["Authorization"].split()[1]
        self.till = TillClient(session, str(edge.client.make_url("")), token)
        self.cashier = Cashier(self.till, scan=scanner.scan, swipe=reader.swipe)

    @property
    def hub(self):
        return self.edge.client.server.app[DEVICES]

    async def devices_up(self) -> None:
        await wait_until(lambda: all(d.available for d in self.hub.drivers.values()))


@pytest.fixture
async def store(world, tmp_path):
    scanner_port = PtyPort(tmp_path / "dev" / "T1-scanner", "terminator=crlf&aim=1")
    reader_port = PtyPort(tmp_path / "dev" / "T1-reader", "framing=magtek")
    pad_port = SocketPort(query="ack_timeout=0.2&retries=3&pin_timeout=5")
    for port in (scanner_port, reader_port, pad_port):
        await port.plug()
    devices = f"T1/barcode={scanner_port.url} T1/magstripe={reader_port.url} T1/pinpad={pad_port.url}"
    # Central on a busy CI machine may take over a second: these tests are about devices, not timeouts.
    edge = await Edge.start(world, tmp_path, devices=devices, pin_token_ttl=30.0, online_timeout=10.0)
    await edge.sync()
    await edge.node.refresh_configuration()
    session = aiohttp.ClientSession()
    s = Store(edge, ScannerSimulator(scanner_port), CardReaderSimulator(reader_port), PinPadSimulator(pad_port),
              session)
    await s.devices_up()
    await s.till.skip_events()
    yield s
    await session.close()
    await edge.close()
    for port in (scanner_port, reader_port, pad_port):
        await port.unplug()


async def test_scan_sell_swipe_pay_through_the_devices(store, world):
    """A gift card sold by scanning its barcode, then paid with by swiping it: the edge reads both
    devices, classifies the card by its programme, and the payments reach central."""
    number = world.stock["GIFT"][0]
    sale = await store.cashier.sell(number, 5000)
    assert sale["approved"] and sale["decision"] == "online", sale
    paid = await store.cashier.pay(number, 1250)
    assert paid["approved"] and paid["amount"] == 1250, paid
    assert (await world.till("balance", card_number=number))["balance"] == 3750


async def test_product_and_unknown_barcodes_are_told_apart(store):
    await store.scanner.scan("4006381333931", "]E0")
    event = await store.till.next_event(lambda e: e["type"] == "barcode")
    assert event["kind"] == "product" and event["product"] == "04006381333931"
    await store.scanner.scan("4006381333932", "]E0")  # wrong check digit
    event = await store.till.next_event(lambda e: e["type"] == "barcode")
    assert event["kind"] == "unknown"


async def test_card_numbers_of_no_programme_are_read_failures(store):
    await store.reader.swipe("4111111111111111")
    event = await store.till.next_event(lambda e: e["type"] in ("card_read", "read_failed"))
    assert event["type"] == "read_failed"


async def test_pin_pad_prompts_and_pin_token(store, world):
    """The pad shows the amount, the customer's PIN becomes a one-time token: the POS never sees the PIN
    block, the token works once and only for its card."""
    number = await world.sell("GIFT", 5000)
    await store.till.pad_show(amount=1250, currency="EUR")
    assert any("12.50" in line for line in store.pad.screen), store.pad.screen
    store.pad.pin = "4321"
    token = await store.till.pad_pin(number, 1250, "EUR")
    assert "4321" not in token
    with pytest.raises(InvalidInput):  # another card: refused, and the token is gone
        store.hub.take_pin_block(token, world.stock["GIFT"][1], "t1")
    token = await store.till.pad_pin(number, 1250, "EUR")
    assert pin_from_block(store.hub.take_pin_block(token, number, "t2"), number) == "4321"
    assert store.hub.take_pin_block(token, number, "t2") is None  # the same transaction again: no block needed
    with pytest.raises(InvalidInput):
        store.hub.take_pin_block(token, number, "t3")  # another transaction: used once


async def test_pin_cancelled_on_the_pad(store, world):
    number = await world.sell("GIFT", 5000)
    store.pad.pin = None
    asking = asyncio.create_task(store.till.pad_pin(number, 500, "EUR"))
    await asyncio.wait_for(store.pad.asked.wait(), 5)
    store.pad.cancel()
    with pytest.raises(TillError) as failed:
        await asking
    assert failed.value.status == 409 and failed.value.code == "pin_cancelled"


async def test_card_read_on_the_pad(store, world):
    number = world.stock["GIFT"][3]
    store.pad.card = (number, "3012")
    read = await store.till.call("POST", "/api/v1/till/pinpad/card", {"prompt": "INSERT CARD"})
    assert read["card_number"] == number and read["source"] == "pad"


async def test_unplugged_reader_recovers_without_restarting_the_node(store, world):
    number = await world.sell("GIFT", 5000)
    reader = store.hub.drivers["T1/magstripe"]
    await store.reader.port.unplug()
    await wait_until(lambda: not reader.available)
    event = await store.till.next_event(lambda e: e["type"] == "device_unavailable")
    assert event["device"] == "magstripe"
    status = {d["kind"]: d["available"] for d in await store.till.devices()}
    assert status == {"barcode": True, "magstripe": False, "pinpad": True}
    await store.reader.port.plug()  # a new terminal under the same name
    await wait_until(lambda: reader.available)
    await asyncio.sleep(0.05)
    paid = await store.cashier.pay(number, 100)
    assert paid["approved"], paid
    health = await (await store.edge.client.get("/health")).json()
    assert {d["name"]: d["outages"] for d in health["devices"]}["T1/magstripe"] == 1


async def test_pad_on_a_dropped_socket_comes_back(store, world):
    pad = store.hub.drivers["T1/pinpad"]
    await store.pad.port.unplug()
    await wait_until(lambda: not pad.available)
    with pytest.raises(TillError) as failed:
        await store.till.pad_show(["HELLO"])
    assert failed.value.status == 503 and failed.value.code == "device_unavailable"
    await store.pad.port.plug()
    await wait_until(lambda: pad.available)
    await store.till.pad_show(["HELLO", "AGAIN"])
    assert store.pad.screen == ("HELLO", "AGAIN")


async def test_track_data_never_reaches_the_logs(store, world, caplog):
    number = await world.sell("GIFT", 5000)
    caplog.set_level(logging.DEBUG)
    await store.cashier.pay(number, 100)
    await store.reader.fail()
    await store.till.next_event(lambda e: e["type"] == "read_failed")
    everything = caplog.text + repr([r.__dict__ for r in caplog.records])
    assert "=3012" not in everything and "CUSTOMER" not in everything  # no track data anywhere
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("tessera", "drivers", "simulators")))
    assert number not in ours  # device and edge logs show the card masked
    assert f"{number[:6]}******{number[-4:]}" in ours


async def test_events_api_validates_and_needs_a_till(store):
    resp = await store.edge.client.get("/api/v1/till/events", params={"wait": "x"},
                                       headers=store.edge.world.tills["S1"])
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "invalid_input"
    resp = await store.edge.client.get("/api/v1/till/events")
    assert resp.status == 401
    resp = await store.edge.client.post("/api/v1/till/pinpad/display", json={"lines": ["x" * 21]},
                                        headers=store.edge.world.tills["S1"])
    assert resp.status == 422


async def pin_programme_stock(world, count: int = 5) -> list[str]:
    """Cards of a programme whose payments need the card's PIN, in a pack for sale at store S1."""
    await world.admin("POST", "/api/v1/admin/programmes", {
        "code": "PINC", "name": "PIN Card", "currency": "EUR", "number_prefix": "6036", "number_length": 16,
        "min_amount": 1000, "max_amount": 50000, "pin_required": True})
    central = world.central
    async with central.db.begin() as conn:
        issue_id = await central.issuing.start_issue(conn, "PINC", count, "tests")
    await central.issuing.run_issue(issue_id)
    with open(central.issuing.production_path(issue_id), newline="") as f:
        numbers = [row["card_number"] for row in csv.DictReader(f)]
    pack = await world.admin("POST", "/api/v1/admin/packs", {"numbers": numbers, "store_code": "S1"})
    await world.admin("POST", f"/api/v1/admin/packs/{pack['id']}/authorize")
    return numbers


async def test_pin_chosen_at_sale_then_checked_by_central(store, world):
    """The customer picks a PIN on the pad when the card is sold; payments swipe, ask the PIN on the pad,
    and central checks it. With central cut off, the edge cannot check a PIN and declines."""
    number = (await pin_programme_stock(world))[0]
    await store.edge.sync()
    await store.edge.node.refresh_configuration()
    cashier = Cashier(store.till, scan=store.scanner.scan, swipe=store.reader.swipe,
                      needs_pin=lambda card: card.startswith("6036"))
    store.pad.pin = "2468"
    token = await store.till.pad_pin(number)
    sale = await store.till.till("sale", card_number=number, amount=3000, pin_token=token)
    assert sale["approved"] and sale["decision"] == "online", sale
    paid = await cashier.pay(number, 1000)
    assert paid["approved"] and paid["balance"] == 2000, paid
    store.pad.pin = "1111"
    token = await store.till.pad_pin(number, 1000, "EUR")
    body = {"txn_id": str(uuid.uuid4()), "card_number": number, "amount": 1000, "pin_token": token}
    wrong = await store.till.till("payment", **body)
    assert await store.till.till("payment", **body) == wrong  # a resend is answered from the journal
    assert (wrong["approved"], wrong["decline_code"]) == (False, "pin_incorrect")
    no_pin = await store.till.till("payment", card_number=number, amount=500)
    assert no_pin["decline_code"] == "pin_required"
    store.pad.pin = "2468"
    store.edge.cut()
    offline = await cashier.pay(number, 500)
    assert (offline["decision"], offline["approved"], offline["decline_code"]) == ("offline", False, "offline_limit")
    store.edge.heal()
    assert (await world.till("balance", card_number=number))["balance"] == 2000


async def test_a_pin_token_is_for_one_payment_of_its_card(store, world):
    number = await world.sell("GIFT", 5000)
    token = await store.till.pad_pin(number)
    other = world.stock["GIFT"][5]
    with pytest.raises(TillError) as refused:
        await store.till.till("payment", card_number=other, amount=100, pin_token=token)
    assert refused.value.status == 422
    with pytest.raises(TillError):  # the refused attempt used the token up
        await store.till.till("payment", card_number=number, amount=100, pin_token=token)


async def test_the_till_simulator_runs_steady_checkouts_through_the_devices(store, world):
    """Baskets scanned item by item, cards swiped, payments approved: the load the till simulator makes."""
    cards = [await world.sell("GIFT", 10000) for _ in range(3)]
    products = [("4006381333931", 249), ("96385074", 129)]
    report = await run_load(store.cashier, cards, products, rate=4.0, duration=2.0)
    assert report.checkouts >= 3 and report.errors == 0, report.summary()
    assert report.approved == report.checkouts == len(report.latencies)
    spent = sum([10000 - (await world.till("balance", card_number=c))["balance"] for c in cards])
    assert spent > 0 and "swipe to answer p50" in report.summary()

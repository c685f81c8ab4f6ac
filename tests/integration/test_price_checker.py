"""The edge's price check service on a real socket, played by simulated devices, and the kiosk API."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from drivers.pricechecker import PriceCheckerDevice, PriceCheckerOptions, encode_screen
from edge.pricecheck import PRICE_CHECK, PriceCheckService, card_screen, kiosk_lookup, kiosk_page

CARD = "6035990000001234"
EAN = "4006381333931"
CARD_INFO = {"kind": "card", "number": CARD, "balance": 1234, "currency": "EUR", "points": 120, "tier": "Gold",
             "state": "active", "decision": "online"}
PRODUCT_INFO = {"kind": "product", "name": "Crème brûlée", "price": 249, "member_price": 199, "currency": "EUR",
                "unit": "piece"}


async def lookup(code: str) -> dict:
    """The catalogue and card file of a small shop."""
    await asyncio.sleep(0)
    if code == CARD:
        return CARD_INFO
    if code == EAN:
        return PRODUCT_INFO
    if code == "BOOM":
        raise RuntimeError(f"database is down while looking up {code}")
    if code == "SLOW":
        await asyncio.sleep(30)
    if code == "ODD":
        return {"what": "no kind"}
    return {"kind": "unknown", "reason": "not_found"}


class Device:
    """A price checker on the other end of a real TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sim: PriceCheckerDevice) -> None:
        self.reader, self.writer, self.sim = reader, writer, sim
        self.received = bytearray()

    @classmethod
    async def connect(cls, port: int, **sim) -> Device:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, PriceCheckerDevice(**sim))

    async def until(self, *expected: str, timeout: float = 5.0) -> list[str]:
        """Read and display the host's bytes until the screen shows exactly ``expected``."""
        async with asyncio.timeout(timeout):
            while self.sim.screen_text() != list(expected):
                data = await self.reader.read(4096)
                assert data, f"connection closed; screen was {self.sim.screen_text()}"
                self.received += data
                assert self.sim.receive_data(data) == []
                answer = self.sim.data_to_send()
                if answer:
                    self.writer.write(answer)
        return self.sim.screen_text()

    async def scan(self, code: str, *expected: str) -> list[str]:
        self.writer.write(self.sim.scan(code))
        await self.writer.drain()
        return await self.until(*expected)

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


IDLE = ("Price check", "Scan card or product")
CARD_SCREEN = ("603599******1234", "12.34 EUR", "120 points", "Tier: Gold")
PRODUCT_SCREEN = ("Creme brulee", "2.49 EUR", "Members: 1.99 EUR")
ASK_STAFF = ("Sorry", "Please ask staff")


@pytest.fixture
async def service() -> AsyncIterator[PriceCheckService]:
    svc = PriceCheckService(lookup, lookup_timeout=0.3)
    await svc.start("127.0.0.1", 0)
    yield svc
    await svc.close()


async def test_card_scan_shows_masked_number_balance_points_and_tier(service, caplog):
    caplog.set_level(logging.INFO, "tessera.edge.pricecheck")
    device = await Device.connect(service.port)
    await device.until(*IDLE)
    device.received.clear()
    await device.scan(CARD, *CARD_SCREEN)
    assert device.received == encode_screen(card_screen(CARD_INFO))  # the screen's commands, nothing else
    await device.close()
    await wait_for(lambda: service.connections == 0)
    assert CARD not in caplog.text and "603599******1234" in caplog.text
    assert "price checker connected" in caplog.text and "price checker disconnected" in caplog.text


async def test_product_scan_shows_price_and_member_price(service, caplog):
    caplog.set_level(logging.INFO, "tessera.edge.pricecheck")
    device = await Device.connect(service.port)
    await device.until(*IDLE)
    await device.scan(EAN, *PRODUCT_SCREEN)
    assert f"code={EAN} kind=product" in caplog.text  # product codes are logged as they are
    await device.close()


async def test_unknown_code(service):
    device = await Device.connect(service.port)
    await device.until(*IDLE)
    await device.scan("2000000000008", "Not found", "Please ask staff")
    await device.close()


@pytest.mark.parametrize("code", ["BOOM", "SLOW", "ODD"])
async def test_failing_lookup_asks_staff_and_the_connection_survives(service, caplog, code):
    device = await Device.connect(service.port)
    await device.until(*IDLE)
    await device.scan(code, *ASK_STAFF)
    await device.scan(EAN, *PRODUCT_SCREEN)
    assert "database is down" not in caplog.text  # the error's text may hold a code: only its type is logged
    await device.close()


async def test_many_devices_at_once(service):
    devices = [await Device.connect(service.port) for _ in range(6)]
    await asyncio.gather(*(d.until(*IDLE) for d in devices))

    async def shop(device: Device, n: int) -> None:
        for _ in range(3):
            if n % 3 == 0:
                await device.scan(CARD, *CARD_SCREEN)
            elif n % 3 == 1:
                await device.scan(EAN, *PRODUCT_SCREEN)
            else:
                await device.scan("BOOM", *ASK_STAFF)
            await device.scan(f"CODE{n}", "Not found", "Please ask staff")

    await asyncio.gather(*(shop(d, n) for n, d in enumerate(devices)))
    assert service.connections == 6
    await asyncio.gather(*(d.close() for d in devices))
    await wait_for(lambda: service.connections == 0)


async def test_device_that_disconnects_mid_scan(service, caplog):
    caplog.set_level(logging.INFO, "tessera.edge.pricecheck")
    device = await Device.connect(service.port)
    await device.until(*IDLE)
    device.writer.write(b"6035990000")  # half a card number, no CR
    await device.writer.drain()
    await device.close()
    await wait_for(lambda: service.connections == 0)
    assert "connection lost in the middle of a scan" in caplog.text
    assert "6035990000" not in caplog.text
    other = await Device.connect(service.port)  # the server is unharmed
    await other.until(*IDLE)
    await other.scan(EAN, *PRODUCT_SCREEN)
    await other.close()


async def test_garbage_from_a_device_is_survived(service, caplog):
    device = await Device.connect(service.port)
    await device.until(*IDLE)
    device.writer.write(b"\xff\x00\x1b" * 200 + b"\r")  # longer than a line, then noise
    await device.scan(CARD, *CARD_SCREEN)
    assert "protocol violation" in caplog.text
    await device.close()


async def test_result_returns_to_the_idle_screen():
    svc = PriceCheckService(lookup, display_seconds=0.2)
    port = await svc.start("127.0.0.1", 0)
    try:
        device = await Device.connect(port)
        await device.until(*IDLE)
        await device.scan(EAN, *PRODUCT_SCREEN)
        await device.until(*IDLE, timeout=2)
        await device.scan(CARD, *CARD_SCREEN)  # and the next scan works as before
        await device.close()
    finally:
        await svc.close()


async def test_unit_id_and_hello_options(caplog):
    caplog.set_level(logging.INFO, "tessera.edge.pricecheck")
    options = PriceCheckerOptions(unit_id=True, identify=True, welcome="Welcome!", hint="Scan here")
    svc = PriceCheckService(lookup, options=options)
    port = await svc.start("127.0.0.1", 0)
    try:
        device = await Device.connect(port, unit_id="AISLE-7", firmware="SG15V03.14")
        await device.until("Welcome!", "Scan here")
        await device.scan(CARD, *CARD_SCREEN)
        assert "firmware=SG15V03.14" in caplog.text and "unit=AISLE-7" in caplog.text
        await device.close()
    finally:
        await svc.close()


async def test_connections_are_bounded(caplog):
    svc = PriceCheckService(lookup, max_connections=1)
    port = await svc.start("127.0.0.1", 0)
    try:
        first = await Device.connect(port)
        await first.until(*IDLE)
        second = await Device.connect(port)
        assert await asyncio.wait_for(second.reader.read(100), 2) == b""  # refused: closed at once
        await first.scan(EAN, *PRODUCT_SCREEN)
        assert "too_many_connections" in caplog.text
        await first.close()
        await second.close()
    finally:
        await svc.close()


async def test_close_ends_device_connections():
    svc = PriceCheckService(lookup)
    port = await svc.start("127.0.0.1", 0)
    device = await Device.connect(port)
    await device.until(*IDLE)
    await svc.close()
    assert await asyncio.wait_for(device.reader.read(100), 2) == b""
    assert svc.connections == 0 and svc.port is None
    await device.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def wait_for(condition, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


# -- the kiosk ---------------------------------------------------------------------------------------


@pytest.fixture
async def kiosk() -> AsyncIterator[TestClient]:
    app = web.Application()
    app[PRICE_CHECK] = PriceCheckService(lookup, lookup_timeout=0.3, kiosk_rate=20)
    app.router.add_get("/api/v1/kiosk/lookup", kiosk_lookup)
    app.router.add_get("/kiosk", kiosk_page)
    async with TestClient(TestServer(app)) as client:
        yield client


async def test_kiosk_card_lookup(kiosk: TestClient):
    response = await kiosk.get("/api/v1/kiosk/lookup", params={"code": CARD})
    assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert body["kind"] == "card" and body["timeout_s"] == 5.0
    assert [line["text"] for line in body["lines"]] == list(CARD_SCREEN)
    assert body["lines"][1] == {"text": "12.34 EUR", "font": "large", "align": "center"}
    assert CARD not in await response.text()


async def test_kiosk_product_unknown_and_failing_lookups(kiosk: TestClient):
    product = await (await kiosk.get("/api/v1/kiosk/lookup", params={"code": f"  {EAN}\n"})).json()
    assert product["kind"] == "product" and [line["text"] for line in product["lines"]] == list(PRODUCT_SCREEN)
    unknown = await (await kiosk.get("/api/v1/kiosk/lookup", params={"code": "ABC"})).json()
    assert unknown["kind"] == "unknown" and unknown["reason"] == "not_found"
    for code in ("BOOM", "SLOW"):
        response = await kiosk.get("/api/v1/kiosk/lookup", params={"code": code})
        body = await response.json()
        assert response.status == 200 and body["reason"] == "unavailable"
        assert [line["text"] for line in body["lines"]] == list(ASK_STAFF)


@pytest.mark.parametrize("params", [{}, {"code": ""}, {"code": "   "}, {"code": "1" * 65}, {"code": "caf\u00e9"},
                                    {"code": "a\x1bb"}])
async def test_kiosk_rejects_bad_codes(kiosk: TestClient, params):
    response = await kiosk.get("/api/v1/kiosk/lookup", params=params)
    assert response.status == 400
    body = await response.json()
    assert body["error"]["code"] == "invalid_input" and body["error"]["message"]


async def test_kiosk_rate_limit_per_client(kiosk: TestClient):
    statuses = [(await kiosk.get("/api/v1/kiosk/lookup", params={"code": EAN})).status for _ in range(20)]
    assert statuses == [200] * 20
    response = await kiosk.get("/api/v1/kiosk/lookup", params={"code": CARD})
    assert response.status == 429 and response.headers["Retry-After"] == "60"
    assert (await response.json())["error"]["code"] == "rate_limited"
    # Bad requests count too, so the limit cannot be probed around.
    assert (await kiosk.get("/api/v1/kiosk/lookup")).status == 429


async def test_kiosk_rate_limit_window_passes():
    now = [0.0]
    app = web.Application()
    app[PRICE_CHECK] = PriceCheckService(lookup, kiosk_rate=2, kiosk_window=60, clock=lambda: now[0])
    app.router.add_get("/api/v1/kiosk/lookup", kiosk_lookup)
    async with TestClient(TestServer(app)) as client:
        get = lambda: client.get("/api/v1/kiosk/lookup", params={"code": EAN})  # noqa: E731
        assert [(await get()).status for _ in range(3)] == [200, 200, 429]
        now[0] = 61.0
        assert (await get()).status == 200


async def test_kiosk_page_is_self_contained(kiosk: TestClient):
    response = await kiosk.get("/kiosk")
    assert response.status == 200 and response.content_type == "text/html"
    html = await response.text()
    assert '<input id="code"' in html and 'aria-live="polite"' in html and "/api/v1/kiosk/lookup" in html
    assert not re.search(r"https?://|<link|\ssrc=|@import|url\(", html)  # nothing loaded from anywhere
    policy = response.headers["Content-Security-Policy"]
    for tag in ("script", "style"):
        (body,) = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy

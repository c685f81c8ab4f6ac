"""Simulated devices: each plays the device side of the same protocol module the drivers use, over a
``SimulatedPort`` (pseudo-terminal or socket), scriptable from tests and from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from core.barcodes import is_gtin
from core.track import track1, track2
from drivers import barcode, magstripe, pinpad, pricechecker
from drivers.transport import DeviceURL

from .ports import SimulatedPort

__all__ = ["ScannerSimulator", "CardReaderSimulator", "PinPadSimulator", "PriceCheckerSimulator"]

log = logging.getLogger("tessera.simulators")


class ScannerSimulator:
    """A barcode scanner: ``scan`` sends a code framed as the configured scanner would."""

    def __init__(self, port: SimulatedPort, options: barcode.BarcodeOptions | None = None) -> None:
        self.port = port
        self.options = options or barcode.BarcodeOptions.from_query(_query(port))

    async def scan(self, value: str, symbology: str | None = None) -> None:
        """Send ``value``; a scanner that sends AIM identifiers labels GTINs as EAN/UPC and the rest
        (card numbers are printed as Code 128) as Code 128, unless ``symbology`` says otherwise."""
        if symbology is None and self.options.aim:
            symbology = {8: "]E4", 12: "]E0", 13: "]E0"}.get(len(value), "]C0") if is_gtin(value) else "]C0"
        await self.port.write(barcode.encode_scan(value, self.options, symbology))


class CardReaderSimulator:
    """A magnetic-stripe reader: ``swipe`` sends tracks 1 and 2 (as encoded on the card) in the reader's
    framing; ``fail`` sends a read error."""

    def __init__(self, port: SimulatedPort, options: magstripe.MagstripeOptions | None = None) -> None:
        self.port = port
        self.options = options or magstripe.MagstripeOptions.from_query(_query(port))

    async def swipe(self, number: str, expiry: str = "3012", name: str = "CUSTOMER/TESSERA",
                    service_code: str = "120", tracks: tuple[int, ...] = (1, 2)) -> float:
        """Send one swipe; the monotonic time its last byte was written."""
        t1 = track1(number, name, expiry, service_code) if 1 in tracks else None
        t2 = track2(number, expiry, service_code) if 2 in tracks else None
        await self.port.write(magstripe.encode_swipe(t1, t2, None, self.options))
        return time.monotonic()

    async def fail(self) -> None:
        await self.port.write(magstripe.encode_read_error(self.options))


class PinPadSimulator:
    """A PIN pad with a customer in front of it. The customer enters ``pin`` when asked (None: waits for
    ``enter_pin``), and presents ``card`` when the pad asks for one."""

    def __init__(self, port: SimulatedPort, *, pin: str | None = "1234", think: float = 0.0,
                 on_screen: Callable[[tuple[str, ...]], None] | None = None) -> None:
        self.port = port
        self.device = pinpad.PinPadDevice()
        self.pin = pin
        self.card: tuple[str, str | None] | None = None  # (number, expiry) to present when asked
        self.think = think  # seconds the customer takes
        self.on_screen = on_screen
        self.asked = asyncio.Event()  # a PIN or card request is waiting for the customer
        self._timer: asyncio.Task | None = None
        port.on_data = self._received

    def _received(self, data: bytes) -> None:
        for command in self.device.receive_data(data):
            if isinstance(command, pinpad.RequestPin):
                self.asked.set()
                if self.pin is not None:
                    self._later(lambda: self.device.enter_pin(self.pin))
            elif isinstance(command, pinpad.ReadCard):
                self.asked.set()
                if self.card is not None:
                    number, expiry = self.card
                    self._later(lambda: self.device.read_card(number, expiry))
            if self.on_screen is not None:
                self.on_screen(tuple(self.device.screen))
        self._flush()

    def _later(self, act: Callable[[], None]) -> None:
        async def run() -> None:
            await asyncio.sleep(self.think)
            self.asked.clear()
            act()
            self._flush()

        asyncio.get_running_loop().create_task(run())

    def _flush(self) -> None:
        data = self.device.data_to_send()
        if data:
            task = asyncio.get_running_loop().create_task(self.port.write(data))
            task.add_done_callback(_quiet)
        self._arm()

    def _arm(self) -> None:
        """Run the device's retransmission timer when it has one."""
        deadline = self.device.next_deadline()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is None:
            return

        async def fire() -> None:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            self._timer = None
            self.device.handle_timeout(time.monotonic())
            self._flush()

        self._timer = asyncio.get_running_loop().create_task(fire())

    def enter_pin(self, pin: str) -> None:
        self.asked.clear()
        self.device.enter_pin(pin)
        self._flush()

    def cancel(self) -> None:
        self.asked.clear()
        self.device.cancel()
        self._flush()

    def present_card(self, number: str, expiry: str | None = None) -> None:
        self.asked.clear()
        self.device.read_card(number, expiry)
        self._flush()

    @property
    def screen(self) -> tuple[str, ...]:
        return tuple(self.device.screen)


class PriceCheckerSimulator:
    """A fixed price checker on the store network: connects to the edge's price checker port, sends
    scans, and shows what the edge sends back."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.device = pricechecker.PriceCheckerDevice()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()
            self._writer = None

    async def check(self, code: str, timeout: float = 10.0) -> list[str]:
        """Scan ``code``; the screen once the edge's answer has arrived."""
        if self._writer is None:
            await self.connect()
        assert self._reader is not None and self._writer is not None
        self._writer.write(self.device.scan(code))
        await self._writer.drain()
        data = await asyncio.wait_for(self._reader.read(4096), timeout)
        while data:  # the answer is complete when nothing more comes for a moment
            self.device.receive_data(data)
            try:
                data = await asyncio.wait_for(self._reader.read(4096), 0.05)
            except TimeoutError:
                break
        else:
            raise ConnectionError("the edge closed the price checker's connection")
        return self.device.screen_text()


def _query(port: SimulatedPort) -> dict[str, str]:
    return dict(DeviceURL.parse(port.url).options)


def _quiet(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("simulated device write failed: %s", type(task.exception()).__name__)

"""The driver and its transports against simulated devices on real pseudo-terminals and sockets:
URLs, availability, reconnects with backoff, and protocol timers run by the driver."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from core import InvalidInput
from drivers import barcode, pinpad
from drivers.events import BarcodeScanned, DisplayDone
from drivers.transport import DeviceDriver, DeviceUnavailable, DeviceURL
from simulators.devices import PinPadSimulator, ScannerSimulator
from simulators.ports import PtyPort, SocketPort


def test_device_urls():
    url = DeviceURL.parse("/dev/ttyUSB0?baud=19200&framing=magtek")
    assert (url.path, url.baud, dict(url.options), url.is_socket) == ("/dev/ttyUSB0", 19200, {"framing": "magtek"},
                                                                      False)
    url = DeviceURL.parse("socket://10.0.0.5:4001?aim=1")
    assert (url.host, url.port, dict(url.options), url.is_socket) == ("10.0.0.5", 4001, {"aim": "1"}, True)
    for bad in ("ttyUSB0", "socket://host", "socket://:80", "/dev/ttyS0?baud=12345", "/dev/x?a=1&&", "http://x:1"):
        with pytest.raises(InvalidInput):
            DeviceURL.parse(bad)


def test_bad_protocol_options_fail_when_the_driver_is_made():
    with pytest.raises(InvalidInput):
        DeviceDriver("T1/barcode", "socket://127.0.0.1:1?terminator=tab",
                     lambda q: barcode.BarcodeReader(barcode.BarcodeOptions.from_query(q)), lambda n, e: None)


async def wait_until(predicate, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def scanner_driver(url: str, events: list, availability: list) -> DeviceDriver:
    return DeviceDriver("T1/barcode", url, lambda q: barcode.BarcodeReader(barcode.BarcodeOptions.from_query(q)),
                        lambda name, event: events.append(event), lambda name, up: availability.append(up),
                        backoff_base=0.05, backoff_cap=0.2)


@pytest.mark.parametrize("kind", ["pty", "socket"])
async def test_unplug_and_replug_recovers(kind, tmp_path, caplog):
    port = PtyPort(tmp_path / "scanner", "terminator=lf") if kind == "pty" else SocketPort(query="terminator=lf")
    await port.plug()
    events: list = []
    availability: list = []
    driver = scanner_driver(port.url, events, availability)
    scanner = ScannerSimulator(port)
    driver.start()
    try:
        await wait_until(lambda: driver.available)
        await asyncio.sleep(0.05)
        await scanner.scan("4006381333931")
        await wait_until(lambda: events)
        assert events == [BarcodeScanned("4006381333931")]
        caplog.set_level(logging.INFO, logger="tessera.devices")
        await port.unplug()
        await wait_until(lambda: not driver.available)
        await asyncio.sleep(0.5)  # several failed attempts while unplugged: still one log line
        assert sum("device unavailable" in r.getMessage() for r in caplog.records) == 1
        with pytest.raises(DeviceUnavailable):
            driver.send(b"x")
        await port.plug()
        await wait_until(lambda: driver.available)
        await asyncio.sleep(0.05)
        await scanner.scan("96385074")
        await wait_until(lambda: len(events) == 2)
        assert events[1] == BarcodeScanned("96385074")
        assert availability == [True, False, True] and driver.outages == 1
    finally:
        await driver.close()
        await port.unplug()


async def test_a_device_that_is_not_there_yet_is_found_when_it_appears(tmp_path):
    port = PtyPort(tmp_path / "late", "terminator=cr")
    events: list = []
    availability: list = []
    driver = scanner_driver(port.url, events, availability)
    driver.start()
    try:
        await wait_until(lambda: availability == [False])
        assert driver.status()["last_error"]
        await port.plug()
        await wait_until(lambda: driver.available)
    finally:
        await driver.close()
        await port.unplug()


async def test_driver_runs_the_pads_retransmission_timer(tmp_path):
    """The pad loses the host's first two frames: the driver's timer resends, the command gets through once."""
    port = PtyPort(tmp_path / "pad", "ack_timeout=0.1&retries=3")
    await port.plug()
    pad = PinPadSimulator(port)
    events: list = []
    driver = DeviceDriver("T1/pinpad", port.url, lambda q: pinpad.PinPadHost(pinpad.PinPadOptions.from_query(q)),
                          lambda name, event: events.append(event), backoff_base=0.05, backoff_cap=0.2)
    driver.start()
    try:
        await wait_until(lambda: driver.available)
        await asyncio.sleep(0.05)
        pad.device.drop_next(2)
        driver.send(pinpad.Display(("HELLO",)))
        await wait_until(lambda: any(isinstance(e, DisplayDone) for e in events), 5)
        assert pad.screen == ("HELLO",)
        assert sum(isinstance(e, DisplayDone) for e in events) == 1
    finally:
        await driver.close()
        await port.unplug()


async def test_a_connected_idle_driver_uses_no_cpu(tmp_path):
    port = PtyPort(tmp_path / "idle")
    await port.plug()
    driver = scanner_driver(port.url, [], [])
    driver.start()
    try:
        await wait_until(lambda: driver.available)
        before = time.process_time()
        await asyncio.sleep(1.0)
        assert time.process_time() - before < 0.2  # waiting for bytes, not polling for them
    finally:
        await driver.close()
        await port.unplug()

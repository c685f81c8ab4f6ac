"""Thin transports for the sans-IO device protocols, and the driver that keeps a device connected.

A device is named by a URL: ``socket://host:port`` (a serial device server or a TCP device) or a
serial port / pseudo-terminal path (``/dev/ttyUSB0``, ``/dev/pts/3``, a symlink to either), each
with an optional query string: ``baud=`` for serial ports, every other key is the protocol's
option (``/dev/ttyUSB0?baud=19200&framing=magtek``). The driver reconnects with backoff, reports
availability, runs the protocol's timers and hands its events on; nothing else happens here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import serial
import serial_asyncio_fast

from core import InvalidInput
from sync.protocol import backoff_delay

from .events import DeviceEvent, LocalProtocolError
from .protocol import DeviceProtocol

__all__ = ["DeviceURL", "open_link", "DeviceDriver", "DeviceUnavailable"]

log = logging.getLogger("tessera.devices")

_BAUDS = {1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200}
_READ_SIZE = 4096


class DeviceUnavailable(LocalProtocolError):
    """A command was sent to a device that is not connected."""

    code = "device_unavailable"


@dataclass(frozen=True, slots=True)
class DeviceURL:
    """Where a device is and how to talk to it."""

    text: str
    host: str | None = None
    port: int | None = None
    path: str | None = None
    baud: int = 9600
    options: Mapping[str, str] = field(default_factory=dict)  # the protocol's own options

    @property
    def is_socket(self) -> bool:
        return self.host is not None

    @classmethod
    def parse(cls, text: str) -> DeviceURL:
        """``socket://host:port[?opts]`` or ``/path[?baud=N&opts]``; InvalidInput when neither."""
        base, _, query = text.partition("?")
        try:
            options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
        except ValueError:
            raise InvalidInput(f"device URL {text!r} has a malformed query string") from None
        if base.startswith("socket://"):
            parts = urlsplit(base)
            try:
                port = parts.port
            except ValueError:
                port = None
            if not parts.hostname or port is None:
                raise InvalidInput(f"device URL {text!r} needs socket://host:port")
            return cls(text, host=parts.hostname, port=port, options=options)
        if not base.startswith("/"):
            raise InvalidInput(f"device URL {text!r} is neither socket://host:port nor an absolute device path")
        baud = options.pop("baud", "9600")
        if not baud.isdigit() or int(baud) not in _BAUDS:
            raise InvalidInput(f"device URL {text!r}: baud is one of {sorted(_BAUDS)}")
        return cls(text, path=base, baud=int(baud), options=options)


async def open_link(url: DeviceURL) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open the byte stream to a device: asyncio streams for TCP, pyserial for ports and ptys."""
    if url.is_socket:
        return await asyncio.open_connection(url.host, url.port)
    return await serial_asyncio_fast.open_serial_connection(url=url.path, baudrate=url.baud)


EventSink = Callable[[str, DeviceEvent], Any]
AvailabilitySink = Callable[[str, bool], Any]
LinkOpener = Callable[[DeviceURL], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
_LINK_ERRORS = (OSError, EOFError, serial.SerialException, asyncio.IncompleteReadError)


class DeviceDriver:
    """Keeps one device connected: opens its URL, feeds bytes to a fresh protocol object per
    connection, runs the protocol's timers, writes its output, and hands events to ``on_event``.

    A lost or refused link marks the device unavailable (one log line per outage) and is retried
    with exponential backoff and jitter until the driver is closed.
    """

    def __init__(self, name: str, url: DeviceURL | str, protocol_factory: Callable[[Mapping[str, str]], DeviceProtocol],
                 on_event: EventSink, on_availability: AvailabilitySink | None = None, *,
                 backoff_base: float = 0.2, backoff_cap: float = 5.0, opener: LinkOpener = open_link) -> None:
        self.name = name
        self.url = url if isinstance(url, DeviceURL) else DeviceURL.parse(url)
        self._factory = protocol_factory
        protocol_factory(self.url.options)  # bad options fail now, at configuration time
        self._on_event = on_event
        self._on_availability = on_availability
        self._backoff = (backoff_base, backoff_cap)
        self._opener = opener
        self._protocol: DeviceProtocol | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()  # a command queued output or a timer
        self._state: bool | None = None  # None until the first attempt
        self.outages = 0
        self.connected_at: float | None = None
        self.last_error: str | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"device {self.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._drop()

    @property
    def available(self) -> bool:
        return self._state is True

    def send(self, command: Any) -> None:
        """Queue a command for the device; DeviceUnavailable when it is not connected."""
        if self._protocol is None or not self.available:
            raise DeviceUnavailable(f"device {self.name} is not available")
        self._protocol.send(command)
        self._flush(wake=True)

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url.text, "available": self.available, "outages": self.outages,
                "last_error": self.last_error}

    # -- the connection loop -------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                reader, self._writer = await self._opener(self.url)
            except _LINK_ERRORS as exc:
                self._down(exc)
                failures += 1
                await asyncio.sleep(backoff_delay(failures, *self._backoff))
                continue
            failures = 0
            self._protocol = self._factory(self.url.options)
            self._set_available(True)
            try:
                await self._serve(reader)
            except _LINK_ERRORS as exc:
                self._down(exc)
            except Exception as exc:  # a protocol bug: reconnect rather than lose the device for good
                log.exception("device driver failed device=%s", self.name)
                self._down(exc)
            finally:
                lost = self._protocol.connection_lost() if self._protocol else []
                self._protocol = None
                await self._drop()
                self._deliver(lost)
            await asyncio.sleep(backoff_delay(0, *self._backoff))

    async def _serve(self, reader: asyncio.StreamReader) -> None:
        protocol = self._protocol
        assert protocol is not None
        self._flush()
        read = asyncio.ensure_future(reader.read(_READ_SIZE))
        try:
            while True:
                deadline = protocol.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                wake = asyncio.ensure_future(self._wake.wait())
                done, _ = await asyncio.wait({read, wake}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                wake.cancel()
                self._wake.clear()
                if read in done:
                    data = read.result()
                    if not data:
                        raise EOFError("device closed the link")
                    self._deliver(protocol.receive_data(data))
                    read = asyncio.ensure_future(reader.read(_READ_SIZE))
                deadline = protocol.next_deadline()
                if deadline is not None and deadline <= time.monotonic():
                    self._deliver(protocol.handle_timeout(time.monotonic()))
                self._flush()
                if self._writer is not None:
                    await self._writer.drain()
        finally:
            read.cancel()
            await asyncio.gather(read, return_exceptions=True)

    def _flush(self, wake: bool = False) -> None:
        """Write what the protocol has queued; ``wake`` the connection loop so that it looks at the
        protocol's timers again (after a command from outside the loop)."""
        if self._protocol is None or self._writer is None:
            return
        data = self._protocol.data_to_send()
        if data:
            self._writer.write(data)
        if wake:
            self._wake.set()

    def _deliver(self, events: list[DeviceEvent]) -> None:
        for event in events:
            try:
                self._on_event(self.name, event)
            except Exception:  # a consumer's bug must not take the device down
                log.exception("device event handler failed device=%s event=%s", self.name, type(event).__name__)

    def _down(self, exc: BaseException) -> None:
        # Say why without the exception's text: a serial error may quote what was on the line.
        errno = getattr(exc, "errno", None)
        self.last_error = f"{type(exc).__name__} errno={errno}" if errno else type(exc).__name__
        self._set_available(False)

    def _set_available(self, available: bool) -> None:
        if available == self._state:
            return
        self._state = available
        if available:
            self.connected_at = time.monotonic()
            log.info("device available device=%s url=%s", self.name, self.url.text)
        else:
            self.outages += 1
            log.warning("device unavailable device=%s url=%s reason=%s", self.name, self.url.text, self.last_error)
        if self._on_availability is not None:
            try:
                self._on_availability(self.name, available)
            except Exception:
                log.exception("device availability handler failed device=%s", self.name)

    async def _drop(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        writer.close()
        try:
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (*_LINK_ERRORS, asyncio.TimeoutError):
            pass

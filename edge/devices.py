"""The store's devices at each till: drivers kept connected, their events queued for the till's POS,
and the PIN pad's exchanges (prompts, amounts, card reads, PIN entry).

A till's POS reads its devices' events by long polling ``/api/v1/till/events``. A PIN never reaches
the POS: the pad's PIN block stays in this process's memory under a one-time token, which the POS
puts in its payment, and the node hands the block to central. Tokens expire after ``pin_token_ttl``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from core import DomainError, InvalidInput, NumberTemplate
from drivers import barcode, magstripe, pinpad
from drivers.events import (
    BarcodeScanned,
    CardRead,
    DeviceEvent,
    DisplayDone,
    KeyPressed,
    PinCancelled,
    PinEntered,
    ProtocolViolation,
    ReadFailed,
    mask_number,
)
from drivers.transport import DeviceDriver, DeviceUnavailable, DeviceURL

__all__ = ["DeviceSpec", "DeviceHub", "parse_device_specs", "KINDS", "PinCancelledError", "DeviceBusy"]

log = logging.getLogger("tessera.edge.devices")

KINDS = ("barcode", "magstripe", "pinpad")
EVENTS_KEPT = 256  # per till; a POS that falls further behind sees a gap in the sequence numbers


class PinCancelledError(DomainError):
    """The customer cancelled PIN entry (or a card read) on the pad, or it timed out."""

    code = "pin_cancelled"


class DeviceBusy(DomainError):
    """The pad is already in an exchange for this till."""

    code = "device_busy"


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    till: str
    kind: str
    url: DeviceURL

    @property
    def name(self) -> str:
        return f"{self.till}/{self.kind}"


def parse_device_specs(text: str) -> list[DeviceSpec]:
    """``TILL/KIND=URL`` items separated by spaces or commas, e.g.
    ``T1/barcode=socket://10.0.0.5:4001?terminator=crlf T1/magstripe=/dev/ttyUSB0?framing=magtek``."""
    specs: list[DeviceSpec] = []
    for item in text.replace(",", " ").split():
        name, sep, url = item.partition("=")
        till, slash, kind = name.partition("/")
        if not sep or not slash or not till or kind not in KINDS:
            raise InvalidInput(f"device {item!r} is not TILL/KIND=URL with KIND one of {', '.join(KINDS)}")
        spec = DeviceSpec(till, kind, DeviceURL.parse(url))
        if any(s.name == spec.name for s in specs):
            raise InvalidInput(f"device {spec.name} is configured twice")
        specs.append(spec)
    return specs


def event_json(event: DeviceEvent, classify: Callable[[BarcodeScanned], Any] | None = None) -> dict[str, Any] | None:
    """What the POS sees of an event (None: not for the POS). Never a PIN block or track data."""
    if isinstance(event, CardRead):
        return {"type": "card_read", "card": event.number, "source": event.source, "expiry": event.expiry}
    if isinstance(event, BarcodeScanned):
        out: dict[str, Any] = {"type": "barcode", "code": event.value, "symbology": event.symbology}
        if classify is not None:
            out.update(classify(event))
        return out
    if isinstance(event, ReadFailed):
        return {"type": "read_failed", "reason": event.reason, "track": event.track}
    if isinstance(event, KeyPressed):
        return {"type": "key", "key": event.key}
    if isinstance(event, ProtocolViolation):
        return {"type": "device_error", "reason": event.reason}
    return None  # PinEntered, PinCancelled, DisplayDone: answers to the pad's exchanges


class _Till:
    def __init__(self) -> None:
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self.seq = 0
        self.changed = asyncio.Condition()
        self.pad_lock = asyncio.Lock()
        self.pad_waiter: asyncio.Future | None = None  # the answer the current pad exchange waits for
        self.pad_wants: tuple[type, ...] = ()


class DeviceHub:
    """Every device of the store, grouped by till."""

    def __init__(self, specs: list[DeviceSpec], *, templates: Callable[[], Mapping[str, NumberTemplate]],
                 pin_token_ttl: float = 60.0) -> None:
        self._templates = templates
        self._pin_ttl = pin_token_ttl
        self._tills: dict[str, _Till] = {}
        self._pins: dict[str, tuple[bytes, str, float]] = {}  # token -> (PIN block, card, expires at)
        self._spent: dict[str, tuple[tuple[str, str], float]] = {}  # token -> ((card, txn_id), forget at)
        self.drivers: dict[str, DeviceDriver] = {}
        for spec in specs:
            self._tills.setdefault(spec.till, _Till())
            factory = self._factory(spec.kind)
            self.drivers[spec.name] = DeviceDriver(spec.name, spec.url, factory, self._on_event, self._on_availability)
        self.specs = {spec.name: spec for spec in specs}

    def _factory(self, kind: str):
        if kind == "barcode":
            return lambda query: barcode.BarcodeReader(barcode.BarcodeOptions.from_query(query))
        if kind == "magstripe":
            # Swiped numbers must belong to a programme the store knows (none known yet: no check).
            templates = _LiveTemplates(self._templates)
            return lambda query: magstripe.MagstripeReader(magstripe.MagstripeOptions.from_query(query),
                                                           templates=templates)
        return lambda query: pinpad.PinPadHost(pinpad.PinPadOptions.from_query(query))

    def start(self) -> None:
        for driver in self.drivers.values():
            driver.start()

    async def close(self) -> None:
        await asyncio.gather(*(driver.close() for driver in self.drivers.values()))
        self._pins.clear()
        self._spent.clear()

    # -- events for the POS ------------------------------------------------------------------------

    def _classify(self, scan: BarcodeScanned) -> dict[str, Any]:
        code = barcode.classify(scan, self._templates() or {})
        if isinstance(code, barcode.CardCode):
            return {"kind": "card", "card": code.number, "programme": code.programme}
        if isinstance(code, barcode.ProductCode):
            return {"kind": "product", "product": code.key}
        return {"kind": "unknown", "reason": code.reason}

    def _on_event(self, name: str, event: DeviceEvent) -> None:
        till_code = name.partition("/")[0]
        till = self._tills[till_code]
        waiter = till.pad_waiter
        if name.endswith("/pinpad") and waiter is not None and not waiter.done():
            if isinstance(event, till.pad_wants):
                waiter.set_result(event)
            elif isinstance(event, pinpad.LinkFailed):
                waiter.set_exception(DeviceUnavailable(f"the PIN pad of till {till_code} stopped answering"))
        if isinstance(event, CardRead):
            log.info("card read device=%s card=%s source=%s", name, mask_number(event.number), event.source)
        elif isinstance(event, ReadFailed):
            log.info("read failed device=%s reason=%s", name, event.reason)
        data = event_json(event, self._classify)
        if data is not None:
            self._publish(till_code, {"device": name.partition("/")[2], **data})

    def _on_availability(self, name: str, available: bool) -> None:
        till_code, _, kind = name.partition("/")
        self._publish(till_code, {"device": kind, "type": "device_available" if available else "device_unavailable"})
        waiter = self._tills[till_code].pad_waiter
        if kind == "pinpad" and not available and waiter is not None and not waiter.done():
            waiter.set_exception(DeviceUnavailable(f"device {name} went away"))

    def _publish(self, till_code: str, data: dict[str, Any]) -> None:
        till = self._tills[till_code]
        till.seq += 1
        till.events.append({"seq": till.seq, "at": time.time(), **data})

        async def notify() -> None:
            async with till.changed:
                till.changed.notify_all()

        asyncio.get_running_loop().create_task(notify())

    async def events(self, till_code: str, after: int, wait: float) -> tuple[list[dict[str, Any]], int]:
        """Events after ``after`` (waiting up to ``wait`` seconds for one), and the last sequence number."""
        till = self._tills.get(till_code)
        if till is None:
            return [], 0
        if after > till.seq:  # the node restarted: the POS's position is from before
            after = 0

        def newer() -> list[dict[str, Any]]:
            return [e for e in till.events if e["seq"] > after]

        if not newer() and wait > 0:
            async with till.changed:
                try:
                    await asyncio.wait_for(till.changed.wait_for(lambda: bool(newer())), wait)
                except TimeoutError:
                    pass
        return newer(), till.seq

    def status(self, till_code: str | None = None) -> list[dict[str, Any]]:
        return [{"till": spec.till, "kind": spec.kind, **self.drivers[name].status()}
                for name, spec in self.specs.items() if till_code in (None, spec.till)]

    # -- the PIN pad -------------------------------------------------------------------------------

    def _pad(self, till_code: str) -> DeviceDriver:
        driver = self.drivers.get(f"{till_code}/pinpad")
        if driver is None:
            raise DeviceUnavailable(f"till {till_code} has no PIN pad")
        return driver

    async def _exchange(self, till_code: str, command: Any, wants: tuple[type, ...], timeout: float) -> DeviceEvent:
        pad = self._pad(till_code)
        till = self._tills[till_code]
        if till.pad_lock.locked():
            raise DeviceBusy(f"the PIN pad of till {till_code} is busy")
        async with till.pad_lock:
            till.pad_waiter, till.pad_wants = asyncio.get_running_loop().create_future(), wants
            try:
                pad.send(command)
                return await asyncio.wait_for(till.pad_waiter, timeout)
            except TimeoutError:
                raise PinCancelledError("the PIN pad did not answer in time", code="device_timeout") from None
            finally:
                till.pad_waiter, till.pad_wants = None, ()

    async def display(self, till_code: str, lines: tuple[str, ...] = (), amount: int | None = None,
                      currency: str | None = None) -> None:
        """Show text, or an amount, on the till's pad."""
        command = pinpad.ShowAmount(amount, currency) if amount is not None else pinpad.Display(tuple(lines))
        await self._exchange(till_code, command, (DisplayDone,), 5.0)

    async def read_card(self, till_code: str, prompt: str = "SWIPE CARD", timeout: float = 60.0) -> CardRead:
        event = await self._exchange(till_code, pinpad.ReadCard(prompt), (CardRead, PinCancelled, ReadFailed), timeout)
        if isinstance(event, PinCancelled):
            raise PinCancelledError(f"card read {event.reason}")
        if isinstance(event, ReadFailed):
            raise PinCancelledError("the pad could not read the card", code="read_failed")
        return event

    async def request_pin(self, till_code: str, card: str, amount: int | None, currency: str | None) -> str:
        """Ask the customer for the card's PIN on the pad; a one-time token for the PIN block."""
        timeout = 120.0
        if amount is not None and currency is None:
            raise InvalidInput("an amount shown with the PIN prompt needs its currency")
        event = await self._exchange(till_code, pinpad.RequestPin(card, amount, currency if amount else None),
                                     (PinEntered, PinCancelled), timeout)
        if isinstance(event, PinCancelled):
            raise PinCancelledError(f"PIN entry {event.reason}", code="pin_cancelled")
        self._expire_pins()
        token = secrets.token_urlsafe(18)
        self._pins[token] = (event.pin_block, card, time.monotonic() + self._pin_ttl)
        return token

    def take_pin_block(self, token: str, card: str, txn_id: str) -> bytes | None:
        """The PIN block behind a token, for the card it was entered for, for one transaction: None when
        the same transaction comes again (its first answer is replayed); InvalidInput otherwise."""
        self._expire_pins()
        spent = self._spent.get(token)
        if spent is not None and spent[0] == (card, txn_id):
            return None
        entry = self._pins.pop(token, None)
        if entry is None or entry[1] != card:
            raise InvalidInput("pin_token is unknown, used, expired or for another card")
        self._spent[token] = ((card, txn_id), time.monotonic() + self._pin_ttl)
        return entry[0]

    def _expire_pins(self) -> None:
        now = time.monotonic()
        for token in [t for t, (_, _, expires) in self._pins.items() if expires <= now]:
            del self._pins[token]
        for token in [t for t, (_, expires) in self._spent.items() if expires <= now]:
            del self._spent[token]


class _LiveTemplates(Mapping):
    """The programmes' number templates as the node knows them now (they change with sync)."""

    def __init__(self, source: Callable[[], Mapping[str, NumberTemplate] | None]) -> None:
        self._source = source

    def _current(self) -> Mapping[str, NumberTemplate]:
        return self._source() or {}

    def __getitem__(self, key: str) -> NumberTemplate:
        return self._current()[key]

    def __iter__(self):
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())

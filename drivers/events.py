"""Typed events the device protocols hand to the node, and the protocol errors they raise.

Events are frozen and never carry full track data or a PIN in their text form: card numbers are
masked in ``repr``/``str`` and a PIN block has no text form at all, so logging an event is safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core import DomainError

__all__ = [
    "DeviceEvent", "BarcodeScanned", "CardRead", "ReadFailed", "PinEntered", "PinCancelled", "KeyPressed",
    "DisplayDone", "ProtocolViolation", "LocalProtocolError", "RemoteProtocolError", "mask_number",
]


def mask_number(number: str) -> str:
    """First six and last four digits, the rest as ``*`` (shorter numbers keep only their last four)."""
    if len(number) <= 10:
        return "*" * max(len(number) - 4, 0) + number[-4:]
    return number[:6] + "*" * (len(number) - 10) + number[-4:]


class LocalProtocolError(DomainError):
    """This side misused a protocol object (a command it cannot send now, a bad option)."""

    code = "device_local_error"


class RemoteProtocolError(DomainError):
    """The device sent something the protocol does not allow."""

    code = "device_remote_error"


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """Base of every event a device protocol emits."""


@dataclass(frozen=True, slots=True)
class BarcodeScanned(DeviceEvent):
    value: str  # the decoded data, without framing, terminator or symbology identifier
    symbology: str | None = None  # AIM identifier such as "]E0", "]C1"; None when the scanner sends none


@dataclass(frozen=True, slots=True)
class CardRead(DeviceEvent):
    """A card number read from a stripe (or keyed/read on a PIN pad). Only the number and the expiry survive."""

    number: str = field(repr=False)
    source: str  # "swipe" | "pad"
    expiry: str | None = None  # YYMM when the track has one
    tracks: tuple[int, ...] = ()  # which tracks were read cleanly

    def __repr__(self) -> str:
        number = mask_number(self.number)
        return f"CardRead(number={number!r}, source={self.source!r}, expiry=..., tracks={self.tracks})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class ReadFailed(DeviceEvent):
    """A swipe or scan the device reported as unreadable, or that did not parse. Never holds the raw data."""

    reason: str
    track: int | None = None


@dataclass(frozen=True, slots=True)
class PinEntered(DeviceEvent):
    """The PIN pad's ISO 9564 format 0 PIN block (8 bytes). Never logged: it has no text form."""

    pin_block: bytes = field(repr=False)

    def __repr__(self) -> str:
        return "PinEntered(pin_block=<hidden>)"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class PinCancelled(DeviceEvent):
    reason: str = "cancelled"  # "cancelled" (customer pressed cancel) | "timeout"


@dataclass(frozen=True, slots=True)
class KeyPressed(DeviceEvent):
    key: str  # "0".."9", "enter", "cancel", "clear", "f1".."f4"


@dataclass(frozen=True, slots=True)
class DisplayDone(DeviceEvent):
    """The device acknowledged a command (display text, amount, prompt)."""

    command: str


@dataclass(frozen=True, slots=True)
class ProtocolViolation(DeviceEvent):
    """Bytes the protocol could not make sense of; it resynchronised and goes on."""

    reason: str

"""Barcode scanners, sans-IO: the host side reads scans, the device side (``encode_scan``) writes them.

A scan on the wire is ``[AIM id] data terminator`` — the terminator CR, LF or CRLF — or, with STX/ETX
framing, ``STX [AIM id] data ETX`` with an optional terminator after ETX (or before it). A keyboard-wedge
scanner that types into a serial console sends the same text and terminator, so one parser reads both.
The AIM symbology identifier (ISO/IEC 15424) is ``]`` + code character + modifier, e.g. ``]E0`` for
EAN-13/UPC-A, ``]C1`` for GS1-128. ``classify`` then tells a card number from a product code.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stdnum import ean, gs1_128
from stdnum.exceptions import ValidationError

from core import InvalidInput, NumberTemplate
from core.barcodes import is_gtin, product_key

from .events import BarcodeScanned, DeviceEvent, LocalProtocolError, ProtocolViolation, ReadFailed, mask_number
from .protocol import InputOnly

__all__ = [
    "BarcodeOptions", "BarcodeReader", "encode_scan", "classify", "CardCode", "ProductCode", "UnknownCode",
]

STX, ETX, LF, CR = 0x02, 0x03, 0x0A, 0x0D
GS = "\x1d"  # how scanners send FNC1 inside GS1 data
TERMINATORS = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n", "any": b"\r"}  # "any" reads all three, writes CR
_AIM = re.compile(r"^\][A-Za-z][0-9A-Za-z]")
_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
_SLACK = 5  # room in the buffer for an AIM id and a CR/LF inside a frame; the value itself is checked exactly
# Symbologies whose data is a GS1 element string: GS1-128, GS1 DataBar, GS1 DataMatrix, GS1 QR Code.
_GS1_SYMBOLOGIES = frozenset({"]C1", "]e0", "]d2", "]Q3"})
_GTIN_KINDS = {8: "ean-8", 12: "upc-a", 13: "ean-13", 14: "gtin-14"}


def _flag(key: str, value: str) -> bool:
    try:
        return _FLAGS[value.strip().lower()]
    except KeyError:
        raise InvalidInput(f"barcode option {key} is 1 or 0") from None


@dataclass(frozen=True, slots=True)
class BarcodeOptions:
    """How the scanner is set up. ``terminator`` "any" accepts CR, LF and CRLF alike."""

    terminator: str = "cr"  # "cr" | "lf" | "crlf" | "any"
    stx_etx: bool = False  # STX data ETX framing; a terminator is then optional
    aim: bool = False  # every scan starts with its AIM symbology identifier
    max_length: int = 128  # longest value (without AIM id) accepted

    def __post_init__(self) -> None:
        if self.terminator not in TERMINATORS:
            raise InvalidInput("barcode terminator is cr, lf, crlf or any")
        if type(self.max_length) is not int or not 1 <= self.max_length <= 4096:
            raise InvalidInput("barcode max_length is 1 to 4096")

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> BarcodeOptions:
        """From a device URL's query: ``terminator``, ``stx``, ``aim``, ``max_length``. InvalidInput otherwise."""
        unknown = sorted(set(params) - {"terminator", "stx", "aim", "max_length"})
        if unknown:
            raise InvalidInput(f"unknown barcode options: {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        if "terminator" in params:
            kwargs["terminator"] = params["terminator"].strip().lower()
        if "stx" in params:
            kwargs["stx_etx"] = _flag("stx", params["stx"])
        if "aim" in params:
            kwargs["aim"] = _flag("aim", params["aim"])
        if "max_length" in params:
            text = params["max_length"].strip()
            if not (text.isascii() and text.isdigit()):
                raise InvalidInput("barcode max_length is a number")
            kwargs["max_length"] = int(text)
        return cls(**kwargs)


def _printable(text: str) -> bool:
    return all(" " <= char <= "~" or char == GS for char in text)


# --- host side -----------------------------------------------------------------------------------


_DATA, _DISCARD, _IDLE, _JUNK, _FRAME = "data", "discard", "idle", "junk", "frame"


class BarcodeReader(InputOnly):
    """The host side of a scanner: bytes in, ``BarcodeScanned`` out.

    Never raises on input. Bytes it cannot frame (outside STX/ETX, a CR without its LF, a scan longer
    than ``max_length``) give one ``ProtocolViolation`` and are dropped up to the next frame or
    terminator; a framed scan that is not printable text, or lacks its AIM identifier when ``aim`` is
    set, gives ``ReadFailed``. Empty scans are ignored. The buffer never holds more than
    ``max_length`` + 5 bytes.
    """

    takes_no_commands = "a barcode scanner takes no commands"

    def __init__(self, options: BarcodeOptions | None = None) -> None:
        self.options = options or BarcodeOptions()
        self._limit = self.options.max_length + _SLACK
        self._buffer = bytearray()
        self._state = _IDLE if self.options.stx_etx else _DATA
        self._pending_cr = False  # CRLF mode: a CR came, its LF not yet

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished scan."""
        return len(self._buffer)

    def receive_data(self, data: bytes) -> list[DeviceEvent]:
        events: list[DeviceEvent] = []
        feed = self._framed if self.options.stx_etx else self._unframed
        for byte in data:
            feed(byte, events)
        return events

    def _unframed(self, byte: int, events: list[DeviceEvent]) -> None:
        terminator = self.options.terminator
        if self._pending_cr:
            self._pending_cr = False
            if byte == LF:
                self._finish(events)
                return
            if self._state is _DATA:
                events.append(ProtocolViolation("CR without LF where scans end with CRLF"))
            self._buffer.clear()
            self._state = _DATA  # this byte begins the next scan
        if terminator == "crlf" and byte == CR:
            self._pending_cr = True
        elif (byte == CR and terminator in ("cr", "any")) or (byte == LF and terminator in ("lf", "any")):
            self._finish(events)
        elif self._state is _DATA:
            self._append(byte, events)

    def _framed(self, byte: int, events: list[DeviceEvent]) -> None:
        if self._state is _FRAME:
            if byte == ETX:
                self._finish(events)
                self._state = _IDLE
            elif byte == STX:
                events.append(ProtocolViolation("scan frame cut short by the next one"))
                self._buffer.clear()
            else:
                self._append(byte, events)
        elif self._state is _DISCARD:
            if byte == ETX:
                self._state = _IDLE
            elif byte == STX:
                self._state = _FRAME
        elif byte == STX:
            self._state = _FRAME
        elif byte in (CR, LF):
            pass  # the optional terminator after ETX
        elif self._state is _IDLE:
            events.append(ProtocolViolation("bytes outside a scan frame"))
            self._state = _JUNK

    def _append(self, byte: int, events: list[DeviceEvent]) -> None:
        if len(self._buffer) >= self._limit:
            events.append(ProtocolViolation(f"scan longer than {self.options.max_length} characters"))
            self._buffer.clear()
            self._state = _DISCARD
        else:
            self._buffer.append(byte)

    def _finish(self, events: list[DeviceEvent]) -> None:
        """End of a scan (terminator or ETX): its event, if any, and a clean slate."""
        payload = bytes(self._buffer)
        self._buffer.clear()
        if self._state is _DISCARD:
            self._state = _DATA
            return
        if self.options.stx_etx:
            payload = payload.rstrip(b"\r\n")  # a terminator placed inside the frame
        if payload:
            events.append(self._scan(payload))

    def _scan(self, payload: bytes) -> DeviceEvent:
        text = payload.decode("latin-1")
        if not _printable(text):
            return ReadFailed("scan holds characters that are not printable")
        symbology = None
        if self.options.aim:
            if not _AIM.match(text):
                return ReadFailed("scan has no AIM symbology identifier")
            symbology, text = text[:3], text[3:]
            if not text:
                return ReadFailed("scan holds only a symbology identifier")
        if len(text) > self.options.max_length:
            return ProtocolViolation(f"scan longer than {self.options.max_length} characters")
        return BarcodeScanned(text, symbology)

    def connection_lost(self) -> list[DeviceEvent]:
        """Forget a partial scan; one ``ProtocolViolation`` if there was one."""
        partial = bool(self._buffer) or self._state is _FRAME
        self._buffer.clear()
        self._pending_cr = False
        self._state = _IDLE if self.options.stx_etx else _DATA
        return [ProtocolViolation("scan cut short by the link going down")] if partial else []


# --- device side ---------------------------------------------------------------------------------


def encode_scan(value: str, options: BarcodeOptions, symbology: str | None = None) -> bytes:
    """The bytes a scanner set up with ``options`` sends for ``value``. With ``aim`` the symbology
    identifier is required; without, it is not sent (as the scanner would not). LocalProtocolError
    for a value the scanner could not send."""
    if not value or not value.isascii() or not _printable(value):
        raise LocalProtocolError("a scan is printable ASCII (and GS)")
    if len(value) > options.max_length:
        raise LocalProtocolError(f"a scan is at most {options.max_length} characters")
    if symbology is not None and not (len(symbology) == 3 and _AIM.match(symbology)):
        raise LocalProtocolError("a symbology identifier is ] + code character + modifier")
    if options.aim:
        if symbology is None:
            raise LocalProtocolError("this scanner sends AIM identifiers: give the symbology")
        value = symbology + value
    payload = value.encode("ascii")
    if options.stx_etx:
        return bytes([STX]) + payload + bytes([ETX])
    return payload + TERMINATORS[options.terminator]


# --- what a scanned code is ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CardCode:
    """A card number of one of the programmes."""

    number: str = field(repr=False)
    programme: str

    def __repr__(self) -> str:
        return f"CardCode(number={mask_number(self.number)!r}, programme={self.programme!r})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class ProductCode:
    """A product: ``key`` is the catalogue key (``core.barcodes.product_key``)."""

    key: str
    kind: str  # "ean-8" | "upc-a" | "ean-13" | "gtin-14" | "gs1" | "internal"


@dataclass(frozen=True, slots=True)
class UnknownCode:
    """Neither a card nor a product; ``reason`` never quotes the code."""

    reason: str


def _gtin_kind(code: str) -> str:
    return "upc-a" if len(code) == 13 and code.startswith("0") else _GTIN_KINDS[len(code)]


def _gs1(value: str) -> ProductCode | UnknownCode:
    data = value.lstrip(GS)  # a leading FNC1 some scanners pass on
    try:
        gs1_128.validate(data, separator=GS)  # wraps every parsing error in ValidationError
        fields = gs1_128.info(data, separator=GS)
    except ValidationError:
        return UnknownCode("GS1 data did not parse")
    gtin = fields.get("01")
    if gtin is None:
        return UnknownCode("GS1 data has no GTIN (AI 01)")
    return ProductCode(product_key(gtin), "gs1")


def _card(value: str, templates: Mapping[str, NumberTemplate]) -> CardCode | UnknownCode | None:
    candidates = [(code, t) for code, t in templates.items() if len(value) == t.length and value.startswith(t.prefix)]
    matching = [(code, t) for code, t in candidates if t.matches(value)]
    if not matching:
        return UnknownCode("card number fails its programme's check digit") if candidates else None
    longest = max(len(t.prefix) for _, t in matching)
    best = [code for code, t in matching if len(t.prefix) == longest]
    if len(best) > 1:
        return UnknownCode("card number matches several programmes")
    return CardCode(value, best[0])


def _ean(value: str, symbology: str) -> ProductCode | UnknownCode:
    modifier = symbology[2]
    if modifier == "3" and len(value) in (14, 15, 17, 18):  # main symbol (12 or 13 digits) + 2 or 5 add-on
        value = value[:13] if len(value) in (15, 18) else value[:12]
    lengths = {"0": (12, 13), "3": (12, 13), "4": (8,)}.get(modifier)
    if lengths is None:
        return UnknownCode("EAN/UPC add-on without its main symbol")
    if not (len(value) in lengths and value.isascii() and value.isdigit()):
        return UnknownCode("not an EAN/UPC of the length its symbology sends")
    try:
        ean.validate(value)
    except ValidationError:
        return UnknownCode("EAN/UPC check digit is wrong")
    return ProductCode(product_key(value), _gtin_kind(value))


def classify(scan: BarcodeScanned, templates: Mapping[str, NumberTemplate]) -> CardCode | ProductCode | UnknownCode:
    """What a scanned code is, by these rules in order:

    1. GS1 element string — symbology ``]C1`` (GS1-128), ``]e0`` (GS1 DataBar), ``]d2`` (GS1 DataMatrix),
       ``]Q3`` (GS1 QR), or data holding a GS (FNC1) separator: parsed with ``stdnum.gs1_128``; its
       AI (01) GTIN is the product. Never a card.
    2. Card — ASCII digits of a programme's length starting with its prefix (``templates``: programme
       code → ``NumberTemplate``): a card of that programme if the template matches (its Luhn rule),
       otherwise unknown (a misread card is not looked up as a product). The longest prefix wins.
    3. EAN/UPC — symbology ``]E0`` (EAN-13 or UPC-A), ``]E4`` (EAN-8), ``]E3`` (with add-on, which is
       dropped): the digits must be a valid GTIN of that length (``stdnum.ean``).
    4. Anything else — Code 128 (``]C0``), Code 39 (``]A``), ITF (``]I``, e.g. ITF-14), other symbologies
       or no identifier: ``core.barcodes.product_key`` — a valid GTIN by length and check digit, else a
       store's internal code; a digit string of GTIN length with a wrong check digit is unknown.
    """
    value, symbology = scan.value, scan.symbology
    if symbology in _GS1_SYMBOLOGIES or GS in value:
        return _gs1(value)
    if value.isascii() and value.isdigit():
        card = _card(value, templates)
        if card is not None:
            return card
    if symbology is not None and symbology.startswith("]E"):
        return _ean(value, symbology)
    try:
        key = product_key(value)
    except InvalidInput as exc:
        return UnknownCode(str(exc))
    code = value.strip()
    return ProductCode(key, _gtin_kind(code) if is_gtin(code) else "internal")

"""Fixed price checkers on TCP: scans in, display commands out (both ends, sans-IO).

The device (Newland NQuire 300 / Champtek-Scantech SG-15 style) connects to the host, sends each
scanned code terminated by CR, and shows what the host sends back: printable characters and ESC
commands. The subset used and understood here, as both vendors' user guides list it (NQuire300
User Guide ch. 5 "ESC Commands"; SG-15 Colour User's Manual app. B "SG-15 Command Set", SG15plus
firmware 3.03+); parameters are ASCII-offset bytes (``0x30 + n``):

    ESC %                  clear the display, cursor top left (the NQuire guide also uses ESC $)
    ESC ' pos line         cursor to column ``pos*8`` px (0-15) of text line ``line`` (0-4)
    ESC , x y              cursor to pixel x (0-127), y (0-63) (SG-15 Colour lists it as ESC D)
    ESC . align text ETX   text placed by ``align``: 0x30-0x38 left/center/right x top/center/bottom,
                           0x39-0x3B left/center/right on the cursor's row, 0x3C-0x3E top/center/bottom
                           at the cursor's column; at most 75 characters (25 on an NQuire), ETX ends
    ESC B n                font: 0x30 normal (12 px high), 0x31 large (21 px high)
    ESC CR, ESC LF, CR, LF start of the next text line
    ESC @ / ESC A          sleep (display off) / wake up
    ESC X n                show stored image n (1-4; image 1 is the idle picture)
    ESC Z                  soft reset (back to the idle screen)
    ESC [ n, ESC \\ n, ESC ] n   scanning, backlight, scan engine off (0x30) / on (0x31)
    ESC ^                  beep
    ESC `                  the device answers its firmware version, "SG15Vnn.nn"
    ESC p n, ESC |         reroute / gate relay: the device answers ACK (0x06)

The display is 128 x 64 pixels with proportional fonts (about 20 normal characters a line). A
``Screen`` is laid out as one ``ESC B``, ``ESC ,`` and ``ESC . (0x39-0x3B) ... ETX`` per line, so
lines of both fonts stack at exact pixel rows; widths are kept to 20 normal / 12 large characters
so nothing is cut. Text is printable ASCII only: no code page is common to both device families,
so product names are transliterated ("Crème brûlée" shows as "Creme brulee").

How long a result stays is a device setting (THold), not a command, so the host keeps each
screen's ``timeout_s`` itself: ``next_deadline``/``handle_timeout`` put the idle screen back.

Scans may carry, per options: the unit id and a TAB before the code (as the ScanVue kiosk's
SendUnitID mode does), an AIM symbology identifier (``]E0``), CR, LF or CRLF. With ``identify``
the host asks the firmware version (ESC `) on connect and the first line, if it has that form, is
the device's hello rather than a scan.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from core import InvalidInput

from .events import BarcodeScanned, DeviceEvent, LocalProtocolError, ProtocolViolation

__all__ = [
    "DISPLAY_WIDTH", "DISPLAY_HEIGHT", "FONT_HEIGHT", "LINE_WIDTH", "MAX_CODE",
    "Line", "Screen", "DeviceIdentified", "PriceCheckerOptions", "PriceCheckerHost", "PriceCheckerDevice",
    "display_text", "encode_screen", "encode_scan",
]

Font = Literal["small", "large"]
Align = Literal["left", "center", "right"]

ESC, ETX, CR, LF, ACK, TAB = 0x1B, 0x03, 0x0D, 0x0A, 0x06, 0x09
DISPLAY_WIDTH, DISPLAY_HEIGHT = 128, 64  # pixels
FONT_HEIGHT: dict[str, int] = {"small": 12, "large": 21}  # pixels, from the SG-15 command set
LINE_WIDTH: dict[str, int] = {"small": 20, "large": 12}  # characters that surely fit one line
MAX_CODE = 64  # longest code accepted from a device (GS1-128 data stays well below)
_FONT_CODE = {"small": 0x30, "large": 0x31}
_ALIGN_ON_ROW = {"left": 0x39, "center": 0x3A, "right": 0x3B}
_FIRMWARE = re.compile(r"[A-Za-z0-9]{1,16}V\d{1,3}\.\d{1,3}")
_AIM = re.compile(r"\][A-Za-z][0-9A-Za-z]")

# Characters NFKD cannot take to ASCII, spelled the way a shopper would read them.
_SPELLED = {
    "ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE", "ł": "l", "Ł": "L",
    "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th", "ı": "i", "€": "EUR", "£": "GBP", "¥": "JPY",
    "©": "(c)", "®": "(R)", "™": "TM", "–": "-", "—": "-", "‐": "-", "‘": "'", "’": "'", "‚": ",", "“": '"',
    "”": '"', "„": '"', "«": '"', "»": '"', "…": "...", "×": "x", "•": "-", "·": "-", "°": " deg", "⁄": "/",
}


def display_text(text: str) -> str:
    """``text`` as the device can show it: printable ASCII, accents dropped, known symbols spelled
    out, anything else ``?``, whitespace and control characters collapsed to single spaces."""
    out: list[str] = []
    for ch in str(text):
        if " " <= ch <= "~":
            out.append(ch)
        elif ch in _SPELLED:
            out.append(_SPELLED[ch])
        elif unicodedata.combining(ch) or unicodedata.category(ch) == "Cf":
            continue  # a lone accent or an invisible format character
        elif ch.isspace() or unicodedata.category(ch) == "Cc":
            out.append(" ")
        else:
            decomposed = unicodedata.normalize("NFKD", ch)
            ascii_part = "".join(c if " " <= c <= "~" else _SPELLED.get(c, "") for c in decomposed)
            out.append(ascii_part or "?")
    return " ".join("".join(out).split())


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a screen. The text is made displayable on construction (see ``display_text``);
    ``LocalProtocolError`` if it is then wider than the font allows — ``Line.fit`` clips instead."""

    text: str
    font: Font = "small"
    align: Align = "left"

    def __post_init__(self) -> None:
        if self.font not in FONT_HEIGHT:
            raise LocalProtocolError(f"font is 'small' or 'large', not {self.font!r}")
        if self.align not in _ALIGN_ON_ROW:
            raise LocalProtocolError(f"align is 'left', 'center' or 'right', not {self.align!r}")
        text = display_text(self.text)
        if len(text) > LINE_WIDTH[self.font]:
            raise LocalProtocolError(f"{self.font} text is at most {LINE_WIDTH[self.font]} characters")
        object.__setattr__(self, "text", text)

    @classmethod
    def fit(cls, text: str, font: Font = "small", align: Align = "left") -> Line:
        """A line that never fails on its text: clipped to the width (at a word end when there is one)."""
        text = display_text(text)
        width = LINE_WIDTH.get(font, LINE_WIDTH["small"])
        if len(text) > width:
            cut = text[: width + 1].rfind(" ")
            text = text[:cut] if cut >= width // 2 else text[:width]
        return cls(text.rstrip(), font, align)

    @property
    def height(self) -> int:
        return FONT_HEIGHT[self.font]


@dataclass(frozen=True, slots=True)
class Screen:
    """What a price checker shows: lines from the top, the display cleared first (``clear``), and
    ``timeout_s`` seconds before the idle screen comes back (None: until the next screen)."""

    lines: tuple[Line, ...] = ()
    clear: bool = True
    timeout_s: float | None = 5.0

    def __post_init__(self) -> None:
        lines = tuple(self.lines)
        if not all(isinstance(line, Line) for line in lines):
            raise LocalProtocolError("a screen holds Line objects")
        if sum(line.height for line in lines) > DISPLAY_HEIGHT:
            raise LocalProtocolError(
                f"lines do not fit the {DISPLAY_HEIGHT} px display (5 small, 3 large, or 2 large and 1 small)")
        if self.timeout_s is not None:
            if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, int | float):
                raise LocalProtocolError("timeout_s is a number of seconds or None")
            if not 0 < self.timeout_s <= 3600:
                raise LocalProtocolError("timeout_s is more than 0 and at most 3600 seconds")
        object.__setattr__(self, "lines", lines)

    @property
    def text(self) -> list[str]:
        """The lines' texts, top to bottom."""
        return [line.text for line in self.lines]


@dataclass(frozen=True, slots=True)
class DeviceIdentified(DeviceEvent):
    """The device said who it is: its unit id (before a scan) or its firmware version (hello)."""

    unit_id: str | None = None
    firmware: str | None = None


def encode_screen(screen: Screen) -> bytes:
    """The ESC commands that draw ``screen``: lines stacked at exact pixel rows, centred vertically."""
    out = bytearray(b"\x1b%" if screen.clear else b"")
    y = (DISPLAY_HEIGHT - sum(line.height for line in screen.lines)) // 2
    for line in screen.lines:
        out += bytes((ESC, ord("B"), _FONT_CODE[line.font], ESC, ord(","), 0x30, 0x30 + y))
        out += bytes((ESC, ord("."), _ALIGN_ON_ROW[line.align])) + line.text.encode("ascii") + bytes((ETX,))
        y += line.height
    return bytes(out)


def _printable(text: str) -> bool:
    return all(" " <= ch <= "~" for ch in text)


def encode_scan(code: str, *, unit_id: str | None = None, symbology: str | None = None,
                terminator: bytes = b"\r") -> bytes:
    """What a device sends for one scan: ``[unit id TAB][AIM id]code`` and the terminator."""
    if not code or len(code) > MAX_CODE or not _printable(code):
        raise LocalProtocolError(f"a scanned code is 1-{MAX_CODE} printable ASCII characters")
    if unit_id is not None and (not unit_id or not _printable(unit_id)):
        raise LocalProtocolError("a unit id is printable ASCII")
    if symbology is not None and not _AIM.fullmatch(symbology):
        raise LocalProtocolError("a symbology is an AIM identifier such as ]E0")
    if terminator not in (b"\r", b"\n", b"\r\n"):
        raise LocalProtocolError("the terminator is CR, LF or CRLF")
    prefix = f"{unit_id}\t" if unit_id is not None else ""
    return f"{prefix}{symbology or ''}{code}".encode("ascii") + terminator


def _flag(params: Mapping[str, str], name: str) -> bool:
    value = params.get(name, "0").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise InvalidInput(f"{name} is 0 or 1, not {value!r}")


@dataclass(frozen=True, slots=True)
class PriceCheckerOptions:
    """How a price checker frames its scans, and the idle screen the host gives it."""

    unit_id: bool = False  # scans arrive as "<unit id> TAB <code>"
    aim: bool = False  # codes start with an AIM symbology identifier
    identify: bool = False  # ask the firmware version on connect; the answer is a hello, not a scan
    welcome: str = "Price check"  # idle screen, large
    hint: str = "Scan card or product"  # idle screen, small
    max_line: int = 256  # bytes buffered for one scan before it is dropped as garbage

    def __post_init__(self) -> None:
        Line(self.welcome, "large")  # raises when the text does not fit
        Line(self.hint, "small")
        if not 16 <= self.max_line <= 4096:
            raise LocalProtocolError("max_line is 16-4096 bytes")

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> PriceCheckerOptions:
        """From a device URL's query (``?unit_id=1&aim=0&identify=1&welcome=Hello&max_line=256``);
        InvalidInput on an unknown key or a bad value."""
        unknown = sorted(set(params) - {"unit_id", "aim", "identify", "welcome", "hint", "max_line"})
        if unknown:
            raise InvalidInput(f"unknown price checker options: {', '.join(unknown)}")
        kwargs: dict = {name: _flag(params, name) for name in ("unit_id", "aim", "identify")}
        for name, font in (("welcome", "large"), ("hint", "small")):
            if name in params:
                if len(display_text(params[name])) > LINE_WIDTH[font]:
                    raise InvalidInput(f"{name} is at most {LINE_WIDTH[font]} characters")
                kwargs[name] = params[name]
        if "max_line" in params:
            try:
                kwargs["max_line"] = int(params["max_line"])
            except ValueError:
                raise InvalidInput("max_line is a whole number of bytes") from None
            if not 16 <= kwargs["max_line"] <= 4096:
                raise InvalidInput("max_line is 16-4096 bytes")
        return cls(**kwargs)

    def idle_screen(self) -> Screen:
        """The welcome screen shown between scans."""
        return Screen((Line(self.welcome, "large", "center"), Line(self.hint, "small", "center")), timeout_s=None)


class PriceCheckerHost:
    """The host's end of one device connection (DeviceProtocol shape).

    ``receive_data`` turns scan lines into ``BarcodeScanned`` (and ``DeviceIdentified``) events;
    ``send(Screen)`` queues its display commands. The idle screen is queued on creation and again
    when a screen's ``timeout_s`` runs out (see ``next_deadline``)."""

    def __init__(self, options: PriceCheckerOptions | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options or PriceCheckerOptions()
        self.unit_id: str | None = None
        self.firmware: str | None = None
        self._clock = clock
        self._line = bytearray()
        self._discarding = False  # inside an over-long line: drop bytes until its terminator
        self._out = bytearray()
        self._deadline: float | None = None
        self._closed = False
        self._awaiting_hello = self.options.identify
        if self.options.identify:
            self._out += b"\x1b`"
        self._out += encode_screen(self.options.idle_screen())

    def receive_data(self, data: bytes) -> list[DeviceEvent]:
        events: list[DeviceEvent] = []
        if self._closed:
            return events
        for byte in data:
            if byte in (CR, LF):
                if self._discarding:
                    self._discarding = False
                elif self._line:
                    events.extend(self._scan(bytes(self._line)))
                self._line.clear()  # an empty line (the LF of CRLF) is no scan
            elif self._discarding or (byte == ACK and not self._line):
                continue  # the rest of a dropped line; an ACK answering ESC p / ESC |
            elif len(self._line) >= self.options.max_line:
                self._line.clear()
                self._discarding = True
                events.append(ProtocolViolation(f"scan longer than {self.options.max_line} bytes dropped"))
            else:
                self._line.append(byte)
        return events

    def _scan(self, raw: bytes) -> list[DeviceEvent]:
        hello, self._awaiting_hello = self._awaiting_hello, False
        if any(b > 0x7E or (b < 0x20 and b != TAB) for b in raw):
            return [ProtocolViolation("scan with bytes other than printable ASCII dropped")]
        text = raw.decode("ascii")
        if hello and _FIRMWARE.fullmatch(text):
            self.firmware = text
            return [DeviceIdentified(firmware=text)]
        events: list[DeviceEvent] = []
        if self.options.unit_id:
            unit, tab, text = text.partition("\t")
            unit = unit.strip()
            if not tab or not unit:
                return [ProtocolViolation("scan without a unit id dropped")]
            if unit != self.unit_id:
                self.unit_id = unit
                events.append(DeviceIdentified(unit_id=unit))
        if "\t" in text:
            return [*events, ProtocolViolation("scan with a TAB dropped")]
        symbology = None
        if self.options.aim and _AIM.match(text):
            symbology, text = text[:3], text[3:]
        code = text.strip()
        if not code or len(code) > MAX_CODE:
            return [*events, ProtocolViolation(f"scan of 0 or more than {MAX_CODE} characters dropped")]
        events.append(BarcodeScanned(code, symbology))
        return events

    def send(self, command: Screen) -> None:
        if self._closed:
            raise LocalProtocolError("the price checker connection is closed")
        if not isinstance(command, Screen):
            raise LocalProtocolError("a price checker is sent Screen objects")
        self._out += encode_screen(command)
        self._deadline = None if command.timeout_s is None else self._clock() + command.timeout_s

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_deadline(self) -> float | None:
        return self._deadline

    def handle_timeout(self, now: float) -> list[DeviceEvent]:
        if self._deadline is not None and now >= self._deadline and not self._closed:
            self._deadline = None
            self._out += encode_screen(self.options.idle_screen())
        return []

    def connection_lost(self) -> list[DeviceEvent]:
        events: list[DeviceEvent] = []
        if self._line and not self._discarding and not self._closed:
            events.append(ProtocolViolation("connection lost in the middle of a scan"))
        self._closed = True
        self._line.clear()
        self._out.clear()
        self._deadline = None
        return events


# -- the device's end, as a simulator plays it ---------------------------------------------------

# ESC command byte -> number of parameter bytes (ESC . is handled apart: align byte, text, ETX).
_PARAMS = {0x24: 0, 0x25: 0, 0x27: 2, 0x2C: 2, 0x44: 2, 0x40: 0, 0x41: 0, 0x42: 1, 0x58: 1, 0x5A: 0,
           0x5B: 1, 0x5C: 1, 0x5D: 1, 0x5E: 0, 0x60: 0, 0x70: 1, 0x7C: 0, CR: 0, LF: 0}
_CHAR_WIDTH = {"small": 6, "large": 10}  # the simulator's stand-in for the proportional fonts



@dataclass(slots=True)
class _Text:
    """A run of characters on one pixel row, in one font."""

    x: int
    y: int
    font: str
    text: str = ""

    @property
    def end(self) -> int:
        return self.x + len(self.text) * _CHAR_WIDTH[self.font]


class PriceCheckerDevice:
    """The device's end: ``scan`` gives the bytes of a scan; ``receive_data`` runs the host's ESC
    commands against a 128 x 64 display model, read back with ``screen_text``. Its answers
    (firmware version, ACK) wait in ``data_to_send``.

    The model stands in for proportional fonts with fixed widths (6 px normal, 10 px large): a
    character that would cross the right edge is not shown, as on the device, and text written
    over text on the same row replaces it."""

    def __init__(self, *, unit_id: str | None = None, firmware: str = "SG15V03.14",
                 idle_text: Iterable[str] = ("Welcome",), max_align: int = 75, terminator: bytes = b"\r") -> None:
        self.unit_id = unit_id
        self.firmware = firmware
        self.idle_text = tuple(idle_text)
        self.max_align = max_align  # characters in one ESC . (75 on an SG15plus, 25 on an NQuire)
        self.terminator = terminator
        self.beeps = 0
        self.backlight = True
        self.scanning = True
        self.asleep = False
        self.image: int | None = None
        self.font = "small"
        self._texts: list[_Text] = []
        self._x = self._y = 0
        self._state = "text"  # text | esc | params | align
        self._command = 0
        self._params = bytearray()
        self._align = bytearray()
        self._out = bytearray()
        self._show_idle()

    def scan(self, code: str, symbology: str | None = None) -> bytes:
        """The bytes the device sends when ``code`` is scanned."""
        if self.asleep or not self.scanning:
            raise LocalProtocolError("scanning is switched off")
        return encode_scan(code, unit_id=self.unit_id, symbology=symbology, terminator=self.terminator)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def screen_text(self) -> list[str]:
        """What the display shows: one string per pixel row that has text, top to bottom."""
        rows: dict[int, list[_Text]] = {}
        for item in self._texts:
            if item.text.strip():
                rows.setdefault(item.y, []).append(item)
        return [" ".join(t.text.strip() for t in sorted(rows[y], key=lambda t: t.x)) for y in sorted(rows)]

    def segments(self) -> list[tuple[int, int, str, str]]:
        """Every run of text shown, as ``(y, x, font, text)``, top to bottom and left to right."""
        return sorted((t.y, t.x, t.font, t.text) for t in self._texts if t.text)

    def receive_data(self, data: bytes) -> list[DeviceEvent]:
        """Run the host's bytes; events only for commands the device does not understand."""
        events: list[DeviceEvent] = []
        for byte in data:
            if self._state == "esc":
                self._command = byte
                self._params.clear()
                if byte == 0x2E:
                    self._align.clear()
                    self._state = "align"
                elif _PARAMS.get(byte) == 0:
                    self._state = "text"
                    events.extend(self._run())
                elif byte in _PARAMS:
                    self._state = "params"
                else:
                    self._state = "text"
                    events.append(ProtocolViolation(f"unknown ESC command 0x{byte:02X}"))
            elif self._state == "params":
                self._params.append(byte)
                if len(self._params) == _PARAMS[self._command]:
                    self._state = "text"
                    events.extend(self._run())
            elif self._state == "align":
                if byte == ESC:  # an ESC . left open: show what came, then take the new command
                    events.extend(self._finish_align())
                    self._state = "esc"
                elif not self._params:
                    self._params.append(byte)
                elif byte == ETX:
                    events.extend(self._finish_align())
                else:
                    self._align.append(byte)
                    if len(self._align) >= self.max_align:
                        events.extend(self._finish_align())
            elif byte == ESC:
                self._state = "esc"
            elif byte in (CR, LF):
                self._newline()
            elif 0x20 <= byte != 0x7F:
                self._put(chr(byte))  # 0x80-0xFF as Latin-1; other control bytes are ignored
        return events

    def connection_lost(self) -> list[DeviceEvent]:
        """The host went away: a half-received command is forgotten, the display stays."""
        self._state = "text"
        self._params.clear()
        self._align.clear()
        return []

    # -- commands ---------------------------------------------------------------------------------

    def _run(self) -> list[DeviceEvent]:
        cmd, p = self._command, bytes(self._params)
        bad = [ProtocolViolation(f"ESC 0x{cmd:02X} parameter out of range")]
        if cmd in (0x24, 0x25):
            self._clear()
        elif cmd == 0x27:
            if not (0x30 <= p[0] <= 0x3F and 0x30 <= p[1] <= 0x34):
                return bad
            self._x, self._y = (p[0] - 0x30) * 8, (p[1] - 0x30) * FONT_HEIGHT[self.font]
        elif cmd in (0x2C, 0x44):
            if not (0x30 <= p[0] <= 0xAF and 0x30 <= p[1] <= 0x6F):
                return bad
            self._x, self._y = p[0] - 0x30, p[1] - 0x30
        elif cmd in (CR, LF):
            self._newline()
        elif cmd == 0x40:
            self.asleep, self.backlight = True, False
            self._clear()
        elif cmd == 0x41:
            self.asleep, self.backlight = False, True
        elif cmd == 0x5A:
            self.asleep, self.backlight, self.scanning, self.font = False, True, True, "small"
            self._show_idle()
        elif cmd == 0x5E:
            self.beeps += 1
        elif cmd == 0x60:
            self._out += self.firmware.encode("ascii") + b"\r"
        elif cmd == 0x7C:
            self._out.append(ACK)
        elif cmd == 0x58:
            if not 0x31 <= p[0] <= 0x34:
                return bad
            self.image = p[0] - 0x30
        else:  # ESC B, ESC [, ESC \, ESC ], ESC p: one 0x30/0x31 switch
            if p[0] not in (0x30, 0x31):
                return bad
            on = p[0] == 0x31
            if cmd == 0x42:
                self.font = "large" if on else "small"
            elif cmd == 0x5C:
                self.backlight = on
            elif cmd == 0x70:
                self._out.append(ACK)
            else:
                self.scanning = on
        return []

    def _finish_align(self) -> list[DeviceEvent]:
        self._state = "text"
        code = self._params[0] if self._params else 0
        if not 0x30 <= code <= 0x3E:
            return [ProtocolViolation("ESC . alignment out of range")]
        text = bytes(self._align).decode("latin-1")
        width, height = len(text) * _CHAR_WIDTH[self.font], FONT_HEIGHT[self.font]
        horizontal = (0, (DISPLAY_WIDTH - width) // 2, DISPLAY_WIDTH - width)
        vertical = (0, (DISPLAY_HEIGHT - height) // 2, DISPLAY_HEIGHT - height)
        n = code - 0x30
        if n <= 8:
            x, y = horizontal[n % 3], vertical[n // 3]
        elif n <= 11:
            x, y = horizontal[n - 9], self._y
        else:
            x, y = self._x, vertical[n - 12]
        self._x, self._y = max(x, 0), y
        for ch in text:
            self._put(ch)
        return []

    # -- the display model ------------------------------------------------------------------------

    def _clear(self) -> None:
        self._texts.clear()
        self._x = self._y = 0
        self.image = None

    def _show_idle(self) -> None:
        self._clear()
        for row, text in enumerate(self.idle_text):
            self._x, self._y = 0, row * FONT_HEIGHT["small"]
            for ch in text:
                self._put(ch)
        self._x = self._y = 0
        self.image = 1

    def _newline(self) -> None:
        self._x, self._y = 0, self._y + FONT_HEIGHT[self.font]

    def _put(self, ch: str) -> None:
        width = _CHAR_WIDTH[self.font]
        x, y = self._x, self._y
        if x + width > DISPLAY_WIDTH or y < 0 or y + FONT_HEIGHT[self.font] > DISPLAY_HEIGHT:
            return  # a character that does not fit is not shown at all
        current = self._texts[-1] if self._texts else None
        if current is None or current.y != y or current.end != x or current.font != self.font:
            current = _Text(x, y, self.font)
            self._texts.append(current)
        for item in self._texts:  # what was under the new character on this row goes
            if item is not current and item.y == y and item.x < x + width and item.end > x:
                w = _CHAR_WIDTH[item.font]
                if item.x < x:
                    item.text = item.text[: (x - item.x) // w]
                else:
                    skip = -(-(x + width - item.x) // w)
                    item.text, item.x = item.text[skip:], item.x + skip * w
        self._texts[:] = [t for t in self._texts if t.text or t is current]
        current.text += ch
        self._x += width

"""The PIN pad link, sans-IO: both roles in one module (the host at the till, the pad itself).

Framing: ``STX body ETX LRC``. The LRC is the XOR of every byte after STX up to and including ETX
(the convention of Ingenico RBA-style and most ``STX..ETX+LRC`` serial pads); the byte after ETX is
always the LRC, whatever its value. A body is printable ASCII plus FS (0x1C):

    body = seq code (FS field)*

``seq`` is a digit 0-9 the sender advances for each new frame; ``code`` is one letter naming the
message. The receiver answers every complete frame with ACK (0x06), or NAK (0x15) when the LRC is
wrong. A sender keeps one frame in flight (stop and wait): it resends it on NAK or when no ACK came
within ``ack_timeout``, at most ``retries`` times, then gives up (``LinkFailed``).

Duplicates: a resent frame is byte-identical to the original, so a receiver that gets the body it
accepted last again (same seq, same content) ACKs it and drops it — a lost ACK never yields a second
event. Seq numbers advance even past an abandoned frame, so the next frame never looks like a
duplicate whether or not the peer received the abandoned one. ACK and NAK carry no seq (as on most
pads), so an ACK delayed beyond ``ack_timeout`` can be taken for the next frame's; keep
``ack_timeout`` well above the pad's answer time.

Messages, host → pad: ``D`` display (0-2 lines), ``A`` amount (minor units, currency), ``R`` read a
card (prompt), ``P`` PIN entry (card number, amount or empty, currency or empty), ``X`` cancel,
``I`` idle. Pad → host: ``c`` card read (number, expiry YYMM or empty), ``p`` PIN entered (the
format 0 PIN block as 16 hex digits), ``x`` entry cancelled (reason), ``k`` function key, ``f`` card
read failed (reason).

Bytes from the peer never raise: noise, bad frames and unknown messages become ``ProtocolViolation``
events (whose reasons never quote the bytes), and the parser waits for the next STX. Frames, NAK
bursts and queues are all bounded. Logs name message codes only, never a body: a body may hold a
card number or a PIN block.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from core import InvalidInput, Money, validate_currency
from core.pin import pin_block

from .events import (
    CardRead,
    DeviceEvent,
    DisplayDone,
    KeyPressed,
    LocalProtocolError,
    PinCancelled,
    PinEntered,
    ProtocolViolation,
    ReadFailed,
    mask_number,
)

__all__ = [
    "STX", "ETX", "ACK", "NAK", "FS", "MAX_BODY", "COLUMNS", "FUNCTION_KEYS", "lrc", "encode_frame",
    "PinPadOptions", "LinkFailed", "Display", "ShowAmount", "ReadCard", "RequestPin", "Cancel", "Idle", "Command",
    "PinPadHost", "PinPadDevice",
]

log = logging.getLogger("tessera.devices.pinpad")

STX, ETX, ACK, NAK, FS = 0x02, 0x03, 0x06, 0x15, 0x1C
MAX_BODY = 128  # longest body a peer may send; longer ones are noise
MAX_QUEUE = 16  # frames waiting behind the one in flight
MAX_CONTROL = 32  # ACK/NAK bytes waiting to be written; more are dropped (the peer resends)
COLUMNS = 20  # widest line a pad shows (pads have 16 to 20 columns)
FUNCTION_KEYS = frozenset({"enter", "cancel", "clear", "f1", "f2", "f3", "f4"})
CANCEL_REASONS = frozenset({"cancelled", "timeout"})

_TEXT = re.compile(r"^[\x20-\x7e]*$")
_DIGITS = re.compile(r"^[0-9]+$")
_PAN = re.compile(r"^[0-9]{8,19}$")
_EXPIRY = re.compile(r"^[0-9]{2}(0[1-9]|1[0-2])$")
_AMOUNT = re.compile(r"^-?[0-9]{1,15}$")
_HEX_BLOCK = re.compile(r"^[0-9A-F]{16}$")
_REASON = re.compile(r"^[a-z_]{1,32}$")


def lrc(data: bytes) -> int:
    """XOR of ``data`` (a frame's bytes after STX, ETX included)."""
    value = 0
    for byte in data:
        value ^= byte
    return value


def encode_frame(body: bytes) -> bytes:
    """``STX body ETX LRC``."""
    tail = body + bytes([ETX])
    return bytes([STX]) + tail + bytes([lrc(tail)])


# -- options -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PinPadOptions:
    """Link and entry timers: ``?ack_timeout=1.0&retries=3&pin_timeout=30`` in a device URL."""

    ack_timeout: float = 1.0  # seconds to wait for ACK before resending
    retries: int = 3  # resends of one frame before the link is declared failed
    pin_timeout: float = 30.0  # seconds the customer has to enter a PIN

    def __post_init__(self) -> None:
        if not (isinstance(self.ack_timeout, (int, float)) and 0.01 <= self.ack_timeout <= 60):
            raise InvalidInput("ack_timeout is 0.01 to 60 seconds")
        if type(self.retries) is not int or not 0 <= self.retries <= 10:
            raise InvalidInput("retries is 0 to 10")
        if not (isinstance(self.pin_timeout, (int, float)) and 1 <= self.pin_timeout <= 600):
            raise InvalidInput("pin_timeout is 1 to 600 seconds")

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> PinPadOptions:
        """Options from a device URL's query parameters; InvalidInput on an unknown key or bad value."""
        unknown = set(params) - {"ack_timeout", "retries", "pin_timeout"}
        if unknown:
            raise InvalidInput(f"unknown PIN pad option(s): {', '.join(sorted(unknown))}")
        values: dict[str, float | int] = {}
        for key in ("ack_timeout", "pin_timeout"):
            if key in params:
                try:
                    value = float(params[key])
                except ValueError:
                    raise InvalidInput(f"{key} is a number of seconds") from None
                if not math.isfinite(value):
                    raise InvalidInput(f"{key} is a number of seconds")
                values[key] = value
        if "retries" in params:
            if not _DIGITS.match(params["retries"]):
                raise InvalidInput("retries is 0 to 10")
            values["retries"] = int(params["retries"])
        return cls(**values)


# -- events and commands -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkFailed(DeviceEvent):
    """A frame was never acknowledged (or the link dropped): the exchange is abandoned and the pad
    should be treated as unavailable until it answers again."""

    command: str  # the command whose frame went unacknowledged ("display", "pin", ...)
    reason: str = "no_ack"  # "no_ack" | "connection_lost"


def _check_text(text: object, what: str) -> None:
    if not isinstance(text, str) or len(text) > COLUMNS or not _TEXT.match(text):
        raise InvalidInput(f"{what} is up to {COLUMNS} printable ASCII characters")


@dataclass(frozen=True, slots=True)
class Display:
    """Show up to two lines of text (an empty tuple clears the screen)."""

    lines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.lines, tuple) or len(self.lines) > 2:
            raise InvalidInput("a display is a tuple of at most 2 lines")
        for line in self.lines:
            _check_text(line, "a display line")


@dataclass(frozen=True, slots=True)
class ShowAmount:
    """Show an amount; the pad formats it for its currency."""

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        _check_amount(self.amount_minor, self.currency)


def _check_amount(amount: object, currency: object) -> None:
    if type(amount) is not int or abs(amount) >= 10**15:
        raise InvalidInput("amount is an integer in minor units")
    try:
        validate_currency(currency)  # type: ignore[arg-type]
    except ValueError:
        raise InvalidInput("currency is three upper-case letters") from None


@dataclass(frozen=True, slots=True)
class ReadCard:
    """Ask the customer to swipe or insert a card on the pad (answered by ``CardRead``)."""

    prompt: str = "SWIPE CARD"

    def __post_init__(self) -> None:
        _check_text(self.prompt, "a prompt")


@dataclass(frozen=True, slots=True)
class RequestPin:
    """Ask for the PIN of card ``pan`` (answered by ``PinEntered`` or ``PinCancelled``)."""

    pan: str = field(repr=False)
    amount_minor: int | None = None
    currency: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.pan, str) or not _PAN.match(self.pan):
            raise InvalidInput("card number is 8 to 19 digits")
        if (self.amount_minor is None) != (self.currency is None):
            raise InvalidInput("amount and currency go together")
        if self.amount_minor is not None:
            _check_amount(self.amount_minor, self.currency)

    def __repr__(self) -> str:
        amount = f"amount_minor={self.amount_minor!r}, currency={self.currency!r}"
        return f"RequestPin(pan={mask_number(self.pan)!r}, {amount})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Cancel:
    """Abandon the prompt in progress (card read or PIN entry)."""


@dataclass(frozen=True, slots=True)
class Idle:
    """Back to the pad's idle screen; abandons any prompt in progress."""


Command = Display | ShowAmount | ReadCard | RequestPin | Cancel | Idle

# command type -> (message code, name in DisplayDone/LinkFailed)
_COMMANDS: dict[type, tuple[str, str]] = {
    Display: ("D", "display"), ShowAmount: ("A", "amount"), ReadCard: ("R", "read_card"),
    RequestPin: ("P", "pin"), Cancel: ("X", "cancel"), Idle: ("I", "idle"),
}
_DONE_ON_ACK = frozenset({"display", "amount", "cancel", "idle"})
_ANSWERS = {"c": "card", "p": "pin", "x": "cancel", "k": "key", "f": "read_failed"}  # pad message code -> name


def _fields(command: Command) -> tuple[str, ...]:
    if isinstance(command, Display):
        return command.lines
    if isinstance(command, ShowAmount):
        return str(command.amount_minor), command.currency
    if isinstance(command, ReadCard):
        return (command.prompt,)
    if isinstance(command, RequestPin):
        amount = "" if command.amount_minor is None else str(command.amount_minor)
        return command.pan, amount, command.currency or ""
    return ()


def _message(code: str, fields: Iterable[str] = ()) -> bytes:
    return (code + "".join("\x1c" + f for f in fields)).encode("ascii")


# -- the link layer both roles share -----------------------------------------------------------------

_IDLE, _BODY, _LRC = 0, 1, 2


@dataclass(slots=True)
class _Outgoing:
    message: bytes  # code and fields, without seq
    name: str  # for DisplayDone / LinkFailed and logs
    done_event: bool  # whether its ACK is reported as DisplayDone


class _Link:
    """Framing, ACK/NAK, retransmission and duplicate suppression; the roles interpret the messages."""

    def __init__(self, options: PinPadOptions, clock: Callable[[], float], role: str) -> None:
        self._options = options
        self._clock = clock
        self._role = role
        self.reset()
        # Test knobs of the simulated pad (the host never sets them): lose, NAK, or skip the ACK of
        # the next N good frames.
        self.drop_frames = 0
        self.nak_frames = 0
        self.skip_acks = 0

    def reset(self) -> None:
        self._state = _IDLE
        self._rx = bytearray()
        self._in_noise = False
        self._last_rx: bytes | None = None
        self._control = bytearray()
        self._queue: deque[_Outgoing] = deque()
        self._inflight: _Outgoing | None = None
        self._frame: bytes = b""  # the in-flight frame with its seq
        self._unsent = False  # the in-flight frame is waiting in the output
        self._attempts = 0
        self._deadline: float | None = None
        self._seq = 0

    @property
    def buffered(self) -> int:
        """Bytes held: a partial frame, queued messages and output not yet taken."""
        queued = sum(len(o.message) for o in self._queue)
        return len(self._rx) + queued + len(self._control) + (len(self._frame) if self._unsent else 0)

    @property
    def busy(self) -> bool:
        return self._inflight is not None

    # sending

    def queue(self, out: _Outgoing) -> None:
        if len(self._queue) >= MAX_QUEUE:
            raise LocalProtocolError("too many PIN pad commands waiting to be sent")
        self._queue.append(out)
        if self._inflight is None:
            self._next()

    def _next(self) -> None:
        if not self._queue:
            return
        self._inflight = self._queue.popleft()
        self._seq = (self._seq + 1) % 10
        self._frame = encode_frame(str(self._seq).encode() + self._inflight.message)
        self._attempts = 0
        self._transmit(self._clock())

    def _transmit(self, now: float) -> None:
        assert self._inflight is not None
        self._attempts += 1
        self._unsent = True
        self._deadline = now + self._options.ack_timeout
        log.debug("pinpad frame out role=%s code=%s attempt=%d", self._role, self._inflight.message[:1].decode(),
                  self._attempts)

    def data_to_send(self) -> bytes:
        out = bytes(self._control)
        self._control.clear()
        if self._unsent:
            out += self._frame
            self._unsent = False
        return out

    def next_deadline(self) -> float | None:
        return self._deadline if self._inflight is not None else None

    def handle_timeout(self, now: float) -> list[tuple]:
        if self._inflight is None or self._deadline is None or now < self._deadline:
            return []
        return self._resend_or_fail(now)

    def _resend_or_fail(self, now: float) -> list[tuple]:
        assert self._inflight is not None
        if self._attempts <= self._options.retries:
            self._transmit(now)
            return []
        failed = self._inflight
        abandoned = len(self._queue)
        log.warning("pinpad link failed role=%s command=%s attempts=%d abandoned=%d", self._role, failed.name,
                    self._attempts, abandoned)
        self._queue.clear()
        self._inflight, self._deadline, self._unsent, self._frame = None, None, False, b""
        return [("failed", failed.name)]

    def abandon(self) -> str | None:
        """Forget everything (the link dropped); the name of the exchange in flight, if any."""
        name = self._inflight.name if self._inflight is not None else None
        seq = self._seq
        self.reset()
        self._seq = seq
        return name

    def _control_byte(self, byte: int) -> None:
        if len(self._control) < MAX_CONTROL:
            self._control.append(byte)

    # receiving

    def receive(self, data: bytes) -> list[tuple]:
        """Items: ("message", code, fields) | ("violation", reason) | ("acked", _Outgoing) | ("failed", name)."""
        items: list[tuple] = []
        for byte in data:
            self._byte(byte, items)
        return items

    def _byte(self, byte: int, items: list[tuple]) -> None:
        if self._state == _BODY:
            if byte == ETX:
                self._state = _LRC
            elif byte == FS or 0x20 <= byte <= 0x7E:
                self._rx.append(byte)
                if len(self._rx) > MAX_BODY:
                    items.append(("violation", "frame too long"))
                    self._rx.clear()
                    self._state, self._in_noise = _IDLE, True
            elif byte == STX:
                items.append(("violation", "frame cut short"))
                self._rx.clear()
            else:
                items.append(("violation", "bad byte in frame"))
                self._rx.clear()
                self._state, self._in_noise = _IDLE, True
                self._byte(byte, items)  # an ACK/NAK there still counts
            return
        if self._state == _LRC:
            body = bytes(self._rx)
            self._rx.clear()
            self._state = _IDLE
            if byte != lrc(body + bytes([ETX])):
                items.append(("violation", "bad LRC"))
                log.debug("pinpad NAK role=%s reason=lrc", self._role)
                self._control_byte(NAK)
            else:
                self._frame_in(body, items)
            return
        if byte == STX:
            self._rx.clear()
            self._state, self._in_noise = _BODY, False
        elif byte == ACK:
            self._in_noise = False
            self._ack(items)
        elif byte == NAK:
            self._in_noise = False
            if self._inflight is not None:
                log.debug("pinpad NAK received role=%s code=%s", self._role, self._inflight.message[:1].decode())
                items.extend(self._resend_or_fail(self._clock()))
        elif not self._in_noise:
            self._in_noise = True
            items.append(("violation", "noise between frames"))

    def _ack(self, items: list[tuple]) -> None:
        if self._inflight is None:
            return  # a late ACK for a frame already resent and acknowledged
        done = self._inflight
        self._inflight, self._deadline, self._unsent, self._frame = None, None, False, b""
        items.append(("acked", done))
        self._next()

    def _frame_in(self, body: bytes, items: list[tuple]) -> None:
        if self.drop_frames:
            self.drop_frames -= 1
            return
        if self.nak_frames:
            self.nak_frames -= 1
            self._control_byte(NAK)
            return
        if self.skip_acks:
            self.skip_acks -= 1
        else:
            self._control_byte(ACK)
        if body == self._last_rx:
            log.debug("pinpad duplicate frame role=%s", self._role)
            return
        self._last_rx = body
        if len(body) < 2 or not 0x30 <= body[0] <= 0x39 or not chr(body[1]).isalpha():
            items.append(("violation", "malformed frame"))
            return
        text = body[2:].decode("ascii")
        fields = tuple(text.split("\x1c")[1:]) if text.startswith("\x1c") else None
        if fields is None and text:
            items.append(("violation", "malformed frame"))
            return
        log.debug("pinpad frame in role=%s code=%s", self._role, chr(body[1]))
        items.append(("message", chr(body[1]), fields or ()))


# -- the host (till) role ----------------------------------------------------------------------------


class PinPadHost:
    """The till's end of the PIN pad link (the ``DeviceProtocol`` shape).

    Display commands report ``DisplayDone`` once the pad acknowledges them. One card or PIN request
    may be outstanding; its answer is ``CardRead``, ``PinEntered`` or ``PinCancelled`` (the latter
    also after ``pin_timeout``, when the host cancels the prompt on the pad itself). A frame the pad
    never acknowledges yields ``LinkFailed`` and abandons the exchange in progress.
    """

    def __init__(self, options: PinPadOptions | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options or PinPadOptions()
        self._clock = clock
        self._link = _Link(self.options, clock, "host")
        self._pending: str | None = None  # "read_card" | "pin"
        self._pin_deadline: float | None = None

    def __repr__(self) -> str:
        return f"PinPadHost(pending={self._pending!r}, busy={self._link.busy})"

    @property
    def pending(self) -> str | None:
        """The outstanding request: "read_card", "pin" or None."""
        return self._pending

    @property
    def buffered(self) -> int:
        """Bytes held in the link's buffers (bounded)."""
        return self._link.buffered

    def send(self, command: Command) -> None:
        """Queue a command for the pad; LocalProtocolError if it is not a command or cannot be sent now."""
        if type(command) not in _COMMANDS:
            raise LocalProtocolError(f"a PIN pad cannot be sent a {type(command).__name__}")
        code, name = _COMMANDS[type(command)]
        if isinstance(command, (ReadCard, RequestPin)) and self._pending is not None:
            raise LocalProtocolError(f"the PIN pad already has a {self._pending} request outstanding")
        self._link.queue(_Outgoing(_message(code, _fields(command)), name, name in _DONE_ON_ACK))
        if isinstance(command, (Cancel, Idle)):
            self._pending, self._pin_deadline = None, None
        elif isinstance(command, ReadCard):
            self._pending = "read_card"
        elif isinstance(command, RequestPin):
            self._pending, self._pin_deadline = "pin", self._clock() + self.options.pin_timeout

    def data_to_send(self) -> bytes:
        return self._link.data_to_send()

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self._link.next_deadline(), self._pin_deadline) if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timeout(self, now: float) -> list[DeviceEvent]:
        events = self._events(self._link.handle_timeout(now))
        if self._pin_deadline is not None and now >= self._pin_deadline:
            self._pending, self._pin_deadline = None, None
            events.append(PinCancelled("timeout"))
            try:  # take the prompt off the pad; DisplayDone is not reported for it
                self._link.queue(_Outgoing(_message("X"), "cancel", False))
            except LocalProtocolError:
                log.warning("pinpad could not queue the cancel of a timed-out PIN entry")
        return events

    def receive_data(self, data: bytes) -> list[DeviceEvent]:
        return self._events(self._link.receive(data))

    def connection_lost(self) -> list[DeviceEvent]:
        name = self._link.abandon() or self._pending
        self._pending, self._pin_deadline = None, None
        return [LinkFailed(name, "connection_lost")] if name else []

    def _events(self, items: list[tuple]) -> list[DeviceEvent]:
        events: list[DeviceEvent] = []
        for item in items:
            kind = item[0]
            if kind == "violation":
                events.append(ProtocolViolation(item[1]))
            elif kind == "acked":
                if item[1].done_event:
                    events.append(DisplayDone(item[1].name))
            elif kind == "failed":
                self._pending, self._pin_deadline = None, None
                events.append(LinkFailed(item[1]))
            else:
                event = self._message(item[1], item[2])
                if event is not None:
                    events.append(event)
        return events

    def _message(self, code: str, fields: tuple[str, ...]) -> DeviceEvent | None:
        if code == "c":
            if len(fields) != 2 or not _PAN.match(fields[0]) or (fields[1] and not _EXPIRY.match(fields[1])):
                return ProtocolViolation("malformed card message")
            if self._pending == "read_card":
                self._pending = None
            return CardRead(fields[0], "pad", fields[1] or None)
        if code == "p":
            if len(fields) != 1 or not _HEX_BLOCK.match(fields[0]):
                return ProtocolViolation("malformed PIN message")
            if self._pending != "pin":
                log.debug("pinpad PIN block with no PIN request outstanding dropped")
                return None
            self._pending, self._pin_deadline = None, None
            return PinEntered(bytes.fromhex(fields[0]))
        if code == "x":
            if len(fields) != 1 or fields[0] not in CANCEL_REASONS:
                return ProtocolViolation("malformed cancel message")
            if self._pending is None:
                return None  # crossed our own cancel on the line
            self._pending, self._pin_deadline = None, None
            return PinCancelled(fields[0])
        if code == "k":
            if len(fields) != 1 or fields[0] not in FUNCTION_KEYS:
                return ProtocolViolation("malformed key message")
            return KeyPressed(fields[0])
        if code == "f":
            if len(fields) != 1 or not _REASON.match(fields[0]):
                return ProtocolViolation("malformed read failure message")
            if self._pending == "read_card":
                self._pending = None
            return ReadFailed(fields[0])
        return ProtocolViolation("unknown message")


# -- the pad role (for simulators) -------------------------------------------------------------------


class PinPadDevice:
    """The pad's end of the link, as a simulator plays it.

    ``receive_data`` returns the commands the host sent (ACKing each frame); the customer's actions
    (``enter_pin``, ``cancel``, ``press``, ``read_card``) queue frames for ``data_to_send``. ``screen``
    holds what the pad shows. ``drop_next``/``nak_next``/``lose_acks`` misbehave on purpose.
    """

    def __init__(self, options: PinPadOptions | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options or PinPadOptions()
        self._link = _Link(self.options, clock, "pad")
        self.screen: tuple[str, ...] = ()
        self.pending: ReadCard | RequestPin | None = None
        self.violations = 0
        self.link_failures = 0

    def __repr__(self) -> str:
        pending = type(self.pending).__name__ if self.pending is not None else None
        return f"PinPadDevice(screen={self.screen!r}, pending={pending})"

    @property
    def buffered(self) -> int:
        return self._link.buffered

    # misbehaviour for tests

    def drop_next(self, n: int = 1) -> None:
        """Lose the next ``n`` good frames from the host (no ACK, no effect)."""
        self._link.drop_frames = n

    def nak_next(self, n: int = 1) -> None:
        """NAK the next ``n`` good frames from the host."""
        self._link.nak_frames = n

    def lose_acks(self, n: int = 1) -> None:
        """Act on the next ``n`` good frames but lose their ACKs."""
        self._link.skip_acks = n

    # the link

    def receive_data(self, data: bytes) -> list[Command]:
        commands: list[Command] = []
        for item in self._link.receive(data):
            if item[0] == "violation":
                self.violations += 1
                log.debug("pinpad device violation reason=%s", item[1])
            elif item[0] == "failed":
                self.link_failures += 1
            elif item[0] == "message":
                command = self._command(item[1], item[2])
                if command is None:
                    self.violations += 1
                else:
                    self._apply(command)
                    commands.append(command)
        return commands

    def data_to_send(self) -> bytes:
        return self._link.data_to_send()

    def next_deadline(self) -> float | None:
        return self._link.next_deadline()

    def handle_timeout(self, now: float) -> list[DeviceEvent]:
        failed = [item for item in self._link.handle_timeout(now) if item[0] == "failed"]
        self.link_failures += len(failed)
        return [LinkFailed(item[1]) for item in failed]

    def connection_lost(self) -> None:
        """The host went away: forget the link state and any prompt."""
        self._link.abandon()
        self.pending, self.screen = None, ()

    @staticmethod
    def _command(code: str, fields: tuple[str, ...]) -> Command | None:
        try:
            if code == "D":
                return Display(fields)
            if code == "A" and len(fields) == 2 and _AMOUNT.match(fields[0]):
                return ShowAmount(int(fields[0]), fields[1])
            if code == "R" and len(fields) == 1:
                return ReadCard(fields[0])
            if code == "P" and len(fields) == 3 and (not fields[1] or _AMOUNT.match(fields[1])):
                amount = int(fields[1]) if fields[1] else None
                return RequestPin(fields[0], amount, fields[2] or None)
            if code == "X" and not fields:
                return Cancel()
            if code == "I" and not fields:
                return Idle()
        except InvalidInput:
            return None
        return None

    def _apply(self, command: Command) -> None:
        if isinstance(command, Display):
            self.screen = command.lines
        elif isinstance(command, ShowAmount):
            self.screen = ("AMOUNT", str(Money(command.currency, command.amount_minor)))
        elif isinstance(command, ReadCard):
            self.pending, self.screen = command, (command.prompt,)
        elif isinstance(command, RequestPin):
            self.pending = command
            amount = () if command.amount_minor is None else (str(Money(command.currency, command.amount_minor)),)
            self.screen = (*amount, "ENTER PIN")
        else:  # Cancel, Idle
            self.pending, self.screen = None, ()

    # the customer

    def _send(self, code: str, *fields: str) -> None:
        self._link.queue(_Outgoing(_message(code, fields), _ANSWERS[code], False))

    def enter_pin(self, pin: str) -> None:
        """Key ``pin`` and press enter: sends the format 0 block for the requested card."""
        if not isinstance(self.pending, RequestPin):
            raise LocalProtocolError("the pad is not asking for a PIN")
        block = pin_block(pin, self.pending.pan)
        self._send("p", block.hex().upper())
        self.pending, self.screen = None, ("PLEASE WAIT",)

    def cancel(self, reason: str = "cancelled") -> None:
        """The customer presses cancel (or the pad's own entry timer runs out: ``reason="timeout"``)."""
        if reason not in CANCEL_REASONS:
            raise InvalidInput("reason is cancelled or timeout")
        if self.pending is None:
            self.press("cancel")
            return
        self._send("x", reason)
        self.pending, self.screen = None, ("CANCELLED",)

    def press(self, key: str) -> None:
        """A function key (digits are only ever part of PIN entry and never leave the pad as keys)."""
        if key not in FUNCTION_KEYS:
            raise InvalidInput(f"key is one of {', '.join(sorted(FUNCTION_KEYS))}")
        self._send("k", key)

    def read_card(self, number: str, expiry: str | None = None) -> None:
        """A card swiped or inserted on the pad (with or without a ``ReadCard`` prompt)."""
        if not isinstance(number, str) or not _PAN.match(number):
            raise InvalidInput("card number is 8 to 19 digits")
        if expiry is not None and not _EXPIRY.match(expiry):
            raise InvalidInput("expiry is YYMM")
        self._send("c", number, expiry or "")
        if isinstance(self.pending, ReadCard):
            self.pending, self.screen = None, ("PLEASE WAIT",)

    def read_failed(self, reason: str = "unreadable") -> None:
        """The pad could not read the card."""
        if not _REASON.match(reason):
            raise InvalidInput("reason is 1 to 32 of a-z and _")
        self._send("f", reason)
        if isinstance(self.pending, ReadCard):
            self.pending = None

"""Magnetic-stripe readers, sans-IO: the host side reads swipes, the device side writes them.

A swipe is the tracks the reader read, in track order, each as ``start sentinel, data, end sentinel``:
``%...?`` for track 1, ``;...?`` for track 2 and ``+...?`` (or a second ``;...?``) for track 3. A track
the reader could not read is sent as ``%E?``, ``;E?`` or ``+E?``. Readers check the LRC themselves and
do not pass it on; one that does is tolerated where it is not a start sentinel. Framings:

``magtek``
    Serial MagTek readers: ``STX tracks CR ETX`` (the RS-232 swipe readers). Their insertion readers
    put ``ESC`` after STX and a card-sensor digit (``0`` card out, ``1`` card in) after the tracks —
    ``STX ESC %...?;...? 0 CR ETX`` — and report the sensor alone as ``STX ESC 1 CR ETX``, which is no
    swipe and gives no event. Both styles are read; CR and LF between frames are ignored.
``sentinel``
    Plain sentinel output, as keyboard-style and ID TECH/MagTek readers without STX/ETX send it:
    ``%...?;...?`` ending with CR (LF and CRLF are read too).

Only the card number and expiry leave this module: track data is not logged, and neither events nor
their reasons carry it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stdnum import luhn

from core import InvalidInput, NumberTemplate
from core.track import TrackData, parse_track1, parse_track2, parse_track3

from .events import CardRead, DeviceEvent, LocalProtocolError, ProtocolViolation, ReadFailed, mask_number
from .protocol import InputOnly

__all__ = ["MagstripeOptions", "MagstripeReader", "encode_swipe", "encode_read_error", "FRAMINGS", "MAX_SWIPE"]

log = logging.getLogger(__name__)

STX, ETX, LF, CR, ESC = 0x02, 0x03, 0x0A, 0x0D, 0x1B
FRAMINGS = ("magtek", "sentinel")
MAX_SWIPE = 512  # bytes of one swipe; three full tracks are 226 characters
_SENTINELS = "%;+"
_PARSERS = {1: parse_track1, 2: parse_track2, 3: parse_track3}
_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False,
          "auto": None, "programme": None}


@dataclass(frozen=True, slots=True)
class MagstripeOptions:
    """How the reader is set up, and whether card numbers must pass Luhn.

    ``luhn`` None follows each programme's template; True or False overrides it (without templates,
    True requires a Luhn-valid number and None or False checks nothing).
    """

    framing: str = "magtek"
    luhn: bool | None = None

    def __post_init__(self) -> None:
        if self.framing not in FRAMINGS:
            raise InvalidInput("magstripe framing is magtek or sentinel")
        if self.luhn not in (None, True, False):
            raise InvalidInput("magstripe luhn is True, False or None")

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> MagstripeOptions:
        """From a device URL's query: ``framing``, ``luhn`` (1/0, or auto: per programme). InvalidInput otherwise."""
        unknown = sorted(set(params) - {"framing", "luhn"})
        if unknown:
            raise InvalidInput(f"unknown magstripe options: {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        if "framing" in params:
            kwargs["framing"] = params["framing"].strip().lower()
        if "luhn" in params:
            value = params["luhn"].strip().lower()
            if value not in _FLAGS:
                raise InvalidInput("magstripe option luhn is 1, 0 or auto")
            kwargs["luhn"] = _FLAGS[value]
        return cls(**kwargs)


# --- host side -----------------------------------------------------------------------------------


_IDLE, _JUNK, _FRAME, _DISCARD = "idle", "junk", "frame", "discard"


def _segments(text: str) -> list[tuple[int, str]] | None:
    """The swipe's tracks as (track number, track text with ``;`` for track 3); None if it is not a run of
    tracks in track order."""
    out: list[tuple[int, str]] = []
    at = 0
    while at < len(text):
        sentinel = text[at]
        end = text.find("?", at + 1)
        if sentinel not in _SENTINELS or end < 0:
            return None
        track = text[at:end + 1]
        at = end + 1
        if at < len(text) and text[at] not in _SENTINELS:
            track += text[at]  # an LRC the reader passed on
            at += 1
        if sentinel == "%":
            number = 1
        elif sentinel == "+" or any(n == 2 for n, _ in out):
            number = 3
        else:
            number = 2
        if out and number <= out[-1][0]:
            return None
        out.append((number, ";" + track[1:] if number == 3 else track))
    return out


class MagstripeReader(InputOnly):
    """The host side of a reader: bytes in, ``CardRead`` or ``ReadFailed`` out.

    A swipe gives ``CardRead`` when at least one track parses and the tracks that parse agree on the
    PAN; its ``tracks`` are those tracks, its expiry that of track 2, else 1, else 3. ``ReadFailed``
    when every track was reported unreadable or does not parse, when the tracks disagree, or — with
    ``templates`` (programme code → ``NumberTemplate``, read at each swipe, so a live mapping may
    change) — when the number matches no programme. An empty mapping (no programmes known) checks
    nothing. Bytes that cannot be framed give ``ProtocolViolation``. Never raises on input; the
    buffer never holds more than ``MAX_SWIPE`` bytes.
    """

    takes_no_commands = "a magnetic-stripe reader takes no commands"

    def __init__(self, options: MagstripeOptions | None = None,
                 templates: Mapping[str, NumberTemplate] | None = None) -> None:
        self.options = options or MagstripeOptions()
        self.templates = templates
        self._buffer = bytearray()
        self._state = _IDLE

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished swipe."""
        return len(self._buffer)

    def receive_data(self, data: bytes) -> list[DeviceEvent]:
        events: list[DeviceEvent] = []
        feed = self._magtek if self.options.framing == "magtek" else self._sentinel
        for byte in data:
            feed(byte, events)
        return events

    def _magtek(self, byte: int, events: list[DeviceEvent]) -> None:
        if self._state is _FRAME:
            if byte == ETX:
                self._state = _IDLE
                self._finish(events)
            elif byte == STX:
                events.append(ProtocolViolation("swipe frame cut short by the next one"))
                self._buffer.clear()
            else:
                self._append(byte, events)
        elif self._state is _DISCARD:
            if byte in (STX, ETX):
                self._state = _FRAME if byte == STX else _IDLE
        elif byte == STX:
            self._state = _FRAME
        elif byte in (CR, LF):
            pass
        elif self._state is _IDLE:
            events.append(ProtocolViolation("bytes outside a swipe frame"))
            self._state = _JUNK

    def _sentinel(self, byte: int, events: list[DeviceEvent]) -> None:
        if byte in (CR, LF):
            if self._state is _DISCARD:
                self._state = _IDLE
                self._buffer.clear()
            elif self._buffer:
                self._finish(events)
        elif self._state is not _DISCARD:
            self._append(byte, events)

    def _append(self, byte: int, events: list[DeviceEvent]) -> None:
        if len(self._buffer) >= MAX_SWIPE:
            events.append(ProtocolViolation(f"swipe longer than {MAX_SWIPE} bytes"))
            self._buffer.clear()
            self._state = _DISCARD
        else:
            self._buffer.append(byte)

    def _finish(self, events: list[DeviceEvent]) -> None:
        payload = bytes(self._buffer)
        self._buffer.clear()
        event = self._swipe(payload)
        if event is not None:
            if isinstance(event, CardRead):
                log.debug("swipe read card %s from tracks %s", mask_number(event.number), event.tracks)
            else:
                log.debug("swipe gave %r", event)
            events.append(event)

    def _swipe(self, payload: bytes) -> DeviceEvent | None:
        sensor = False
        if self.options.framing == "magtek":
            if payload.startswith(b"\x1b"):
                payload, sensor = payload[1:], True
            if payload.endswith(b"\r"):
                payload = payload[:-1]
            if sensor and payload in (b"0", b"1"):
                return None  # the card sensor changed: no swipe
            if sensor and payload[-1:] in (b"0", b"1"):
                payload = payload[:-1]
        if not all(0x20 <= byte < 0x7F for byte in payload):
            return ReadFailed("swipe holds bytes no track can hold")
        if not payload:
            return ReadFailed("swipe holds no track")
        segments = _segments(payload.decode("ascii"))
        if not segments:
            return ReadFailed("swipe is not a run of tracks")
        read: dict[int, TrackData] = {}
        reported: list[int] = []
        for number, track in segments:
            if track[1:3] == "E?":
                reported.append(number)
                continue
            try:
                read[number] = _PARSERS[number](track)
            except InvalidInput:
                pass  # counted below; the reason could only describe the track
        if not read:
            only = segments[0][0] if len(segments) == 1 else None
            if len(reported) == len(segments):
                return ReadFailed("reader could not read the card", only)
            return ReadFailed(f"track {only} did not parse" if only else "no track could be read", only)
        if len({data.pan for data in read.values()}) > 1:
            return ReadFailed("tracks disagree on the card number")
        pan = next(iter(read.values())).pan
        if not self._valid(pan):
            if self.templates:
                return ReadFailed("card number not valid for any programme")
            return ReadFailed("card number fails the Luhn check")
        expiry = next((read[n].expiry for n in (2, 1, 3) if n in read and read[n].expiry), None)
        return CardRead(number=pan, source="swipe", expiry=expiry, tracks=tuple(sorted(read)))

    def _valid(self, number: str) -> bool:
        override = self.options.luhn
        if not self.templates:
            return override is not True or luhn.is_valid(number)
        for template in self.templates.values():
            if len(number) == template.length and number.startswith(template.prefix):
                check = template.luhn if override is None else override
                if not check or luhn.is_valid(number):
                    return True
        return False

    def connection_lost(self) -> list[DeviceEvent]:
        """Forget a partial swipe; ``ReadFailed`` if there was one, so the cashier asks for another."""
        partial = bool(self._buffer) or self._state is _FRAME
        self._buffer.clear()
        self._state = _IDLE
        return [ReadFailed("swipe cut short by the link going down")] if partial else []


# --- device side ---------------------------------------------------------------------------------


def _frame(tracks: str, options: MagstripeOptions) -> bytes:
    data = tracks.encode("ascii")
    if options.framing == "magtek":
        return bytes([STX]) + data + bytes([CR, ETX])
    return data + bytes([CR])


def _check(number: int, track: str) -> str:
    sentinel = "%" if number == 1 else ";"
    low, high = (" ", "_") if number == 1 else ("0", ">")
    data = track[1:-1]
    if not (len(track) >= 3 and track[0] == sentinel and track[-1] == "?"):
        raise LocalProtocolError(f"track {number} is {sentinel}...?")
    if data != "E" and not all(low <= char <= high and char not in sentinel + "?" for char in data):
        raise LocalProtocolError(f"track {number} holds a character the track cannot")
    return "+" + track[1:] if number == 3 else track


def encode_swipe(track1: str | None, track2: str | None, track3: str | None, options: MagstripeOptions) -> bytes:
    """The bytes a reader set up with ``options`` sends for a swipe of these tracks.

    Tracks are given as on the card, sentinels included and without LRC (``core.track.track1``/
    ``track2``; track 3 as ``;...?``); None for a track the card does not have. ``%E?``-style text sends
    a read error for that track. Track 3 goes out with the ``+`` sentinel MagTek readers use.
    """
    tracks = [_check(n, t) for n, t in ((1, track1), (2, track2), (3, track3)) if t is not None]
    if not tracks:
        raise LocalProtocolError("a swipe has at least one track")
    return _frame("".join(tracks), options)


def encode_read_error(options: MagstripeOptions, tracks: tuple[int, ...] = (1, 2)) -> bytes:
    """The bytes a reader sends when it could not read these tracks (``%E?;E?`` framed)."""
    if not tracks or sorted(set(tracks)) != list(tracks) or not set(tracks) <= {1, 2, 3}:
        raise LocalProtocolError("read-error tracks are some of 1, 2, 3 in order")
    return _frame("".join("%;+"[n - 1] + "E?" for n in tracks), options)

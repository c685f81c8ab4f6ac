"""Magnetic-stripe track data: ISO/IEC 7813 tracks 1 and 2 written for the card production file, and
tracks 1, 2 and (ISO/IEC 4909) 3 parsed from what a reader hands over."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import InvalidInput

__all__ = ["track1", "track2", "TrackData", "parse_track1", "parse_track2", "parse_track3", "lrc"]

_NAME = re.compile(r"^[A-Z0-9 ./-]{2,26}$")


_DIGITS = re.compile(r"^[0-9]*$")
# Track 1 data characters (ISO/IEC 7813 6-bit set) less the sentinels and separator.
_TRACK1_DATA = re.compile(r"^[ !\"#$&'()*+,\-./0-9:;<=>@A-Z\[\\\]_]*$")


def _check(pan: str, expiry_yymm: str, service_code: str) -> None:
    if not (pan and _DIGITS.match(pan) and len(pan) <= 19):
        raise InvalidInput("PAN is up to 19 digits")
    if not (len(expiry_yymm) == 4 and _DIGITS.match(expiry_yymm) and 1 <= int(expiry_yymm[2:]) <= 12):
        raise InvalidInput("expiry is YYMM")
    if not (len(service_code) == 3 and _DIGITS.match(service_code)):
        raise InvalidInput("service code is three digits")


def track1(pan: str, name: str, expiry_yymm: str, service_code: str, discretionary: str = "") -> str:
    """``%B<PAN>^<NAME>^<YYMM><SC><DD>?`` — 79 characters at most with the LRC the encoder adds."""
    _check(pan, expiry_yymm, service_code)
    name = name.upper()
    if not _NAME.match(name):
        raise InvalidInput("track 1 name is 2-26 of A-Z, 0-9, space . / -")
    if not _TRACK1_DATA.match(discretionary):
        raise InvalidInput("track 1 discretionary data has a character the track cannot hold")
    data = f"%B{pan}^{name}^{expiry_yymm}{service_code}{discretionary}?"
    if len(data) > 78:
        raise InvalidInput("track 1 is longer than 79 characters with its LRC")
    return data


def track2(pan: str, expiry_yymm: str, service_code: str, discretionary: str = "") -> str:
    """``;<PAN>=<YYMM><SC><DD>?`` — 40 characters at most with the LRC the encoder adds."""
    _check(pan, expiry_yymm, service_code)
    if not _DIGITS.match(discretionary):
        raise InvalidInput("track 2 discretionary data is digits")
    data = f";{pan}={expiry_yymm}{service_code}{discretionary}?"
    if len(data) > 39:
        raise InvalidInput("track 2 is longer than 40 characters with its LRC")
    return data


# --- parsing what a reader hands over ----------------------------------------------------------------------
#
# The parsers keep the PAN and the expiry only. Their errors name the field that is wrong and never quote
# the track, so a failed swipe can be reported and logged safely.

_TRACK1_SET = frozenset(chr(c) for c in range(0x20, 0x60))  # ISO/IEC 7811-2 6-bit (ALPHA) characters
_TRACK23_SET = frozenset(chr(c) for c in range(0x30, 0x40))  # ISO/IEC 7811-2 4-bit (BCD) characters
_PAN = re.compile(r"^[0-9]{8,19}$")
_YYMM = re.compile(r"^[0-9]{2}(0[1-9]|1[0-2])$")
# ISO/IEC 4909 fields between the PAN's separator and the expiry date, by width: country code (an FS alone
# since the 2006 edition), currency, currency exponent, amount authorized per cycle, amount remaining,
# cycle begin, cycle length, retry count, PIN parameters, interchange control, and the type of account
# and service restriction of the PAN, SAN-1 and SAN-2. A field not in use is written as a single FS.
_TRACK3_FIELDS = (3, 3, 1, 4, 4, 4, 2, 1, 6, 1, 2, 2, 2)
_TRACK3_ISO_FORMATS = ("01", "02")


@dataclass(frozen=True, slots=True)
class TrackData:
    """What is kept of a track: the PAN, and the expiry as YYMM (None when the track has none)."""

    pan: str = field(repr=False)
    expiry: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"TrackData(pan={'*' * (len(self.pan) - 4) + self.pan[-4:]!r}, expiry=...)"

    __str__ = __repr__


def lrc(track: str) -> str:
    """The LRC character of a track from its start sentinel to its end sentinel inclusive (ISO/IEC 7811-2):
    the XOR of the characters' data bits (6 on track 1, which starts with ``%``; 4 on tracks 2 and 3)."""
    base, charset = (0x20, _TRACK1_SET) if track.startswith("%") else (0x30, _TRACK23_SET)
    value = 0
    for char in track:
        if char not in charset:
            raise InvalidInput("track holds a character outside its character set")
        value ^= ord(char) - base
    return chr(base + value)


def _data(text: str, number: int, sentinel: str, limit: int) -> str:
    """The characters between the sentinels, once the framing, length, character set and LRC are right."""
    charset = _TRACK1_SET if number == 1 else _TRACK23_SET
    if not text.startswith(sentinel):
        raise InvalidInput(f"track {number} does not begin with its start sentinel")
    end = text.find("?")
    if end < 0:
        raise InvalidInput(f"track {number} has no end sentinel")
    body, rest = text[: end + 1], text[end + 1:]
    if len(body) > limit:
        raise InvalidInput(f"track {number} is longer than {limit + 1} characters with its LRC")
    data = body[1:-1]
    if not all(char in charset for char in data) or sentinel in data:
        raise InvalidInput(f"track {number} holds a character the track cannot")
    if len(rest) > 1:
        raise InvalidInput(f"track {number} has data after its end sentinel")
    if rest and rest != lrc(body):
        raise InvalidInput(f"track {number} LRC does not match its data")
    return data


def _pan(pan: str, number: int) -> str:
    if not _PAN.match(pan):
        raise InvalidInput(f"track {number} PAN is not 8 to 19 digits")
    return pan


def _expiry(rest: str, separator: str, number: int) -> str | None:
    """YYMM at the start of ``rest``; None when a field separator stands in for it."""
    if rest.startswith(separator):
        return None
    if not _YYMM.match(rest[:4]):
        raise InvalidInput(f"track {number} expiry is not YYMM")
    return rest[:4]


def parse_track1(text: str) -> TrackData:
    """ISO/IEC 7813 track 1, format B: ``%B<PAN>^<NAME>^<YYMM|^><SC><DD>?`` and an optional LRC."""
    data = _data(text, 1, "%", 78)
    if not data.startswith("B"):
        raise InvalidInput("track 1 format code is not B")
    pan, separator, rest = data[1:].partition("^")
    if not separator:
        raise InvalidInput("track 1 has no field separator after the PAN")
    _pan(pan, 1)
    name, separator, rest = rest.partition("^")
    if not separator:
        raise InvalidInput("track 1 has no field separator after the name")
    if not 2 <= len(name) <= 26:
        raise InvalidInput("track 1 name is not 2 to 26 characters")
    return TrackData(pan, _expiry(rest, "^", 1))


def parse_track2(text: str) -> TrackData:
    """ISO/IEC 7813 track 2: ``;<PAN>=<YYMM|=><SC><DD>?`` and an optional LRC."""
    data = _data(text, 2, ";", 39)
    pan, separator, rest = data.partition("=")
    if not separator:
        raise InvalidInput("track 2 has no field separator after the PAN")
    return TrackData(_pan(pan, 2), _expiry(rest, "=", 2))


def parse_track3(text: str) -> TrackData:
    """ISO/IEC 4909 track 3: ``;<FC><PAN>=<fields>...?`` and an optional LRC.

    The format code is two digits. Formats 01 and 02 follow the standard's layout, from which the expiry
    (field 18) is taken: after the PAN's separator come the fixed-width fields of ``_TRACK3_FIELDS``, each
    either its digits or, when not in use, a single separator — which reads both the 1987 layout (a 3-digit
    country code) and the 2006 one (a separator in its place). Other formats (00, and 90-99 for issuers'
    own use) yield the PAN only. A track 3 without a PAN (allowed when track 2 carries it) is refused.
    """
    data = _data(text, 3, ";", 106)
    code = data[:2]
    if not (len(code) == 2 and code.isdigit()):
        raise InvalidInput("track 3 format code is not two digits")
    pan, separator, rest = data[2:].partition("=")
    if not separator:
        raise InvalidInput("track 3 has no field separator after the PAN")
    if not pan:
        raise InvalidInput("track 3 holds no PAN")
    _pan(pan, 3)
    if code not in _TRACK3_ISO_FORMATS:
        return TrackData(pan)
    at = 0
    for width in _TRACK3_FIELDS:
        if rest[at:at + 1] == "=":
            at += 1
            continue
        value = rest[at:at + width]
        if not (len(value) == width and value.isdigit()):
            raise InvalidInput("track 3 does not follow the ISO/IEC 4909 layout")
        at += width
    return TrackData(pan, _expiry(rest[at:], "=", 3))

"""Magnetic-stripe track data (ISO 7813 tracks 1 and 2) for the card production file."""

from __future__ import annotations

import re

from .errors import InvalidInput

__all__ = ["track1", "track2"]

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

"""ISO 9564-1 format 0 PIN blocks (also known as ANSI X9.8 / ISO-0).

The clear block is the XOR of two 16-nibble fields:

* PIN field: ``0``, the PIN length ``4``..``C``, the PIN digits, then ``F`` filler;
* PAN field: ``0000`` and the 12 rightmost digits of the card number excluding its last (check) digit,
  zero-padded on the left when the number is shorter.

Nothing here puts a PIN, or the digits of a block, into an error message.
"""

from __future__ import annotations

import re

from .errors import InvalidInput

__all__ = ["PIN_BLOCK_SIZE", "pin_block", "pin_from_block"]

PIN_BLOCK_SIZE = 8

_PIN = re.compile(r"^[0-9]{4,12}$")
_PAN = re.compile(r"^[0-9]{8,19}$")


def _pan_field(pan: str) -> bytes:
    if not isinstance(pan, str) or not _PAN.match(pan):
        raise InvalidInput("card number for a PIN block is 8 to 19 digits")
    return bytes.fromhex("0000" + pan[:-1][-12:].rjust(12, "0"))


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def pin_block(pin: str, pan: str) -> bytes:
    """The 8-byte format 0 block of ``pin`` (4-12 digits) for card number ``pan``."""
    if not isinstance(pin, str) or not _PIN.match(pin):
        raise InvalidInput("PIN is 4 to 12 digits")
    pin_field = bytes.fromhex(f"0{len(pin):X}{pin}".ljust(16, "F"))
    return _xor(pin_field, _pan_field(pan))


def pin_from_block(block: bytes, pan: str) -> str:
    """The PIN held in a format 0 ``block`` for ``pan``; InvalidInput when the block is malformed."""
    if not isinstance(block, (bytes, bytearray)) or len(block) != PIN_BLOCK_SIZE:
        raise InvalidInput("PIN block is 8 bytes")
    nibbles = _xor(bytes(block), _pan_field(pan)).hex().upper()
    if nibbles[0] != "0":
        raise InvalidInput("PIN block is not format 0")
    length = int(nibbles[1], 16)
    if not 4 <= length <= 12:
        raise InvalidInput("PIN block has a bad PIN length")
    pin, filler = nibbles[2:2 + length], nibbles[2 + length:]
    if not pin.isdigit():
        raise InvalidInput("PIN block has a non-digit PIN nibble")
    if filler != "F" * len(filler):
        raise InvalidInput("PIN block filler is not F")
    return pin

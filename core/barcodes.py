"""Product codes as keys: one spelling per product, whichever barcode or CSV column it came from."""

from __future__ import annotations

import re

from stdnum import ean
from stdnum.exceptions import ValidationError

from .errors import InvalidInput

__all__ = ["product_key", "is_gtin"]

_INTERNAL = re.compile(r"^[0-9A-Z][0-9A-Z ._/-]{0,47}$")


def is_gtin(code: str) -> bool:
    """A valid EAN-8, UPC-A (12), EAN-13 or GTIN-14 (check digit included)."""
    if len(code) not in (8, 12, 13, 14) or not code.isascii() or not code.isdigit():
        return False
    try:
        ean.validate(code)
    except ValidationError:
        return False
    return True


def product_key(code: str) -> str:
    """The catalogue key for a product code.

    A GTIN (EAN-8, UPC-A, EAN-13, GTIN-14) becomes its 14-digit form, so a UPC-A scanned as EAN-13
    finds the same product. Anything else is a store's internal code (e.g. a Code 128 label): kept
    uppercased and stripped, 1-48 characters of A-Z 0-9 space . _ / -. InvalidInput otherwise, and
    for a digit string of GTIN length whose check digit is wrong.
    """
    code = code.strip().upper()
    if is_gtin(code):
        return code.zfill(14)
    if code.isdigit() and len(code) in (8, 12, 13, 14):
        raise InvalidInput("product code has a wrong check digit")
    if not _INTERNAL.match(code):
        raise InvalidInput("product code is a GTIN or 1-48 characters of A-Z 0-9 space . _ / -")
    return code

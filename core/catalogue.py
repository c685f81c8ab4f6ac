"""The product catalogue: products as price checkers show them, and the CSV they are imported from.

Prices are decimal strings in major units on the way in (``12.50``) and integers in minor units
everywhere else; the conversion is exact string arithmetic, never a float.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from .barcodes import product_key
from .errors import InvalidInput
from .money import MINOR_UNITS, validate_currency

__all__ = ["Product", "LineError", "CatalogueParse", "COLUMNS", "REQUIRED_COLUMNS", "MAX_PRICE", "MAX_ROWS",
           "parse_catalogue_csv", "parse_price", "format_price", "catalogue_csv"]

COLUMNS = ("code", "name", "price", "member_price", "currency", "unit", "group", "active")
REQUIRED_COLUMNS = ("code", "name", "price")
MAX_PRICE = 10**12  # minor units, as the sync protocol carries amounts
MAX_ROWS = 1_000_000
MAX_NAME = 200
DEFAULT_UNIT = "each"

_PRICE = re.compile(r"^([0-9]+)(?:\.([0-9]+))?$")
_UNIT = re.compile(r"^[a-z0-9]{1,16}$")
_GROUP = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TRUE, _FALSE = {"1", "true", "yes", "y"}, {"0", "false", "no", "n"}


@dataclass(frozen=True, slots=True)
class Product:
    """One product of the catalogue, keyed by :func:`core.barcodes.product_key` of its code."""

    key: str
    code: str
    name: str
    currency: str
    price: int  # minor units
    member_price: int | None = None  # what loyalty members pay; never above the price
    unit: str = DEFAULT_UNIT  # what the price is per: each, kg, l...
    group: str | None = None  # item group code
    active: bool = True

    def __post_init__(self) -> None:
        validate_currency(self.currency)
        for name, value in (("price", self.price), ("member_price", self.member_price)):
            if value is None and name == "member_price":
                continue
            if type(value) is not int or not 0 <= value <= MAX_PRICE:
                raise InvalidInput(f"{name} is a whole number of minor units from 0 to {MAX_PRICE}")
        if self.member_price is not None and self.member_price > self.price:
            raise InvalidInput("member price is above the price")


@dataclass(frozen=True, slots=True)
class LineError:
    """Why one line of a catalogue file was refused (``column`` None: the line as a whole)."""

    line: int
    column: str | None
    code: str
    message: str

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "column": self.column, "code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class CatalogueParse:
    """A catalogue file read: its valid products in file order and the problems of the other lines.

    ``fatal`` means the file as a whole could not be read (no header, unknown columns, broken
    quoting): none of it may be imported. ``rejected_keys`` are the products named on refused lines,
    which a replacing import must leave as they are rather than deactivate.
    """

    products: tuple[Product, ...]
    errors: tuple[LineError, ...]
    rows: int
    fatal: bool = False
    rejected_keys: frozenset[str] = field(default_factory=frozenset)

    @property
    def ok(self) -> bool:
        return not self.errors


def parse_price(text: str, currency: str) -> int:
    """Exact minor units of a decimal amount in major units (``"12.5"`` EUR -> 1250); InvalidInput if
    it is not a plain non-negative decimal or has more decimals than the currency."""
    places = MINOR_UNITS.get(currency, 2)
    match = _PRICE.match(text) if text.isascii() else None
    if match is None:
        hint = " (use a point as the decimal separator)" if "," in text else ""
        raise InvalidInput(f"{text!r} is not a decimal amount like 12.50{hint}")
    whole, frac = match.group(1).lstrip("0"), match.group(2) or ""
    if len(whole) > 13:  # more digits than any price has (and int() of thousands of digits is refused)
        raise InvalidInput(f"{text!r} is above the largest price")
    if len(frac) > places:
        raise InvalidInput(f"{currency} has {places} decimal place{'s' if places != 1 else ''}, {text!r} has "
                           f"{len(frac)}")
    minor = int(whole or "0") * 10**places + int(frac.ljust(places, "0") or "0")
    if minor > MAX_PRICE:
        raise InvalidInput(f"{text!r} is above the largest price")
    return minor


def format_price(minor: int, currency: str) -> str:
    """The decimal string :func:`parse_price` reads back as ``minor`` (``1250`` EUR -> ``"12.50"``)."""
    places = MINOR_UNITS.get(currency, 2)
    whole, frac = divmod(minor, 10**places)
    return f"{whole}.{frac:0{places}d}" if places else str(whole)


def catalogue_csv(products: Iterable[Product]) -> str:
    """Products in the import format (every column), which :func:`parse_catalogue_csv` reads back."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for p in products:
        writer.writerow([p.code, p.name, format_price(p.price, p.currency),
                         "" if p.member_price is None else format_price(p.member_price, p.currency), p.currency,
                         p.unit, p.group or "", "true" if p.active else "false"])
    return out.getvalue()


class _Line:
    """The problems found on one line, collected so a line reports all of them at once."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.errors: list[LineError] = []

    def fail(self, column: str | None, code: str, message: str) -> None:
        self.errors.append(LineError(self.number, column, code, message))


def parse_catalogue_csv(text: str, default_currency: str | None = None) -> CatalogueParse:
    """Read a catalogue CSV: a header row naming its columns (any order; code, name and price
    required), then one product per line. Every bad line is reported with its line number, column and
    reason; a product named twice is an error on the later line."""
    if default_currency is not None:
        validate_currency(default_currency)
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    products: list[Product] = []
    errors: list[LineError] = []
    rejected: set[str] = set()
    seen: dict[str, int] = {}
    rows = 0
    try:
        header, header_line = _header(reader)
        if header is None:
            return CatalogueParse((), (LineError(1, None, "missing_header", "the file has no header row"),), 0, True)
        problems = _header_problems(header, header_line)
        if problems:
            return CatalogueParse((), tuple(problems), 0, True)
        start = reader.line_num + 1
        for record in reader:
            line = _Line(start)
            start = reader.line_num + 1
            if not record or record == [""]:  # a blank line
                continue
            rows += 1
            if rows > MAX_ROWS:
                return CatalogueParse((), (LineError(line.number, None, "too_many_lines",
                                                     f"a catalogue file has at most {MAX_ROWS} products"),), rows,
                                      True)
            if len(record) != len(header):
                line.fail(None, "wrong_field_count", f"the line has {len(record)} fields, the header {len(header)}")
                errors.extend(line.errors)
                continue
            product, key = _product(dict(zip(header, (v.strip() for v in record), strict=True)), default_currency,
                                    line)
            if key is not None and key in seen:
                line.fail("code", "duplicate_product", f"the product of line {seen[key]} again")
            elif key is not None:
                seen[key] = line.number
            if line.errors:
                errors.extend(line.errors)
                if key is not None and seen[key] == line.number:
                    rejected.add(key)
            else:
                products.append(product)
    except csv.Error as exc:
        errors.append(LineError(reader.line_num, None, "malformed_csv", f"not readable as CSV: {exc}"))
        return CatalogueParse(tuple(products), tuple(errors), rows, True, frozenset(rejected))
    return CatalogueParse(tuple(products), tuple(errors), rows, False, frozenset(rejected))


def _header(reader) -> tuple[list[str] | None, int]:
    for record in reader:
        if record and record != [""]:
            return [name.strip().lower() for name in record], reader.line_num
    return None, 0


def _header_problems(header: list[str], line: int) -> list[LineError]:
    problems = [LineError(line, name or None, "unknown_column", f"unknown column {name!r}; columns are "
                          f"{', '.join(COLUMNS)}") for name in header if name not in COLUMNS]
    problems += [LineError(line, name, "duplicate_column", f"column {name!r} appears twice")
                 for name in sorted({n for n in header if n in COLUMNS and header.count(n) > 1})]
    problems += [LineError(line, name, "missing_column", f"column {name!r} is required")
                 for name in REQUIRED_COLUMNS if name not in header]
    return problems


def _product(fields: dict[str, str], default_currency: str | None, line: _Line) -> tuple[Product | None, str | None]:
    """The line's product (None if it has problems, which ``line`` collects) and its key if readable."""
    code = fields["code"]
    key = None
    if not code:
        line.fail("code", "missing_code", "a product code is required")
    else:
        try:
            key = product_key(code)
        except InvalidInput as exc:
            line.fail("code", "invalid_code", exc.message)
    name = fields["name"]
    if not name:
        line.fail("name", "missing_name", "a name is required")
    elif len(name) > MAX_NAME or _CONTROL.search(name):
        line.fail("name", "invalid_name", f"a name is 1 to {MAX_NAME} characters without control characters")
    currency = fields.get("currency", "").upper() or default_currency
    if currency is None:
        line.fail("currency", "missing_currency", "a currency is required (no default currency was given)")
    else:
        try:
            validate_currency(currency)
        except ValueError:
            line.fail("currency", "invalid_currency", f"{fields['currency']!r} is not an ISO 4217 currency code")
            currency = None
    price = member_price = None
    if currency is not None:
        price = _amount(fields["price"], currency, "price", line, required=True)
        member_price = _amount(fields.get("member_price", ""), currency, "member_price", line, required=False)
        if price is not None and member_price is not None and member_price > price:
            line.fail("member_price", "member_price_above_price", "the member price is above the price")
    unit = fields.get("unit", "").lower() or DEFAULT_UNIT
    if not _UNIT.match(unit):
        line.fail("unit", "invalid_unit", f"{fields['unit']!r} is not a unit like each or kg (a-z, 0-9)")
    group = fields.get("group", "") or None
    if group is not None and not _GROUP.match(group):
        line.fail("group", "invalid_group", f"{group!r} is not an item group code (1-32 of A-Z a-z 0-9 _ . -)")
    active = fields.get("active", "").lower()
    if active and active not in _TRUE | _FALSE:
        line.fail("active", "invalid_active", f"{fields['active']!r} is not true/false, yes/no or 1/0")
    if line.errors:
        return None, key
    return Product(key=key, code=code, name=name, currency=currency, price=price, member_price=member_price,
                   unit=unit, group=group, active=active not in _FALSE), key


def _amount(text: str, currency: str, column: str, line: _Line, *, required: bool) -> int | None:
    if not text:
        if required:
            line.fail(column, f"missing_{column}", f"{column.replace('_', ' ')} is required")
        return None
    try:
        return parse_price(text, currency)
    except InvalidInput as exc:
        line.fail(column, f"invalid_{column}", exc.message)
        return None

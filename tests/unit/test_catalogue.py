"""Catalogue files: exact prices, every kind of bad line reported by line and column, and the products'
sync messages."""

from __future__ import annotations

from datetime import UTC, datetime

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum import ean

import core.catalogue as catalogue
from core import InvalidInput
from core.barcodes import product_key
from core.catalogue import (
    MAX_PRICE,
    CatalogueParse,
    LineError,
    Product,
    catalogue_csv,
    format_price,
    parse_catalogue_csv,
    parse_price,
)
from sync.messages import Cursor, ProductChange, ProtocolError, PullRequest, PullResponse, StoreSettings, decode, encode

HEADER = "code,name,price,member_price,currency,unit,group,active\n"
PEN = "4006381333931"  # EAN-13
UPC = "036000291452"  # UPC-A: its key is the 14-digit form


def parse(body: str, header: str = HEADER, currency: str | None = "EUR") -> CatalogueParse:
    return parse_catalogue_csv(header + body, currency)


def only_error(body: str, **kw) -> LineError:
    result = parse(body, **kw)
    assert result.products == () and len(result.errors) == 1, result.errors
    return result.errors[0]


# -- good files ---------------------------------------------------------------------------------


def test_a_good_file_with_every_column():
    result = parse(f"{PEN},Ballpoint pen,1.99,1.49,EUR,each,STATIONERY,true\n"
                   f"{UPC},Apples,3.49,,EUR,kg,FRUIT,1\n"
                   "SHOP-0042,Gift wrap,0.50,0.50,EUR,,,\n"
                   "TEA 1,Green tea,450,,JPY,each,,no\n")
    assert result.ok and not result.fatal and result.rows == 4
    assert result.products == (
        Product(key="0" + PEN, code=PEN, name="Ballpoint pen", currency="EUR", price=199, member_price=149,
                unit="each", group="STATIONERY", active=True),
        Product(key="00" + UPC, code=UPC, name="Apples", currency="EUR", price=349, unit="kg", group="FRUIT"),
        Product(key="SHOP-0042", code="SHOP-0042", name="Gift wrap", currency="EUR", price=50, member_price=50),
        Product(key="TEA 1", code="TEA 1", name="Green tea", currency="JPY", price=450, active=False),
    )


def test_columns_in_any_order_and_case_with_the_default_currency():
    result = parse_catalogue_csv("Price , NAME,code\n2.5,Soap,abc-1\n", "CHF")
    assert result.products == (Product(key="ABC-1", code="abc-1", name="Soap", currency="CHF", price=250),)


def test_byte_order_mark_crlf_and_quoted_fields():
    text = ('\ufeffcode,name,price,currency\r\n'
            f'{PEN},"Pen, blue ""fine""",1.99,EUR\r\n'
            '"ABC","  padded  ","2",EUR\r\n')
    result = parse_catalogue_csv(text)
    assert result.ok
    assert [p.name for p in result.products] == ['Pen, blue "fine"', "padded"]


def test_blank_lines_are_skipped_and_line_numbers_stay_physical():
    result = parse(f'\n{PEN},"Pen",1,,,,,\n\nABC,"two\nlines",1,,,,,\nBAD,x,1.234,,,,,\n')
    assert result.rows == 3
    # line 1 header, 2 blank, 3 pen, 4 blank, 5-6 the name with a line break, 7 the bad price
    assert [(e.line, e.column) for e in result.errors] == [(5, "name"), (7, "price")]


def test_a_header_only_file_is_empty_not_wrong():
    result = parse("")
    assert result.ok and result.products == () and result.rows == 0


# -- exact prices -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "currency", "minor"), [
    ("0", "EUR", 0), ("0.01", "EUR", 1), ("12.5", "EUR", 1250), ("12.50", "EUR", 1250), ("007.05", "EUR", 705),
    ("1234567.89", "EUR", 123456789), ("0.29", "EUR", 29), ("1.15", "EUR", 115),  # 1.15 is 1.149999... as a float
    ("9999999999.99", "EUR", 999_999_999_999), ("10000000000.00", "EUR", MAX_PRICE),
    ("1500", "JPY", 1500), ("0", "JPY", 0), ("7", "ISK", 7),
    ("1.234", "BHD", 1234), ("1.2", "BHD", 1200), ("0.005", "KWD", 5), ("12", "BHD", 12000),
    ("3.7", "XYZ", 370),  # a currency not listed has two places
])
def test_prices_convert_exactly(text, currency, minor):
    assert parse_price(text, currency) == minor
    assert parse_price(format_price(minor, currency), currency) == minor


@pytest.mark.parametrize(("text", "currency", "reason"), [
    ("12.345", "EUR", "EUR has 2 decimal places"), ("12.500", "EUR", "EUR has 2 decimal places"),
    ("1500.0", "JPY", "JPY has 0 decimal places"), ("1.2345", "BHD", "BHD has 3 decimal places"),
    ("1,50", "EUR", "use a point"), ("-1", "EUR", "not a decimal"), ("+1", "EUR", "not a decimal"),
    ("1e3", "EUR", "not a decimal"), (".5", "EUR", "not a decimal"), ("5.", "EUR", "not a decimal"),
    ("1 000", "EUR", "not a decimal"), ("\uff11\uff12", "EUR", "not a decimal"), ("\u0661", "EUR", "not a decimal"),
    ("nan", "EUR", "not a decimal"), ("10000000000.01", "EUR", "above the largest"),
    ("1" * 5000, "EUR", "above the largest"),  # refused before int() would choke on it
])
def test_bad_prices_are_refused(text, currency, reason):
    with pytest.raises(InvalidInput, match=reason):
        parse_price(text, currency)


def test_format_price():
    assert (format_price(1250, "EUR"), format_price(5, "EUR"), format_price(1500, "JPY"),
            format_price(1234, "BHD")) == ("12.50", "0.05", "1500", "1.234")


# -- bad lines ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "column", "code"), [
    (",Pen,1,,,,,", "code", "missing_code"),
    ("4006381333932,Pen,1,,,,,", "code", "invalid_code"),  # wrong check digit
    ("ÄÖÜ,Pen,1,,,,,", "code", "invalid_code"),
    ("A" * 49 + ",Pen,1,,,,,", "code", "invalid_code"),
    ("ABC,,1,,,,,", "name", "missing_name"),
    ("ABC,Pen\x07,1,,,,,", "name", "invalid_name"),
    ("ABC," + "n" * 201 + ",1,,,,,", "name", "invalid_name"),
    ("ABC,Pen,,,,,,", "price", "missing_price"),
    ("ABC,Pen,one,,,,,", "price", "invalid_price"),
    ("ABC,Pen,1.999,,,,,", "price", "invalid_price"),
    ("ABC,Pen,1,0.999,,,,", "member_price", "invalid_member_price"),
    ("ABC,Pen,1,1.01,,,,", "member_price", "member_price_above_price"),
    ("ABC,Pen,1,,EURO,,,", "currency", "invalid_currency"),
    ("ABC,Pen,1,,E1R,,,", "currency", "invalid_currency"),
    ("ABC,Pen,1,,,per box,,", "unit", "invalid_unit"),
    ("ABC,Pen,1,,,,FRUIT & VEG,", "group", "invalid_group"),
    ("ABC,Pen,1,,,,,maybe", "active", "invalid_active"),
    ("ABC,Pen,1,,,,", None, "wrong_field_count"),
    ("ABC,Pen,1,,,,,,", None, "wrong_field_count"),
])
def test_each_kind_of_bad_line(line, column, code):
    error = only_error(f"{line}\n")
    assert (error.line, error.column, error.code) == (2, column, code)
    assert error.message
    assert error.as_dict() == {"line": 2, "column": column, "code": code, "message": error.message}


def test_a_line_without_currency_needs_a_default():
    error = only_error("ABC,Pen,1,,,,,\n", currency=None)
    assert (error.column, error.code) == ("currency", "missing_currency")


def test_every_problem_of_a_line_is_reported():
    result = parse("ABC,,1.001,2,XX,,,perhaps\n")
    assert [(e.line, e.column) for e in result.errors] == [(2, "name"), (2, "currency"), (2, "active")]
    result = parse("ABC,Pen,x,1.005,,,,\n")
    assert [e.column for e in result.errors] == ["price", "member_price"]


def test_good_lines_survive_bad_ones_and_refused_products_are_named():
    result = parse(f"{PEN},Pen,1,,,,,\nABC,Broken,x,,,,,\n,No code,1,,,,,\nDEF,Fine,2,,,,,\n")
    assert [p.key for p in result.products] == ["0" + PEN, "DEF"]
    assert [e.line for e in result.errors] == [3, 4]
    assert result.rejected_keys == {"ABC"}
    assert not result.ok and not result.fatal


def test_a_product_twice_is_an_error_on_the_later_line_whatever_its_spelling():
    result = parse(f"{UPC},Apples,1,,,,,\nabc,x,1,,,,,\n0{UPC},Apples again,2,,,,,\nABC ,y,1,,,,,\n")
    assert [p.name for p in result.products] == ["Apples", "x"]
    assert [(e.line, e.code, e.message) for e in result.errors] == [
        (4, "duplicate_product", "the product of line 2 again"),
        (5, "duplicate_product", "the product of line 3 again")]
    assert result.rejected_keys == frozenset()  # the first line stands


@pytest.mark.parametrize(("text", "codes"), [
    ("", ["missing_header"]),
    ("\n\n", ["missing_header"]),
    ("code,name\n", ["missing_column"]),
    ("code,name,price,colour\nA,b,1,red\n", ["unknown_column"]),
    ("code,name,price,\nA,b,1,\n", ["unknown_column"]),
    ("code,name,price,price\n", ["duplicate_column"]),
    ("sku,title,price\n", ["unknown_column", "unknown_column", "missing_column", "missing_column"]),
])
def test_a_bad_header_makes_the_file_unreadable(text, codes):
    result = parse_catalogue_csv(text, "EUR")
    assert result.fatal and result.products == ()
    assert [e.code for e in result.errors] == codes and {e.line for e in result.errors} <= {0, 1}


def test_broken_quoting_makes_the_file_unreadable():
    result = parse('ABC,Pen,1,,,,,\nDEF,"unterminated,1,,,,,\n')
    assert result.fatal and result.errors[-1].code == "malformed_csv"
    result = parse('ABC,"Pen"x,1,,,,,\n')
    assert result.fatal and result.errors[-1].code == "malformed_csv"


def test_too_many_lines(monkeypatch):
    monkeypatch.setattr(catalogue, "MAX_ROWS", 2)
    assert not parse("A,a,1,,,,,\nB,b,1,,,,,\n").fatal
    result = parse("A,a,1,,,,,\nB,b,1,,,,,\nC,c,1,,,,,\n")
    assert result.fatal and result.errors[0].code == "too_many_lines"


def test_a_bad_default_currency_is_refused():
    with pytest.raises(ValueError):
        parse_catalogue_csv(HEADER, "euro")


# -- products -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [
    {"price": 100, "member_price": 101},
    {"price": 1.5},
    {"price": True},
    {"price": -1},
    {"price": MAX_PRICE + 1},
    {"price": 100, "member_price": 50.0},
    {"currency": "eur"},
])
def test_a_product_keeps_its_invariants(fields):
    with pytest.raises((InvalidInput, ValueError)):
        Product(**{"key": "A", "code": "A", "name": "a", "currency": "EUR", "price": 100, **fields})


def _gtin(digits: str) -> str:
    return digits + ean.calc_check_digit(digits)


codes = (st.from_regex(r"\A[0-9]{7}\Z").map(_gtin) | st.from_regex(r"\A[0-9]{11,13}\Z").map(_gtin)
         | st.from_regex(r"\A[0-9A-Z][0-9A-Za-z ._/-]{0,20}[0-9A-Za-z]\Z"))


def _valid_code(code: str) -> bool:
    try:
        product_key(code)
    except InvalidInput:
        return False
    return True


@st.composite
def products(draw) -> Product:
    code = draw(codes.filter(_valid_code))
    currency = draw(st.sampled_from(["EUR", "USD", "JPY", "BHD", "KWD", "CHF"]))
    price = draw(st.integers(min_value=0, max_value=MAX_PRICE))
    member = draw(st.none() | st.integers(min_value=0, max_value=price))
    name = draw(st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=60)
                .map(str.strip).filter(bool))
    return Product(key=product_key(code), code=code, name=name, currency=currency, price=price, member_price=member,
                   unit=draw(st.from_regex(r"\A[a-z0-9]{1,16}\Z")),
                   group=draw(st.none() | st.from_regex(r"\A[A-Za-z0-9_.-]{1,32}\Z")), active=draw(st.booleans()))


@settings(max_examples=60, deadline=None)
@given(st.lists(products(), max_size=12, unique_by=lambda p: p.key))
def test_any_catalogue_round_trips_through_csv(items):
    result = parse_catalogue_csv(catalogue_csv(items), None)
    assert result.ok and result.products == tuple(items)


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_any_text_is_read_without_raising(text):
    result = parse_catalogue_csv(HEADER + text, "EUR")
    assert all(isinstance(e, LineError) for e in result.errors)
    assert len(result.products) <= result.rows


# -- sync messages ------------------------------------------------------------------------------

NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
STORE = StoreSettings(code="S1", exposure_budget=100000, budget_currency="EUR", epoch=0, acked_seq=0,
                      quarantined=False)
CHANGE = ProductChange(key="04006381333931", code=PEN, name="Pen", currency="EUR", price=199, member_price=149,
                       unit="each", group="STATIONERY", active=True, version=7)


def test_product_changes_round_trip_in_a_pull():
    response = PullResponse(cursor=Cursor(card_feed=3, catalogue_version=8), server_time=NOW, store=STORE,
                            products=(CHANGE, CHANGE.model_copy(update={"key": "ABC", "code": "abc",
                                                                        "member_price": None, "version": 8})),
                            more=True)
    assert decode(encode(response), PullResponse) == response


def test_without_a_catalogue_the_wire_format_is_the_old_one():
    # Peers from before the catalogue refuse unknown fields: nothing new is sent until it is used.
    raw = msgpack.unpackb(encode(PullResponse(cursor=Cursor(card_feed=3), server_time=NOW, store=STORE)))
    assert "products" not in raw and "catalogue_version" not in raw["cursor"]
    raw = msgpack.unpackb(encode(PullRequest(store="S1")))
    assert "catalogue_version" not in raw["cursor"]
    old_cursor = {"deny_version": 1, "card_feed": 2, "watch_feed": 3, "config_version": 4}
    assert decode(msgpack.packb({"store": "S1", "cursor": old_cursor}), PullRequest).cursor.catalogue_version == 0


@pytest.mark.parametrize("changes", [
    {"member_price": 200}, {"price": -1}, {"price": 1.5}, {"version": 0}, {"version": True}, {"key": "abc"},
    {"unit": "KG"}, {"name": ""}, {"currency": "eur"}, {"group": "A B"}, {"extra": 1},
])
def test_malformed_product_changes_are_protocol_errors(changes):
    raw = msgpack.unpackb(encode(PullResponse(cursor=Cursor(), server_time=NOW, store=STORE, products=(CHANGE,))))
    raw["products"][0].update(changes)
    with pytest.raises(ProtocolError):
        decode(msgpack.packb(raw), PullResponse)


@pytest.mark.parametrize("value", [-1, True, 1.0, "3"])
def test_the_catalogue_cursor_is_a_strict_count(value):
    with pytest.raises(ProtocolError):
        decode(msgpack.packb({"store": "S1", "cursor": {"catalogue_version": value}}), PullRequest)

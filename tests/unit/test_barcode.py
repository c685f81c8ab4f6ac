"""Barcode scanners: the sans-IO reader and device side paired in memory, fuzzed, and the classification
of scans into card numbers, products and unknown codes on published EAN/UPC/GS1 vectors."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import InvalidInput, NumberTemplate
from drivers.barcode import (
    TERMINATORS,
    BarcodeOptions,
    BarcodeReader,
    CardCode,
    ProductCode,
    UnknownCode,
    classify,
    encode_scan,
)
from drivers.events import BarcodeScanned, LocalProtocolError, ProtocolViolation, ReadFailed

GS = "\x1d"


def read(data: bytes, **options) -> list:
    return BarcodeReader(BarcodeOptions(**options)).receive_data(data)


# --- options -------------------------------------------------------------------------------------


def test_default_options():
    assert BarcodeOptions() == BarcodeOptions(terminator="cr", stx_etx=False, aim=False, max_length=128)
    assert BarcodeOptions.from_query({}) == BarcodeOptions()


def test_options_from_a_query():
    assert BarcodeOptions.from_query({"terminator": "crlf", "stx": "1", "aim": "1"}) == BarcodeOptions(
        terminator="crlf", stx_etx=True, aim=True)
    assert BarcodeOptions.from_query({"terminator": "ANY", "stx": "off", "aim": "true", "max_length": "64"}) == \
        BarcodeOptions(terminator="any", stx_etx=False, aim=True, max_length=64)


@pytest.mark.parametrize(
    "query",
    [
        {"terminator": "tab"},
        {"terminator": ""},
        {"stx": "2"},
        {"aim": "maybe"},
        {"max_length": "0"},
        {"max_length": "-5"},
        {"max_length": "12a"},
        {"max_length": "99999"},
        {"baud": "9600"},
        {"framing": "magtek"},
    ],
)
def test_bad_options_are_refused(query):
    with pytest.raises(InvalidInput):
        BarcodeOptions.from_query(query)


def test_unknown_option_names_are_listed():
    with pytest.raises(InvalidInput, match="suffix, zz"):
        BarcodeOptions.from_query({"zz": "1", "suffix": "cr", "aim": "1"})


# --- reading: terminators, framing, AIM ----------------------------------------------------------


@pytest.mark.parametrize(
    ("terminator", "data"),
    [
        ("cr", b"4006381333931\r"),
        ("lf", b"4006381333931\n"),
        ("crlf", b"4006381333931\r\n"),
        ("any", b"4006381333931\r"),
        ("any", b"4006381333931\n"),
        ("any", b"4006381333931\r\n"),
    ],
)
def test_each_terminator(terminator, data):
    assert read(data, terminator=terminator) == [BarcodeScanned("4006381333931")]


def test_several_scans_in_one_read():
    assert read(b"96385074\rABC-1\r036000291452\r") == [
        BarcodeScanned("96385074"), BarcodeScanned("ABC-1"), BarcodeScanned("036000291452")]


def test_a_scan_waits_for_its_terminator():
    reader = BarcodeReader()
    assert reader.receive_data(b"40063813") == []
    assert reader.buffered == 8
    assert reader.receive_data(b"33931\r") == [BarcodeScanned("4006381333931")]
    assert reader.buffered == 0


def test_keyboard_wedge_text_is_read_like_any_scan():
    assert read(b"Gift card 25 EUR\r") == [BarcodeScanned("Gift card 25 EUR")]


def test_empty_lines_are_ignored():
    assert read(b"\r\r\n\n", terminator="any") == []
    assert read(b"\r\rA\r") == [BarcodeScanned("A")]


def test_a_cr_without_lf_is_a_framing_error_and_the_next_scan_reads():
    assert read(b"1234\rX5678\r\n", terminator="crlf") == [
        ProtocolViolation("CR without LF where scans end with CRLF"), BarcodeScanned("X5678")]


def test_lf_alone_is_data_where_scans_end_with_crlf():
    assert read(b"12\n34\r\n", terminator="crlf") == [ReadFailed("scan holds characters that are not printable")]


def test_the_wrong_terminator_is_not_a_scan_end():
    # A scanner sending LF to a reader set to CR: the LF is part of the next scan, which then fails.
    events = read(b"111\n222\n333\r", terminator="cr")
    assert events == [ReadFailed("scan holds characters that are not printable")]


@pytest.mark.parametrize(
    "data",
    [
        b"\x024006381333931\x03",
        b"\x024006381333931\x03\r",
        b"\x024006381333931\x03\r\n",
        b"\x024006381333931\r\x03",
        b"\x024006381333931\r\n\x03\n",
    ],
)
def test_stx_etx_framing_with_or_without_a_terminator(data):
    assert read(data, stx_etx=True) == [BarcodeScanned("4006381333931")]


def test_bytes_outside_a_frame_are_reported_once_per_run():
    events = read(b"junk\x02A\x03more junk\x02B\x03", stx_etx=True)
    assert events == [
        ProtocolViolation("bytes outside a scan frame"), BarcodeScanned("A"),
        ProtocolViolation("bytes outside a scan frame"), BarcodeScanned("B")]


def test_a_frame_cut_short_by_the_next():
    assert read(b"\x02ABC\x02DEF\x03", stx_etx=True) == [
        ProtocolViolation("scan frame cut short by the next one"), BarcodeScanned("DEF")]


def test_empty_frame_is_ignored():
    assert read(b"\x02\x03\x02\r\x03", stx_etx=True) == []


def test_aim_identifier_is_split_off():
    assert read(b"]E04006381333931\r", aim=True) == [BarcodeScanned("4006381333931", "]E0")]
    assert read(b"]C1010950110102091710ABC\x1d17190508\r", aim=True) == [
        BarcodeScanned(f"010950110102091710ABC{GS}17190508", "]C1")]
    assert read(b"]A0CODE39\r", aim=True) == [BarcodeScanned("CODE39", "]A0")]
    assert read(b"]d2010950110102091710ABC\r", aim=True) == [BarcodeScanned("010950110102091710ABC", "]d2")]


def test_without_aim_an_identifier_is_just_data():
    assert read(b"]E04006381333931\r") == [BarcodeScanned("]E04006381333931")]


@pytest.mark.parametrize("data", [b"4006381333931\r", b"]4006381333931\r", b"]E\r", b"E04006381333931\r",
                                  b"]!04006381333931\r"])
def test_missing_aim_identifier_fails_the_scan(data):
    assert read(data, aim=True) == [ReadFailed("scan has no AIM symbology identifier")]


def test_aim_identifier_alone_fails_the_scan():
    assert read(b"]E0\r", aim=True) == [ReadFailed("scan holds only a symbology identifier")]


@pytest.mark.parametrize("data", [b"AB\x00C\r", b"\x07\r", b"caf\xe9\r", b"\xff\xfe\r", b"A\tB\r", b"A\x7fB\r"])
def test_non_printable_scans_fail(data):
    assert read(data) == [ReadFailed("scan holds characters that are not printable")]


def test_the_read_recovers_after_a_failed_scan():
    assert read(b"\x00\x01\rOK\r") == [ReadFailed("scan holds characters that are not printable"),
                                      BarcodeScanned("OK")]


@pytest.mark.parametrize("options", [{}, {"aim": True}, {"stx_etx": True}, {"stx_etx": True, "aim": True},
                                     {"terminator": "crlf"}])
def test_max_length_is_exact(options):
    options = {"max_length": 10, **options}
    prefix = "]C0" if options.get("aim") else ""
    exact = encode_scan("A" * 10, BarcodeOptions(**options), "]C0")
    assert read(exact, **options) == [BarcodeScanned("A" * 10, prefix or None)]
    too_long = exact.replace(b"A" * 10, b"A" * 11)
    assert read(too_long, **options) == [ProtocolViolation("scan longer than 10 characters")]


@pytest.mark.parametrize("options", [{}, {"stx_etx": True}, {"terminator": "crlf"}])
def test_an_overlong_scan_is_dropped_and_the_buffer_stays_bounded(options):
    reader = BarcodeReader(BarcodeOptions(max_length=16, **options))
    opening = b"\x02" if options.get("stx_etx") else b""
    events = reader.receive_data(opening + b"9" * 10_000)
    assert events == [ProtocolViolation("scan longer than 16 characters")]
    assert reader.buffered <= 16 + 5
    end = b"\x03" if options.get("stx_etx") else b"\r\n" if options.get("terminator") == "crlf" else b"\r"
    assert reader.receive_data(end) == []
    assert reader.receive_data(encode_scan("NEXT", reader.options)) == [BarcodeScanned("NEXT")]


def test_connection_lost_drops_a_partial_scan():
    reader = BarcodeReader()
    reader.receive_data(b"40063")
    assert reader.connection_lost() == [ProtocolViolation("scan cut short by the link going down")]
    assert reader.buffered == 0
    assert reader.connection_lost() == []
    assert reader.receive_data(b"81333931\r") == [BarcodeScanned("81333931")]


def test_connection_lost_inside_an_empty_frame():
    reader = BarcodeReader(BarcodeOptions(stx_etx=True))
    reader.receive_data(b"\x02")
    assert reader.connection_lost() == [ProtocolViolation("scan cut short by the link going down")]
    assert reader.receive_data(b"A\x03") == [ProtocolViolation("bytes outside a scan frame")]


def test_a_scanner_takes_no_commands():
    reader = BarcodeReader()
    with pytest.raises(LocalProtocolError):
        reader.send("beep")
    assert reader.data_to_send() == b""
    assert reader.next_deadline() is None
    assert reader.handle_timeout(0.0) == []


# --- device side ---------------------------------------------------------------------------------


def test_encode_scan_bytes():
    assert encode_scan("4006381333931", BarcodeOptions()) == b"4006381333931\r"
    assert encode_scan("4006381333931", BarcodeOptions(terminator="lf")) == b"4006381333931\n"
    assert encode_scan("4006381333931", BarcodeOptions(terminator="crlf")) == b"4006381333931\r\n"
    assert encode_scan("4006381333931", BarcodeOptions(terminator="any")) == b"4006381333931\r"
    assert encode_scan("96385074", BarcodeOptions(stx_etx=True, aim=True), "]E4") == b"\x02]E496385074\x03"
    # A scanner without AIM ids does not send the symbology it read.
    assert encode_scan("96385074", BarcodeOptions(), "]E4") == b"96385074\r"


@pytest.mark.parametrize(
    ("value", "options", "symbology"),
    [
        ("", BarcodeOptions(), None),
        ("A\rB", BarcodeOptions(), None),
        ("café", BarcodeOptions(), None),
        ("A" * 11, BarcodeOptions(max_length=10), None),
        ("123", BarcodeOptions(aim=True), None),
        ("123", BarcodeOptions(aim=True), "E0"),
        ("123", BarcodeOptions(aim=True), "]E"),
        ("123", BarcodeOptions(), "]E00"),
    ],
)
def test_encode_scan_refuses_what_a_scanner_cannot_send(value, options, symbology):
    with pytest.raises(LocalProtocolError):
        encode_scan(value, options, symbology)


# --- properties: round trip, chunking, fuzzing ---------------------------------------------------

all_options = st.builds(BarcodeOptions, terminator=st.sampled_from(["cr", "lf", "crlf", "any"]),
                        stx_etx=st.booleans(), aim=st.booleans(), max_length=st.integers(1, 200))
values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.just(GS), min_size=1, max_size=200)
symbologies = st.from_regex(r"\A\][A-Za-z][0-9A-Za-z]\Z")


@given(all_options, st.lists(st.tuples(values, symbologies), min_size=1, max_size=5))
def test_device_to_host_round_trip(options, scans):
    scans = [(value[: options.max_length], symbology) for value, symbology in scans]
    data = b"".join(encode_scan(value, options, symbology) for value, symbology in scans)
    expected = [BarcodeScanned(value, symbology if options.aim else None) for value, symbology in scans]
    assert BarcodeReader(options).receive_data(data) == expected


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


stream_parts = st.one_of(
    st.tuples(values, symbologies).map(lambda scan: ("scan", scan)),
    st.binary(max_size=12).map(lambda junk: ("junk", junk)),
    st.sampled_from([b"\r", b"\n", b"\r\n", b"\x02", b"\x03"]).map(lambda control: ("junk", control)),
)


@given(all_options, st.lists(stream_parts, max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
def test_chunking_never_changes_the_events(options, parts, cuts):
    data = b"".join(encode_scan(p[1][0][: options.max_length], options, p[1][1]) if p[0] == "scan" else p[1]
                    for p in parts)
    whole = BarcodeReader(options).receive_data(data)
    reader = BarcodeReader(options)
    pieces = [event for chunk in chunked(data, cuts) for event in reader.receive_data(chunk)]
    assert pieces == whole


@given(all_options, st.binary(max_size=3000))
def test_arbitrary_bytes_never_raise_and_the_buffer_stays_bounded(options, data):
    reader = BarcodeReader(options)
    events = reader.receive_data(data)
    assert all(isinstance(event, BarcodeScanned | ReadFailed | ProtocolViolation) for event in events)
    for event in events:
        if isinstance(event, BarcodeScanned):
            assert 1 <= len(event.value) <= options.max_length
    assert reader.buffered <= options.max_length + 5


@given(all_options, st.binary(max_size=300), values, symbologies)
def test_the_reader_resynchronises_after_garbage(options, junk, value, symbology):
    value = value[: options.max_length]
    reader = BarcodeReader(options)
    reader.receive_data(junk)
    # Whatever state the garbage left, one frame end (or terminator) gets the next scan read.
    reader.receive_data(b"\x03" if options.stx_etx else TERMINATORS[options.terminator])
    events = reader.receive_data(encode_scan(value, options, symbology))
    assert events[-1:] == [BarcodeScanned(value, symbology if options.aim else None)]


# --- classification ------------------------------------------------------------------------------

GIFT = NumberTemplate("6035", 16)  # Luhn
CLOSED = NumberTemplate("990", 12, luhn=False)
TEMPLATES = {"GIFT": GIFT, "CLOSED": CLOSED}


def kind(value: str, symbology: str | None = None, templates=TEMPLATES):
    return classify(BarcodeScanned(value, symbology), templates)


@pytest.mark.parametrize(
    ("value", "symbology", "expected"),
    [
        # Published EAN/UPC examples.
        ("4006381333931", None, ProductCode("04006381333931", "ean-13")),
        ("4006381333931", "]E0", ProductCode("04006381333931", "ean-13")),
        ("036000291452", None, ProductCode("00036000291452", "upc-a")),
        ("036000291452", "]E0", ProductCode("00036000291452", "upc-a")),
        ("0036000291452", "]E0", ProductCode("00036000291452", "upc-a")),  # UPC-A sent as EAN-13
        ("96385074", None, ProductCode("00000096385074", "ean-8")),
        ("96385074", "]E4", ProductCode("00000096385074", "ean-8")),
        ("400638133393112", "]E3", ProductCode("04006381333931", "ean-13")),  # 2-digit add-on dropped
        ("400638133393112345", "]E3", ProductCode("04006381333931", "ean-13")),  # 5-digit add-on
        ("03600029145212", "]E3", ProductCode("00036000291452", "upc-a")),  # UPC-A + 2-digit add-on
        # GTIN-14 on ITF-14 (the GS1 General Specifications' example GTIN).
        ("09501101020917", "]I1", ProductCode("09501101020917", "gtin-14")),
        # GS1-128: fixed-length AIs, and a variable-length one ended by GS (FNC1).
        ("01095011010209171719050810ABCD1234", "]C1", ProductCode("09501101020917", "gs1")),
        (f"010950110102091710ABCD1234{GS}17190508", "]C1", ProductCode("09501101020917", "gs1")),
        (f"010950110102091710ABCD1234{GS}17190508", None, ProductCode("09501101020917", "gs1")),
        (f"{GS}010950110102091710ABCD1234", None, ProductCode("09501101020917", "gs1")),
        (f"10ABCD1234{GS}0109501101020917", "]C1", ProductCode("09501101020917", "gs1")),
        ("0109501101020917", "]d2", ProductCode("09501101020917", "gs1")),  # GS1 DataMatrix
        ("0109501101020917", "]e0", ProductCode("09501101020917", "gs1")),  # GS1 DataBar
        # Internal codes.
        ("ABC-123", "]C0", ProductCode("ABC-123", "internal")),
        ("abc-123", None, ProductCode("ABC-123", "internal")),
        ("PRODUCT 42", "]A0", ProductCode("PRODUCT 42", "internal")),
        ("12345", None, ProductCode("12345", "internal")),
        ("4006381333931", "]C0", ProductCode("04006381333931", "ean-13")),  # a GTIN is a GTIN on any symbology
    ],
)
def test_product_codes(value, symbology, expected):
    assert kind(value, symbology) == expected


@pytest.mark.parametrize(
    ("value", "symbology", "reason"),
    [
        ("4006381333932", None, "wrong check digit"),
        ("4006381333932", "]E0", "check digit is wrong"),
        ("96385075", "]E4", "check digit is wrong"),
        ("4006381333931", "]E4", "length its symbology sends"),
        ("96385074", "]E0", "length its symbology sends"),
        ("40063813339A1", "]E0", "length its symbology sends"),
        ("12", "]E1", "add-on"),
        ("12345", "]E2", "add-on"),
        ("01095011010209181719050810ABCD1234", "]C1", "did not parse"),  # GTIN check digit wrong
        ("0109501101020917171913", "]C1", "did not parse"),  # month 13
        ("10ABCD1234", "]C1", "no GTIN"),
        ("99ZZZ", "]C1", "no GTIN"),
        ("a$b", None, "GTIN or 1-48 characters"),
        ("X" * 49, "]C0", "GTIN or 1-48 characters"),
    ],
)
def test_unknown_codes(value, symbology, reason):
    code = kind(value, symbology)
    assert isinstance(code, UnknownCode)
    assert reason in code.reason


def test_card_numbers_by_programme_template():
    luhn_card = GIFT.number(42)
    assert kind(luhn_card) == CardCode(luhn_card, "GIFT")
    assert kind(luhn_card, "]C0") == CardCode(luhn_card, "GIFT")
    assert kind(luhn_card, "]I0") == CardCode(luhn_card, "GIFT")
    closed = CLOSED.number(7)
    assert kind(closed, "]E0") == CardCode(closed, "CLOSED")  # a 12-digit UPC-looking number of a programme
    assert kind("990000000008") == CardCode("990000000008", "CLOSED")  # no check digit to fail


def test_a_card_number_with_a_wrong_check_digit_is_not_a_product():
    number = GIFT.number(42)
    wrong = number[:-1] + str((int(number[-1]) + 1) % 10)
    assert kind(wrong) == UnknownCode("card number fails its programme's check digit")


def test_card_rules_need_prefix_and_length():
    number = GIFT.number(1)
    assert kind(number[:-1]) == ProductCode(number[:-1], "internal")  # 15 digits: no programme has them
    assert kind(number, templates={}) == ProductCode(number, "internal")


def test_the_longest_prefix_wins_and_ties_are_unknown():
    broad, narrow = NumberTemplate("60", 16, luhn=False), NumberTemplate("6035", 16, luhn=False)
    number = "6035000000000001"
    assert kind(number, templates={"BROAD": broad, "NARROW": narrow}) == CardCode(number, "NARROW")
    assert kind("6099000000000001", templates={"BROAD": broad, "NARROW": narrow}) == \
        CardCode("6099000000000001", "BROAD")
    assert kind(number, templates={"A": narrow, "B": narrow}) == UnknownCode("card number matches several programmes")


def test_gs1_data_is_never_a_card():
    templates = {"ODD": NumberTemplate("01", 16, luhn=False)}
    assert kind("0109501101020917", "]C1", templates) == ProductCode("09501101020917", "gs1")
    assert kind("0109501101020917", None, templates) == CardCode("0109501101020917", "ODD")


def test_card_code_repr_masks_the_number():
    code = kind(GIFT.number(42))
    assert GIFT.number(42) not in repr(code) and GIFT.number(42) not in str(code)
    assert repr(code) == f"CardCode(number='603500******{GIFT.number(42)[-4:]}', programme='GIFT')"


def test_scanned_through_the_reader():
    reader = BarcodeReader(BarcodeOptions(aim=True, terminator="crlf"))
    scans = reader.receive_data(b"]C101095011010209171719050810ABCD1234\r\n]E496385074\r\n]C0"
                                + GIFT.number(3).encode() + b"\r\n")
    assert [kind(scan.value, scan.symbology) for scan in scans] == [
        ProductCode("09501101020917", "gs1"), ProductCode("00000096385074", "ean-8"),
        CardCode(GIFT.number(3), "GIFT")]


@given(st.text(max_size=60), st.none() | symbologies | st.sampled_from(["]C1", "]E0", "]E3", "]E4", "]E1", "]d2"]))
def test_classify_never_raises(value, symbology):
    assert isinstance(kind(value, symbology), CardCode | ProductCode | UnknownCode)


@given(st.from_regex(r"\A[0-9A-Z]{8,20}\Z") | st.from_regex(r"\A[0-9]{8,19}\Z"),
       st.none() | st.sampled_from(["]C1", "]E0", "]E3", "]E4", "]C0", "]I1"]))
def test_unknown_reasons_never_quote_the_code(value, symbology):
    code = kind(value, symbology)
    if isinstance(code, UnknownCode):
        assert value not in code.reason

"""Magnetic-stripe tracks: writing tracks 1 and 2 (ISO/IEC 7813), parsing tracks 1, 2 and 3 (ISO/IEC 4909)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import InvalidInput
from core.track import TrackData, lrc, parse_track1, parse_track2, parse_track3, track1, track2

PAN = "4111111111111111"  # the published Visa test number


# --- track 2 -------------------------------------------------------------------------------------


def test_track2_published_layout():
    assert track2(PAN, "2512", "101") == ";4111111111111111=2512101?"


def test_track2_with_discretionary_data():
    assert track2(PAN, "2512", "120", "0000123") == ";4111111111111111=25121200000123?"


def test_track2_with_a_19_digit_pan():
    pan = "6" * 19
    assert track2(pan, "3001", "120") == f";{pan}=3001120?"


@pytest.mark.parametrize("discretionary", ["12A", "12 3", "1=2", "?"])
def test_track2_discretionary_data_is_digits_only(discretionary):
    with pytest.raises(InvalidInput):
        track2(PAN, "2512", "101", discretionary)


def test_track2_length_limit():
    # 26 characters of framing, PAN, expiry and service code for a 16-digit PAN.
    assert len(track2(PAN, "2512", "101", "1" * 13)) == 39
    with pytest.raises(InvalidInput, match="40"):
        track2(PAN, "2512", "101", "1" * 15)


# --- track 1 -------------------------------------------------------------------------------------


def test_track1_published_layout():
    assert track1(PAN, "DOE/JOHN", "2512", "101") == "%B4111111111111111^DOE/JOHN^2512101?"


def test_track1_upper_cases_the_name():
    assert track1(PAN, "Doe/John", "2512", "101") == "%B4111111111111111^DOE/JOHN^2512101?"


def test_track1_with_discretionary_data():
    assert track1(PAN, "GIFT CARD", "2512", "120", "000123") == "%B4111111111111111^GIFT CARD^2512120000123?"


@pytest.mark.parametrize("name", ["A" * 2, "A" * 26, "SMITH-JONES/A.B"])
def test_track1_accepts_names_of_2_to_26_allowed_characters(name):
    assert f"^{name}^" in track1(PAN, name, "2512", "101")


@pytest.mark.parametrize("name", ["A", "A" * 27, "", "DOE^JOHN", "DOE?", "MÜLLER", "O'BRIEN"])
def test_track1_refuses_other_names(name):
    with pytest.raises(InvalidInput):
        track1(PAN, name, "2512", "101")


def test_track1_length_limit():
    # 28 characters of framing, PAN, expiry and service code for a 16-digit PAN, plus the name.
    name = "A" * 26
    assert len(track1(PAN, name, "2512", "101", "1" * 24)) == 78
    with pytest.raises(InvalidInput, match="79"):
        track1(PAN, name, "2512", "101", "1" * 26)


# --- shared field checks -------------------------------------------------------------------------


def both_tracks(pan, expiry, service_code):
    yield lambda: track1(pan, "DOE/JOHN", expiry, service_code)
    yield lambda: track2(pan, expiry, service_code)


@pytest.mark.parametrize(
    ("pan", "expiry", "service_code"),
    [
        ("", "2512", "101"),
        ("4" * 20, "2512", "101"),
        ("4111 1111 1111 1111", "2512", "101"),
        ("411111111111111X", "2512", "101"),
        (PAN, "2500", "101"),  # month 00
        (PAN, "2513", "101"),  # month 13
        (PAN, "251", "101"),
        (PAN, "25121", "101"),
        (PAN, "25AB", "101"),
        (PAN, "1225", "101"),  # MMYY, not YYMM
        (PAN, "2512", "10"),
        (PAN, "2512", "1010"),
        (PAN, "2512", "1A1"),
    ],
)
def test_malformed_fields_are_refused_on_both_tracks(pan, expiry, service_code):
    for make in both_tracks(pan, expiry, service_code):
        with pytest.raises(InvalidInput):
            make()


@pytest.mark.parametrize("expiry", [f"{yy}{mm:02d}" for yy in ("00", "25", "99") for mm in range(1, 13)])
def test_every_month_from_01_to_12_is_accepted(expiry):
    assert track2(PAN, expiry, "101") == f";{PAN}={expiry}101?"
    assert track1(PAN, "DOE/JOHN", expiry, "101").endswith(f"^{expiry}101?")


def test_limits_leave_room_for_the_lrc():
    # 39 characters plus the LRC is the whole of track 2.
    assert len(track2("4111111111111111", "2512", "101", "1" * 13)) == 39
    with pytest.raises(InvalidInput):
        track2("4111111111111111", "2512", "101", "1" * 14)


def test_track1_discretionary_cannot_hold_sentinels():
    with pytest.raises(InvalidInput):
        track1("4111111111111111", "DOE/JOHN", "2512", "101", "?^%")


def test_non_ascii_digits_are_refused():
    with pytest.raises(InvalidInput):
        track2("\u0664111111111111111", "2512", "101")


# --- parsing: published samples ------------------------------------------------------------------

VISA_T1 = "%B4111111111111111^DOE/JOHN^2512101000000000000000000?"  # the well-known test track 1
VISA_T2 = ";4111111111111111=25121010000000000000?"  # and its track 2
# L. Padilla's "Magnetic stripe examples: standard cards" (a Spanish bank card; X and * digits masked
# in the original are filled with 5 and 0 here). Track 3 is in the ISO 4909:1987 layout (country 724).
PADILLA_PAN = "1234567890123445"
PADILLA_T1 = "%B1234567890123445^PADILLA/L. ^99011200000000000000555000?"
PADILLA_T2 = ";1234567890123445=99011200555500000000?"
PADILLA_T3 = (";011234567890123445=724724100000000000030300XXXX040400099010=********************==1=0000000000000000?"
              .replace("X", "5").replace("*", "0"))


def swap(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("parse", "text", "pan", "expiry"),
    [
        (parse_track1, VISA_T1, PAN, "2512"),
        (parse_track2, VISA_T2, PAN, "2512"),
        (parse_track1, PADILLA_T1, PADILLA_PAN, "9901"),
        (parse_track2, PADILLA_T2, PADILLA_PAN, "9901"),
        (parse_track3, PADILLA_T3, PADILLA_PAN, "9901"),
    ],
)
def test_published_sample_tracks(parse, text, pan, expiry):
    assert parse(text) == TrackData(pan, expiry)


def test_track3_in_the_2006_layout_has_a_separator_for_the_country_code():
    text = swap(PADILLA_T3, "=724724", "==724")
    assert parse_track3(text) == TrackData(PADILLA_PAN, "9901")


def test_track3_fields_not_in_use_are_a_single_separator():
    # Currency, PIN parameters and interchange control left out: the expiry is still found.
    fields = "=" "=" "1" "0000" "0000" "0000" "30" "3" "=" "=" "40" "40" "00"
    text = ";011234567890123445=" + fields + "2712" + "0?"
    assert parse_track3(text) == TrackData(PADILLA_PAN, "2712")


def test_track3_expiry_not_in_use():
    text = swap(PADILLA_T3, "040400099010=", "0404000=0=")
    assert parse_track3(text) == TrackData(PADILLA_PAN, None)


@pytest.mark.parametrize("code", ["00", "90", "99"])
def test_track3_issuer_formats_yield_the_pan_only(code):
    text = ";" + code + PADILLA_PAN + "=12345678?"
    assert parse_track3(text) == TrackData(PADILLA_PAN, None)


def test_track3_without_a_pan_is_refused():
    with pytest.raises(InvalidInput, match="no PAN"):
        parse_track3(swap(PADILLA_T3, PADILLA_PAN, ""))


def test_track3_too_short_for_its_layout():
    with pytest.raises(InvalidInput, match="4909 layout"):
        parse_track3(";01" + PADILLA_PAN + "=724724100?")


def test_track3_expiry_month_is_checked():
    with pytest.raises(InvalidInput, match="expiry"):
        parse_track3(swap(PADILLA_T3, "99010=", "99130="))


def test_tracks_without_expiry_have_a_separator_in_its_place():
    assert parse_track2(f";{PAN}==101?") == TrackData(PAN, None)
    assert parse_track1(f"%B{PAN}^DOE/JOHN^^101?") == TrackData(PAN, None)


def test_encoded_tracks_parse_back():
    assert parse_track1(track1(PAN, "GIFT CARD", "3012", "120", "000123")) == TrackData(PAN, "3012")
    assert parse_track2(track2(PAN, "3012", "120", "0000123")) == TrackData(PAN, "3012")


def test_track_data_repr_hides_the_pan_and_expiry():
    text = repr(parse_track2(VISA_T2))
    assert PAN not in text and "2512" not in text
    assert text.endswith("1111', expiry=...)")
    assert str(parse_track2(VISA_T2)) == text


# --- parsing: LRC --------------------------------------------------------------------------------


def test_lrc_hand_computed():
    # ';'=0xB ^ '1'=1 ^ '2'=2 ^ '3'=3 ^ '?'=0xF = 4 -> '4' (4-bit set from 0x30)
    assert lrc(";123?") == "4"
    # '%'=0x05 ^ 'B'=0x22 ^ '1'=0x11 ^ '?'=0x1F = 0x29 -> 'I' (6-bit set from 0x20)
    assert lrc("%B1?") == "I"


def test_lrc_refuses_characters_outside_the_track_set():
    with pytest.raises(InvalidInput):
        lrc(";12A?")


@pytest.mark.parametrize(("parse", "text"), [(parse_track1, VISA_T1), (parse_track2, VISA_T2),
                                             (parse_track3, PADILLA_T3)])
def test_a_trailing_lrc_is_checked(parse, text):
    good = lrc(text)
    assert parse(text + good) == parse(text)
    bad = chr(ord(good) ^ 1)
    with pytest.raises(InvalidInput, match="LRC"):
        parse(text + bad)
    with pytest.raises(InvalidInput, match="after its end sentinel"):
        parse(text + good + good)


def test_an_lrc_that_is_a_question_mark():
    # Find a track 2 whose LRC is '?', the end sentinel's own character.
    for serial in range(100):
        text = f";{PAN[:-2]}{serial:02d}=2512101?"
        if lrc(text) == "?":
            assert parse_track2(text + "?").pan == PAN[:-2] + f"{serial:02d}"
            return
    pytest.fail("no sample with '?' as its LRC")


# --- parsing: malformed tracks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "text", "reason"),
    [
        (parse_track1, VISA_T1[1:], "start sentinel"),
        (parse_track1, VISA_T1[:-1], "end sentinel"),
        (parse_track1, VISA_T1.replace("%B", "%A"), "format code"),
        (parse_track1, f"%B{PAN}DOE/JOHN2512101?", "after the PAN"),
        (parse_track1, f"%B{PAN}^DOE/JOHN2512101?", "after the name"),
        (parse_track1, f"%B{PAN}^D^2512101?", "name"),
        (parse_track1, f"%B{PAN}^{'A' * 27}^2512101?", "name"),
        (parse_track1, "%B1234567^DOE/JOHN^2512101?", "PAN"),
        (parse_track1, f"%B{'4' * 20}^DOE/JOHN^2512101?", "PAN"),
        (parse_track1, f"%B{PAN}^DOE/JOHN^2513101?", "expiry"),
        (parse_track1, f"%B{PAN}^DOE/JOHN^25?", "expiry"),
        (parse_track1, f"%B{PAN}^DOE%JOHN^2512101?", "character"),
        (parse_track1, f"%B{PAN}^doe/john^2512101?", "character"),
        (parse_track1, f"%B{PAN}^DOE/JOHN^2512101{'0' * 60}?", "79"),
        (parse_track2, VISA_T2[1:], "start sentinel"),
        (parse_track2, f";{PAN}2512101?", "separator"),
        (parse_track2, f";{PAN}=2500101?", "expiry"),
        (parse_track2, f";{PAN}=2512101A?", "character"),
        (parse_track2, f";{PAN}=2512;101?", "character"),
        (parse_track2, f";{PAN}=2512101{'0' * 20}?", "40"),
        (parse_track2, ";411111111111111X=2512101?", "character"),
        (parse_track3, swap(PADILLA_T3, ";01", ";0A"), "character"),
        (parse_track3, swap(PADILLA_T3, ";01", ";0:"), "format code"),
        (parse_track3, ";01" + PADILLA_PAN + "?", "separator"),
        (parse_track3, PADILLA_T3[:-1] + "0" * 10 + "?", "107"),
        (parse_track3, swap(PADILLA_T3, "7247241", "72472:1"), "4909 layout"),
    ],
)
def test_malformed_tracks_are_refused_with_a_reason(parse, text, reason):
    with pytest.raises(InvalidInput, match=reason) as raised:
        parse(text)
    # The reason names the field, never the data.
    assert "4111" not in str(raised.value) and "12345678" not in str(raised.value)


# --- parsing: properties -------------------------------------------------------------------------

pans = st.from_regex(r"\A[0-9]{8,19}\Z")
expiries = st.builds(lambda yy, mm: f"{yy:02d}{mm:02d}", st.integers(0, 99), st.integers(1, 12))
names = st.from_regex(r"\A[A-Z][A-Z0-9 ./-]{1,25}\Z")


@given(pans, names, expiries, st.from_regex(r"\A[0-9]{0,5}\Z"))
def test_written_tracks_always_parse_back(pan, name, expiry, discretionary):
    assert parse_track1(track1(pan, name, expiry, "120", discretionary)) == TrackData(pan, expiry)
    assert parse_track2(track2(pan, expiry, "120", discretionary)) == TrackData(pan, expiry)
    for text, parse in ((track1(pan, name, expiry, "120"), parse_track1), (track2(pan, expiry, "120"), parse_track2)):
        assert parse(text + lrc(text)) == TrackData(pan, expiry)


def iso_track3(pan: str, expiry: str) -> str:
    """A track 3 in the 2006 layout: fields 5-17 (FS, currency, exponent, amounts, cycle, retry count, PIN
    parameters, interchange control, three service restrictions), expiry, sequence number, security
    number, SAN-1, SAN-2, relay marker, crypto check digits."""
    fields = "=" "978" "2" "0000" "0500" "0000" "00" "3" "812345" "0" "40" "00" "00"
    return f";01{pan}={fields}{expiry}1=" "=" "=" "1" "=" "?"


@given(pans, expiries)
def test_track3_round_trip(pan, expiry):
    assert parse_track3(iso_track3(pan, expiry)) == TrackData(pan, expiry)
    assert parse_track3(iso_track3(pan, expiry).replace(";01", ";02", 1)) == TrackData(pan, expiry)


@given(st.sampled_from([parse_track1, parse_track2, parse_track3]), st.text(max_size=120))
def test_parsers_raise_only_invalid_input(parse, text):
    try:
        parse(text)
    except InvalidInput:
        pass


@given(pans, expiries, st.integers(0, 200), st.characters(codec="ascii"))
def test_corrupted_tracks_never_quote_their_data(pan, expiry, position, char):
    for text, parse in ((track1(pan, "DOE/JOHN", expiry, "120"), parse_track1),
                        (track2(pan, expiry, "120"), parse_track2),
                        (iso_track3(pan, expiry), parse_track3)):
        at = position % len(text)
        corrupted = text[:at] + char + text[at + 1:]
        try:
            parse(corrupted)
        except InvalidInput as exc:
            assert pan not in str(exc) and corrupted not in str(exc)

"""Magnetic-stripe track 1 and track 2 data (ISO/IEC 7813)."""

import pytest

from core import InvalidInput
from core.track import track1, track2

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

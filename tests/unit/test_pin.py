"""ISO 9564-1 format 0 PIN blocks."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import InvalidInput
from core.pin import pin_block, pin_from_block

# Published examples: (PIN, PAN, clear format 0 block).
VECTORS = [
    ("1234", "4111111111111111", "041225EEEEEEEEEE"),  # the Visa test number
    ("92389", "4000001234562", "0592789FFFEDCBA9"),  # a 13-digit PAN (Thales/Racal "format 01" example)
    ("1234", "43219876543210987", "0412AC89ABCDEF67"),  # a 17-digit PAN (ID TECH ISO-0 example)
]


@pytest.mark.parametrize(("pin", "pan", "block"), VECTORS)
def test_published_vectors(pin, pan, block):
    assert pin_block(pin, pan).hex().upper() == block
    assert pin_from_block(bytes.fromhex(block), pan) == pin


def test_pan_field_uses_12_digits_left_of_the_check_digit():
    # Only the 12 digits before the check digit count: changing a leading digit changes nothing.
    assert pin_block("1234", "5111111111111111") == pin_block("1234", "4111111111111111")
    assert pin_block("1234", "4111111111111112") == pin_block("1234", "4111111111111111")
    assert pin_block("1234", "4111111111111121") != pin_block("1234", "4111111111111111")


def test_short_pan_is_zero_padded():
    # 8 digits: the 7 before the check digit, padded to 12 with zeros.
    assert pin_block("1234", "12345678").hex().upper() == "041234FFFEDCBA98"


def test_twelve_digit_pin():
    pan = "4111111111111111"
    assert pin_from_block(pin_block("123456789012", pan), pan) == "123456789012"


@pytest.mark.parametrize("pin", ["", "123", "1234567890123", "12a4", "12 34", "١٢٣٤"])
def test_bad_pins_are_refused_without_echoing_them(pin):
    with pytest.raises(InvalidInput) as info:
        pin_block(pin, "4111111111111111")
    if pin:
        assert pin not in str(info.value)


@pytest.mark.parametrize("pan", ["", "1234567", "4" * 20, "41111111111111a1"])
def test_bad_pans_are_refused(pan):
    with pytest.raises(InvalidInput):
        pin_block("1234", pan)


PAN = "4111111111111111"
PAN_FIELD = bytes.fromhex("0000111111111111")


def _clear(nibbles: str) -> bytes:
    """The block whose clear PIN field is ``nibbles`` for PAN."""
    return bytes(a ^ b for a, b in zip(bytes.fromhex(nibbles), PAN_FIELD, strict=True))


@pytest.mark.parametrize(
    ("block", "why"),
    [
        (b"\x04\x12\x25\xee\xee\xee\xee", "8 bytes"),
        (b"\x04\x12\x25\xee\xee\xee\xee\xee\xee", "8 bytes"),
        ("", "8 bytes"),
        (_clear("141234FFFFFFFFFF"), "format 0"),
        (_clear("031234FFFFFFFFFF"), "length"),
        (_clear("0D1234FFFFFFFFFF"), "length"),
        (_clear("04123AFFFFFFFFFF"), "non-digit"),
        (_clear("041234FFFFFFFFFE"), "filler"),
        (_clear("0412340FFFFFFFFF"), "filler"),
    ],
)
def test_malformed_blocks_are_refused(block, why):
    with pytest.raises(InvalidInput, match=why) as info:
        pin_from_block(block, PAN)
    assert "1234" not in str(info.value)


def test_wrong_pan_gives_another_pin_or_an_error():
    block = pin_block("1234", PAN)
    try:
        assert pin_from_block(block, "4000001234562") != "1234"
    except InvalidInput:
        pass


@given(
    pin=st.text(alphabet="0123456789", min_size=4, max_size=12),
    pan=st.text(alphabet="0123456789", min_size=8, max_size=19),
)
def test_round_trip(pin, pan):
    block = pin_block(pin, pan)
    assert len(block) == 8
    assert block[0] >> 4 == 0 and block[0] & 0x0F == len(pin)
    assert pin_from_block(block, pan) == pin


@given(block=st.binary(min_size=0, max_size=12), pan=st.text(alphabet="0123456789", min_size=8, max_size=19))
def test_any_bytes_decode_or_raise_invalid_input(block, pan):
    try:
        pin = pin_from_block(block, pan)
    except InvalidInput:
        return
    assert pin_block(pin, pan) == block

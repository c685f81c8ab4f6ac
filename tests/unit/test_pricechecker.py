"""The price checker protocol, both ends paired in memory, and the screens the edge composes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import InvalidInput
from drivers.events import BarcodeScanned, LocalProtocolError, ProtocolViolation
from drivers.pricechecker import (
    DISPLAY_HEIGHT,
    LINE_WIDTH,
    DeviceIdentified,
    Line,
    PriceCheckerDevice,
    PriceCheckerHost,
    PriceCheckerOptions,
    Screen,
    display_text,
    encode_scan,
    encode_screen,
)
from edge.pricecheck import card_screen, product_screen, unknown_screen

CARD = {"kind": "card", "number": "6035990000001234", "balance": 1234, "currency": "EUR", "points": None,
        "tier": None, "state": "active", "decision": "online"}
PRODUCT = {"kind": "product", "name": "Crème brûlée", "price": 249, "member_price": None, "currency": "EUR",
           "unit": "piece"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pair(options: PriceCheckerOptions | None = None, **device) -> tuple[PriceCheckerHost, PriceCheckerDevice, Clock]:
    clock = Clock()
    host = PriceCheckerHost(options, clock=clock)
    dev = PriceCheckerDevice(**device)
    assert dev.receive_data(host.data_to_send()) == []
    return host, dev, clock


def show(host: PriceCheckerHost, dev: PriceCheckerDevice, screen: Screen) -> list[str]:
    host.send(screen)
    assert dev.receive_data(host.data_to_send()) == []
    return dev.screen_text()


# -- the display side ------------------------------------------------------------------------------


def test_screen_encodes_to_the_documented_commands():
    wire = encode_screen(Screen((Line("Cheese"), Line("EUR 5.69", "large", "right"))))
    y0 = (DISPLAY_HEIGHT - 12 - 21) // 2
    assert wire == (b"\x1b%"  # clear, cursor top left
                    + b"\x1bB0" + b"\x1b,0" + bytes([0x30 + y0]) + b"\x1b.9Cheese\x03"  # normal font, left on row
                    + b"\x1bB1" + b"\x1b,0" + bytes([0x30 + y0 + 12]) + b"\x1b.;EUR 5.69\x03")  # large, right
    assert encode_screen(Screen((), clear=False)) == b""


def test_host_greets_with_its_idle_screen():
    host, dev, _ = pair(PriceCheckerOptions(welcome="Hello", hint="Scan here"))
    assert dev.screen_text() == ["Hello", "Scan here"]
    assert dev.image is None  # the idle picture was cleared for the host's screen


def test_lines_keep_font_and_alignment_on_the_device():
    host, dev, _ = pair()
    screen = Screen((Line("left"), Line("middle", "small", "center"), Line("9.99 EUR", "large", "right")))
    assert show(host, dev, screen) == ["left", "middle", "9.99 EUR"]
    (y1, x1, f1, _), (y2, x2, f2, _), (y3, x3, f3, _) = dev.segments()
    assert (x1, f1) == (0, "small") and x2 == (128 - 6 * 6) // 2 and (x3, f3) == (128 - 8 * 10, "large")
    assert y2 - y1 == 12 and y3 - y2 == 12 and y1 == (64 - 12 - 12 - 21) // 2


def test_a_screen_replaces_the_last_one_and_clear_false_adds_to_it():
    host, dev, _ = pair()
    show(host, dev, Screen((Line("one"), Line("two"))))
    assert show(host, dev, Screen((Line("three"),))) == ["three"]
    assert show(host, dev, Screen((Line("x", "small", "right"),), clear=False)) == ["three x"]


def test_the_user_guide_examples_render():
    # NQuire300 guide, example 1 ("€" sent as "EUR": the simulator keeps to ASCII).
    dev = PriceCheckerDevice()
    dev.receive_data(b"\x1bB0\x1b%Cheese\r500 gr.\x1bB1\x1b.8EUR 5.69\x03")
    assert dev.screen_text() == ["Cheese", "500 gr.", "EUR 5.69"]
    assert dev.segments()[-1] == (64 - 21, 128 - 8 * 10, "large", "EUR 5.69")  # right bottom
    # SG-15 manual, example 3: four corners and the centre.
    dev = PriceCheckerDevice()
    dev.receive_data(b"\x1bB0\x1b%\x1b.0Winner\x03\x1b.2Winner\x03\x1b.6Winner\x03\x1b.8Winner\x03"
                     b"\x1bB1\x1b.4You Win!\x03")
    assert dev.screen_text() == ["Winner Winner", "You Win!", "Winner Winner"]
    # NQuire example 2 clears with ESC $.
    dev.receive_data(b"\x1bB1\x1b$\x1b.1Special offer!\x03")
    assert dev.screen_text() == ["Special offer!"[:12]]  # 14 large characters do not fit 128 px


def test_device_cursor_commands_and_clipping():
    dev = PriceCheckerDevice(idle_text=())
    dev.receive_data(b"\x1b'" + bytes([0x32, 0x31]) + b"AB")  # column 2, text line 1
    assert dev.segments() == [(12, 16, "small", "AB")]
    dev.receive_data(b"\x1b%\x1b,\x30\x30" + b"x" * 30)  # 30 characters: only 21 fit 128 px at 6 px
    assert dev.screen_text() == ["x" * 21]
    dev.receive_data(b"\x1b%\x1bD\x40\x40Z\x1b\rnext")  # SG-15 Colour pixel position; ESC CR
    assert dev.segments() == [(16, 16, "small", "Z"), (28, 0, "small", "next")]
    dev.receive_data(b"\x1b%\x1b.0" + b"y" * 30)  # ESC . ends at 75 characters even without ETX
    nq = PriceCheckerDevice(max_align=5, idle_text=())
    nq.receive_data(b"\x1b.0abcdefgh\x03")  # an NQuire-sized field: the rest is plain text
    assert nq.screen_text() == ["abcdefgh"]


def test_device_switches_and_answers():
    dev = PriceCheckerDevice(firmware="SG15V03.14")
    dev.receive_data(b"\x1b^\x1b^\x1b`\x1b|\x1bp1")
    assert dev.beeps == 2 and dev.data_to_send() == b"SG15V03.14\r\x06\x06"
    dev.receive_data(b"\x1b@")
    assert dev.asleep and not dev.backlight and dev.screen_text() == []
    with pytest.raises(LocalProtocolError):
        dev.scan("123")
    dev.receive_data(b"\x1bA\x1b[0")
    with pytest.raises(LocalProtocolError):
        dev.scan("123")
    dev.receive_data(b"\x1bZ")  # reset: idle screen, scanning back on
    assert dev.screen_text() == ["Welcome"] and dev.image == 1 and dev.scan("123") == b"123\r"
    dev.receive_data(b"\x1b\\0\x1bX3")
    assert not dev.backlight and dev.image == 3


def test_device_reports_what_it_does_not_understand_and_goes_on():
    dev = PriceCheckerDevice(idle_text=())
    events = dev.receive_data(b"\x1bq\x1bB7\x1b'\x99\x30\x1bX9\x1b.\x20text\x03ok")
    assert [type(e) for e in events] == [ProtocolViolation] * 5
    assert dev.screen_text() == ["ok"]  # a badly aligned text is not shown
    events = dev.receive_data(b"\x1b.4open\x1bB1\x1b%done")  # an ESC . cut short by the next command
    assert events == [] and dev.screen_text() == ["done"] and dev.font == "large"


# -- the scan side ---------------------------------------------------------------------------------


@pytest.mark.parametrize("terminator", [b"\r", b"\n", b"\r\n"])
def test_scans_with_each_terminator(terminator):
    host, _, _ = pair()
    wire = encode_scan("4006381333931", terminator=terminator) + encode_scan("ABC-12", terminator=terminator)
    assert host.receive_data(wire) == [BarcodeScanned("4006381333931"), BarcodeScanned("ABC-12")]


def test_scan_split_byte_by_byte():
    host, dev, _ = pair()
    events = [e for byte in dev.scan("6035990000001234") for e in host.receive_data(bytes([byte]))]
    assert events == [BarcodeScanned("6035990000001234")]


def test_unit_id_prefix_and_aim_identifier():
    host, dev, _ = pair(PriceCheckerOptions(unit_id=True, aim=True), unit_id="AISLE-4")
    assert host.receive_data(dev.scan("4006381333931", "]E0")) == [
        DeviceIdentified(unit_id="AISLE-4"), BarcodeScanned("4006381333931", "]E0")]
    assert host.receive_data(dev.scan("ABC")) == [BarcodeScanned("ABC")]  # same unit: no new hello
    assert host.unit_id == "AISLE-4"
    events = host.receive_data(b"no unit id\r")
    assert [type(e) for e in events] == [ProtocolViolation]


def test_hello_answers_the_firmware_query():
    host = PriceCheckerHost(PriceCheckerOptions(identify=True))
    dev = PriceCheckerDevice()
    wire = host.data_to_send()
    assert wire.startswith(b"\x1b`")
    dev.receive_data(wire)
    assert host.receive_data(dev.data_to_send() + dev.scan("SG15V03.14")) == [
        DeviceIdentified(firmware="SG15V03.14"), BarcodeScanned("SG15V03.14")]  # only the first line is a hello
    assert host.firmware == "SG15V03.14"
    silent = PriceCheckerHost(PriceCheckerOptions(identify=True))  # a device that does not answer
    assert silent.receive_data(b"4006381333931\r") == [BarcodeScanned("4006381333931")]


def test_garbage_is_dropped_and_the_next_scan_gets_through():
    host, _, _ = pair(PriceCheckerOptions(max_line=32))
    events = host.receive_data(b"x" * 100 + b"\r12345\r" + b"\xff\xfe\r" + b"a\x01b\r" + b"\r\n\r\n" + b"\x06" + b"9\r")
    assert [type(e) for e in events] == [ProtocolViolation, BarcodeScanned, ProtocolViolation, ProtocolViolation,
                                         BarcodeScanned]
    assert events[1].value == "12345" and events[-1].value == "9"
    assert all("x" * 10 not in e.reason for e in events if isinstance(e, ProtocolViolation))


def test_connection_lost_in_the_middle_of_a_scan():
    host, _, _ = pair()
    assert host.receive_data(b"40063813") == []
    assert [type(e) for e in host.connection_lost()] == [ProtocolViolation]
    assert host.receive_data(b"33931\r") == [] and host.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        host.send(Screen())
    assert PriceCheckerHost().connection_lost() == []


def test_send_takes_screens_only():
    with pytest.raises(LocalProtocolError):
        PriceCheckerHost().send("hello")  # type: ignore[arg-type]


def test_result_times_out_to_the_idle_screen():
    host, dev, clock = pair()
    show(host, dev, Screen((Line("2.49 EUR", "large"),), timeout_s=5))
    assert host.next_deadline() == 105.0
    assert host.handle_timeout(104.9) == [] and host.data_to_send() == b""
    clock.now = 105.0
    assert host.handle_timeout(105.0) == []
    dev.receive_data(host.data_to_send())
    assert dev.screen_text() == ["Price check", "Scan card or product"] and host.next_deadline() is None
    show(host, dev, Screen((Line("stays"),), timeout_s=None))
    assert host.next_deadline() is None


# -- screens ---------------------------------------------------------------------------------------


def test_text_is_made_displayable():
    assert Line("Crème brûlée").text == "Creme brulee"
    assert display_text("Straße, Œuvre, Smørrebrød ½ l, 5 €") == "Strasse, OEuvre, Smorrebrod 1/2 l, 5 EUR"
    assert display_text("日本茶  tea\t\n") == "??? tea"
    assert display_text("e\u0301clair\u200b") == "eclair"
    line = Line("a\x1b%b\x03c\rd")  # control bytes can never become commands
    assert line.text == "a %b c d"
    assert encode_screen(Screen((line,))).count(b"\x03") == 1


def test_line_and_screen_validation():
    with pytest.raises(LocalProtocolError):
        Line("x" * 21)
    with pytest.raises(LocalProtocolError):
        Line("x" * 13, "large")
    with pytest.raises(LocalProtocolError):
        Line("x", "huge")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Line("x", align="justify")  # type: ignore[arg-type]
    assert Line("x" * 20).text == "x" * 20 and Line("x" * 12, "large").text == "x" * 12
    Screen(tuple(Line(str(n)) for n in range(5)))
    with pytest.raises(LocalProtocolError):
        Screen(tuple(Line(str(n)) for n in range(6)))
    with pytest.raises(LocalProtocolError):
        Screen((Line("a", "large"), Line("b", "large"), Line("c", "large"), Line("d")))
    with pytest.raises(LocalProtocolError):
        Screen(("text",))  # type: ignore[arg-type]
    for bad in (0, -1, 3601, True, "5"):
        with pytest.raises(LocalProtocolError):
            Screen(timeout_s=bad)  # type: ignore[arg-type]
    assert Screen([Line("a")]).lines == (Line("a"),)  # type: ignore[arg-type]


def test_line_fit_clips_at_a_word():
    assert Line.fit("Chocolate chip cookies family pack").text == "Chocolate chip"
    assert Line.fit("Supercalifragilisticexpialidocious").text == "Supercalifragilistic"
    assert Line.fit("Crème brûlée à la vanille de Madagascar", "large").text == "Creme brulee"


def test_options_from_query():
    assert PriceCheckerOptions.from_query({}) == PriceCheckerOptions()
    options = PriceCheckerOptions.from_query({"unit_id": "1", "aim": "true", "identify": "yes", "welcome": "Hello",
                                              "hint": "Scan here", "max_line": "64"})
    assert options == PriceCheckerOptions(True, True, True, "Hello", "Scan here", 64)
    for bad in ({"aim": "maybe"}, {"welcome": "x" * 13}, {"hint": "x" * 21}, {"max_line": "lots"},
                {"max_line": "8"}, {"unitid": "1"}):
        with pytest.raises(InvalidInput):
            PriceCheckerOptions.from_query(bad)


def test_encode_scan_refuses_what_a_device_cannot_send():
    for kwargs in ({"code": ""}, {"code": "x" * 65}, {"code": "a\rb"}, {"code": "é"},
                   {"code": "1", "unit_id": ""}, {"code": "1", "symbology": "E0"}, {"code": "1", "terminator": b";"}):
        with pytest.raises(LocalProtocolError):
            encode_scan(**kwargs)


# -- fuzzing ---------------------------------------------------------------------------------------

options_st = st.builds(PriceCheckerOptions, unit_id=st.booleans(), aim=st.booleans(), identify=st.booleans(),
                       max_line=st.integers(16, 300))


@settings(max_examples=300)
@given(options_st, st.lists(st.binary(max_size=80), max_size=8))
def test_random_bytes_never_break_the_host(options, chunks):
    host = PriceCheckerHost(options)
    for chunk in chunks:
        for event in host.receive_data(chunk):
            assert isinstance(event, BarcodeScanned | DeviceIdentified | ProtocolViolation)
            if isinstance(event, BarcodeScanned):
                assert 0 < len(event.value) <= 64 and event.value.isprintable() and event.value.isascii()
    host.connection_lost()


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=80), max_size=8))
def test_random_bytes_never_break_the_device(chunks):
    dev = PriceCheckerDevice()
    for chunk in chunks:
        for event in dev.receive_data(chunk):
            assert isinstance(event, ProtocolViolation)
    assert all(isinstance(line, str) for line in dev.screen_text())


@settings(max_examples=200)
@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=6))
def test_chunking_does_not_change_the_result(data, cuts):
    whole_host, whole_dev = PriceCheckerHost(), PriceCheckerDevice()
    split_host, split_dev = PriceCheckerHost(), PriceCheckerDevice()
    expected_events = whole_host.receive_data(data)
    expected_dev_events = whole_dev.receive_data(data)
    events, dev_events, start = [], [], 0
    for cut in sorted({min(c, len(data)) for c in cuts}) + [len(data)]:
        events += split_host.receive_data(data[start:cut])
        dev_events += split_dev.receive_data(data[start:cut])
        start = cut
    assert events == expected_events and dev_events == expected_dev_events
    assert split_dev.segments() == whole_dev.segments()


line_st = st.builds(Line.fit, st.text(max_size=40), st.sampled_from(["small", "large"]),
                    st.sampled_from(["left", "center", "right"]))


@settings(max_examples=200)
@given(st.text(max_size=60), st.sampled_from(["small", "large"]))
def test_any_text_fits_a_line(text, font):
    line = Line.fit(text, font)
    assert len(line.text) <= LINE_WIDTH[font] and all(" " <= ch <= "~" for ch in line.text)


@settings(max_examples=200)
@given(st.lists(line_st, max_size=5).filter(lambda ls: sum(line.height for line in ls) <= DISPLAY_HEIGHT))
def test_every_screen_shows_on_the_device_as_sent(lines):
    host, dev, _ = pair()
    assert show(host, dev, Screen(tuple(lines))) == [line.text for line in lines if line.text]


# -- the edge's screens ------------------------------------------------------------------------------


def test_card_screen_shows_masked_number_and_balance():
    screen = card_screen(CARD)
    assert screen.text == ["603599******1234", "12.34 EUR"]
    assert screen.lines[1].font == "large" and "6035990000001234" not in str(screen)


def test_card_screen_with_points_and_tier():
    screen = card_screen(CARD | {"points": 1250, "tier": "Gold"})
    assert screen.text == ["603599******1234", "12.34 EUR", "1250 points", "Tier: Gold"]
    assert card_screen(CARD | {"points": 1}).text[-1] == "1 point"
    assert card_screen(CARD | {"points": 0}).text[-1] == "0 points"


def test_card_screen_state_and_offline_note_fit_the_display():
    blocked = card_screen(CARD | {"state": "blocked", "points": 10, "tier": "Silver", "decision": "offline"})
    assert blocked.text == ["603599******1234", "12.34 EUR", "Card blocked", "10 points"]  # least important dropped
    assert card_screen(CARD | {"decision": "offline"}).text[-1] == "Balance may be late"
    assert card_screen(CARD | {"state": "in_pack"}).text[-1] == "Not activated"
    assert card_screen(CARD | {"state": "some_new_state"}).text[-1] == "Some new state"


def test_card_screen_amounts_are_never_clipped():
    rich = card_screen(CARD | {"balance": 123456789})
    assert rich.text[1] == "1234567.89 EUR" and rich.lines[1].font == "small"
    assert card_screen(CARD | {"currency": "JPY", "balance": 5000}).text[1] == "5000 JPY"


def test_product_screen_with_and_without_member_price():
    assert product_screen(PRODUCT).text == ["Creme brulee", "2.49 EUR"]
    member = product_screen(PRODUCT | {"member_price": 199})
    assert member.text == ["Creme brulee", "2.49 EUR", "Members: 1.99 EUR"]
    assert [line.font for line in member.lines] == ["small", "large", "small"]


def test_product_screen_long_name_and_unit():
    screen = product_screen(PRODUCT | {"name": "Organic extra virgin olive oil from Crete", "unit": "kg",
                                       "price": 1299, "member_price": 1099})
    assert screen.text == ["Organic extra virgin", "olive oil from Crete", "12.99 EUR/kg", "Members: 10.99 EUR"]
    assert product_screen(PRODUCT | {"unit": "100 g"}).text[-1] == "2.49 EUR/100 g"
    assert product_screen(PRODUCT | {"unit": None}).text[-1] == "2.49 EUR"


def test_unknown_screen_asks_staff():
    assert unknown_screen("not_found").text == ["Not found", "Please ask staff"]
    assert unknown_screen("invalid_code").text[0] == "Invalid code"
    assert unknown_screen("unavailable").text == ["Sorry", "Please ask staff"]
    assert unknown_screen("anything else").text[0] == "Not found" and unknown_screen(None).text[0] == "Not found"
    assert unknown_screen("x", timeout_s=2).timeout_s == 2

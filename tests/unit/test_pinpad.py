"""The PIN pad link: the till's host and the simulated pad paired in memory."""

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import InvalidInput
from core.pin import pin_from_block
from drivers.events import (
    CardRead,
    DisplayDone,
    KeyPressed,
    LocalProtocolError,
    PinCancelled,
    PinEntered,
    ProtocolViolation,
    ReadFailed,
)
from drivers.pinpad import (
    ACK,
    MAX_BODY,
    MAX_CONTROL,
    NAK,
    Cancel,
    Display,
    Idle,
    LinkFailed,
    PinPadDevice,
    PinPadHost,
    PinPadOptions,
    ReadCard,
    RequestPin,
    ShowAmount,
    encode_frame,
    lrc,
)

PAN = "4111111111111111"
BOUND = MAX_BODY + MAX_CONTROL + MAX_BODY + 8  # a partial frame, pending ACK/NAKs, one frame in flight


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def host(clock):
    return PinPadHost(PinPadOptions(), clock=clock)


@pytest.fixture
def pad(clock):
    return PinPadDevice(PinPadOptions(), clock=clock)


def pump(host, pad, events=None, commands=None):
    """Move bytes both ways until both ends are quiet; (host events, pad commands)."""
    events = [] if events is None else events
    commands = [] if commands is None else commands
    for _ in range(100):
        to_pad, to_host = host.data_to_send(), pad.data_to_send()
        if not to_pad and not to_host:
            return events, commands
        commands += pad.receive_data(to_pad)
        events += host.receive_data(to_host)
    raise AssertionError("the link never went quiet")


def timeout(host, pad, clock, seconds):
    clock.now += seconds
    events = []
    for side in (host, pad):
        if side.next_deadline() is not None and side.next_deadline() <= clock.now:
            events += side.handle_timeout(clock.now)
    return events


# --- framing -------------------------------------------------------------------------------------


def test_lrc_is_the_xor_after_stx_through_etx():
    frame = encode_frame(b"1I")
    assert frame == b"\x021I\x03" + bytes([0x31 ^ 0x49 ^ 0x03])
    assert lrc(frame[1:-1]) == frame[-1]
    assert lrc(frame[1:]) == 0  # the whole tail including the LRC XORs to zero


def test_frames_on_the_wire(host):
    host.send(Display(("HELLO",)))
    assert host.data_to_send() == encode_frame(b"1D\x1cHELLO")
    assert host.receive_data(bytes([ACK])) == [DisplayDone("display")]
    host.send(RequestPin(PAN, 1234, "EUR"))
    assert host.data_to_send() == encode_frame(f"2P\x1c{PAN}\x1c1234\x1cEUR".encode())


# --- the exchanges -------------------------------------------------------------------------------


def test_display(host, pad):
    host.send(Display(("GIFT CARD", "THANK YOU")))
    events, commands = pump(host, pad)
    assert commands == [Display(("GIFT CARD", "THANK YOU"))]
    assert events == [DisplayDone("display")]
    assert pad.screen == ("GIFT CARD", "THANK YOU")


def test_amount_is_formatted_by_the_pad(host, pad):
    host.send(ShowAmount(1234, "EUR"))
    events, _ = pump(host, pad)
    assert events == [DisplayDone("amount")]
    assert pad.screen == ("AMOUNT", "12.34 EUR")
    host.send(ShowAmount(1500, "JPY"))
    pump(host, pad)
    assert pad.screen == ("AMOUNT", "1500 JPY")


def test_commands_queue_behind_the_frame_in_flight(host, pad):
    host.send(Display(("ONE",)))
    host.send(ShowAmount(500, "EUR"))
    host.send(Idle())
    first = host.data_to_send()
    assert first.count(b"\x02") == 1  # stop and wait: one frame at a time
    events, commands = pump(host, pad, commands=pad.receive_data(first))
    assert [type(c) for c in commands] == [Display, ShowAmount, Idle]
    assert events == [DisplayDone("display"), DisplayDone("amount"), DisplayDone("idle")]
    assert pad.screen == ()


def test_card_read_on_the_pad(host, pad):
    host.send(ReadCard("SWIPE CARD"))
    pump(host, pad)
    assert pad.screen == ("SWIPE CARD",) and isinstance(pad.pending, ReadCard)
    assert host.pending == "read_card"
    pad.read_card("6035550000000017", "2912")
    events, _ = pump(host, pad)
    assert events == [CardRead("6035550000000017", "pad", "2912")]
    assert host.pending is None and pad.pending is None


def test_card_read_failure_and_unsolicited_swipe(host, pad):
    host.send(ReadCard())
    pump(host, pad)
    pad.read_failed("unreadable")
    events, _ = pump(host, pad)
    assert events == [ReadFailed("unreadable")]
    assert host.pending is None
    pad.read_card(PAN)  # no prompt: a card swiped on the pad is still reported
    events, _ = pump(host, pad)
    assert events == [CardRead(PAN, "pad", None)]


@pytest.mark.parametrize("pin", ["1234", "000000", "123456789012"])
def test_pin_entry_returns_a_format_0_block(host, pad, pin):
    host.send(RequestPin(PAN, 2500, "EUR"))
    _, commands = pump(host, pad)
    assert commands == [RequestPin(PAN, 2500, "EUR")]
    assert pad.screen == ("25.00 EUR", "ENTER PIN")
    pad.enter_pin(pin)
    events, _ = pump(host, pad)
    assert len(events) == 1 and isinstance(events[0], PinEntered)
    assert pin_from_block(events[0].pin_block, PAN) == pin
    assert host.pending is None


def test_pin_entry_without_amount(host, pad):
    host.send(RequestPin(PAN))
    pump(host, pad)
    assert pad.screen == ("ENTER PIN",)


def test_customer_cancels_pin_entry(host, pad):
    host.send(RequestPin(PAN, 100, "EUR"))
    pump(host, pad)
    pad.cancel()
    events, _ = pump(host, pad)
    assert events == [PinCancelled("cancelled")]
    assert host.pending is None and pad.pending is None


def test_pad_times_out_pin_entry_itself(host, pad):
    host.send(RequestPin(PAN))
    pump(host, pad)
    pad.cancel("timeout")
    assert pump(host, pad)[0] == [PinCancelled("timeout")]


def test_customer_cancels_card_read(host, pad):
    host.send(ReadCard())
    pump(host, pad)
    pad.cancel()
    assert pump(host, pad)[0] == [PinCancelled("cancelled")]


def test_function_keys(host, pad):
    pad.cancel()  # nothing asked: cancel is just a key
    pad.press("f1")
    events, _ = pump(host, pad)
    assert events == [KeyPressed("cancel"), KeyPressed("f1")]
    with pytest.raises(InvalidInput):
        pad.press("5")  # digits never leave the pad as keys


def test_host_cancel_takes_the_prompt_down(host, pad):
    host.send(RequestPin(PAN))
    pump(host, pad)
    host.send(Cancel())
    assert host.pending is None
    events, commands = pump(host, pad)
    assert commands == [Cancel()] and events == [DisplayDone("cancel")]
    assert pad.pending is None and pad.screen == ()


def test_an_answer_crossing_the_hosts_cancel_is_dropped(host, pad):
    host.send(RequestPin(PAN))
    pump(host, pad)
    pad.enter_pin("1234")  # on the line while the till cancels
    host.send(Cancel())
    events, _ = pump(host, pad)
    assert events == [DisplayDone("cancel")]


def test_one_card_or_pin_request_at_a_time(host, pad):
    host.send(RequestPin(PAN))
    with pytest.raises(LocalProtocolError):
        host.send(RequestPin(PAN))
    with pytest.raises(LocalProtocolError):
        host.send(ReadCard())
    host.send(Display(("STILL OK",)))  # display commands are not requests
    host.send(Idle())
    host.send(ReadCard())


def test_pin_timeout(host, pad, clock):
    host.send(RequestPin(PAN))
    pump(host, pad)
    assert host.next_deadline() == clock.now + 30.0
    assert timeout(host, pad, clock, 29.0) == []
    assert timeout(host, pad, clock, 1.0) == [PinCancelled("timeout")]
    events, commands = pump(host, pad)
    assert commands == [Cancel()] and events == []  # the host's own cancel reports no DisplayDone
    assert pad.pending is None and host.pending is None
    assert host.next_deadline() is None
    with pytest.raises(LocalProtocolError):
        pad.enter_pin("1234")  # the prompt is gone


def test_pin_timeout_option(clock):
    host = PinPadHost(PinPadOptions.from_query({"pin_timeout": "5"}), clock=clock)
    host.send(RequestPin(PAN))
    assert host.next_deadline() == clock.now + 1.0  # the ACK timer comes first
    host.receive_data(bytes([ACK]))
    assert host.next_deadline() == clock.now + 5.0


# --- retransmission and duplicates ---------------------------------------------------------------


def test_lost_ack_to_the_host_resends_without_a_second_command(host, pad, clock):
    pad.lose_acks(1)
    host.send(RequestPin(PAN))
    events, commands = pump(host, pad)
    assert events == [] and len(commands) == 1
    assert timeout(host, pad, clock, 1.0) == []
    events, commands = pump(host, pad)
    assert commands == []  # the resent frame was recognised and only ACKed
    assert host.next_deadline() == clock.now + 30.0 - 1.0  # only the PIN timer is left


def test_lost_ack_to_the_pad_does_not_repeat_the_event(host, pad, clock):
    pad.read_card(PAN)
    events = host.receive_data(pad.data_to_send())
    assert events == [CardRead(PAN, "pad", None)]
    assert host.data_to_send() == bytes([ACK])  # ... lost on the line
    assert timeout(host, pad, clock, 1.0) == []
    resent = pad.data_to_send()
    assert resent.startswith(b"\x02")
    assert host.receive_data(resent) == []
    assert host.data_to_send() == bytes([ACK])
    pad.receive_data(bytes([ACK]))
    assert pad.next_deadline() is None


def test_nak_resends_at_once(host, pad):
    pad.nak_next(2)
    host.send(Display(("RETRY",)))
    events, commands = pump(host, pad)
    assert commands == [Display(("RETRY",))] and events == [DisplayDone("display")]


def test_lost_frame_is_resent_after_the_ack_timeout(host, pad, clock):
    pad.drop_next(1)
    host.send(ShowAmount(100, "EUR"))
    assert pump(host, pad) == ([], [])
    assert timeout(host, pad, clock, 0.5) == []
    assert timeout(host, pad, clock, 0.5) == []
    events, commands = pump(host, pad)
    assert commands == [ShowAmount(100, "EUR")] and events == [DisplayDone("amount")]


def test_retries_exhausted_fail_the_link(host, pad, clock):
    pad.drop_next(100)
    host.send(RequestPin(PAN))
    host.send(Display(("QUEUED",)))
    frames, failures = 0, []
    for _ in range(10):
        frames += host.data_to_send().count(b"\x02")
        pad.receive_data(b"")
        failures += timeout(host, pad, clock, 1.0)
    assert frames == 4  # the first send and 3 retries
    assert failures == [LinkFailed("pin")]
    assert host.pending is None and host.next_deadline() is None
    # The queued display was abandoned with it; the link is usable again once the pad answers.
    pad.drop_next(0)
    host.send(Display(("BACK",)))
    events, commands = pump(host, pad)
    assert commands == [Display(("BACK",))] and events == [DisplayDone("display")]


def test_retries_option(clock):
    host = PinPadHost(PinPadOptions.from_query({"retries": "0", "ack_timeout": "0.2"}), clock=clock)
    host.send(Idle())
    host.data_to_send()
    clock.now += 0.2
    assert host.handle_timeout(clock.now) == [LinkFailed("idle")]


def test_pad_side_gives_up_too(host, pad, clock):
    pad.press("f2")
    pad.data_to_send()  # never reaches the host
    failures = []
    for _ in range(5):
        failures += timeout(host, pad, clock, 1.0)
        pad.data_to_send()
    assert failures == [LinkFailed("key")] and pad.link_failures == 1


def test_connection_lost_abandons_the_request(host, pad):
    host.send(RequestPin(PAN))
    assert host.connection_lost() == [LinkFailed("pin", "connection_lost")]
    assert host.pending is None and host.data_to_send() == b"" and host.next_deadline() is None
    assert host.connection_lost() == []
    pad.connection_lost()
    host.send(ReadCard())
    pump(host, pad)
    assert isinstance(pad.pending, ReadCard)


# --- bad input from the pad ----------------------------------------------------------------------


def _frame(body: str) -> bytes:
    return encode_frame(body.encode())


def test_bad_lrc_is_naked(host):
    frame = bytearray(_frame(f"1c\x1c{PAN}\x1c"))
    frame[-1] ^= 0xFF
    assert host.receive_data(bytes(frame)) == [ProtocolViolation("bad LRC")]
    assert host.data_to_send() == bytes([NAK])


def test_bad_lrc_from_the_host_is_resent(host, pad):
    host.send(Display(("X",)))
    frame = bytearray(host.data_to_send())
    frame[-1] ^= 0x01
    assert pad.receive_data(bytes(frame)) == [] and pad.violations == 1
    events, commands = pump(host, pad, events=host.receive_data(pad.data_to_send()))
    assert commands == [Display(("X",))] and events == [DisplayDone("display")]


def test_noise_between_frames_is_skipped(host):
    host.send(RequestPin(PAN))
    host.receive_data(bytes([ACK]))
    stream = b"xyz\r\n" + _frame("1k\x1cf1") + b"\xff\xfe\x00" + _frame("2x\x1ccancelled")
    assert host.receive_data(stream) == [
        ProtocolViolation("noise between frames"), KeyPressed("f1"),
        ProtocolViolation("noise between frames"), PinCancelled("cancelled"),
    ]
    assert host.data_to_send() == bytes([ACK, ACK])


def test_a_frame_cut_short_resyncs_on_the_next_stx(host):
    stream = b"\x021k\x1cf" + _frame("2k\x1cf3")
    assert host.receive_data(stream) == [ProtocolViolation("frame cut short"), KeyPressed("f3")]


def test_control_bytes_inside_a_frame(host):
    # The rest of the broken frame is part of the same noise: one report.
    assert host.receive_data(b"\x021k\x00\x1cf1\x03x") == [ProtocolViolation("bad byte in frame")]
    assert host.receive_data(_frame("1k\x1cf1")) == [KeyPressed("f1")]


def test_overlong_frame_is_dropped(host):
    stream = b"\x02" + b"A" * (MAX_BODY + 10) + b"\x03\x00" + _frame("1k\x1center")
    assert host.receive_data(stream) == [ProtocolViolation("frame too long"), KeyPressed("enter")]
    assert host.buffered <= BOUND


@pytest.mark.parametrize(
    "body",
    [
        "1z",  # unknown message
        "1k\x1c5",  # digits are never keys
        "1k",  # missing field
        "1c\x1c12AB",  # not a card number
        "1c\x1c4111111111111111\x1c2913",  # not an expiry
        "1x\x1cbored",  # not a cancel reason
        "1f\x1cBad Reason",
        "1p\x1c0123",  # a PIN block is 16 hex digits
        "kk",  # no seq
        "1",  # no code
        "1kf1",  # fields not introduced by FS
    ],
)
def test_malformed_messages_are_acked_and_reported(host, body):
    host.send(RequestPin(PAN))
    host.data_to_send()
    host.receive_data(bytes([ACK]))
    events = host.receive_data(_frame(body))
    assert len(events) == 1 and isinstance(events[0], ProtocolViolation)
    assert host.data_to_send() == bytes([ACK])
    assert host.pending == "pin"


def test_answers_nobody_asked_for_are_dropped(host):
    assert host.receive_data(_frame("1p\x1c041225EEEEEEEEEE")) == []
    assert host.receive_data(_frame("2x\x1ccancelled")) == []


def test_stray_ack_and_nak_are_ignored(host, pad):
    assert host.receive_data(bytes([ACK, NAK, ACK])) == []
    assert pad.receive_data(bytes([ACK, NAK])) == []
    assert host.data_to_send() == b""


def test_nak_flood_is_bounded(host):
    frame = bytearray(_frame("1k\x1cf1"))
    frame[-1] ^= 0xFF
    host.receive_data(bytes(frame) * 1000)
    assert host.data_to_send() == bytes([NAK]) * MAX_CONTROL


def test_queue_is_bounded(host):
    with pytest.raises(LocalProtocolError):
        for _ in range(100):
            host.send(Display(("X",)))
    assert host.buffered <= BOUND + 16 * 32


# --- random chunking and fuzzing -----------------------------------------------------------------

STREAM = (
    b"\x00garbage" + _frame("1c\x1c6035550000000017\x1c2912") + bytes([ACK])
    + _frame("2k\x1cf4") + _frame("2k\x1cf4")  # a resent frame
    + b"\x02" + b"B" * (MAX_BODY + 5) + b"\x03\x10"
    + _frame("3p\x1c" + "041225EEEEEEEEEE") + b"\x15\r\n" + _frame("4z") + _frame("5k\x1center")[:-1] + b"\x00"
    + _frame("6f\x1cunreadable")
)


def _host_with_pin_request():
    host = PinPadHost(clock=Clock())
    host.send(RequestPin(PAN))
    host.data_to_send()
    host.receive_data(bytes([ACK]))
    return host


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def test_stream_events():
    events = _host_with_pin_request().receive_data(STREAM)
    assert [getattr(e, "reason", type(e).__name__) for e in events] == [
        "noise between frames", "CardRead", "KeyPressed", "frame too long", "PinEntered", "noise between frames",
        "unknown message", "bad LRC", "unreadable",
    ]


@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_chunking_does_not_change_the_events(cuts):
    whole = _host_with_pin_request()
    expected = whole.receive_data(STREAM)
    chunked = _host_with_pin_request()
    events = []
    for chunk in _split(STREAM, cuts):
        events += chunked.receive_data(chunk)
    assert events == expected
    assert chunked.data_to_send() == whole.data_to_send()


@given(cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=20))
def test_chunking_between_the_two_ends(cuts):
    clock = Clock()
    host, pad = PinPadHost(clock=clock), PinPadDevice(clock=clock)
    host.send(Display(("HELLO", "WORLD")))
    host.send(RequestPin(PAN, 999, "EUR"))
    events, commands = [], []
    for _ in range(20):
        for chunk in _split(host.data_to_send(), cuts):
            commands += pad.receive_data(chunk)
        for chunk in _split(pad.data_to_send(), cuts):
            events += host.receive_data(chunk)
        if isinstance(pad.pending, RequestPin):
            pad.enter_pin("4321")
    assert [type(c) for c in commands] == [Display, RequestPin]
    assert events[0] == DisplayDone("display") and isinstance(events[1], PinEntered) and len(events) == 2
    assert pin_from_block(events[1].pin_block, PAN) == "4321"


_PIECES = st.one_of(
    st.binary(max_size=16),
    st.sampled_from([b"\x02", b"\x03", b"\x06", b"\x15", b"\x1c", b"\x03\x00"]),
    st.builds(lambda s: encode_frame(s.encode()), st.text(alphabet="0123456789cpxkfDARPXI\x1c4F ", max_size=40)),
)


@settings(max_examples=300)
@given(chunks=st.lists(st.one_of(st.binary(max_size=300), st.lists(_PIECES, max_size=20).map(b"".join)), max_size=30))
def test_fuzz_host_never_raises_and_stays_bounded(chunks):
    clock = Clock()
    host = PinPadHost(clock=clock)
    host.send(RequestPin(PAN))
    for chunk in chunks:
        events = host.receive_data(chunk)
        assert all(isinstance(e, (ProtocolViolation, CardRead, KeyPressed, PinEntered, PinCancelled, ReadFailed,
                                  DisplayDone, LinkFailed)) for e in events)
        assert host.buffered <= BOUND
        assert len(host.data_to_send()) <= BOUND
        clock.now += 0.7
        if host.next_deadline() is not None and host.next_deadline() <= clock.now:
            host.handle_timeout(clock.now)


@settings(max_examples=300)
@given(chunks=st.lists(st.one_of(st.binary(max_size=300), st.lists(_PIECES, max_size=20).map(b"".join)), max_size=30))
def test_fuzz_pad_never_raises_and_stays_bounded(chunks):
    pad = PinPadDevice(clock=Clock())
    for chunk in chunks:
        pad.receive_data(chunk)
        assert pad.buffered <= BOUND
        assert len(pad.data_to_send()) <= BOUND


# --- secrecy -------------------------------------------------------------------------------------


def test_pin_and_block_never_reach_logs_or_reprs(host, pad, clock, caplog):
    caplog.set_level(logging.DEBUG)
    pin = "987654"
    pad.lose_acks(1)
    host.send(RequestPin(PAN, 100, "EUR"))
    seen = []
    seen += pump(host, pad)[1]
    timeout(host, pad, clock, 1.0)
    pump(host, pad)
    pad.enter_pin(pin)
    to_host = pad.data_to_send()
    corrupted = bytearray(to_host)
    corrupted[-1] ^= 0x55
    seen += host.receive_data(bytes(corrupted))  # bad LRC: NAK, then the resend
    events, _ = pump(host, pad)
    block = events[0].pin_block
    assert pin_from_block(block, PAN) == pin
    text = caplog.text + repr(seen) + repr(events) + str(events) + repr(host) + repr(pad)
    for secret in (pin, block.hex(), block.hex().upper(), PAN):
        assert secret not in text
    assert "PinEntered(pin_block=<hidden>)" in repr(events)
    assert caplog.records  # the exchange was logged, without the secrets


def test_errors_do_not_echo_pins(pad, host):
    host.send(RequestPin(PAN))
    pump(host, pad)
    with pytest.raises(InvalidInput) as info:
        pad.enter_pin("12345678901234")
    assert "12345678901234" not in str(info.value)


# --- options and commands ------------------------------------------------------------------------


def test_options_from_query():
    assert PinPadOptions.from_query({}) == PinPadOptions(1.0, 3, 30.0)
    assert PinPadOptions.from_query({"ack_timeout": "0.5", "retries": "5", "pin_timeout": "60"}) == PinPadOptions(
        0.5, 5, 60.0)


@pytest.mark.parametrize(
    "query",
    [
        {"ack_timeout": "0"}, {"ack_timeout": "soon"}, {"ack_timeout": "nan"}, {"ack_timeout": "inf"},
        {"retries": "-1"}, {"retries": "11"}, {"retries": "2.5"}, {"pin_timeout": "0.5"}, {"pin_timeout": "601"},
        {"baud": "9600"}, {"pin_timout": "5"},
    ],
)
def test_bad_options(query):
    with pytest.raises(InvalidInput):
        PinPadOptions.from_query(query)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Display(("A", "B", "C")),
        lambda: Display(("X" * 21,)),
        lambda: Display(("CAFÉ",)),
        lambda: Display(("A\x1cB",)),
        lambda: Display(["A"]),
        lambda: ShowAmount(12.5, "EUR"),
        lambda: ShowAmount(True, "EUR"),
        lambda: ShowAmount(100, "eur"),
        lambda: ReadCard("Y" * 21),
        lambda: RequestPin("1234"),
        lambda: RequestPin(PAN, 100),
        lambda: RequestPin(PAN, None, "EUR"),
        lambda: RequestPin(PAN, 1.5, "EUR"),
    ],
)
def test_bad_commands(make):
    with pytest.raises(InvalidInput):
        make()


def test_display_lines_up_to_twenty_columns(host, pad):
    host.send(Display(("X" * 20, "")))
    pump(host, pad)
    assert pad.screen == ("X" * 20, "")


def test_only_commands_can_be_sent(host):
    with pytest.raises(LocalProtocolError):
        host.send("D|HELLO")
    with pytest.raises(LocalProtocolError):
        host.send(KeyPressed("f1"))


def test_request_repr_masks_the_card_number():
    text = repr(RequestPin(PAN, 100, "EUR"))
    assert PAN not in text and "411111******1111" in text

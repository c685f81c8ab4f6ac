"""Magnetic-stripe readers: both framings paired in memory with the device side, published sample tracks,
read errors, programme checks, fuzzing — and no track data in logs, events or reasons."""

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import InvalidInput, NumberTemplate
from core.track import lrc, track1, track2
from drivers.events import CardRead, LocalProtocolError, ProtocolViolation, ReadFailed
from drivers.magstripe import (
    MAX_SWIPE,
    MagstripeOptions,
    MagstripeReader,
    encode_read_error,
    encode_swipe,
)

PAN = "4111111111111111"
VISA_T1 = "%B4111111111111111^DOE/JOHN^2512101000000000000000000?"
VISA_T2 = ";4111111111111111=25121010000000000000?"
# ISO 4909 track 3 after L. Padilla's published example (masked digits filled in).
PADILLA_PAN = "1234567890123445"
PADILLA_T1 = "%B1234567890123445^PADILLA/L. ^99011200000000000000555000?"
PADILLA_T2 = ";1234567890123445=99011200555500000000?"
PADILLA_T3 = (";011234567890123445=724724100000000000030300XXXX040400099010=********************==1=0000000000000000?"
              .replace("X", "5").replace("*", "0"))
MAGTEK = MagstripeOptions(framing="magtek")
SENTINEL = MagstripeOptions(framing="sentinel")
STX, ETX, ESC = b"\x02", b"\x03", b"\x1b"


def read(data: bytes, options: MagstripeOptions = MAGTEK, templates=None) -> list:
    return MagstripeReader(options, templates).receive_data(data)


def card(number: str = PAN, expiry: str | None = "2512", tracks=(1, 2)) -> CardRead:
    return CardRead(number=number, source="swipe", expiry=expiry, tracks=tracks)


# --- options -------------------------------------------------------------------------------------


def test_options():
    assert MagstripeOptions() == MagstripeOptions(framing="magtek", luhn=None)
    assert MagstripeOptions.from_query({}) == MagstripeOptions()
    assert MagstripeOptions.from_query({"framing": "sentinel", "luhn": "0"}) == MagstripeOptions("sentinel", False)
    assert MagstripeOptions.from_query({"framing": "MagTek", "luhn": "on"}) == MagstripeOptions("magtek", True)
    assert MagstripeOptions.from_query({"luhn": "auto"}) == MagstripeOptions(luhn=None)


@pytest.mark.parametrize("query", [{"framing": "idtech"}, {"framing": ""}, {"luhn": "2"}, {"luhn": ""},
                                   {"terminator": "cr"}, {"baud": "9600"}])
def test_bad_options_are_refused(query):
    with pytest.raises(InvalidInput):
        MagstripeOptions.from_query(query)


def test_bad_option_values_are_refused_directly():
    with pytest.raises(InvalidInput):
        MagstripeOptions(framing="ascii")
    with pytest.raises(InvalidInput):
        MagstripeOptions(luhn="yes")


# --- the framings, byte for byte -----------------------------------------------------------------


def test_magtek_bytes():
    assert encode_swipe(VISA_T1, VISA_T2, None, MAGTEK) == STX + VISA_T1.encode() + VISA_T2.encode() + b"\r" + ETX
    # Track 3 goes out with the '+' sentinel MagTek readers use for it.
    assert encode_swipe(None, VISA_T2, PADILLA_T3, MAGTEK) == (
        STX + VISA_T2.encode() + b"+" + PADILLA_T3[1:].encode() + b"\r" + ETX)
    assert encode_read_error(MAGTEK) == STX + b"%E?;E?\r" + ETX
    assert encode_read_error(MAGTEK, (2, 3)) == STX + b";E?+E?\r" + ETX


def test_sentinel_bytes():
    assert encode_swipe(VISA_T1, VISA_T2, None, SENTINEL) == (VISA_T1 + VISA_T2 + "\r").encode()
    assert encode_read_error(SENTINEL, (1,)) == b"%E?\r"


# --- reading published sample tracks -------------------------------------------------------------


@pytest.mark.parametrize("options", [MAGTEK, SENTINEL])
def test_the_well_known_test_tracks(options):
    assert read(encode_swipe(VISA_T1, VISA_T2, None, options), options) == [card()]
    assert read(encode_swipe(VISA_T1, None, None, options), options) == [card(tracks=(1,))]
    assert read(encode_swipe(None, VISA_T2, None, options), options) == [card(tracks=(2,))]


@pytest.mark.parametrize("options", [MAGTEK, SENTINEL])
def test_three_tracks(options):
    data = encode_swipe(PADILLA_T1, PADILLA_T2, PADILLA_T3, options)
    assert read(data, options) == [card(PADILLA_PAN, "9901", (1, 2, 3))]
    assert read(encode_swipe(None, None, PADILLA_T3, options), options) == [card(PADILLA_PAN, "9901", (3,))]


def test_mt211_three_track_output():
    data = STX + (PADILLA_T1 + PADILLA_T2 + "+" + PADILLA_T3[1:]).encode() + b"\r" + ETX
    assert read(data) == [card(PADILLA_PAN, "9901", (1, 2, 3))]


def test_mt211_with_cr_and_etx_switched_off_is_still_framed_by_etx_alone():
    assert read(STX + (VISA_T1 + VISA_T2).encode() + ETX) == [card()]


def test_track3_as_a_second_semicolon_track():
    # ID TECH-style output: track 3 with its ISO start sentinel ';', told apart by position.
    assert read((PADILLA_T2 + PADILLA_T3 + "\r").encode(), SENTINEL) == [card(PADILLA_PAN, "9901", (2, 3))]


def test_insertion_reader_with_esc_and_card_sensor():
    # MagTek insertion readers: sensor alone on insertion, then the tracks and sensor on withdrawal.
    data = STX + ESC + b"1\r" + ETX + STX + ESC + (VISA_T1 + VISA_T2).encode() + b"0\r" + ETX
    assert read(data) == [card()]


def test_insertion_reader_bad_track_1_good_track_2():
    # The manual's example of a bad read on track 1 and a good read on track 2.
    data = STX + ESC + b"%E?" + VISA_T2.encode() + b"0\r" + ETX
    assert read(data) == [card(tracks=(2,))]


def test_sensor_only_messages_are_no_swipe():
    assert read(STX + ESC + b"1\r" + ETX + STX + ESC + b"0\r" + ETX + STX + ESC + b"0" + ETX) == []


@pytest.mark.parametrize("ending", [b"\r", b"\n", b"\r\n", b"\n\r"])
def test_sentinel_line_endings(ending):
    assert read((VISA_T1 + VISA_T2).encode() + ending, SENTINEL) == [card()]


def test_a_swipe_waits_for_its_end():
    reader = MagstripeReader(SENTINEL)
    assert reader.receive_data(VISA_T1.encode()) == []
    assert reader.buffered == len(VISA_T1)
    assert reader.receive_data(VISA_T2.encode() + b"\r") == [card()]
    assert reader.buffered == 0


def test_expiry_comes_from_track_2_then_1_then_3():
    t1 = track1(PAN, "DOE/JOHN", "3001", "120")
    t2 = track2(PAN, "3002", "120")
    assert read(encode_swipe(t1, t2, None, MAGTEK))[0].expiry == "3002"
    assert read(encode_swipe(t1, f";{PAN}==120?", None, MAGTEK))[0].expiry == "3001"
    assert read(encode_swipe(None, f";{PAN}==120?", None, MAGTEK)) == [card(expiry=None, tracks=(2,))]


def test_an_lrc_passed_on_by_the_reader_is_checked():
    good = VISA_T2 + lrc(VISA_T2)
    assert read((good + "\r").encode(), SENTINEL) == [card(tracks=(2,))]
    bad = VISA_T2 + chr(ord(lrc(VISA_T2)) ^ 1)
    assert read((bad + "\r").encode(), SENTINEL) == [ReadFailed("track 2 did not parse", 2)]
    # Track 1 with a bad LRC, track 2 good: the card is read from track 2.
    bad1 = VISA_T1 + chr(ord(lrc(VISA_T1)) ^ 1)
    assert read((bad1 + VISA_T2 + "\r").encode(), SENTINEL) == [card(tracks=(2,))]


# --- read errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [MAGTEK, SENTINEL])
@pytest.mark.parametrize(
    ("tracks", "expected"),
    [
        ((1, 2), ReadFailed("reader could not read the card", None)),
        ((1, 2, 3), ReadFailed("reader could not read the card", None)),
        ((1,), ReadFailed("reader could not read the card", 1)),
        ((2,), ReadFailed("reader could not read the card", 2)),
        ((3,), ReadFailed("reader could not read the card", 3)),
    ],
)
def test_reported_read_errors(options, tracks, expected):
    assert read(encode_read_error(options, tracks), options) == [expected]


def test_one_bad_track_does_not_spoil_a_good_one():
    assert read(encode_swipe("%E?", VISA_T2, None, MAGTEK)) == [card(tracks=(2,))]
    assert read(encode_swipe(VISA_T1, ";E?", None, MAGTEK)) == [card(tracks=(1,))]
    assert read(encode_swipe(VISA_T1, VISA_T2, ";E?", MAGTEK)) == [card()]


@pytest.mark.parametrize(
    ("tracks", "expected"),
    [
        ((f"%B{PAN}^DOE/JOHN^2513101?", None, None), ReadFailed("track 1 did not parse", 1)),
        ((None, f";{PAN}2512101?", None), ReadFailed("track 2 did not parse", 2)),
        ((None, None, ";01" + PAN + "=724?"), ReadFailed("track 3 did not parse", 3)),
        ((f"%B{PAN}^X^2512101?", f";{PAN[:5]}=2512101?", None), ReadFailed("no track could be read", None)),
        (("%E?", f";{PAN[:5]}=2512101?", None), ReadFailed("no track could be read", None)),
    ],
)
def test_tracks_that_do_not_parse(tracks, expected):
    assert read(encode_swipe(*tracks, MAGTEK)) == [expected]


def test_tracks_that_disagree_on_the_pan():
    assert read(encode_swipe(VISA_T1, PADILLA_T2, None, MAGTEK)) == [ReadFailed("tracks disagree on the card number")]


@pytest.mark.parametrize(
    "payload",
    [
        VISA_T2 + VISA_T1,  # out of track order
        VISA_T1 + VISA_T1,  # the same track twice
        "+" + PADILLA_T3[1:] + VISA_T2,  # track 3 before track 2
        "junk" + VISA_T2,  # data outside the tracks
        VISA_T2 + "xx",
        VISA_T2[:-1],  # no end sentinel
    ],
)
def test_swipes_that_are_not_a_run_of_tracks(payload):
    assert read(STX + payload.encode() + b"\r" + ETX) == [ReadFailed("swipe is not a run of tracks")]


def test_empty_swipe():
    assert read(STX + b"\r" + ETX) == [ReadFailed("swipe holds no track")]


@pytest.mark.parametrize("payload", [b"%B\x00?", VISA_T2.encode() + b"\xe9", b"\t" + VISA_T2.encode()])
def test_bytes_no_track_can_hold(payload):
    assert read(STX + payload + ETX) == [ReadFailed("swipe holds bytes no track can hold")]
    assert read(payload + b"\r", SENTINEL) == [ReadFailed("swipe holds bytes no track can hold")]


def test_bytes_outside_a_frame_are_reported_once_per_run():
    swipe = encode_swipe(None, VISA_T2, None, MAGTEK)
    assert read(b"noise" + swipe + b"\r\n" + b"more" + swipe) == [
        ProtocolViolation("bytes outside a swipe frame"), card(tracks=(2,)),
        ProtocolViolation("bytes outside a swipe frame"), card(tracks=(2,))]


def test_a_frame_cut_short_by_the_next():
    swipe = encode_swipe(VISA_T1, VISA_T2, None, MAGTEK)
    assert read(STX + VISA_T1[:10].encode() + swipe) == [ProtocolViolation("swipe frame cut short by the next one"),
                                                        card()]


@pytest.mark.parametrize("options", [MAGTEK, SENTINEL])
def test_an_overlong_swipe_is_dropped_and_the_buffer_stays_bounded(options):
    reader = MagstripeReader(options)
    start = STX if options is MAGTEK else b""
    too_long = ProtocolViolation(f"swipe longer than {MAX_SWIPE} bytes")
    assert reader.receive_data(start + b"%" + b"9" * 100_000) == [too_long]
    assert reader.buffered <= MAX_SWIPE
    assert reader.receive_data(ETX if options is MAGTEK else b"\r") == []
    assert reader.receive_data(encode_swipe(VISA_T1, VISA_T2, None, options)) == [card()]


@pytest.mark.parametrize("options", [MAGTEK, SENTINEL])
def test_the_swipe_buffer_limit_is_exact(options):
    reader = MagstripeReader(options)
    start = STX if options is MAGTEK else b""
    assert reader.receive_data(start + b"9" * MAX_SWIPE) == []
    assert reader.buffered == MAX_SWIPE
    assert reader.receive_data(b"9") == [ProtocolViolation(f"swipe longer than {MAX_SWIPE} bytes")]
    assert reader.buffered == 0


def test_connection_lost_during_a_swipe():
    reader = MagstripeReader()
    reader.receive_data(STX + VISA_T1.encode())
    assert reader.connection_lost() == [ReadFailed("swipe cut short by the link going down")]
    assert reader.buffered == 0
    assert reader.connection_lost() == []
    assert reader.receive_data(VISA_T2.encode() + ETX) == [ProtocolViolation("bytes outside a swipe frame")]
    assert reader.receive_data(encode_swipe(None, VISA_T2, None, MAGTEK)) == [card(tracks=(2,))]


def test_a_reader_takes_no_commands():
    reader = MagstripeReader()
    with pytest.raises(LocalProtocolError):
        reader.send("beep")
    assert reader.data_to_send() == b""
    assert reader.next_deadline() is None
    assert reader.handle_timeout(0.0) == []


# --- programmes and Luhn -------------------------------------------------------------------------

GIFT = NumberTemplate("6035", 16)  # Luhn
CLOSED = NumberTemplate("990", 12, luhn=False)


def swipe_of(number: str, options: MagstripeOptions = MAGTEK) -> bytes:
    return encode_swipe(track1(number, "GIFT CARD", "3012", "120"), track2(number, "3012", "120"), None, options)


def not_luhn(number: str) -> str:
    return number[:-1] + str((int(number[-1]) + 1) % 10)


def test_a_programme_card_is_read():
    number = GIFT.number(7)
    assert read(swipe_of(number), templates={"GIFT": GIFT}) == [card(number, "3012")]


def test_a_card_of_no_programme_fails():
    assert read(swipe_of(PAN), templates={"GIFT": GIFT, "CLOSED": CLOSED}) == [
        ReadFailed("card number not valid for any programme")]


def test_luhn_follows_each_programme_by_default():
    templates = {"GIFT": GIFT, "CLOSED": CLOSED}
    assert read(swipe_of(not_luhn(GIFT.number(7))), templates=templates) == [
        ReadFailed("card number not valid for any programme")]
    closed = "990000000001"  # the closed-loop programme has no check digit
    assert read(swipe_of(closed), templates=templates) == [card(closed, "3012")]


def test_luhn_option_overrides_the_programmes():
    number = not_luhn(GIFT.number(7))
    off = MagstripeOptions(luhn=False)
    assert read(swipe_of(number, off), off, {"GIFT": GIFT}) == [card(number, "3012")]
    on = MagstripeOptions(luhn=True)
    closed = "990000000001"
    assert not NumberTemplate("990", 12).matches(closed)
    assert read(swipe_of(closed, on), on, {"CLOSED": CLOSED}) == [ReadFailed("card number not valid for any programme")]


def test_without_programmes_luhn_is_checked_only_when_asked():
    number = not_luhn(PAN)
    assert read(swipe_of(number)) == [card(number, "3012")]
    on = MagstripeOptions(luhn=True)
    assert read(swipe_of(number, on), on) == [ReadFailed("card number fails the Luhn check")]
    assert read(swipe_of(PAN, on), on) == [card(PAN, "3012")]
    # An empty mapping (no programmes known yet) checks nothing either.
    assert read(swipe_of(number), templates={}) == [card(number, "3012")]


def test_templates_are_read_at_each_swipe():
    live: dict[str, NumberTemplate] = {"CLOSED": CLOSED}
    reader = MagstripeReader(MAGTEK, live)
    number = GIFT.number(9)
    assert reader.receive_data(swipe_of(number)) == [ReadFailed("card number not valid for any programme")]
    live["GIFT"] = GIFT
    assert reader.receive_data(swipe_of(number)) == [card(number, "3012")]


# --- device side ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tracks",
    [
        (None, None, None),
        (VISA_T2, None, None),  # track 2 text as track 1
        (None, VISA_T1, None),
        (VISA_T1[:-1], None, None),  # no end sentinel
        (None, VISA_T2.replace("=", "?"), None),  # end sentinel inside
        (VISA_T1.replace("^DOE", "^doe"), None, None),  # lower case is not on track 1
        (None, VISA_T2.replace("=", "A"), None),  # letters are not on track 2
        (None, None, "+" + PADILLA_T3[1:]),  # track 3 is given as on the card, with ';'
        ("%?", None, None),
    ],
)
def test_encode_swipe_refuses_what_a_reader_cannot_send(tracks):
    with pytest.raises(LocalProtocolError):
        encode_swipe(*tracks, MAGTEK)


@pytest.mark.parametrize("tracks", [(), (2, 1), (1, 1), (4,), (0, 1)])
def test_encode_read_error_refuses_bad_tracks(tracks):
    with pytest.raises(LocalProtocolError):
        encode_read_error(MAGTEK, tracks)


# --- properties: round trip, chunking, fuzzing ---------------------------------------------------

framings = st.sampled_from([MAGTEK, SENTINEL])
pans = st.from_regex(r"\A[0-9]{8,19}\Z")
expiries = st.builds(lambda yy, mm: f"{yy:02d}{mm:02d}", st.integers(0, 99), st.integers(1, 12))
names = st.from_regex(r"\A[A-Z][A-Z0-9 ./-]{1,25}\Z")
track_sets = st.sets(st.sampled_from([1, 2, 3]), min_size=1).map(lambda s: tuple(sorted(s)))


def iso_track3(pan: str, expiry: str) -> str:
    """ISO 4909:2006 layout: FS for the country, currency, exponent, amounts, cycle, retry count, PIN
    parameters, interchange control, service restrictions, then the expiry and the rest."""
    fields = "=" "978" "2" "0000" "0500" "0000" "00" "3" "812345" "0" "40" "00" "00"
    return f";01{pan}={fields}{expiry}1" "===1=?"


def tracks_for(pan: str, name: str, expiry: str, which: tuple[int, ...]) -> tuple:
    return (track1(pan, name, expiry, "120") if 1 in which else None,
            track2(pan, expiry, "120") if 2 in which else None,
            iso_track3(pan, expiry) if 3 in which else None)


@given(framings, pans, names, expiries, track_sets)
def test_device_to_host_round_trip(options, pan, name, expiry, which):
    data = encode_swipe(*tracks_for(pan, name, expiry, which), options)
    assert read(data, options) == [card(pan, expiry, which)]


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


swipes = st.builds(tracks_for, pans, names, expiries, track_sets).map(lambda tracks: ("swipe", tracks))
errors = track_sets.map(lambda which: ("error", which))
junk = st.one_of(st.binary(max_size=16), st.sampled_from([b"\r", b"\n", STX, ETX, ESC, b"?", b"%E?"]))


def stream(parts, options) -> bytes:
    out = []
    for part in parts:
        if isinstance(part, bytes):
            out.append(part)
        elif part[0] == "swipe":
            out.append(encode_swipe(*part[1], options))
        else:
            out.append(encode_read_error(options, part[1]))
    return b"".join(out)


@given(framings, st.lists(swipes | errors | junk, max_size=6), st.lists(st.integers(0, 10_000), max_size=12))
def test_chunking_never_changes_the_events(options, parts, cuts):
    data = stream(parts, options)
    whole = read(data, options)
    reader = MagstripeReader(options)
    assert [event for chunk in chunked(data, cuts) for event in reader.receive_data(chunk)] == whole


@given(framings, st.binary(max_size=3000))
def test_arbitrary_bytes_never_raise_and_the_buffer_stays_bounded(options, data):
    reader = MagstripeReader(options, {"GIFT": GIFT})
    events = reader.receive_data(data)
    assert all(isinstance(event, CardRead | ReadFailed | ProtocolViolation) for event in events)
    assert reader.buffered <= MAX_SWIPE
    reader.connection_lost()
    assert reader.buffered == 0


@given(framings, st.binary(max_size=600), pans, expiries)
def test_the_reader_resynchronises_after_garbage(options, garbage, pan, expiry):
    reader = MagstripeReader(options)
    reader.receive_data(garbage)
    reader.receive_data(ETX if options is MAGTEK else b"\r")
    events = reader.receive_data(encode_swipe(None, track2(pan, expiry, "120"), None, options))
    assert events[-1:] == [card(pan, expiry, (2,))]


# --- no track data anywhere ----------------------------------------------------------------------


def secrets_of(tracks) -> list[str]:
    """What must never show: every track as on the card, its PAN, and the name."""
    out = [t for t in tracks if t and t[1:] != "E?"]
    for t in out:
        if t.startswith("%B"):
            out.append(t.split("^")[1])  # the name
    return out


def assert_nothing_leaks(caplog, events, secrets, pan):
    shown = caplog.text + repr(events) + str(events) + " ".join(
        event.reason for event in events if isinstance(event, ReadFailed | ProtocolViolation))
    for secret in [*secrets, pan]:
        assert secret not in shown


REAL_SWIPES = [
    ((VISA_T1, VISA_T2, None), PAN),
    ((PADILLA_T1, PADILLA_T2, PADILLA_T3), PADILLA_PAN),
    ((VISA_T1, PADILLA_T2, None), PADILLA_PAN),  # disagreeing tracks
    ((f"%B{PAN}^DOE/JOHN^2513101?", None, None), PAN),  # bad expiry
    ((None, VISA_T2, ";01" + PADILLA_PAN + "=724?"), PADILLA_PAN),  # a bad track 3
    ((None, f";{PAN}=2512101{'0' * 30}?", None), PAN),  # too long
]


@pytest.mark.parametrize("options", [MAGTEK, SENTINEL])
@pytest.mark.parametrize(("tracks", "pan"), REAL_SWIPES)
@pytest.mark.parametrize("templates", [None, {"CLOSED": CLOSED}])
def test_real_swipes_leak_nothing(caplog, options, tracks, pan, templates):
    caplog.set_level(logging.DEBUG)
    reader = MagstripeReader(options, templates)
    events = reader.receive_data(encode_swipe(*tracks, options)) + reader.receive_data(b"%B" + PAN.encode())
    events += reader.connection_lost()
    assert events and caplog.records  # the reader did log about these swipes
    assert_nothing_leaks(caplog, events, secrets_of(tracks), pan)
    assert_nothing_leaks(caplog, events, [], PAN)


def test_a_read_card_is_logged_masked(caplog):
    caplog.set_level(logging.DEBUG)
    assert read(encode_swipe(VISA_T1, VISA_T2, None, MAGTEK)) == [card()]
    assert "411111******1111" in caplog.text
    assert PAN not in caplog.text


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(framings, pans, names, expiries, track_sets, st.integers(0, 300), st.binary(max_size=3))
def test_random_and_damaged_swipes_leak_nothing(caplog, options, pan, name, expiry, which, at, damage):
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    tracks = tracks_for(pan, name, expiry, which)
    data = encode_swipe(*tracks, options)
    at %= len(data)
    damaged = data[:at] + damage + data[at + len(damage):]
    events = read(data, options, {"GIFT": GIFT}) + read(data, options) + read(damaged, options)
    cut = MagstripeReader(options)
    events += cut.receive_data(damaged[:at]) + cut.connection_lost()
    assert_nothing_leaks(caplog, events, [t for t in tracks if t], pan)

"""The sync wire contract: messages survive msgpack unchanged, and anything malformed is a ProtocolError."""

import uuid
from datetime import UTC, datetime, timedelta, timezone

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import OperationKind
from sync.messages import (
    DEBIT_KINDS,
    MAX_BATCH,
    PROTOCOL_VERSION,
    SYNCED_KINDS,
    BlockGrant,
    CardSnapshot,
    Cursor,
    DenyChange,
    EntryResult,
    EntryStatus,
    OutboxEntry,
    ProgrammeSpec,
    ProtocolError,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    StoreSettings,
    TillCredential,
    decode,
    encode,
)

NOW = datetime(2024, 5, 17, 10, 30, 15, 123456, tzinfo=UTC)
ID1, ID2 = uuid.UUID(int=1), uuid.UUID("6f1c2b9e-8f0a-4d55-9a0e-3c1e2b7a9d10")


def entry(seq: int = 1, txn_id: uuid.UUID = ID1, **kw) -> OutboxEntry:
    fields = {"seq": seq, "txn_id": txn_id, "kind": OperationKind.PAYMENT, "card_number": "6001000000000017",
              "amount": 1250, "currency": "EUR", "till": "T1", "decided_at": NOW}
    return OutboxEntry(**{**fields, **kw})


PUSH = PushRequest(store="S1", epoch=2, entries=(entry(1), entry(2, ID2, kind=OperationKind.PAYMENT_CANCEL,
                                                                    original_txn_id=ID1)),
                   backlog=7, offline_exposure=1250, sent_at=NOW)
STORE = StoreSettings(code="S1", exposure_budget=100000, budget_currency="EUR", epoch=1, acked_seq=41,
                      quarantined=False)
PROGRAMME = ProgrammeSpec(code="GIFT", name="Gift card", kind="gift", currency="EUR", number_prefix="6001",
                          number_length=16, luhn=True, nominal_values=(2500, 5000, 10000), min_amount=1,
                          max_amount=5000000, topup_allowed=False, max_balance=None, validity_months=36,
                          hold_ttl_seconds=900, hold_expiry_policy="reverse", service_code="120", floor_limit=5000,
                          card_offline_amount=20000, card_offline_count=3)

SAMPLES = [
    entry(),
    entry(7, ID2, kind=OperationKind.STORE_ISSUE, programme="GIFT", till=None, deny_version=12,
          device_time=datetime(2024, 5, 17, 12, 29, tzinfo=timezone(timedelta(hours=2)))),
    PUSH,
    PushRequest(store="S2", epoch=0, entries=(), backlog=0, offline_exposure=0, sent_at=NOW),
    EntryResult(seq=3, txn_id=ID1, status=EntryStatus.REJECTED, flags=("overdraft", "deny_listed"), message="late"),
    PushResponse(acked_seq=2, epoch=2, quarantined=True, message="held",
                 results=(EntryResult(seq=1, txn_id=ID1, status=EntryStatus.APPLIED),
                          EntryResult(seq=2, txn_id=ID2, status=EntryStatus.HELD))),
    PushResponse(acked_seq=0, epoch=0),
    Cursor(deny_version=4, card_feed=900, watch_feed=12, config_version=3),
    PullRequest(store="S1"),
    PullRequest(store="S1", cursor=Cursor(card_feed=5), want_blocks=("GIFT", "FLEX"),
                watch=("6001000000000017", "12345678")),
    DenyChange(number="6001000000000017", listed=True, reason="lost", version=9),
    CardSnapshot(number="6001000000000017", programme="GIFT", state="active", balance=-300, held=0,
                 expires_on="2026-01-31", pack_sellable=True),
    PROGRAMME,
    BlockGrant(id=4, programme="GIFT", first_serial=1000, count=500),
    TillCredential(code="T1", token_hash="ab" * 32, active=True),
    STORE,
    PullResponse(cursor=Cursor(), server_time=NOW, store=STORE),
    PullResponse(cursor=Cursor(deny_version=9, card_feed=77, config_version=2), server_time=NOW, store=STORE,
                 deny=(DenyChange(number="6001000000000017", listed=False, reason="found", version=9),),
                 cards=(CardSnapshot(number="6001000000000025", programme="GIFT", state="active", balance=100,
                                     held=50),),
                 programmes=(PROGRAMME,), tills=(TillCredential(code="T2", token_hash="0" * 64, active=False),),
                 blocks=(BlockGrant(id=1, programme="GIFT", first_serial=0, count=10),), more=True),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message):
    data = encode(message)
    assert isinstance(data, bytes)
    back = decode(data, type(message))
    assert back == message
    assert type(back) is type(message)


def test_round_trip_keeps_the_instant_and_types():
    back = decode(encode(SAMPLES[1]), OutboxEntry)
    assert back.kind is OperationKind.STORE_ISSUE
    assert back.txn_id == ID2 and isinstance(back.txn_id, uuid.UUID)
    assert back.device_time == datetime(2024, 5, 17, 10, 29, tzinfo=UTC)


def test_decode_accepts_bytearray_and_memoryview():
    data = encode(PUSH)
    assert decode(bytearray(data), PushRequest) == PUSH
    assert decode(memoryview(data), PushRequest) == PUSH


entries = st.builds(
    OutboxEntry,
    seq=st.integers(min_value=1, max_value=2**63 - 1),
    txn_id=st.uuids(),
    kind=st.sampled_from(SYNCED_KINDS),
    card_number=st.from_regex(r"\A[0-9]{8,19}\Z"),
    amount=st.integers(min_value=0, max_value=10**12),
    currency=st.sampled_from(["EUR", "CHF", "USD"]),
    till=st.none() | st.from_regex(r"\A[A-Za-z0-9_.-]{1,32}\Z"),
    original_txn_id=st.none() | st.uuids(),
    programme=st.none() | st.just("GIFT"),
    deny_version=st.integers(min_value=0, max_value=2**32),
    # Offsets in whole minutes: ISO 8601 (and pydantic) cannot carry the seconds of pre-1970 local mean times.
    decided_at=st.datetimes(min_value=datetime(1970, 1, 2), timezones=st.builds(
        timezone, st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timedelta(minutes=m)))),
    device_time=st.none() | st.datetimes(timezones=st.just(UTC)),
)


@given(entries)
def test_any_valid_entry_round_trips(value):
    assert decode(encode(value), OutboxEntry) == value


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_protocol_error(data):
    for model in (PushRequest, PushResponse, PullRequest, PullResponse):
        try:
            decode(data, model)
        except ProtocolError:
            pass


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats()
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["store", "epoch", "entries", "backlog", "offline_exposure", "sent_at",
                                        "version", "other"]), msgpack_values))
def test_arbitrary_well_formed_msgpack_maps_raise_only_protocol_error(raw):
    try:
        decode(msgpack.packb(raw), PushRequest)
    except ProtocolError:
        pass


def test_decode_refuses_what_is_not_bytes():
    with pytest.raises(ProtocolError):
        decode("not bytes", PushRequest)  # type: ignore[arg-type]


def raw_push() -> dict:
    return msgpack.unpackb(encode(PUSH))


def with_entry(**changes) -> dict:
    raw = raw_push()
    raw["entries"][0].update(changes)
    return raw


def without(raw: dict, key: str) -> dict:
    raw.pop(key)
    return raw


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param([1, 2, 3], id="list-not-map"),
        pytest.param("PushRequest", id="string-not-map"),
        pytest.param(42, id="int-not-map"),
        pytest.param(None, id="nil"),
        pytest.param({}, id="empty-map"),
        pytest.param(without(raw_push(), "store"), id="missing-store"),
        pytest.param({**raw_push(), "store": 7}, id="store-int"),
        pytest.param({**raw_push(), "store": "S 1"}, id="store-with-space"),
        pytest.param({**raw_push(), "store": "S" * 33}, id="store-too-long"),
        pytest.param({**raw_push(), "entries": {"0": 1}}, id="entries-map"),
        pytest.param({**raw_push(), "epoch": -1}, id="negative-epoch"),
        pytest.param({**raw_push(), "epoch": "2"}, id="epoch-string"),
        pytest.param({**raw_push(), "backlog": 1.0}, id="backlog-float"),
        pytest.param({**raw_push(), "offline_exposure": -1}, id="negative-exposure"),
        pytest.param({**raw_push(), "extra": 1}, id="extra-field"),
        pytest.param({**raw_push(), "sent_at": "2024-05-17T10:30:15"}, id="naive-sent-at"),
        pytest.param({**raw_push(), "sent_at": "yesterday"}, id="bad-sent-at"),
        pytest.param(with_entry(amount=-1), id="negative-amount"),
        pytest.param(with_entry(amount=12.5), id="float-amount"),
        pytest.param(with_entry(amount=12.0), id="whole-float-amount"),
        pytest.param(with_entry(amount=True), id="bool-amount"),
        pytest.param(with_entry(amount="1250"), id="string-amount"),
        pytest.param(with_entry(amount=10**12 + 1), id="huge-amount"),
        pytest.param(with_entry(seq=0), id="seq-zero"),
        pytest.param(with_entry(seq=True), id="bool-seq"),
        pytest.param(with_entry(seq=1.0), id="float-seq"),
        pytest.param(with_entry(deny_version=False), id="bool-deny-version"),
        pytest.param(with_entry(card_number="600100000000001X"), id="card-letter"),
        pytest.param(with_entry(card_number="1234567"), id="card-too-short"),
        pytest.param(with_entry(card_number="1" * 20), id="card-too-long"),
        pytest.param(with_entry(card_number="6001000000000017\n"), id="card-trailing-newline"),
        pytest.param(with_entry(card_number="\u0661" * 16), id="card-arabic-indic-digits"),
        pytest.param(with_entry(card_number=6001000000000017), id="card-int"),
        pytest.param(with_entry(currency="eur"), id="currency-lowercase"),
        pytest.param(with_entry(kind="teleport"), id="unknown-kind"),
        pytest.param(with_entry(txn_id="not-a-uuid"), id="bad-uuid"),
        pytest.param(with_entry(decided_at="2024-05-17T10:30:15"), id="naive-decided-at"),
        pytest.param(with_entry(device_time="2024-05-17T10:30:15"), id="naive-device-time"),
        pytest.param(with_entry(extra="x"), id="entry-extra-field"),
        pytest.param({**raw_push(), "entries": [[1, 2]]}, id="entry-list"),
    ],
)
def test_malformed_push_is_a_protocol_error(raw):
    with pytest.raises(ProtocolError) as caught:
        decode(msgpack.packb(raw), PushRequest)
    assert caught.value.code == "bad_sync_message"


@pytest.mark.parametrize("version", [0, 2, -1, "1", None, True, 1.0, [1]])
def test_other_protocol_version_is_unsupported(version):
    with pytest.raises(ProtocolError) as caught:
        decode(msgpack.packb({**raw_push(), "version": version}), PushRequest)
    assert caught.value.code == "unsupported_version"


def test_current_version_is_accepted_explicitly_and_by_default():
    assert decode(msgpack.packb({**raw_push(), "version": PROTOCOL_VERSION}), PushRequest) == PUSH
    assert decode(msgpack.packb(without(raw_push(), "version")), PushRequest) == PUSH


def test_garbage_and_truncated_bytes_are_protocol_errors():
    data = encode(PUSH)
    for bad in (b"", b"\xc1", data[:-1], data + b"\x00", b"\xd9\x05abc"):
        with pytest.raises(ProtocolError):
            decode(bad, PushRequest)


def test_binary_strings_are_refused():
    raw = msgpack.packb({**raw_push(), "store": b"S1"}, use_bin_type=True)
    with pytest.raises(ProtocolError):
        decode(raw, PushRequest)


def test_non_string_map_keys_are_refused():
    with pytest.raises(ProtocolError):
        decode(msgpack.packb({1: "x"}), PushRequest)


def test_a_message_decoded_as_another_model_is_refused():
    with pytest.raises(ProtocolError):
        decode(encode(PUSH), PullRequest)
    with pytest.raises(ProtocolError):
        decode(encode(PullRequest(store="S1")), PushRequest)


def test_max_batch_size_is_enforced():
    one = msgpack.unpackb(encode(entry()))
    at_max = {**raw_push(), "entries": [{**one, "seq": i, "txn_id": str(uuid.UUID(int=i))}
                                        for i in range(1, MAX_BATCH + 1)]}
    assert len(decode(msgpack.packb(at_max), PushRequest).entries) == MAX_BATCH
    over = {**at_max, "entries": at_max["entries"] + [{**one, "seq": MAX_BATCH + 1}]}
    with pytest.raises(ProtocolError):
        decode(msgpack.packb(over), PushRequest)
    with pytest.raises(ValueError):  # pydantic refuses building one locally, too
        PushRequest(store="S1", epoch=0, entries=(entry(),) * (MAX_BATCH + 1), backlog=0, offline_exposure=0,
                    sent_at=NOW)


def test_watch_list_size_is_enforced():
    over = {"store": "S1", "watch": ["12345678"] * (MAX_BATCH + 1)}
    with pytest.raises(ProtocolError):
        decode(msgpack.packb(over), PullRequest)


def test_messages_are_immutable():
    with pytest.raises(ValueError):
        PUSH.epoch = 3  # type: ignore[misc]


def test_fingerprint_identifies_the_operation_not_its_id_or_sequence():
    a = entry(1, ID1).fingerprint("S1")
    assert entry(9, ID2).fingerprint("S1") == a
    assert entry(1, ID1).fingerprint("S2") != a
    assert entry(1, ID1, amount=1251).fingerprint("S1") != a
    assert entry(1, ID1, card_number="6001000000000025").fingerprint("S1") != a
    assert entry(1, ID1, kind=OperationKind.REFUND).fingerprint("S1") != a
    assert entry(1, ID1, till="T2").fingerprint("S1") != a
    assert entry(1, ID1, original_txn_id=ID2).fingerprint("S1") != a


def test_debit_kinds_are_synced_kinds_that_take_value_off_a_card():
    assert set(DEBIT_KINDS) <= set(SYNCED_KINDS)
    assert OperationKind.PAYMENT in DEBIT_KINDS
    assert not {OperationKind.TOPUP, OperationKind.REFUND, OperationKind.SALE} & set(DEBIT_KINDS)

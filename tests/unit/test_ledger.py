"""The ledger's pure parts: request fingerprints, balances derived from entries, cancellations."""

import hashlib
from collections import defaultdict
from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from core import CANCELS, Entry, EntryKind, OperationKind, balances, fingerprint

# --- fingerprint ---------------------------------------------------------------------------------


def test_fingerprint_ignores_key_order():
    a = {"card": "6001000000000048", "amount": 500, "store": 7}
    b = {"store": 7, "amount": 500, "card": "6001000000000048"}
    assert fingerprint(a) == fingerprint(b)


def test_fingerprint_ignores_nested_key_order():
    a = {"op": "sale", "meta": {"till": 3, "cashier": "ann"}}
    b = {"meta": {"cashier": "ann", "till": 3}, "op": "sale"}
    assert fingerprint(a) == fingerprint(b)


def test_fingerprint_differs_for_different_requests():
    base = {"card": "6001000000000048", "amount": 500}
    prints = {
        fingerprint(base),
        fingerprint(base | {"amount": 501}),
        fingerprint(base | {"card": "6001000000000055"}),
        fingerprint(base | {"store": 7}),
        fingerprint({"amount": "500", "card": "6001000000000048"}),  # a string is not a number
        fingerprint({}),
    }
    assert len(prints) == 6


def test_fingerprint_is_a_sha256_of_canonical_json():
    # Pinned: stored fingerprints must still match after an upgrade.
    assert fingerprint({"b": 2, "a": [1, "x"]}) == hashlib.sha256(b'{"a":[1,"x"],"b":2}').hexdigest()


def test_fingerprint_accepts_non_json_values():
    assert fingerprint({"on": date(2024, 2, 29)}) == fingerprint({"on": date(2024, 2, 29)})
    assert fingerprint({"on": date(2024, 2, 29)}) != fingerprint({"on": date(2024, 3, 1)})


@given(st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8) | st.none(), max_size=8))
def test_fingerprint_is_independent_of_insertion_order(payload):
    reversed_payload = dict(reversed(list(payload.items())))
    assert fingerprint(payload) == fingerprint(reversed_payload)


# --- balances ------------------------------------------------------------------------------------


def test_no_entries_no_accounts():
    assert balances([]) == {}


def test_balances_sum_per_account():
    entries = [
        Entry(1, EntryKind.ACTIVATION, 5000),
        Entry(2, EntryKind.ACTIVATION, 2500),
        Entry(1, EntryKind.PAYMENT, -1200),
        Entry(1, EntryKind.REFUND, 200),
        Entry(2, EntryKind.PAYMENT, -2500),
    ]
    assert balances(entries) == {1: (4000, 0), 2: (0, 0)}


def test_hold_capture_and_release_move_held_and_balance():
    entries = [
        Entry(1, EntryKind.ACTIVATION, 10_000),
        Entry(1, EntryKind.HOLD, 0, held_delta=3000),
        Entry(1, EntryKind.HOLD, 0, held_delta=1000),
    ]
    assert balances(entries) == {1: (10_000, 4000)}
    entries += [
        Entry(1, EntryKind.CAPTURE, -2500, held_delta=-3000),  # confirmed for less than held
        Entry(1, EntryKind.RELEASE, 0, held_delta=-1000),
    ]
    assert balances(entries) == {1: (7500, 0)}


def test_transfer_moves_value_between_accounts():
    entries = [
        Entry(1, EntryKind.ACTIVATION, 3000),
        Entry(1, EntryKind.TRANSFER_OUT, -3000),
        Entry(2, EntryKind.TRANSFER_IN, 3000),
    ]
    assert balances(entries) == {1: (0, 0), 2: (3000, 0)}


def test_balances_accepts_a_generator():
    assert balances(Entry(9, EntryKind.LOAD, n) for n in (100, 200, 300)) == {9: (600, 0)}


entries_strategy = st.lists(
    st.builds(Entry, st.integers(1, 5), st.sampled_from(EntryKind), st.integers(-10**6, 10**6),
              st.integers(-10**6, 10**6)),
    max_size=50,
)


@given(entries_strategy)
def test_balances_equal_the_sum_of_amounts(entries):
    expected = defaultdict(lambda: [0, 0])
    for e in entries:
        expected[e.account_id][0] += e.amount
        expected[e.account_id][1] += e.held_delta
    assert balances(entries) == {k: tuple(v) for k, v in expected.items()}


@given(entries_strategy, entries_strategy)
def test_balances_of_a_concatenation_add_up(first, second):
    a, b, both = balances(first), balances(second), balances(first + second)
    for account in set(a) | set(b):
        ab, ah = a.get(account, (0, 0))
        bb, bh = b.get(account, (0, 0))
        assert both[account] == (ab + bb, ah + bh)


# --- cancellations -------------------------------------------------------------------------------


def test_each_cancellation_names_its_original_kind():
    assert CANCELS == {
        OperationKind.SALE_CANCEL: OperationKind.SALE,
        OperationKind.PAYMENT_CANCEL: OperationKind.PAYMENT,
        OperationKind.TOPUP_CANCEL: OperationKind.TOPUP,
        OperationKind.REFUND_CANCEL: OperationKind.REFUND,
    }


def test_every_cancel_kind_is_mapped():
    cancel_kinds = {k for k in OperationKind if k.value.endswith("_cancel")}
    assert cancel_kinds == set(CANCELS)
    assert not set(CANCELS.values()) & cancel_kinds  # a cancellation is never itself cancelled

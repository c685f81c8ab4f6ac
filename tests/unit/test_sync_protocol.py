"""Sync rules: batch checks, contiguous acknowledgements, pruning and retry timing."""

import random
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import OperationKind
from sync.messages import OutboxEntry, ProtocolError, PushResponse
from sync.protocol import accept_ack, backoff_delay, check_batch, contiguous_ack, next_batch

NOW = datetime(2024, 5, 17, 10, 30, tzinfo=UTC)


def uid(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


def entry(seq: int, txn: int | None = None) -> OutboxEntry:
    return OutboxEntry(seq=seq, txn_id=uid(seq if txn is None else txn), kind=OperationKind.PAYMENT,
                       card_number="6001000000000017", amount=100, currency="EUR", decided_at=NOW)


# check_batch


def test_ordered_new_batch_is_accepted():
    assert check_batch([entry(1), entry(2), entry(3)], {}) is None
    assert check_batch([], {}) is None


def test_batch_may_have_gaps_in_sequence():
    # Gaps are not a conflict: the ack stays below them until the missing entries arrive.
    assert check_batch([entry(1), entry(5)], {}) is None


@pytest.mark.parametrize("seqs", [[2, 1], [1, 3, 2], [1, 1], [4, 5, 5]])
def test_backwards_or_repeated_sequence_is_a_conflict(seqs):
    reason = check_batch([entry(s, txn=100 + i) for i, s in enumerate(seqs)], {})
    assert reason is not None and "backwards" in reason


def test_same_id_twice_in_a_batch_is_a_conflict():
    reason = check_batch([entry(1, txn=7), entry(2, txn=7)], {})
    assert reason is not None and "twice" in reason


def test_recorded_sequence_under_another_id_is_a_conflict():
    reason = check_batch([entry(1), entry(2), entry(3)], {2: uid(999)})
    assert reason is not None and str(uid(999)) in reason and str(uid(2)) in reason


def test_resend_with_the_same_ids_is_accepted():
    batch = [entry(1), entry(2), entry(3)]
    assert check_batch(batch, {1: uid(1), 2: uid(2), 3: uid(3)}) is None
    assert check_batch(batch, {1: uid(1)}) is None  # partly recorded before the answer was lost


def test_recorded_sequences_outside_the_batch_do_not_matter():
    assert check_batch([entry(5)], {1: uid(999)}) is None


# contiguous_ack


@pytest.mark.parametrize(
    ("acked", "present", "expected"),
    [
        (0, [], 0),
        (0, [1, 2, 3], 3),
        (0, [3, 1, 2], 3),  # order of arrival does not matter
        (0, [2, 3], 0),  # 1 is missing
        (0, [1, 2, 4, 5], 2),  # gap at 3
        (5, [6, 7, 9], 7),
        (5, [1, 2, 3, 6], 6),  # already acked sequences are ignored
        (5, [5, 6], 6),
        (3, [], 3),  # never goes below what was acked
        (0, [1, 1, 2, 2, 3], 3),  # a sequence listed twice (batch and database) is no gap
    ],
)
def test_contiguous_ack(acked, present, expected):
    assert contiguous_ack(acked, present) == expected


def test_contiguous_ack_takes_any_iterable():
    assert contiguous_ack(0, iter([2, 1])) == 2
    assert contiguous_ack(0, {1: "a", 2: "b"}.keys()) == 2


@given(acked=st.integers(0, 50), present=st.sets(st.integers(1, 80)))
def test_contiguous_ack_is_the_end_of_the_run_after_acked(acked, present):
    result = contiguous_ack(acked, present)
    assert result >= acked
    assert all(s in present for s in range(acked + 1, result + 1))
    assert result + 1 not in present


# next_batch


def test_next_batch_is_the_oldest_entries_in_order():
    pending = [entry(4), entry(2), entry(3), entry(1)]
    assert [e.seq for e in next_batch(pending, 3)] == [1, 2, 3]
    assert [e.seq for e in next_batch(pending, 10)] == [1, 2, 3, 4]
    assert next_batch([], 5) == []


# accept_ack


def response(acked: int, epoch: int) -> PushResponse:
    return PushResponse(acked_seq=acked, epoch=epoch)


def test_ack_moving_forward_or_standing_is_accepted():
    assert accept_ack(5, 1, response(9, 1)) == 9
    assert accept_ack(5, 1, response(5, 1)) == 5


def test_ack_going_backwards_in_the_same_epoch_is_refused():
    with pytest.raises(ProtocolError) as caught:
        accept_ack(5, 1, response(4, 1))
    assert caught.value.code == "ack_went_backwards"


def test_ack_below_after_an_epoch_change_is_accepted():
    # After an operator release central's epoch moves on and the edge renumbers from its acked_seq.
    assert accept_ack(5, 1, response(2, 2)) == 2
    assert accept_ack(5, 1, response(0, 2)) == 0


# backoff_delay


def test_no_failure_waits_the_base():
    assert backoff_delay(0, 1.5, 60) == 1.5
    assert backoff_delay(-3, 1.5, 60) == 1.5


@given(failures=st.integers(1, 200), seed=st.integers(0, 2**32))
def test_delay_stays_within_base_and_cap(failures, seed):
    delay = backoff_delay(failures, 0.5, 30.0, random.Random(seed))
    assert 0.5 <= delay <= 30.0
    assert delay <= 0.5 * 2**failures  # the exponential ceiling, before the cap bites


def test_delay_grows_with_failures_until_the_cap():
    # Same random draw for each count: the delay can only grow with the ceiling.
    delays = [backoff_delay(n, 1.0, 60.0, random.Random(7)) for n in range(1, 12)]
    assert delays == sorted(delays)
    assert delays[4] > delays[0]
    assert delays[-1] == delays[-2]  # capped: 2**10 and 2**11 are both over 60


def test_delay_ceiling_grows_over_many_draws():
    rng = random.Random(1234)
    highest = [max(backoff_delay(n, 1.0, 1000.0, rng) for _ in range(400)) for n in (1, 3, 6)]
    assert highest[0] <= 2.0 and 4.0 < highest[1] <= 8.0 and 32.0 < highest[2] <= 64.0
    assert max(backoff_delay(30, 1.0, 1000.0, rng) for _ in range(400)) > 900


def test_delay_is_jittered():
    rng = random.Random(99)
    assert len({backoff_delay(5, 1.0, 60.0, rng) for _ in range(20)}) > 1


def test_same_seed_gives_the_same_delay():
    assert backoff_delay(4, 1.0, 60.0, random.Random(5)) == backoff_delay(4, 1.0, 60.0, random.Random(5))


def test_huge_failure_counts_do_not_overflow():
    assert 1.0 <= backoff_delay(10**6, 1.0, 300.0, random.Random(0)) <= 300.0

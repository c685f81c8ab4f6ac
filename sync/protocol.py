"""The sync rules both ends follow, without I/O: batch checks, acknowledgements, retry timing.

Central calls :func:`check_batch` before applying a batch and :func:`contiguous_ack` after it; the
edge calls :func:`next_batch` to cut its outbox and :func:`accept_ack` to decide what it may prune.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable, Mapping, Sequence

from .messages import OutboxEntry, ProtocolError, PushResponse

__all__ = ["check_batch", "contiguous_ack", "next_batch", "accept_ack", "backoff_delay"]


def check_batch(entries: Sequence[OutboxEntry], recorded: Mapping[int, uuid.UUID]) -> str | None:
    """Why a batch must be quarantined, or None.

    ``recorded`` maps the sequence numbers of this batch that central already holds to the entry id
    it holds under each. A sequence that goes backwards within the batch, or an already recorded
    sequence under another id, means the store's database was restored from an old copy or cloned:
    the batch is kept aside for an operator rather than applied.
    """
    previous = 0
    seen: set[uuid.UUID] = set()
    for entry in entries:
        if entry.seq <= previous:
            return f"sequence goes backwards: {entry.seq} after {previous}"
        if entry.txn_id in seen:
            return f"entry {entry.txn_id} appears twice in one batch"
        previous = entry.seq
        seen.add(entry.txn_id)
        held = recorded.get(entry.seq)
        if held is not None and held != entry.txn_id:
            return f"sequence {entry.seq} was recorded under entry {held}, now sent as {entry.txn_id}"
    return None


def contiguous_ack(acked: int, present: Iterable[int]) -> int:
    """The highest sequence reachable from ``acked`` through sequences central holds, with no gap."""
    for seq in sorted({s for s in present if s > acked}):  # a set: a sequence listed twice is no gap
        if seq != acked + 1:
            break
        acked = seq
    return acked


def next_batch(pending: Sequence[OutboxEntry], limit: int) -> list[OutboxEntry]:
    """The next batch to push: the oldest ``limit`` entries, in sequence order."""
    return sorted(pending, key=lambda e: e.seq)[:limit]


def accept_ack(local_acked: int, local_epoch: int, response: PushResponse) -> int:
    """The sequence up to which the edge may prune, given central's answer.

    An acknowledgement never goes backwards within an epoch (invariant 7); one that does means
    central lost data or the answer is not central's, and the edge must stop and keep everything.
    """
    if response.epoch == local_epoch and response.acked_seq < local_acked:
        raise ProtocolError(f"central acknowledged up to {response.acked_seq}, below {local_acked} acked before",
                            code="ack_went_backwards")
    return response.acked_seq


def backoff_delay(failures: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after ``failures`` failed attempts in a row: exponential with full jitter."""
    if failures <= 0:
        return base
    ceiling = min(cap, base * 2 ** min(failures, 30))
    return (rng or random).uniform(base, max(base, ceiling))

"""Group commit: till payments, top-ups and payment cancels that arrive together are decided and written in one
transaction, so the per-transaction costs (BEGIN, COMMIT and its WAL flush, a pool checkout) are
paid once per batch rather than once per request.

Each request is still decided on its own, in arrival order, by the same domain rules, against the
balances left by the requests before it. A batch either commits whole or not at all; when it cannot
commit (a transaction id recorded meanwhile, a deadlock, any error) every request in it is run again
alone, so grouping never changes an answer.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from core import OperationKind

from .ledger import Origin
from .till import TillRequest, TillService

__all__ = ["GroupCommit", "BATCHED"]

log = logging.getLogger("tessera.batching")
CANCEL = OperationKind.PAYMENT_CANCEL
BATCHED = frozenset({OperationKind.PAYMENT, OperationKind.TOPUP, OperationKind.PAYMENT_CANCEL})

Answer = tuple[dict[str, Any], bool]


class GroupCommit:
    def __init__(self, till: TillService, *, max_batch: int = 64, max_in_flight: int = 2) -> None:
        self.till = till
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._queue: list[tuple[TillRequest, Origin, asyncio.Future]] = []
        self._in_flight = 0
        self._drains: set[asyncio.Task] = set()
        self.batches = 0  # counters for health and benchmarks
        self.grouped = 0

    async def execute(self, req: TillRequest, origin: Origin) -> Answer:
        if req.kind not in BATCHED or req.pin_block is not None:  # a PIN check runs alone, off the loop
            return await self.till.execute(req, origin)
        future = asyncio.get_running_loop().create_future()
        self._queue.append((req, origin, future))
        if self._in_flight < self.max_in_flight:
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._drain())
            self._drains.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._drains.discard)
        return await future

    async def _drain(self) -> None:
        # A batch forms from whatever queued while the previous one was in the database.
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                await self._run(batch)
        finally:
            self._in_flight -= 1

    async def _run(self, batch: list[tuple[TillRequest, Origin, asyncio.Future]]) -> None:
        try:
            answers = await self._commit(batch) if len(batch) > 1 else [None]
        except IntegrityError:  # an id of the batch was recorded meanwhile: each request alone
            answers = [None] * len(batch)
        except Exception as exc:  # noqa: BLE001 - the fallback below answers every request anyway
            log.warning("group commit fell back to single transactions size=%d error=%r", len(batch), exc)
            answers = [None] * len(batch)
        alone = []
        for (req, origin, future), answer in zip(batch, answers):
            if future.done():
                continue
            if answer is None:
                alone.append(self._single(req, origin, future))
            else:
                future.set_result(answer)
        if alone:
            await asyncio.gather(*alone)

    async def _single(self, req: TillRequest, origin: Origin, future: asyncio.Future) -> None:
        try:
            answer = await self.till.execute(req, origin)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(answer)

    async def _commit(self, batch: list[tuple[TillRequest, Origin, asyncio.Future]]) -> list[Answer | None]:
        """Decide and write what can be grouped; None marks a request to run alone afterwards
        (a repeat, an unknown card or one without an account: the single path knows those)."""
        ledger = self.till.ledger
        now = datetime.now(UTC)
        answers: list[Answer | None] = [None] * len(batch)
        seen: set = set()
        candidates = []
        for i, (req, _, _) in enumerate(batch):
            if req.txn_id not in seen:
                seen.add(req.txn_id)
                candidates.append(i)
        async with ledger.db.begin() as conn:
            cancelled = [batch[i][0].original_txn_id for i in candidates if batch[i][0].kind == CANCEL]
            known = await ledger.lookup(conn, [batch[i][0].txn_id for i in candidates] + cancelled)
            fresh = [i for i in candidates if batch[i][0].txn_id not in known]
            payments = {op_id: known[op_id] for op_id in cancelled
                        if op_id in known and known[op_id].kind == OperationKind.PAYMENT.value
                        and known[op_id].approved}
            locked = await ledger.lock_cards(
                conn, sorted({batch[i][0].card_number for i in fresh if batch[i][0].kind != CANCEL}),
                sorted({o.card_id for o in payments.values()}))
            by_number = {c.number: c for c in locked}
            by_id = {c.id: c for c in locked}
            if payments:
                # Read again under the card locks: a refund or cancel of these payments committed
                # before the lock is seen now, and a later one waits for this batch.
                payments = await ledger.lookup(conn, list(payments))
            settled = {op_id for op_id, o in payments.items() if o.settled}
            # A payment with refunds goes alone: the single path weighs which refunds still stand.
            refunded = {op_id for op_id, o in payments.items() if o.referenced}
            rows, lines = [], []
            for i in fresh:
                req, origin, _ = batch[i]
                if req.kind == CANCEL:
                    orig = payments.get(req.original_txn_id)
                    card = by_id.get(orig.card_id) if orig is not None else None
                    if card is None or orig.id in refunded:
                        continue
                    if req.card_number and req.card_number != card.number:
                        continue  # the single path answers the mismatch
                    outcome = (self.till.cancel_refusal(req, orig, card, settled=orig.id in settled, refunded=0)
                               or self.till.cancel_posting(req, orig, card))
                    if outcome.approved:
                        settled.add(orig.id)  # a second cancel in this batch finds it closed
                else:
                    card = by_number.get(req.card_number)
                    if card is None:
                        continue
                    outcome = self.till.decide_on(card, req, now)
                result = ledger.result(req.txn_id, req.kind, outcome, now)
                rows.append(ledger.operation_row(req.txn_id, req.kind, ledger.digest(req.kind, req.payload(), origin),
                                                 origin, outcome, result, req.device_time, now))
                if outcome.approved:
                    lines.extend((req.txn_id, origin.store_id, e) for e in outcome.entries)
                answers[i] = (result, False)
            if not rows:
                return answers
            await ledger.write_batch(conn, rows, lines, now)
        self.batches += 1
        self.grouped += len(rows)
        return answers

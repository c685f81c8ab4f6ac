"""Central's side of store sync: signed pushes of what stores decided offline, and pulls of what
stores need to decide offline (deny list, card states, limits, tills, number blocks) and the product
catalogue their price checkers show.

A push batch is applied in one transaction, set-based: the store row, the cards and the recorded
operations are read in a handful of statements, every entry is decided in Python by the conflict
rules of DESIGN §5 (the same way whatever the arrival order), and the results are written with one
bulk statement per table. Nothing from a batch is applied unless all of it is.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from core import (
    CANCELS,
    CardEvent,
    CardState,
    DeclineCode,
    EntryKind,
    InvalidInput,
    OperationKind,
    Programme,
    decide_sale,
    expiry_date,
)
from core.loyalty.vouchers import offline_allowed
from sync import (
    DEBIT_KINDS,
    LOYALTY_KINDS,
    BlockGrant,
    CardSnapshot,
    Cursor,
    DenyChange,
    EntryResult,
    EntryStatus,
    OutboxEntry,
    ProgrammeSpec,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    SegmentChange,
    SignatureError,
    StoreSettings,
    TillCredential,
    VoucherSnapshot,
    check_batch,
    check_signature,
    contiguous_ack,
    decode,
    derive_store_secret,
    read_signed,
)
from sync.loyalty import RuleChange
from sync.signing import WINDOW_SECONDS

from ..db import Database
from ..db.tables import (
    accounts,
    cards,
    deny_changes,
    entries,
    loyalty_cards,
    loyalty_rules,
    number_blocks,
    operations,
    packs,
    programmes,
    receipts,
    segment_changes,
    store_cards,
    store_entries,
    stores,
    sync_exceptions,
    sync_nonces,
    sync_quarantine,
    terminals,
    vouchers,
)
from .admin import Forbidden, NotFound, bump_config
from .catalogue import catalogue_changes
from .issuing import reserve_serials
from .ledger import (
    MANY,
    OWNER,
    STORED_VALUE,
    CardRow,
    Ledger,
    Origin,
    Outcome,
    PendingEntry,
    insert_rows_sql,
    json_document,
    mask,
)
from .loyalty import groups_of_store, loyalty_snapshots
from .offline import OVERDRAFT, list_card, listings, release_repaid, unlist_card, watch
from .vouchers import offline_voucher_limits, voucher_of

__all__ = ["SyncService", "SyncStore", "SKEW_SECONDS"]

log = logging.getLogger("tessera.sync")
K = OperationKind
S = EntryStatus
SKEW_SECONDS = 300
# Feeds are read by id, but ids are taken before their transactions commit: rows younger than this
# are shipped and shipped again, and the cursor only moves past rows old enough to be settled.
SETTLE = timedelta(seconds=10)
_ENTRY = {K.PAYMENT: EntryKind.PAYMENT, K.TOPUP: EntryKind.TOPUP, K.REFUND: EntryKind.REFUND,
          K.SALE: EntryKind.ACTIVATION, K.STORE_ISSUE: EntryKind.ACTIVATION}
_CANCEL_ENTRY = {K.SALE_CANCEL: EntryKind.ACTIVATION_CANCEL, K.PAYMENT_CANCEL: EntryKind.PAYMENT_CANCEL,
                 K.TOPUP_CANCEL: EntryKind.TOPUP_CANCEL, K.REFUND_CANCEL: EntryKind.REFUND_CANCEL}
_closer = operations.alias("closer")
_OPERATIONS = {
    name: sa.select(
        operations.c.id, operations.c.kind, operations.c.approved, operations.c.card_id, operations.c.amount,
        operations.c.fingerprint, operations.c.channel, operations.c.store_id,
        sa.exists().where(_closer.c.settles == operations.c.id).label("settled"),
    ).where(many(operations.c.id, "ids"))
    for name, many in MANY.items()
}
_ENTRY_TYPES = {"store_id": "bigint", "epoch": "integer", "seq": "bigint", "txn_id": "uuid", "kind": "varchar",
                "status": "varchar", "flags": "json", "payload": "json", "received_at": "timestamptz"}
_PG_INSERT_STORE_ENTRIES = sa.text(insert_rows_sql(store_entries, "rows", _ENTRY_TYPES))


@dataclass(frozen=True, slots=True)
class SyncStore:
    """A store whose signature checked out."""

    id: int
    code: str


@dataclass(slots=True)
class _Known:
    """An operation as the conflict rules need it: recorded before, or applied earlier in this batch."""

    id: uuid.UUID
    kind: str
    approved: bool
    card_id: int | None
    amount: int
    fingerprint: str
    channel: str
    store_id: int | None
    settled: bool


@dataclass(slots=True)
class _Decision:
    status: EntryStatus
    flags: list[str] = field(default_factory=list)
    message: str = ""


@dataclass
class _Batch:
    """One push's working state inside its transaction."""

    store: Any
    now: datetime
    sent_at: datetime
    known: dict[uuid.UUID, _Known]
    by_number: dict[str, CardRow]
    by_id: dict[int, CardRow]
    denied: Mapping[int, Any]
    tills: dict[str, int]
    rows: list[dict[str, Any]] = field(default_factory=list)
    lines: list[tuple[uuid.UUID, int | None, PendingEntry]] = field(default_factory=list)
    exceptions: list[dict[str, Any]] = field(default_factory=list)
    touched: dict[int, int] = field(default_factory=dict)  # card id -> balance before the batch

    def exception(self, kind: str, entry: OutboxEntry | None, card_id: int | None, **details: Any) -> None:
        self.exceptions.append({
            "store_id": self.store.id, "card_id": card_id, "txn_id": entry.txn_id if entry else None, "kind": kind,
            "details": {**({"seq": entry.seq, "kind": entry.kind.value, "card": mask(entry.card_number),
                            "amount": entry.amount} if entry else {}), **details},
            "status": "open", "created_at": self.now})


def _result(*, seq: int, txn_id: uuid.UUID, status: EntryStatus, flags: tuple[str, ...] = (),
            message: str = "") -> EntryResult:
    # Central made these values itself: skipping validation saves most of a push's Python time.
    return EntryResult.model_construct(seq=seq, txn_id=txn_id, status=status, flags=flags, message=message)


def _insert(conn: AsyncConnection, table: sa.Table):
    return (sqlite if conn.dialect.name == "sqlite" else postgresql).insert(table)


class SyncService:
    def __init__(self, db: Database, ledger: Ledger, key: bytes, *, block_size: int = 1000,
                 page: int = 5000) -> None:
        self.db = db
        self.ledger = ledger
        self.key = key
        self.block_size = block_size
        self.page = page
        self._next_prune = 0.0
        self.loyalty: Any = None  # the LoyaltyService that applies synced receipts, returns and redemptions
        self.vouchers: Any = None  # the VoucherService that applies vouchers taken offline

    # -- authentication ----------------------------------------------------------------------------

    def secret(self, code: str, version: int) -> bytes:
        return derive_store_secret(self.key, code, version)

    async def authenticate(self, headers: Mapping[str, str], method: str, path: str, body: bytes,
                           now: float | None = None) -> SyncStore:
        """The store that signed this request; SignatureError if none did, or it is stale or replayed."""
        now = time.time() if now is None else now
        signed = read_signed(headers)
        async with self.db.reader() as conn:
            row = (await conn.execute(sa.select(stores.c.id, stores.c.code, stores.c.sync_secret_version)
                                      .where(stores.c.code == signed.store, stores.c.active))).first()
        if row is None or row.sync_secret_version == 0:
            raise SignatureError(f"no store {signed.store!r} with a sync secret", code="unknown_store")
        check_signature(signed, self.secret(row.code, row.sync_secret_version), method, path, body, now)
        seen = datetime.fromtimestamp(now, UTC)
        async with self.db.begin() as conn:
            fresh = (await conn.execute(_insert(conn, sync_nonces).values(
                store_id=row.id, nonce=signed.nonce, seen_at=seen).on_conflict_do_nothing()
                .returning(sync_nonces.c.store_id))).first()
            if fresh is None:
                raise SignatureError("this request was seen before", code="replayed_request")
            if time.monotonic() > self._next_prune:
                # Nonces older than the window cannot be replayed anyway (their timestamp is stale).
                self._next_prune = time.monotonic() + 60
                await conn.execute(sa.delete(sync_nonces).where(
                    sync_nonces.c.seen_at < seen - timedelta(seconds=2 * WINDOW_SECONDS)))
        return SyncStore(row.id, row.code)

    # -- push ----------------------------------------------------------------------------------------

    async def push(self, store: SyncStore, body: bytes) -> PushResponse:
        """Apply one pushed batch (all or nothing) and answer per entry with the acknowledged sequence."""
        request = decode(body, PushRequest)
        if request.store != store.code:
            raise Forbidden(f"signed by store {store.code}, sent for store {request.store}")
        for attempt in range(3):
            try:
                return await self._push(store, request, body)
            except (IntegrityError, OperationalError) as exc:
                # An id recorded by a concurrent request, or a deadlock: the batch is decided again.
                if attempt == 2:
                    raise
                log.warning("sync push retried store=%s error=%s", store.code, type(exc).__name__)
        raise AssertionError("unreachable")

    async def _push(self, ref: SyncStore, request: PushRequest, body: bytes) -> PushResponse:
        now = datetime.now(UTC)
        async with self.db.begin() as conn:
            store = (await conn.execute(sa.select(stores).where(stores.c.id == ref.id).with_for_update())).one()
            contact = {"last_contact_at": now, "reported_backlog": request.backlog,
                       "reported_exposure": request.offline_exposure}
            if store.quarantined_at is not None:
                await self._keep_aside(conn, store, body, store.quarantine_reason or "store is quarantined", now)
                await conn.execute(sa.update(stores).where(stores.c.id == store.id).values(**contact))
                return PushResponse(acked_seq=store.acked_seq, epoch=store.epoch, quarantined=True,
                                    message="store is quarantined: an operator must release it")
            if request.epoch != store.epoch:
                await conn.execute(sa.update(stores).where(stores.c.id == store.id).values(**contact))
                return PushResponse(acked_seq=store.acked_seq, epoch=store.epoch, message="epoch changed: pull first")
            recorded = await self._recorded(conn, store, [e.seq for e in request.entries])
            reason = check_batch(request.entries, {seq: r.txn_id for seq, r in recorded.items()})
            if reason is not None:
                quarantine_id = await self._keep_aside(conn, store, body, reason, now)
                await conn.execute(sa.update(stores).where(stores.c.id == store.id).values(
                    quarantined_at=now, quarantine_reason=reason, **contact))
                await conn.execute(sa.insert(sync_exceptions).values(
                    store_id=store.id, kind="quarantine", status="open", created_at=now,
                    details={"reason": reason, "quarantine_id": quarantine_id}))
                log.warning("sync batch quarantined store=%s reason=%r", store.code, reason)
                return PushResponse(acked_seq=store.acked_seq, epoch=store.epoch, quarantined=True, message=reason)
            results, acked = await self._apply(conn, store, request, recorded, now)
            # The store reported itself before this batch: what the batch acknowledged is no longer
            # waiting at the store, so head office sees the figures as they are after the push.
            taken = [e for e in request.entries if e.seq <= acked]
            contact.update(reported_backlog=max(0, request.backlog - len(taken)), reported_exposure=max(
                0, request.offline_exposure - sum(e.amount for e in taken if e.kind in DEBIT_KINDS)))
            await conn.execute(sa.update(stores).where(stores.c.id == store.id).values(acked_seq=acked, **contact))
        log.info("sync push store=%s entries=%d acked=%d", store.code, len(request.entries), acked)
        return PushResponse(acked_seq=acked, epoch=store.epoch, results=tuple(results))

    async def _recorded(self, conn: AsyncConnection, store: Any, seqs: Sequence[int]) -> dict[int, Any]:
        """What central holds under these sequence numbers: this epoch's entries, and below the
        acknowledged sequence those of earlier epochs (the latest wins)."""
        if not seqs:
            return {}
        e = store_entries.c
        rows = await conn.execute(
            sa.select(e.seq, e.epoch, e.txn_id, e.status).where(
                e.store_id == store.id, MANY[conn.dialect.name](e.seq, "seqs"),
                sa.or_(e.epoch == store.epoch, e.seq <= store.acked_seq)).order_by(e.epoch),
            {"seqs": list(seqs)})
        return {r.seq: r for r in rows}

    async def _keep_aside(self, conn: AsyncConnection, store: Any, body: bytes, reason: str, now: datetime) -> int:
        """Keep a batch's raw bytes for an operator (each distinct batch once)."""
        digest = sha256(body).hexdigest()
        await conn.execute(_insert(conn, sync_quarantine).values(
            store_id=store.id, received_at=now, reason=reason, body=body, body_sha256=digest)
            .on_conflict_do_nothing())
        return (await conn.execute(sa.select(sync_quarantine.c.id).where(
            sync_quarantine.c.store_id == store.id, sync_quarantine.c.body_sha256 == digest))).scalar_one()

    async def _apply(self, conn: AsyncConnection, store: Any, request: PushRequest, recorded: dict[int, Any],
                     now: datetime) -> tuple[list[EntryResult], int]:
        fresh: list[OutboxEntry] = []
        answers: dict[int, EntryResult] = {}
        for entry in request.entries:
            held = recorded.get(entry.seq)
            if held is None:
                fresh.append(entry)
            elif held.status != S.HELD.value:  # a resent entry: it had its effect the first time
                answers[entry.seq] = _result(seq=entry.seq, txn_id=entry.txn_id, status=S.DUPLICATE)
        # Entries held by earlier pushes (waiting for their original) are tried again after this batch.
        waiting = [(r.epoch, r.seq, OutboxEntry.model_validate(r.payload)) for r in await conn.execute(
            sa.select(store_entries.c.epoch, store_entries.c.seq, store_entries.c.payload)
            .where(store_entries.c.store_id == store.id, store_entries.c.status == S.HELD.value)
            .order_by(store_entries.c.epoch, store_entries.c.seq))]
        batch = await self._load(conn, store, fresh + [w[2] for w in waiting], now, request.sent_at)
        decided: dict[int, _Decision] = {}
        for entry in fresh:
            decided[entry.seq] = await self._decide(conn, batch, entry)
        # Held entries go again once the batch is in (their original may have come with it), in
        # sequence order: the earlier pushes' first, then this batch's.
        retry = [(epoch, entry) for epoch, _, entry in waiting]
        retry += [(None, e) for e in fresh if decided[e.seq].status == S.HELD]
        changed: list[tuple[int, OutboxEntry, _Decision]] = []
        for epoch, entry in retry:
            decision = await self._decide(conn, batch, entry)
            if epoch is None:
                decided[entry.seq] = decision
                continue
            if decision.status != S.HELD:
                changed.append((epoch, entry, decision))
            if epoch == store.epoch and entry.seq in recorded:  # resent while held: answer what it is now
                answers[entry.seq] = _result(seq=entry.seq, txn_id=entry.txn_id, status=decision.status,
                                                 flags=tuple(decision.flags), message=decision.message)
        self._settle_overdrafts(batch)
        await self._write(conn, store, batch, fresh, decided, changed, now)
        present = (await conn.execute(sa.select(store_entries.c.seq).where(
            store_entries.c.store_id == store.id, store_entries.c.epoch == store.epoch,
            store_entries.c.seq > store.acked_seq).order_by(store_entries.c.seq))).scalars().all()
        acked = contiguous_ack(store.acked_seq, present)
        results = []
        for entry in request.entries:
            if entry.seq in decided:
                d = decided[entry.seq]
                results.append(_result(seq=entry.seq, txn_id=entry.txn_id, status=d.status, flags=tuple(d.flags),
                                           message=d.message))
            else:
                results.append(answers.get(entry.seq) or _result(seq=entry.seq, txn_id=entry.txn_id, status=S.HELD))
        return results, acked

    async def _load(self, conn: AsyncConnection, store: Any, entries: list[OutboxEntry], now: datetime,
                    sent_at: datetime) -> _Batch:
        """Everything the batch's decisions read, in a few statements: operations, cards (locked), tills."""
        originals = {e.original_txn_id for e in entries if e.original_txn_id}
        ids = {e.txn_id for e in entries} | originals
        lookup = _OPERATIONS[conn.dialect.name]
        rows = {r.id: r for r in await conn.execute(lookup, {"ids": list(ids)})}
        locked = await self.ledger.lock_any_cards(
            conn, sorted({e.card_number for e in entries}), sorted({r.card_id for r in rows.values() if r.card_id}))
        if originals:
            # Read the originals again under the card locks: a cancel committed meanwhile is seen now.
            rows.update((r.id, r) for r in await conn.execute(lookup, {"ids": list(originals)}))
        known = {r.id: _Known(r.id, r.kind, r.approved, r.card_id, r.amount, r.fingerprint, r.channel, r.store_id,
                              r.settled) for r in rows.values()}
        tills = dict((await conn.execute(sa.select(terminals.c.code, terminals.c.id).where(
            terminals.c.store_id == store.id, terminals.c.kind == "till"))).all())
        return _Batch(store=store, now=now, sent_at=sent_at, known=known, by_number={c.number: c for c in locked},
                      by_id={c.id: c for c in locked}, denied=await listings(conn, [c.id for c in locked]),
                      tills=tills)

    # -- the conflict rules --------------------------------------------------------------------------

    async def _decide(self, conn: AsyncConnection, batch: _Batch, entry: OutboxEntry) -> _Decision:
        """Decide one entry against the batch's state, adding its rows to the batch."""
        digest = entry.fingerprint(batch.store.code)
        known = batch.known.get(entry.txn_id)
        if known is not None:
            return self._already_recorded(batch, entry, known, digest)
        flags = self._clock_flags(batch, entry)
        card = batch.by_number.get(entry.card_number)
        if entry.kind in CANCELS:
            decision = await self._cancel(conn, batch, entry, card, digest, flags)
        elif entry.kind == K.STORE_ISSUE:
            decision = await self._store_issue(conn, batch, entry, card, digest, flags)
        elif entry.kind == K.SALE:
            decision = await self._sale(conn, batch, entry, card, digest, flags)
        elif entry.kind in (K.PAYMENT, K.TOPUP, K.REFUND):
            decision = await self._move(conn, batch, entry, card, digest, flags)
        elif entry.kind in LOYALTY_KINDS and self.loyalty is not None:
            decision = await self._loyalty_entry(conn, batch, entry, card, digest, flags)
        else:
            decision = self._reject(batch, entry, card, digest, flags, DeclineCode.ORIGINAL_MISMATCH,
                                    f"{entry.kind} is not synced")
        if "clock_skew" in decision.flags and decision.status != S.HELD:
            batch.exception("clock_skew", entry, card.id if card else None, decided_at=entry.decided_at.isoformat(),
                            device_time=entry.device_time.isoformat() if entry.device_time else None,
                            sent_at=batch.sent_at.isoformat(), central_time=batch.now.isoformat())
        return decision

    def _already_recorded(self, batch: _Batch, entry: OutboxEntry, known: _Known, digest: str) -> _Decision:
        if known.fingerprint == digest:
            return _Decision(S.DUPLICATE)
        card = batch.by_number.get(entry.card_number)
        # The edge forwarded it online, central recorded it, the answer was lost: the store then
        # decided the same transaction offline. It is the same transaction, posted once.
        if (known.channel == "till" and known.store_id == batch.store.id and known.kind == entry.kind.value
                and card is not None and known.card_id == card.id and known.amount == entry.amount
                and known.approved):
            return _Decision(S.DUPLICATE, ["online"])
        batch.exception("conflict", entry, card.id if card else None, problem="id_conflict",
                        message="transaction id already recorded for another operation")
        return _Decision(S.REJECTED, ["id_conflict"], "transaction id already used for another operation")

    def _clock_flags(self, batch: _Batch, entry: OutboxEntry) -> list[str]:
        """Device and store clocks are informational: a skewed one is flagged, never trusted."""
        skew = timedelta(seconds=SKEW_SECONDS)
        skewed = (entry.decided_at > batch.now + skew or entry.decided_at > batch.sent_at + skew
                  or (entry.device_time is not None and abs(entry.device_time - entry.decided_at) > skew))
        return ["clock_skew"] if skewed else []

    def _record(self, batch: _Batch, entry: OutboxEntry, digest: str, outcome: Outcome, decision: _Decision) -> None:
        """The operation row (and, if approved, its ledger lines) of a decided entry."""
        origin = Origin("offline", batch.store.id, batch.tills.get(entry.till or ""))
        card = outcome.card
        # Kept small: a sync batch writes thousands of these in one statement, and the operation's
        # columns (kind, approval, decline code, amount, card, store) already say the rest.
        result = {"decision": "offline", "seq": entry.seq, "status": decision.status.value, "flags": decision.flags,
                  "message": outcome.message, "decided_at": entry.decided_at.isoformat(),
                  "balance": card.balance if card else None}
        row = self.ledger.operation_row(entry.txn_id, entry.kind, digest, origin, outcome, result,
                                        entry.device_time, batch.now)
        batch.rows.append(row)
        if outcome.approved:
            batch.lines.extend((entry.txn_id, batch.store.id, e) for e in outcome.entries)
        batch.known[entry.txn_id] = _Known(entry.txn_id, entry.kind.value, outcome.approved,
                                           card.id if card else None, outcome.amount, digest, "offline",
                                           batch.store.id, False)

    def _touch(self, batch: _Batch, card: CardRow) -> None:
        batch.touched.setdefault(card.id, card.balance)

    def _reject(self, batch: _Batch, entry: OutboxEntry, card: CardRow | None, digest: str, flags: list[str],
                code: DeclineCode, message: str) -> _Decision:
        """Recorded (declined, so its id stays taken) and flagged for head office, not posted."""
        decision = _Decision(S.REJECTED, [*flags, code.value], message)
        self._record(batch, entry, digest, Outcome.declined(code, message, card), decision)
        batch.exception("rejected", entry, card.id if card else None, code=code.value, message=message)
        return decision

    def _usable(self, batch: _Batch, entry: OutboxEntry, card: CardRow | None) -> tuple[DeclineCode, str] | None:
        if card is None:
            return DeclineCode.UNKNOWN_CARD, "no such card"
        if card.programme.currency != entry.currency:
            return DeclineCode.CURRENCY_MISMATCH, f"card is in {card.programme.currency}"
        return None

    def _deny_flags(self, batch: _Batch, entry: OutboxEntry, card: CardRow) -> list[str]:
        """A debit on a card central had blocked: unknown to the store yet, or the store's fault."""
        listing = batch.denied.get(card.id)
        if listing is None:
            if card.state == CardState.BLOCKED:
                batch.exception("blocked_unknown", entry, card.id, deny_version=None)
                return ["blocked_unknown"]
            return []
        if listing.version > entry.deny_version:
            batch.exception("blocked_unknown", entry, card.id, deny_version=listing.version, reason=listing.reason)
            return ["blocked_unknown"]
        batch.exception("store_fault", entry, card.id, deny_version=listing.version, reason=listing.reason,
                        store_deny_version=entry.deny_version)
        return ["store_fault"]

    async def _move(self, conn: AsyncConnection, batch: _Batch, entry: OutboxEntry, card: CardRow | None,
                    digest: str, flags: list[str]) -> _Decision:
        """Payments always post (the goods left the store), even below zero; top-ups and refunds post."""
        unusable = self._usable(batch, entry, card)
        if unusable:
            return self._reject(batch, entry, card, digest, flags, *unusable)
        if card.account_id is None:
            sellable = (card.state == CardState.IN_PACK and card.pack_status == "authorized"
                        and card.pack_store_id == batch.store.id)
            if entry.kind != K.REFUND or not sellable:
                return self._reject(batch, entry, card, digest, flags, DeclineCode.NOT_ACTIVE, "card is not active")
            await self._activate(conn, card, batch.now)  # a refund onto a new card from the store's stock
        self._touch(batch, card)
        if entry.kind in DEBIT_KINDS:
            flags = flags + self._deny_flags(batch, entry, card)
            if card.state not in (CardState.ACTIVE, CardState.BLOCKED):
                flags.append(f"card_{card.state.value}")
                batch.exception("conflict", entry, card.id, problem=f"card is {card.state.value}")
        sign = -1 if entry.kind in DEBIT_KINDS else 1
        outcome = Outcome(True, card, entry.amount, reference=entry.original_txn_id if entry.kind == K.REFUND else None)
        outcome.entries.append(self.ledger.entry(card, _ENTRY[entry.kind], sign * entry.amount))
        decision = _Decision(S.APPLIED, flags)
        self._record(batch, entry, digest, outcome, decision)
        return decision

    async def _loyalty_entry(self, conn: AsyncConnection, batch: _Batch, entry: OutboxEntry, card: CardRow | None,
                             digest: str, flags: list[str]) -> _Decision:
        """Receipts and returns commute: they post, whatever the card's state now (flagged if not active).
        Offline redemptions were within limits: they post too, into a points debt if the points are gone."""
        unusable = self._usable(batch, entry, card)
        if unusable:
            return self._reject(batch, entry, card, digest, flags, *unusable)
        if entry.loyalty is None:
            return self._reject(batch, entry, card, digest, flags, DeclineCode.ORIGINAL_MISMATCH,
                                f"{entry.kind} without its loyalty details")
        origin = Origin("offline", batch.store.id, batch.tills.get(entry.till or ""))
        if entry.kind == K.RECEIPT_RETURN and entry.original_txn_id is not None and (await conn.execute(
                sa.select(receipts.c.id).where(receipts.c.id == entry.original_txn_id))).first() is None:
            # The receipt may come from another store's backlog: wait for it, as a cancel waits for its original.
            return _Decision(S.HELD, flags, "waiting for the receipt it returns")
        if entry.kind == K.VOUCHER_REDEEM:
            return await self._voucher_use(conn, batch, entry, card, digest, flags, origin)
        outcome, more = await self.loyalty.apply_synced(conn, entry, card, origin, batch.now)
        if not outcome.approved:
            return self._reject(batch, entry, card, digest, flags, outcome.code, outcome.message)
        if card.state != CardState.ACTIVE:
            more.append(f"card_{card.state.value}")
        if entry.kind in DEBIT_KINDS:  # points spent on a card central had blocked
            flags = flags + self._deny_flags(batch, entry, card)
        decision = _Decision(S.APPLIED, flags + more)
        # Written now, not with the batch: the card's lots and points account moved already, and a later
        # entry of the batch on the same card reads them.
        result = {"decision": "offline", "seq": entry.seq, "status": decision.status.value, "flags": decision.flags,
                  "decided_at": entry.decided_at.isoformat(), **outcome.extra}
        row = self.ledger.operation_row(entry.txn_id, entry.kind, digest, origin, outcome, result, entry.device_time,
                                        batch.now)
        await conn.execute(self.ledger.record_statement, row)
        if outcome.entries:
            await self.ledger.post(conn, [(entry.txn_id, batch.store.id, e) for e in outcome.entries], batch.now)
        batch.known[entry.txn_id] = _Known(entry.txn_id, entry.kind.value, True, card.id, outcome.amount, digest,
                                           "offline", batch.store.id, False)
        if more:
            batch.exception("loyalty", entry, card.id, flags=more, **{
                k: v for k, v in outcome.extra.items() if k in ("points_earned", "points_by_rules", "points_owed")})
        return decision

    async def _voucher_use(self, conn: AsyncConnection, batch: _Batch, entry: OutboxEntry, card: CardRow,
                           digest: str, flags: list[str], origin: Origin) -> _Decision:
        """A voucher taken offline always posts (the goods left the store); what central would have refused
        is flagged for head office (see VoucherService.apply_offline_use, which records the operation)."""
        detail = entry.loyalty
        if detail.voucher is None or detail.basket_total is None:
            return self._reject(batch, entry, card, digest, flags, DeclineCode.ORIGINAL_MISMATCH,
                                "a voucher use names its voucher and basket")
        limits = await offline_voucher_limits(conn)
        applied = await self.vouchers.apply_offline_use(
            conn, txn_id=entry.txn_id, voucher_id=detail.voucher, store_id=batch.store.id,
            discount=entry.amount, basket_total=detail.basket_total, currency=entry.currency,
            terminal_id=origin.terminal_id, card_number=entry.card_number, at=entry.decided_at,
            device_time=entry.device_time, limits=limits.get(entry.currency), now=batch.now)
        more = list(applied.get("flags") or [])
        batch.known[entry.txn_id] = _Known(entry.txn_id, entry.kind.value, True, card.id, entry.amount, digest,
                                           "store", batch.store.id, False)
        if more:
            batch.exception("voucher", entry, card.id, flags=more, voucher=detail.voucher)
        return _Decision(S.APPLIED if applied["status"] == "applied" else S.DUPLICATE, flags + more)

    async def _loyalty_card_feed(self, conn: AsyncConnection, store: Any, cursor: Cursor, now: datetime
                                 ) -> tuple[list[int], datetime | None, int, bool]:
        """The store's watched loyalty cards whose loyalty state (tier, discount level, debt) changed after the
        cursor, and the cursor after them: past every settled change, or at the page's last card."""
        after = cursor.loyalty_at or datetime(1970, 1, 1, tzinfo=UTC)
        rows = (await conn.execute(
            sa.select(loyalty_cards.c.card_id, loyalty_cards.c.updated_at)
            .join(store_cards, sa.and_(store_cards.c.card_id == loyalty_cards.c.card_id,
                                       store_cards.c.store_id == store.id))
            .where(sa.or_(loyalty_cards.c.updated_at > after,
                          sa.and_(loyalty_cards.c.updated_at == after, loyalty_cards.c.card_id > cursor.loyalty_id)))
            .order_by(loyalty_cards.c.updated_at, loyalty_cards.c.card_id).limit(self.page))).all()
        settled = now - SETTLE
        if len(rows) == self.page and rows[-1].updated_at < settled:
            return [r.card_id for r in rows], rows[-1].updated_at, rows[-1].card_id, True
        if settled <= after:
            return [r.card_id for r in rows], cursor.loyalty_at, cursor.loyalty_id, False
        return [r.card_id for r in rows], settled, 0, False

    async def _voucher_feed(self, conn: AsyncConnection, cursor: Cursor, now: datetime
                            ) -> tuple[list[VoucherSnapshot], datetime | None, int, bool]:
        """Vouchers changed after the cursor, each saying whether a store may take it offline."""
        after = cursor.voucher_at or datetime(1970, 1, 1, tzinfo=UTC)
        rows = (await conn.execute(
            sa.select(vouchers, cards.c.number.label("card_number"))
            .select_from(vouchers.outerjoin(cards, cards.c.id == vouchers.c.card_id))
            .where(sa.or_(vouchers.c.updated_at > after,
                          sa.and_(vouchers.c.updated_at == after, vouchers.c.id > cursor.voucher_id)))
            .order_by(vouchers.c.updated_at, vouchers.c.id).limit(self.page))).all()
        if not rows:
            return [], cursor.voucher_at, cursor.voucher_id, False
        limits = await offline_voucher_limits(conn)
        at, last = cursor.voucher_at, cursor.voucher_id
        out = []
        for r in rows:
            if r.updated_at < now - SETTLE:
                at, last = r.updated_at, r.id
            eligible = (r.lookup_hash is not None and r.customer_id is None and r.state == "active" and r.uses == 0
                        and (r.valid_to is None or r.valid_to > now) and r.currency in limits
                        and offline_allowed(voucher_of(r), limits[r.currency]))
            out.append(VoucherSnapshot(
                id=r.id, lookup_hash=r.lookup_hash, hint=r.hint, kind=r.kind, value=r.value, currency=r.currency,
                valid_from=r.valid_from, valid_to=r.valid_to, min_basket=r.min_basket, card_number=r.card_number,
                personal=r.customer_id is not None, offline=eligible, changed_at=r.updated_at))
        return out, at, last, len(rows) == self.page and (at, last) != (cursor.voucher_at, cursor.voucher_id)

    async def _activate(self, conn: AsyncConnection, card: CardRow, now: datetime) -> None:
        await self.ledger.ensure_account(conn, card)
        await self.ledger.move_card(conn, card, CardEvent.ACTIVATE, activated_at=now,
                                    expires_on=expiry_date(now.date(), card.programme.validity_months))

    async def _sale(self, conn: AsyncConnection, batch: _Batch, entry: OutboxEntry, card: CardRow | None,
                    digest: str, flags: list[str]) -> _Decision:
        """An offline sale activates a stock card of a pack released for sale at this store."""
        unusable = self._usable(batch, entry, card)
        if unusable:
            return self._conflict(batch, entry, card, digest, flags, *unusable)
        sale = decide_sale(card.view(), entry.amount, batch.store.id)
        if not sale.approved:
            return self._conflict(batch, entry, card, digest, flags, sale.code, sale.message)
        self._touch(batch, card)
        await self._activate(conn, card, batch.now)
        outcome = Outcome(True, card, sale.amount)
        outcome.entries.append(self.ledger.entry(card, EntryKind.ACTIVATION, sale.amount))
        decision = _Decision(S.APPLIED, flags)
        self._record(batch, entry, digest, outcome, decision)
        return decision

    def _conflict(self, batch: _Batch, entry: OutboxEntry, card: CardRow | None, digest: str, flags: list[str],
                  code: DeclineCode, message: str) -> _Decision:
        decision = _Decision(S.REJECTED, [*flags, code.value], message)
        self._record(batch, entry, digest, Outcome.declined(code, message, card), decision)
        batch.exception("conflict", entry, card.id if card else None, code=code.value, message=message)
        return decision

    async def _store_issue(self, conn: AsyncConnection, batch: _Batch, entry: OutboxEntry, card: CardRow | None,
                           digest: str, flags: list[str]) -> _Decision:
        """A card the store made from its number block: created here, active, with its first value."""
        try:
            programme = await self.ledger.programme_by_code(conn, entry.programme or "")
        except InvalidInput as exc:
            return self._conflict(batch, entry, card, digest, flags, DeclineCode.WRONG_PROGRAMME, exc.message)
        if card is not None:
            return self._conflict(batch, entry, card, digest, flags, DeclineCode.ALREADY_ACTIVE,
                                  "that card number exists already")
        if entry.currency != programme.currency:
            return self._conflict(batch, entry, None, digest, flags, DeclineCode.CURRENCY_MISMATCH,
                                  f"programme is in {programme.currency}")
        if not await self._in_block(conn, batch.store.id, programme, entry.card_number):
            return self._conflict(batch, entry, None, digest, flags, DeclineCode.UNKNOWN_CARD,
                                  "number is not in a block granted to this store")
        card = await self._create_card(conn, programme, entry.card_number, batch.now)
        batch.by_number[card.number] = batch.by_id[card.id] = card
        self._touch(batch, card)
        outcome = Outcome(True, card, entry.amount)
        if entry.amount:
            outcome.entries.append(self.ledger.entry(card, EntryKind.ACTIVATION, entry.amount))
        decision = _Decision(S.APPLIED, flags)
        self._record(batch, entry, digest, outcome, decision)
        return decision

    async def _in_block(self, conn: AsyncConnection, store_id: int, programme: Programme, number: str) -> bool:
        if not programme.template.matches(number):
            return False
        serial = programme.template.serial(number)
        found = await conn.execute(sa.select(number_blocks.c.id).where(
            number_blocks.c.store_id == store_id, number_blocks.c.programme_id == programme.id,
            number_blocks.c.first_serial <= serial, number_blocks.c.first_serial + number_blocks.c.count > serial))
        return found.first() is not None

    async def _create_card(self, conn: AsyncConnection, programme: Programme, number: str, now: datetime) -> CardRow:
        expires = expiry_date(now.date(), programme.validity_months)
        card_id = (await conn.execute(sa.insert(cards).values(
            number=number, programme_id=programme.id, state=CardState.ACTIVE.value, ecode_failures=0,
            expires_on=expires, activated_at=now, created_at=now).returning(cards.c.id))).scalar_one()
        card = CardRow(id=card_id, number=number, state=CardState.ACTIVE, programme=programme, expires_on=expires,
                       pack_id=None, pack_status=None, pack_store_id=None, account_id=None, balance=0, held=0)
        await self.ledger.ensure_account(conn, card)
        return card

    async def _cancel(self, conn: AsyncConnection, batch: _Batch, entry: OutboxEntry, card: CardRow | None,
                      digest: str, flags: list[str]) -> _Decision:
        """A cancel posts against its original; before the original is here it is held, not lost."""
        original = batch.known.get(entry.original_txn_id) if entry.original_txn_id else None
        if original is None:
            return _Decision(S.HELD, flags, "waiting for the original transaction")
        if original.kind != CANCELS[entry.kind].value or not original.approved:
            return self._conflict(batch, entry, card, digest, flags, DeclineCode.ORIGINAL_NOT_FOUND,
                                  f"no approved {CANCELS[entry.kind]} with that id")
        target = batch.by_id.get(original.card_id) if original.card_id else None
        if target is None or card is None or target.id != card.id:
            return self._conflict(batch, entry, card, digest, flags, DeclineCode.ORIGINAL_MISMATCH,
                                  "original was made with another card")
        if original.settled:
            # Cancelled already (by the till online, or by another store entry): no second effect.
            decision = _Decision(S.DUPLICATE, [*flags, "already_cancelled"], "original was cancelled already")
            self._record(batch, entry, digest, Outcome.declined(DeclineCode.ALREADY_CANCELLED, decision.message, card),
                         decision)
            return decision
        self._touch(batch, card)
        if entry.amount != original.amount:
            flags = flags + ["amount_differs"]
        if entry.kind in DEBIT_KINDS:
            flags = flags + self._deny_flags(batch, entry, card)
        sign = 1 if entry.kind == K.PAYMENT_CANCEL else -1
        outcome = Outcome(True, card, original.amount, settles=original.id)
        outcome.entries.append(self.ledger.entry(card, _CANCEL_ENTRY[entry.kind], sign * original.amount))
        if (entry.kind == K.SALE_CANCEL and card.state == CardState.ACTIVE and card.balance == 0
                and card.held == 0 and card.pack_id is not None):
            await self.ledger.move_card(conn, card, CardEvent.CANCEL_SALE, expires_on=None, activated_at=None)
        original.settled = True
        decision = _Decision(S.APPLIED, flags)
        self._record(batch, entry, digest, outcome, decision)
        return decision

    @staticmethod
    def _settle_overdrafts(batch: _Batch) -> None:
        """Cards the batch took below zero carry a debt: deny-listed, with an exception case."""
        for card_id, before in batch.touched.items():
            card = batch.by_id[card_id]
            if card.balance < 0 and before >= 0:
                batch.exception("overdraft", None, card_id, card=mask(card.number), balance=card.balance,
                                currency=card.programme.currency)

    async def _write(self, conn: AsyncConnection, store: Any, batch: _Batch, fresh: list[OutboxEntry],
                     decided: dict[int, _Decision], changed: list[tuple[int, OutboxEntry, _Decision]],
                     now: datetime) -> None:
        if batch.rows:
            await self.ledger.write_batch(conn, batch.rows, batch.lines, now)
        if fresh:
            pg = conn.dialect.name == "postgresql"
            rows = [{"store_id": store.id, "epoch": store.epoch, "seq": e.seq, "txn_id": e.txn_id, "kind": e.kind.value,
                     "status": decided[e.seq].status.value, "flags": decided[e.seq].flags,
                     "payload": e if pg else e.model_dump(mode="json"), "received_at": now} for e in fresh]
            if pg:  # one statement, the rows (entries as sent) as one JSON document
                await conn.execute(_PG_INSERT_STORE_ENTRIES, {"rows": json_document(rows)})
            else:
                await conn.execute(sa.insert(store_entries), rows)
        for epoch, entry, decision in changed:
            await conn.execute(sa.update(store_entries).where(
                store_entries.c.store_id == store.id, store_entries.c.epoch == epoch,
                store_entries.c.seq == entry.seq).values(status=decision.status.value, flags=decision.flags))
        for card_id in batch.touched:
            card = batch.by_id[card_id]
            listing = batch.denied.get(card_id)
            if card.balance < 0 and listing is None:
                await list_card(conn, card_id, card.number, OVERDRAFT, now)
            elif card.balance >= 0 and listing is not None and listing.reason == OVERDRAFT:
                await unlist_card(conn, card_id, "repaid", now)
        if batch.exceptions:
            await conn.execute(sa.insert(sync_exceptions), batch.exceptions)
        await watch(conn, store.id, list(batch.touched))

    # -- pull ----------------------------------------------------------------------------------------

    async def pull(self, ref: SyncStore, body: bytes) -> PullResponse:
        """What the store needs to decide offline, from its cursor on (pages: ``more``)."""
        request = decode(body, PullRequest)
        if request.store != ref.code:
            raise Forbidden(f"signed by store {ref.code}, sent for store {request.store}")
        now = datetime.now(UTC)
        cursor = request.cursor
        async with self.db.begin() as conn:
            await release_repaid(conn)
            if request.watch:
                ids = (await conn.execute(sa.select(cards.c.id).where(
                    cards.c.number.in_(sa.bindparam("numbers", expanding=True))), {"numbers": list(request.watch)}
                )).scalars().all()
                await watch(conn, ref.id, ids)
            for code in dict.fromkeys(request.want_blocks):
                await self.grant_block(conn, ref.code, code, self.block_size)
            await conn.execute(sa.update(stores).where(stores.c.id == ref.id).values(last_contact_at=now))
        async with self.db.connect() as conn:
            store = (await conn.execute(sa.select(stores).where(stores.c.id == ref.id))).one()
            deny, deny_version = await self._deny_feed(conn, cursor.deny_version, now)
            snapshots, card_feed, watch_feed, more = await self._card_feed(conn, store, cursor, now)
            loyal_ids, loyalty_at, loyalty_id, more_loyal = await self._loyalty_card_feed(conn, store, cursor, now)
            known = {s.number for s in snapshots}
            snapshots += [s for s in await self._snapshots(conn, store.id, loyal_ids) if s.number not in known]
            config = {}
            if cursor.config_version < store.config_version:
                config = {"programmes": await self._programmes(conn), "tills": await self._tills(conn, store.id)}
            blocks = await self._blocks(conn, store.id)
            products, catalogue_version, more_products = await catalogue_changes(conn, cursor.catalogue_version,
                                                                                 self.page)
            rules, rules_version, more_rules = await self._rules_feed(conn, cursor.rules_version, now)
            segments, segment_version, more_segments = await self._segment_feed(conn, cursor.segment_version, now)
            vouchers_, voucher_at, voucher_id, more_vouchers = await self._voucher_feed(conn, cursor, now)
            groups = await groups_of_store(conn, store.id)
        return PullResponse(
            cursor=Cursor(deny_version=deny_version, card_feed=card_feed, watch_feed=watch_feed,
                          config_version=max(cursor.config_version, store.config_version),
                          catalogue_version=catalogue_version, rules_version=rules_version,
                          segment_version=segment_version, voucher_at=voucher_at, voucher_id=voucher_id,
                          loyalty_at=loyalty_at, loyalty_id=loyalty_id),
            server_time=now, store=self._settings(store, groups), deny=tuple(deny), cards=tuple(snapshots),
            blocks=tuple(blocks), products=tuple(products), rules=tuple(rules), segments=tuple(segments),
            vouchers=tuple(vouchers_), more=more or more_products or more_rules or more_segments or more_vouchers,
            **config)

    async def _rules_feed(self, conn: AsyncConnection, after: int, now: datetime) -> tuple[list, int, bool]:
        """Loyalty rule rows after the cursor; the cursor moves only past settled rows (see SETTLE)."""
        rows = (await conn.execute(sa.select(loyalty_rules).where(loyalty_rules.c.version > after)
                                   .order_by(loyalty_rules.c.version).limit(self.page))).all()
        cursor = after
        for r in rows:
            if r.created_at >= now - SETTLE:
                break
            cursor = r.version
        changes = [RuleChange(version=r.version, kind=r.kind, code=r.code, revision=r.revision, body=r.body,
                              retired=r.retired, at=r.created_at) for r in rows]
        return changes, cursor, len(rows) == self.page and cursor > after

    async def _segment_feed(self, conn: AsyncConnection, after: int, now: datetime
                            ) -> tuple[list[SegmentChange], int, bool]:
        """Segment membership changes after the cursor (chain-wide: any card may come to any store)."""
        rows = (await conn.execute(sa.select(segment_changes).where(segment_changes.c.version > after)
                                   .order_by(segment_changes.c.version).limit(self.page))).all()
        cursor = after
        for r in rows:
            if r.at >= now - SETTLE:
                break
            cursor = r.version
        changes = [SegmentChange(segment=r.segment, number=r.number, member=r.member, version=r.version) for r in rows]
        return changes, cursor, len(rows) == self.page and cursor > after

    @staticmethod
    def _settings(store: Any, groups: frozenset[str] = frozenset()) -> StoreSettings:
        return StoreSettings(code=store.code, exposure_budget=store.offline_budget,
                             budget_currency=store.offline_budget_currency, epoch=store.epoch,
                             acked_seq=store.acked_seq, quarantined=store.quarantined_at is not None,
                             groups=tuple(sorted(groups)))

    async def _deny_feed(self, conn: AsyncConnection, after: int, now: datetime) -> tuple[list[DenyChange], int]:
        rows = (await conn.execute(sa.select(deny_changes).where(deny_changes.c.version > after)
                                   .order_by(deny_changes.c.version).limit(self.page))).all()
        cursor = after
        for r in rows:
            if r.at >= now - SETTLE:
                break
            cursor = r.version
        return [DenyChange(number=r.number, listed=r.listed, reason=r.reason, version=r.version) for r in rows], cursor

    async def _card_feed(self, conn: AsyncConnection, store: Any, cursor: Cursor, now: datetime
                         ) -> tuple[list[CardSnapshot], int, int, bool]:
        """Snapshots of the store's watched cards that changed since the cursor, or are newly watched."""
        card_ids: dict[int, None] = {}
        more = False
        card_feed = cursor.card_feed
        if card_feed == 0:
            # A store starting out gets every watched card through the watch feed: start the entry
            # feed at the settled end of the ledger rather than reading the whole ledger.
            card_feed = (await conn.execute(sa.select(sa.func.coalesce(sa.func.max(entries.c.id), 0)).where(
                entries.c.created_at < now - SETTLE))).scalar_one()
        else:
            rows = (await conn.execute(
                sa.select(entries.c.id, entries.c.card_id, entries.c.created_at)
                .join(store_cards, sa.and_(store_cards.c.card_id == entries.c.card_id,
                                           store_cards.c.store_id == store.id))
                .where(entries.c.id > card_feed).order_by(entries.c.id).limit(self.page))).all()
            settled = True
            for r in rows:
                card_ids[r.card_id] = None
                settled = settled and r.created_at < now - SETTLE
                if settled:
                    card_feed = r.id
            more = len(rows) == self.page and card_feed > cursor.card_feed
        watched = (await conn.execute(
            sa.select(store_cards.c.id, store_cards.c.card_id).where(
                store_cards.c.store_id == store.id, store_cards.c.id > cursor.watch_feed)
            .order_by(store_cards.c.id).limit(self.page))).all()
        watch_feed = watched[-1].id if watched else cursor.watch_feed
        more = more or len(watched) == self.page
        card_ids.update((r.card_id, None) for r in watched)
        return await self._snapshots(conn, store.id, list(card_ids)), card_feed, watch_feed, more

    @staticmethod
    async def _snapshots(conn: AsyncConnection, store_id: int, card_ids: list[int]) -> list[CardSnapshot]:
        if not card_ids:
            return []
        rows = await conn.execute(
            sa.select(cards.c.id, cards.c.number, cards.c.state, cards.c.expires_on, programmes.c.code,
                      programmes.c.kind, accounts.c.balance,
                      accounts.c.held, packs.c.status.label("pack_status"), packs.c.store_id.label("pack_store"))
            .join(programmes, programmes.c.id == cards.c.programme_id)
            .outerjoin(accounts, sa.and_(accounts.c.card_id == OWNER, accounts.c.kind == STORED_VALUE))
            .outerjoin(packs, packs.c.id == cards.c.pack_id)
            .where(MANY[conn.dialect.name](cards.c.id, "ids")).order_by(cards.c.id), {"ids": card_ids})
        rows = rows.all()
        loyal = await loyalty_snapshots(conn, [r.id for r in rows if r.kind == "loyalty"])
        return [CardSnapshot(number=r.number, programme=r.code, state=r.state, balance=r.balance or 0,
                             held=r.held or 0, expires_on=r.expires_on.isoformat() if r.expires_on else None,
                             pack_sellable=r.pack_status == "authorized" and r.pack_store == store_id,
                             **loyal.get(r.id, {}))
                for r in rows]

    @staticmethod
    async def _programmes(conn: AsyncConnection) -> list[ProgrammeSpec]:
        rows = await conn.execute(sa.select(programmes).order_by(programmes.c.id))
        return [ProgrammeSpec(
            code=r.code, name=r.name, kind=r.kind, currency=r.currency, number_prefix=r.number_prefix,
            number_length=r.number_length, luhn=r.luhn, nominal_values=tuple(r.nominal_values),
            min_amount=r.min_amount, max_amount=r.max_amount, topup_allowed=r.topup_allowed,
            max_balance=r.max_balance, validity_months=r.validity_months, hold_ttl_seconds=r.hold_ttl_seconds,
            hold_expiry_policy=r.hold_expiry_policy, service_code=r.service_code, floor_limit=r.floor_limit,
            card_offline_amount=r.card_offline_amount, card_offline_count=r.card_offline_count,
            pin_required=r.pin_required) for r in rows]

    @staticmethod
    async def _tills(conn: AsyncConnection, store_id: int) -> list[TillCredential]:
        rows = await conn.execute(sa.select(terminals.c.code, terminals.c.token_hash, terminals.c.active).where(
            terminals.c.store_id == store_id, terminals.c.kind == "till").order_by(terminals.c.id))
        return [TillCredential(code=r.code, token_hash=r.token_hash, active=r.active) for r in rows]

    @staticmethod
    async def _blocks(conn: AsyncConnection, store_id: int) -> list[BlockGrant]:
        rows = await conn.execute(
            sa.select(number_blocks.c.id, programmes.c.code, number_blocks.c.first_serial, number_blocks.c.count)
            .join(programmes, programmes.c.id == number_blocks.c.programme_id)
            .where(number_blocks.c.store_id == store_id).order_by(number_blocks.c.id))
        return [BlockGrant(id=r.id, programme=r.code, first_serial=r.first_serial, count=r.count) for r in rows]

    # -- administration ------------------------------------------------------------------------------

    async def _store(self, conn: AsyncConnection, code: str, lock: bool = False) -> Any:
        query = sa.select(stores).where(stores.c.code == code)
        row = (await conn.execute(query.with_for_update() if lock else query)).first()
        if row is None:
            raise NotFound(f"no store {code!r}")
        return row

    async def rotate_secret(self, conn: AsyncConnection, code: str) -> dict[str, Any]:
        """A new secret for the store (the old one stops working); shown now, derivable only by central."""
        store = await self._store(conn, code, lock=True)
        version = store.sync_secret_version + 1
        await conn.execute(sa.update(stores).where(stores.c.id == store.id).values(sync_secret_version=version))
        return {"store": code, "version": version, "secret": self.secret(code, version).hex()}

    async def set_limits(self, conn: AsyncConnection, code: str, floor_limit: int, card_amount: int,
                         card_count: int) -> dict[str, Any]:
        done = await conn.execute(sa.update(programmes).where(programmes.c.code == code).values(
            floor_limit=floor_limit, card_offline_amount=card_amount, card_offline_count=card_count))
        if done.rowcount == 0:
            raise NotFound(f"no programme {code!r}")
        await bump_config(conn)
        return {"programme": code, "floor_limit": floor_limit, "card_offline_amount": card_amount,
                "card_offline_count": card_count}

    async def set_budget(self, conn: AsyncConnection, code: str, amount: int, currency: str) -> dict[str, Any]:
        store = await self._store(conn, code)
        await conn.execute(sa.update(stores).where(stores.c.id == store.id).values(
            offline_budget=amount, offline_budget_currency=currency))
        await bump_config(conn, store.id)
        return {"store": code, "offline_budget": amount, "currency": currency}

    async def status(self, conn: AsyncConnection) -> list[dict[str, Any]]:
        """Every store's sync state: last contact, acknowledged position, backlog and offline exposure."""
        open_cases = (sa.select(sync_exceptions.c.store_id, sa.func.count().label("n"))
                      .where(sync_exceptions.c.status == "open").group_by(sync_exceptions.c.store_id).subquery())
        rows = await conn.execute(sa.select(stores, sa.func.coalesce(open_cases.c.n, 0).label("open_exceptions"))
                                  .outerjoin(open_cases, open_cases.c.store_id == stores.c.id).order_by(stores.c.id))
        return [{"store": r.code, "secret_version": r.sync_secret_version, "epoch": r.epoch, "acked_seq": r.acked_seq,
                 "last_contact_at": _iso(r.last_contact_at), "backlog": r.reported_backlog,
                 "offline_exposure": r.reported_exposure, "offline_budget": r.offline_budget,
                 "budget_currency": r.offline_budget_currency, "quarantined": r.quarantined_at is not None,
                 "quarantined_at": _iso(r.quarantined_at), "quarantine_reason": r.quarantine_reason,
                 "open_exceptions": r.open_exceptions} for r in rows]

    async def exceptions(self, conn: AsyncConnection, *, status: str | None = None, store: str | None = None,
                         kind: str | None = None, after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        x = sync_exceptions.c
        query = (sa.select(sync_exceptions, stores.c.code, cards.c.number)
                 .join(stores, stores.c.id == x.store_id).outerjoin(cards, cards.c.id == x.card_id)
                 .where(x.id > after_id).order_by(x.id).limit(min(limit, 1000)))
        if status:
            query = query.where(x.status == status)
        if store:
            query = query.where(stores.c.code == store)
        if kind:
            query = query.where(x.kind == kind)
        return [{"id": r.id, "store": r.code, "card": r.number, "txn_id": str(r.txn_id) if r.txn_id else None,
                 "kind": r.kind, "details": r.details, "status": r.status, "created_at": r.created_at.isoformat(),
                 "closed_at": _iso(r.closed_at), "closed_by": r.closed_by} for r in await conn.execute(query)]

    async def close_exception(self, conn: AsyncConnection, exception_id: int, actor: str,
                              note: str | None = None) -> dict[str, Any]:
        row = (await conn.execute(sa.select(sync_exceptions).where(sync_exceptions.c.id == exception_id)
                                  .with_for_update())).first()
        if row is None:
            raise NotFound(f"no exception {exception_id}")
        if row.status == "open":
            details = {**row.details, **({"note": note} if note else {})}
            await conn.execute(sa.update(sync_exceptions).where(sync_exceptions.c.id == exception_id).values(
                status="closed", closed_at=datetime.now(UTC), closed_by=actor, details=details))
        return {"id": exception_id, "status": "closed"}

    async def quarantined(self, conn: AsyncConnection, store: str | None = None) -> list[dict[str, Any]]:
        q = sync_quarantine.c
        query = (sa.select(q.id, stores.c.code, q.received_at, q.reason, q.body_sha256, q.released_at,
                           sa.func.length(q.body).label("size"))
                 .join(stores, stores.c.id == q.store_id).order_by(q.id))
        if store:
            query = query.where(stores.c.code == store)
        return [{"id": r.id, "store": r.code, "received_at": r.received_at.isoformat(), "reason": r.reason,
                 "body_sha256": r.body_sha256, "bytes": r.size, "released_at": _iso(r.released_at)}
                for r in await conn.execute(query)]

    async def quarantined_body(self, conn: AsyncConnection, batch_id: int) -> bytes:
        body = (await conn.execute(sa.select(sync_quarantine.c.body).where(sync_quarantine.c.id == batch_id))).scalar()
        if body is None:
            raise NotFound(f"no quarantined batch {batch_id}")
        return body

    async def release(self, conn: AsyncConnection, code: str) -> dict[str, Any]:
        """Lift a store's quarantine: a new epoch, in which the store renumbers what was not acknowledged."""
        store = await self._store(conn, code, lock=True)
        now = datetime.now(UTC)
        await conn.execute(sa.update(stores).where(stores.c.id == store.id).values(
            epoch=store.epoch + 1, quarantined_at=None, quarantine_reason=None))
        await conn.execute(sa.update(sync_quarantine).where(sync_quarantine.c.store_id == store.id,
                                                            sync_quarantine.c.released_at.is_(None))
                           .values(released_at=now))
        log.warning("sync store released store=%s epoch=%d acked=%d", code, store.epoch + 1, store.acked_seq)
        return {"store": code, "epoch": store.epoch + 1, "acked_seq": store.acked_seq}

    async def grant_block(self, conn: AsyncConnection, store_code: str, programme_code: str,
                          count: int | None = None) -> dict[str, Any]:
        """Serials of the programme for the store to issue offline, from the programme's one counter."""
        count = count or self.block_size
        if not 1 <= count <= 1_000_000:
            raise InvalidInput("a block holds 1 to 1000000 numbers")
        store = await self._store(conn, store_code)
        programme = await self.ledger.programme_by_code(conn, programme_code)
        first = await reserve_serials(conn, programme, count)
        block_id = (await conn.execute(sa.insert(number_blocks).values(
            programme_id=programme.id, store_id=store.id, first_serial=first, count=count,
            granted_at=datetime.now(UTC)).returning(number_blocks.c.id))).scalar_one()
        return {"id": block_id, "store": store_code, "programme": programme_code, "first_serial": first,
                "count": count, "first_number": programme.template.number(first),
                "last_number": programme.template.number(first + count - 1)}

    async def blocks(self, conn: AsyncConnection, code: str) -> list[dict[str, Any]]:
        store = await self._store(conn, code)
        return [b.model_dump() for b in await self._blocks(conn, store.id)]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None

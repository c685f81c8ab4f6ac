"""The edge's side of sync: push the outbox, pull what central ships; the rules live in ``sync``.

I/O is thin here: requests are built from the database, signed and sent; answers are checked with
:mod:`sync.protocol` and applied in one SQLite transaction each.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import aiohttp
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from core import needs_block
from sync import (
    MSGPACK,
    CardSnapshot,
    Cursor,
    OutboxEntry,
    ProtocolError,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    accept_ack,
    backoff_delay,
    decode,
    encode,
    next_batch,
    signed_headers,
)
from sync.messages import Message, ProductChange

from . import local
from .config import EdgeConfig
from .db import EdgeDatabase
from .db.tables import (
    cards,
    deny_list,
    holds,
    loyalty_rules,
    number_blocks,
    outbox,
    products,
    programmes,
    segment_members,
    store_settings,
    sync_state,
    tills,
    vouchers,
)
from .loyalty import unacked_points
from .node import EdgeNode

__all__ = ["SyncClient", "SyncError", "SyncReport"]

log = logging.getLogger("tessera.edge.sync")

PUSH, PULL = "/api/v1/sync/push", "/api/v1/sync/pull"
_NUMBERS = sa.bindparam("numbers", expanding=True)
_UNACKED_BY_CARD = (sa.select(outbox.c.card, sa.func.sum(outbox.c.delta)).where(outbox.c.card.in_(_NUMBERS))
                    .group_by(outbox.c.card))
_HELD_BY_CARD = (sa.select(holds.c.card, sa.func.sum(holds.c.amount))
                 .where(holds.c.card.in_(_NUMBERS), holds.c.status == "pending").group_by(holds.c.card))
_KNOWN_CARDS = sa.select(cards.c.number).where(cards.c.number.in_(_NUMBERS))
_UPDATE_CARD = sa.update(cards).where(cards.c.number == sa.bindparam("key"))
_INSERT_CARD = sa.insert(cards)
_CATALOGUE_VERSION = sa.select(sa.func.coalesce(sa.func.max(products.c.version), 0))
_INSERT_RULE = sqlite.insert(loyalty_rules).on_conflict_do_nothing(index_elements=[loyalty_rules.c.version])
_JOIN_SEGMENT = sqlite.insert(segment_members).on_conflict_do_nothing()
_LEAVE_SEGMENT = sa.delete(segment_members).where(segment_members.c.number == sa.bindparam("n"),
                                                  segment_members.c.segment == sa.bindparam("s"))
_insert_product = sqlite.insert(products)
# A change older than the store's copy (a page delivered twice) is ignored.
_UPSERT_PRODUCT = _insert_product.on_conflict_do_update(
    index_elements=[products.c.key],
    set_={c.name: _insert_product.excluded[c.name] for c in products.c if c.name != "key"},
    where=_insert_product.excluded.version > products.c.version)
TIME_HEADER = "X-Tessera-Time"
M = TypeVar("M", bound=Message)


class SyncError(Exception):
    """A sync round failed: central did not answer, or answered with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass
class SyncReport:
    """What one sync round moved."""

    pushed: int = 0
    acked_seq: int = 0
    pulled_cards: int = 0
    deny_changes: int = 0
    blocks: int = 0
    products: int = 0
    config: bool = False
    epoch_changed: bool = False
    quarantined: bool = False
    flags: dict[str, list[str]] = field(default_factory=dict)  # txn_id -> flags central raised

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class SyncClient:
    """Runs sync rounds for one store, never two at once."""

    def __init__(self, config: EdgeConfig, db: EdgeDatabase, http: aiohttp.ClientSession, node: EdgeNode) -> None:
        self.config = config
        self.db = db
        self.http = http
        self.node = node
        self._lock = asyncio.Lock()
        self.failures = 0
        self._not_before = 0.0
        self._failed_at = 0.0
        self._rng = random.Random()

    # -- scheduling --------------------------------------------------------------------------------

    async def tick(self) -> None:
        """The scheduler's job: a round unless backing off; failures only logged at outage edges."""
        # Backing off, unless a till request found central back since the last failure: then the
        # store's offline backlog goes at once.
        backing_off = time.monotonic() < self._not_before and self.node.recovered_at < self._failed_at
        if backing_off or self._lock.locked():
            return
        try:
            await self.round()
        except SyncError as exc:
            self.failures += 1
            delay = backoff_delay(self.failures, self.config.backoff_base, self.config.backoff_cap, self._rng)
            self._failed_at = time.monotonic()
            self._not_before = self._failed_at + delay
            if self.failures == 1:
                log.warning("sync failing error=%s", exc)
            await self._remember_error(str(exc))

    async def round(self) -> SyncReport:
        """Push until the outbox is empty (or central stops taking it), then pull everything new."""
        async with self._lock:
            report = SyncReport()
            try:
                if self.node.central_down:
                    await self._probe()
                await self._push_all(report)
                changed = await self._pull_all(report)
                if changed:  # a new epoch renumbered the outbox: push it under the epoch at once
                    await self._push_all(report)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise SyncError("unreachable", f"{type(exc).__name__}: {exc}") from None
            except ProtocolError as exc:
                raise SyncError(exc.code, exc.message) from None
            if self.failures:
                log.info("sync recovered after failures=%s", self.failures)
            self.failures = 0
            self._not_before = 0.0
            self.node.mark_up()
            await self._remember_error(None)
            return report

    async def _probe(self) -> None:
        """While central is down, ask its health first: reading and encoding a long outbox for a
        central that is not there would stall the tills for nothing."""
        async with self.http.get(self.config.central_url.rstrip("/") + "/health",
                                 timeout=aiohttp.ClientTimeout(total=max(1.0, self.config.online_timeout))) as resp:
            if resp.status != 200:
                raise SyncError("unreachable", f"central's health answers {resp.status}")

    async def _remember_error(self, error: str | None) -> None:
        async with self.db.begin() as conn:
            await conn.execute(sa.update(sync_state).where(sync_state.c.id == 1).values(last_error=error))

    # -- transport ---------------------------------------------------------------------------------

    async def _post(self, path: str, message: Message, answer: type[M]) -> M:
        """POST a signed msgpack message; one retry after learning central's clock on stale_request."""
        body = encode(message)
        for attempt in (1, 2):
            headers = signed_headers(self.config.store, self.config.secret(), "POST", path, body,
                                     time.time() + self.node.clock_offset)
            headers["Content-Type"] = MSGPACK
            async with self.http.post(self.config.central_url.rstrip("/") + path, data=body, headers=headers,
                                      timeout=aiohttp.ClientTimeout(total=max(10.0, self.config.online_timeout))
                                      ) as resp:
                await self._learn_clock(resp)
                data = await resp.read()
                if resp.status == 200:
                    return decode(data, answer)
                code, text = _error_of(data, resp.status)
            if code != "stale_request" or attempt == 2:
                raise SyncError(code, text)
        raise AssertionError("unreachable")

    async def _learn_clock(self, resp: aiohttp.ClientResponse) -> None:
        raw = resp.headers.get(TIME_HEADER)
        try:
            offset = float(raw) - time.time() if raw else None
        except ValueError:
            offset = None
        if offset is None:
            return
        if abs(offset - self.node.clock_offset) > 1.0:  # whole seconds matter; jitter does not
            log.info("clock offset to central seconds=%.3f", offset)
            self.node.clock_offset = offset
            async with self.db.begin() as conn:
                await conn.execute(sa.update(sync_state).where(sync_state.c.id == 1).values(clock_offset=offset))

    # -- push --------------------------------------------------------------------------------------

    async def _push_all(self, report: SyncReport) -> None:
        while True:
            async with self.db.begin() as conn:
                state = await local.sync_position(conn)
                report.acked_seq = state.acked_seq
                if state.quarantined:
                    report.quarantined = True
                    return
                rows = (await conn.execute(sa.select(outbox).order_by(outbox.c.seq)
                                           .limit(self.config.sync_batch))).all()
                if not rows:
                    return
                backlog = (await conn.execute(sa.select(sa.func.count()).select_from(outbox))).scalar_one()
                exposure = await local.exposure(conn)
            entries = next_batch([_entry(r) for r in _within_weight(rows)], self.config.sync_batch)
            request = PushRequest(store=self.config.store, epoch=state.epoch, entries=tuple(entries),
                                  backlog=backlog, offline_exposure=min(exposure, 10**12),
                                  sent_at=self.node.central_time())
            response = await self._post(PUSH, request, PushResponse)
            for r in response.results:
                if r.flags:
                    report.flags[str(r.txn_id)] = list(r.flags)
            if not await self._accept_push(state, response, report):
                return
            if response.acked_seq < entries[-1].seq:  # central holds some back (a cancel before its original)
                return

    async def _accept_push(self, state: local.SyncState, response: PushResponse, report: SyncReport) -> bool:
        """Prune what central acknowledged; False when pushing should stop for this round."""
        if response.quarantined:
            log.error("store quarantined by central: pushing stops until an operator releases it message=%s",
                      response.message)
            async with self.db.begin() as conn:
                await conn.execute(sa.update(sync_state).where(sync_state.c.id == 1).values(
                    quarantined=True, last_push_at=self.node.central_time()))
            report.quarantined = True
            return False
        if response.epoch != state.epoch:
            return False  # central moved to another epoch: the pull adopts it and renumbers
        acked = accept_ack(state.acked_seq, state.epoch, response)
        async with self.db.begin() as conn:
            pruned = await conn.execute(sa.delete(outbox).where(outbox.c.seq <= acked))
            await conn.execute(sa.update(sync_state).where(sync_state.c.id == 1).values(
                acked_seq=acked, last_push_at=self.node.central_time()))
        report.pushed += pruned.rowcount
        report.acked_seq = acked
        return True

    # -- pull --------------------------------------------------------------------------------------

    async def _pull_all(self, report: SyncReport) -> bool:
        """Pull until central has nothing more; True if a new epoch was adopted."""
        asked: tuple[str, ...] | None = None
        changed = False
        while True:
            async with self.db.begin() as conn:
                state = await local.sync_position(conn)
                specs = await local.load_programmes(conn)
                blocks = await local.load_blocks(conn)
                watch = tuple((await conn.execute(sa.select(cards.c.number).where(cards.c.watch)
                                                  .limit(5000))).scalars())
                catalogue_version = (await conn.execute(_CATALOGUE_VERSION)).scalar_one()
            want = tuple(sorted(code for code in specs if needs_block(blocks, code, self.config.block_low_water)))
            cursor = Cursor(deny_version=state.deny_version, card_feed=state.card_feed, watch_feed=state.watch_feed,
                            config_version=state.config_version, catalogue_version=catalogue_version,
                            rules_version=state.rules_version, segment_version=state.segment_version,
                            voucher_at=state.voucher_at, voucher_id=state.voucher_id,
                            loyalty_at=state.loyalty_at, loyalty_id=state.loyalty_id)
            request = PullRequest(store=self.config.store, cursor=cursor,
                                  want_blocks=want if want != asked else (), watch=watch)
            response = await self._post(PULL, request, PullResponse)
            changed |= await self._apply_pull(state, response, watch, report)
            if response.rules:
                await self.node.loyalty_rules.refresh(self.db)
            asked = want if want != asked else asked
            async with self.db.begin() as conn:
                specs_now = await local.load_programmes(conn)
                blocks_now = await local.load_blocks(conn)
            want_now = tuple(sorted(c for c in specs_now if needs_block(blocks_now, c, self.config.block_low_water)))
            # Programmes learned in this pull may want blocks at once (a new store has none).
            if not response.more and (not want_now or want_now == asked):
                return changed

    async def _apply_pull(self, state: local.SyncState, r: PullResponse, watch: tuple[str, ...],
                          report: SyncReport) -> bool:
        now = self.node.central_time()
        epoch_changed = r.store.epoch > state.epoch
        async with self.db.begin() as conn:
            if epoch_changed:
                await self._renumber(conn, r.store.acked_seq)
                log.warning("new sync epoch adopted epoch=%s acked_seq=%s", r.store.epoch, r.store.acked_seq)
            for change in r.deny:
                if change.listed:
                    await conn.execute(sa.delete(deny_list).where(deny_list.c.number == change.number))
                    await conn.execute(sa.insert(deny_list).values(number=change.number, reason=change.reason,
                                                                   version=change.version))
                else:
                    await conn.execute(sa.delete(deny_list).where(deny_list.c.number == change.number))
            config = r.cursor.config_version != state.config_version
            if config:
                await conn.execute(sa.delete(programmes))
                for spec in r.programmes:
                    await conn.execute(sa.insert(programmes).values(code=spec.code, spec=spec.model_dump(mode="json")))
                await conn.execute(sa.delete(tills))
                for till in r.tills:
                    await conn.execute(sa.insert(tills).values(code=till.code, token_hash=till.token_hash,
                                                               active=till.active))
            await conn.execute(sa.delete(store_settings))
            await conn.execute(sa.insert(store_settings).values(
                id=1, code=r.store.code, exposure_budget=r.store.exposure_budget,
                budget_currency=r.store.budget_currency, groups=list(r.store.groups)))
            await self._apply_cards(conn, r.cards, now)
            await self._apply_products(conn, r.products)
            await self._apply_loyalty(conn, r)
            for block in r.blocks:
                known = await conn.execute(sa.select(number_blocks.c.id).where(number_blocks.c.id == block.id))
                if known.first() is None:
                    await conn.execute(sa.insert(number_blocks).values(
                        id=block.id, programme=block.programme, first_serial=block.first_serial, count=block.count,
                        used=0))
                    report.blocks += 1
            if watch:
                await conn.execute(sa.update(cards).where(cards.c.number.in_(watch)).values(watch=False))
            values: dict[str, Any] = dict(
                deny_version=max(state.deny_version, r.cursor.deny_version),
                card_feed=max(state.card_feed, r.cursor.card_feed),
                watch_feed=max(state.watch_feed, r.cursor.watch_feed),
                config_version=r.cursor.config_version, last_pull_at=now,
                segment_version=max(state.segment_version, r.cursor.segment_version),
                rules_version=max(state.rules_version, r.cursor.rules_version))
            if r.cursor.voucher_at is not None:
                values.update(voucher_at=r.cursor.voucher_at, voucher_id=r.cursor.voucher_id)
            if r.cursor.loyalty_at is not None:
                values.update(loyalty_at=r.cursor.loyalty_at, loyalty_id=r.cursor.loyalty_id)
            if epoch_changed:
                values.update(epoch=r.store.epoch, acked_seq=r.store.acked_seq, quarantined=False)
            await conn.execute(sa.update(sync_state).where(sync_state.c.id == 1).values(**values))
        report.pulled_cards += len(r.cards)
        report.deny_changes += len(r.deny)
        report.products += len(r.products)
        report.config |= config
        report.epoch_changed |= epoch_changed
        return epoch_changed

    async def _renumber(self, conn: AsyncConnection, acked_seq: int) -> None:
        """Renumber the unacknowledged outbox from ``acked_seq + 1`` in its order; ids stay."""
        rows = (await conn.execute(sa.select(outbox.c.seq).order_by(outbox.c.seq))).scalars().all()
        # Through negative numbers first: the new range may overlap the old one.
        await conn.execute(sa.update(outbox).values(seq=-outbox.c.seq))
        for i, old in enumerate(rows):
            await conn.execute(sa.update(outbox).where(outbox.c.seq == -old).values(seq=acked_seq + 1 + i))
        await conn.execute(sa.update(sync_state).where(sync_state.c.id == 1).values(
            next_seq=acked_seq + 1 + len(rows)))

    async def _apply_cards(self, conn: AsyncConnection, snapshots: Sequence[CardSnapshot], now: datetime) -> None:
        """Central's balances plus what this store did that central has not acknowledged yet, for a
        whole page of snapshots in a few statements (a pull can bring thousands)."""
        if not snapshots:
            return
        numbers = {"numbers": [snap.number for snap in snapshots]}
        pending = dict((await conn.execute(_UNACKED_BY_CARD, numbers)).all())
        redeemed = await unacked_points(conn, [snap.number for snap in snapshots if snap.points is not None])
        held = dict((await conn.execute(_HELD_BY_CARD, numbers)).all())
        known = set((await conn.execute(_KNOWN_CARDS, numbers)).scalars())
        central_state, store_state, new = [], [], []
        for snap in snapshots:
            values = dict(programme=snap.programme, balance=snap.balance + int(pending.get(snap.number, 0)),
                          held=snap.held + int(held.get(snap.number, 0)), pack_sellable=snap.pack_sellable,
                          updated_at=now, points=None, tier=None, discount_bps=None, customer_groups=None)
            if snap.points is not None:  # a loyalty card: less what this store redeemed that central lacks
                values.update(points=snap.points - redeemed.get(snap.number, 0), tier=snap.tier,
                              discount_bps=snap.discount_bps, customer_groups=list(snap.customer_groups))
            if snap.number not in known:
                new.append(dict(values, number=snap.number, state=snap.state,
                                expires_on=local.parse_date(snap.expires_on)))
            elif snap.number in pending or snap.number in held:  # the store's own state is newer
                store_state.append(dict(values, key=snap.number))
            else:
                central_state.append(dict(values, key=snap.number, state=snap.state,
                                          expires_on=local.parse_date(snap.expires_on)))
        for statement, rows in ((_UPDATE_CARD, central_state), (_UPDATE_CARD, store_state), (_INSERT_CARD, new)):
            if rows:
                await conn.execute(statement, rows)

    @staticmethod
    async def _apply_loyalty(conn: AsyncConnection, r: PullResponse) -> None:
        """Rule rows (kept as published; a page delivered twice changes nothing) and segment membership."""
        if r.rules:
            await conn.execute(_INSERT_RULE, [
                {"version": c.version, "kind": c.kind, "code": c.code, "revision": c.revision, "body": c.body,
                 "retired": c.retired, "at": c.at} for c in r.rules])
        for v in r.vouchers:  # in the order they changed: the last word on a voucher wins
            if not v.offline:
                await conn.execute(sa.delete(vouchers).where(vouchers.c.id == v.id))
                continue
            used = (await conn.execute(sa.select(vouchers.c.used).where(vouchers.c.id == v.id))).scalar()
            await conn.execute(sa.delete(vouchers).where(vouchers.c.id == v.id))
            await conn.execute(sa.insert(vouchers).values(
                id=v.id, lookup_hash=v.lookup_hash, hint=v.hint, kind=v.kind, value=v.value, currency=v.currency,
                valid_from=v.valid_from, valid_to=v.valid_to, min_basket=v.min_basket, card_number=v.card_number,
                used=bool(used)))
        for change in r.segments:  # in version order: the last word on a (card, segment) wins
            if change.member:
                await conn.execute(_JOIN_SEGMENT, {"number": change.number, "segment": change.segment})
            else:
                await conn.execute(_LEAVE_SEGMENT, {"n": change.number, "s": change.segment})

    @staticmethod
    async def _apply_products(conn: AsyncConnection, changes: Sequence[ProductChange]) -> None:
        """A page of catalogue changes in one statement. Withdrawn products are kept, inactive: the
        highest version held is the store's catalogue cursor."""
        if changes:
            await conn.execute(_UPSERT_PRODUCT, [
                {"key": c.key, "code": c.code, "name": c.name, "currency": c.currency, "price": c.price,
                 "member_price": c.member_price, "unit": c.unit, "item_group": c.group, "active": c.active,
                 "version": c.version} for c in changes])


# Receipts carry their lines, and central applies loyalty entries one at a time (about 10 ms each, with the
# batch's cards locked meanwhile): a batch stops at this many receipt lines (some 2 MB of msgpack) and this many
# loyalty entries (a couple of seconds at central), so that neither the tills here nor the cards at central wait
# long for one push.
MAX_BATCH_LINES = 20_000
MAX_BATCH_LOYALTY = 200


def _within_weight(rows: Sequence[Any]) -> Sequence[Any]:
    """The first rows of an outbox page within MAX_BATCH_LINES receipt lines and MAX_BATCH_LOYALTY loyalty
    entries (one row at least)."""
    weight = loyal = 0
    for i, row in enumerate(rows):
        detail = row.entry.get("loyalty")
        weight += 1 + len((detail or {}).get("lines") or ())
        loyal += detail is not None
        if (weight > MAX_BATCH_LINES or loyal > MAX_BATCH_LOYALTY) and i:
            return rows[:i]
    return rows


def _entry(row: Any) -> OutboxEntry:
    return OutboxEntry.model_validate({**row.entry, "seq": row.seq})


def _error_of(data: bytes, status: int) -> tuple[str, str]:
    try:
        error = json.loads(data)["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        return f"http_{status}", data[:200].decode("utf-8", "replace")

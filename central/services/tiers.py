"""Tiers and discount levels at central: reviews of each card's tier, the scheduled tier and discount
jobs, and what staff and the till ask about a card.

The rules are those of :mod:`core.loyalty.tiers`, fed with the card's receipts (``TierFact(at, total,
points)``: sales and returns alike, a return's negative total lowering the rolling total) and judged by
the plan of the card's programme in force now (``loyalty_rules``, kind ``plan``).

Where a card's tier comes from
    ``loyalty_cards.tier`` and ``tier_since``. A card without a tier enters its plan's entry tier the
    first time it is reviewed, *since* its activation or, if that came later (or never), one microsecond
    before its first receipt (so that first purchase can already lift it); a card with neither is not in
    use and has no tier. The entry is recorded in ``tier_changes`` (``from_tier`` null, reason ``entry``).
    A tier the current plan no longer has is replaced by the tier the rolling total earns now (reason
    ``plan_changed``).

Reviews and the history
    Every change core finds up to the review time is written to ``tier_changes`` and the card's row is
    updated, in one transaction and with the card's ``loyalty_cards`` row locked (the receipt path and the
    job serialise on it). The unique ``(card_id, at, to_tier)`` makes a rerun harmless. A review at a
    period boundary that keeps the tier is recorded too (reason ``review_kept``, from and to the same
    tier): core re-judges every boundary after ``tier_since``, and that row tells the next review where to
    start, so a card that kept Gold for five years is judged on its last period only. A boundary still in
    its grace is not recorded until the grace is over. A receipt added after its period was reviewed
    counts only in the windows still to be judged: the history is never rewritten.

Discount levels
    ``loyalty_cards.discount_bps`` is what the discount job last computed from the turnover in the plan's
    ``discount_period_days`` up to the run (``at - days < receipt.at <= at``, as core's rolling totals);
    the till's question (:meth:`TierService.discount_of`) is answered live from the receipts instead, so
    it is exact between two runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from core import DeclineCode, DomainError, InvalidInput
from core.loyalty.plan import LoyaltyPlan
from core.loyalty.tiers import (
    TierBasis,
    TierChange,
    TierChangeReason,
    TierFact,
    TierPlan,
    TierStatus,
    discount_level,
    rolling_total,
    tier_changes,
)
from core.programmes import ProgrammeKind

from ..db import Database
from ..db.tables import UTCDateTime, cards, loyalty_cards, programmes, receipts
from ..db.tables import tier_changes as tier_history
from .admin import NotFound, audit
from .ledger import mask
from .loyalty_rules import RulesService

__all__ = ["TierService", "NotALoyaltyCard", "TierSource", "ENTRY", "REVIEW_KEPT", "PLAN_CHANGED",
           "STAFF_OVERRIDE"]

log = logging.getLogger("tessera.tiers")

# Reasons of tier_changes rows besides core's TierChangeReason values.
ENTRY = "entry"
REVIEW_KEPT = "review_kept"
PLAN_CHANGED = "plan_changed"
STAFF_OVERRIDE = "staff_override"
_ENTERED_BEFORE_RECEIPT = timedelta(microseconds=1)
_OUT_OF_USE = ("closed", "replaced")  # their successor carries on; they are not reviewed any more
_FUTURE_TOLERANCE = timedelta(minutes=5)
# What the job counts each tier_changes row as (plan_changed rows are "remapped").
_COUNTED = {ENTRY: "entered", REVIEW_KEPT: "kept", TierChangeReason.THRESHOLD_REACHED.value: "upgraded",
            TierChangeReason.REVIEW_UPGRADE.value: "upgraded", TierChangeReason.REVIEW_DOWNGRADE.value: "downgraded",
            TierChangeReason.GRACE_ENDED.value: "downgraded"}


class TierSource:
    """Who made a tier change (``tier_changes.source``)."""

    JOB = "job"  # the scheduled tier job
    BATCH = "batch"  # staff ran the job now
    STAFF = "staff"  # a staff override
    RECEIPT = "receipt"  # a receipt's registration reviewed its card
    ALL = (JOB, BATCH, STAFF, RECEIPT)


class NotALoyaltyCard(DomainError):
    code = DeclineCode.NOT_LOYALTY.value


def _dialect(conn: AsyncConnection):
    return sqlite if conn.dialect.name == "sqlite" else postgresql


@dataclass(frozen=True, slots=True)
class _Card:
    """What a review reads of one card."""

    id: int
    tier: str | None
    since: datetime | None
    reviewed: datetime | None  # the last boundary a review kept this tier at
    activated_at: datetime | None = None
    first_receipt: datetime | None = None

    def entry_since(self) -> datetime | None:
        """When a card without a tier entered the entry tier (None: not in use yet)."""
        before_receipt = self.first_receipt - _ENTERED_BEFORE_RECEIPT if self.first_receipt else None
        times = [t for t in (self.activated_at, before_receipt) if t is not None]
        return min(times) if times else None

    def eval_since(self) -> datetime | None:
        """From when core must judge the card: its tier's start, or the last boundary that kept it."""
        if self.since is None:
            return None
        return max(self.since, self.reviewed) if self.reviewed else self.since


@dataclass(frozen=True, slots=True)
class _Row:
    """One tier_changes row to write."""

    card_id: int
    from_tier: str | None
    to_tier: str
    at: datetime
    reason: str
    qualifying: int
    review: datetime | None = None

    def values(self, source: str, now: datetime) -> dict[str, Any]:
        return {"card_id": self.card_id, "from_tier": self.from_tier, "to_tier": self.to_tier, "at": self.at,
                "reason": self.reason, "qualifying": self.qualifying, "review": self.review, "source": source,
                "created_at": now}

    @property
    def is_change(self) -> bool:
        return self.reason != REVIEW_KEPT


def _basis_value(plan: TierPlan, fact: TierFact) -> int:
    return fact.turnover if plan.basis is TierBasis.TURNOVER else fact.points


def _window(plan: TierPlan, facts: Sequence[TierFact], start: datetime, end: datetime) -> int:
    return sum(_basis_value(plan, f) for f in facts if start < f.at <= end)


def _evaluate(plan: TierPlan, card: _Card, facts: Sequence[TierFact], at: datetime) -> list[_Row]:
    """The rows a review of ``card`` up to ``at`` writes (changes, then a kept review if any)."""
    rows: list[_Row] = []
    codes = {tier.code for tier in plan.tiers}
    tier, eval_since = card.tier, card.eval_since()
    if tier is None or eval_since is None or eval_since > at:
        return rows
    if tier not in codes:
        total = rolling_total(facts, at, plan.period_days, plan.basis)
        earned = plan.earned(total).code
        rows.append(_Row(card.id, tier, earned, at, PLAN_CHANGED, total))
        tier, eval_since = earned, at
    changes: tuple[TierChange, ...] = tier_changes(plan, facts, at, TierStatus(tier, eval_since))
    rows += [_Row(card.id, c.from_code, c.to_code, c.at, c.reason.value, c.qualifying, c.review) for c in changes]
    if changes:
        tier, eval_since = changes[-1].to_code, changes[-1].at
    # The last boundary up to ``at``: if core judged it (it is after the status began) and it is not
    # waiting out a grace, it is settled, and the next review may start there.
    boundary = plan.next_boundary(at) - plan.period
    current = plan.tier(tier)
    total = _window(plan, facts, boundary - plan.period, boundary)
    if plan.earned(total).rank < current.rank and plan.grace_days:
        if boundary + timedelta(days=plan.grace_days) > at:
            boundary -= plan.period  # still in its grace: the boundary before is settled
            total = _window(plan, facts, boundary - plan.period, boundary)
        else:  # caught up within the grace: the window core judged runs to the grace's end
            total = _window(plan, facts, boundary - plan.period, boundary + timedelta(days=plan.grace_days))
    if boundary > eval_since:
        rows.append(_Row(card.id, tier, tier, boundary, REVIEW_KEPT, total, boundary))
    return rows


def _facts_query(card_ids: Sequence[int], after: datetime, at: datetime):
    return (sa.select(receipts.c.card_id, receipts.c.at, receipts.c.total, receipts.c.points)
            .where(receipts.c.card_id.in_(card_ids), receipts.c.at > after, receipts.c.at <= at)
            .order_by(receipts.c.card_id, receipts.c.at))


_FIRST_RECEIPT = (sa.select(sa.func.min(receipts.c.at)).where(receipts.c.card_id == cards.c.id)
                  .scalar_subquery())
_KEPT = (sa.select(sa.func.max(tier_history.c.at))
         .where(tier_history.c.card_id == loyalty_cards.c.card_id, tier_history.c.reason == REVIEW_KEPT,
                tier_history.c.to_tier == loyalty_cards.c.tier)
         .scalar_subquery())
_CARD = (sa.select(cards.c.id, cards.c.number, cards.c.activated_at, programmes.c.code.label("programme"),
                   programmes.c.kind, loyalty_cards.c.tier, loyalty_cards.c.tier_since,
                   _FIRST_RECEIPT.label("first_receipt"))
         .select_from(cards.join(programmes, programmes.c.id == cards.c.programme_id)
                      .outerjoin(loyalty_cards, loyalty_cards.c.card_id == cards.c.id)))


class TierService:
    """Reviews of tiers (one card, or every card by the job), discount levels, and the tier queries."""

    def __init__(self, db: Database, rules: RulesService, chunk: int = 1000) -> None:
        self.db = db
        self.rules = rules
        self.chunk = chunk

    # -- reviews -----------------------------------------------------------------------------------

    async def review_card(self, conn: AsyncConnection, card_id: int, at: datetime,
                          source: str = TierSource.RECEIPT) -> list[dict[str, Any]]:
        """Bring one card's tier up to ``at`` in the caller's transaction; the changes applied.

        Cheap enough for the receipt path: a handful of indexed statements, writes only when something
        changed. A card of a programme without tiers, or not in use yet, changes nothing.
        """
        row = (await conn.execute(_CARD.where(cards.c.id == card_id))).first()
        if row is None or row.kind != ProgrammeKind.LOYALTY.value:
            return []
        plan = await self._tier_plan(conn, row.programme)
        if plan is None:
            return []
        card = _Card(row.id, row.tier, row.tier_since, None, row.activated_at, row.first_receipt)
        written = await self._review(conn, plan, [card], at, source)
        return [_row_dict(r) for r in written if r.is_change]

    async def run(self, at: datetime | None = None, source: str = TierSource.JOB,
                  actor: str = "scheduler") -> dict[str, int]:
        """Review every card of every loyalty programme whose plan has tiers, up to ``at`` (now).

        Chunks of cards in card-id order, one transaction each; only the cards that may change are read
        (no tier yet, a review due, or a receipt since their tier began). Running it twice changes nothing.
        """
        now = datetime.now(UTC)
        at = at or now
        if source not in (TierSource.JOB, TierSource.BATCH):
            raise InvalidInput(f"the tier job runs as job or batch, not {source!r}")
        if at > now + _FUTURE_TOLERANCE:
            raise InvalidInput("the tier job cannot review the future", code="future_review")
        started = time.monotonic()
        counts = {"programmes": 0, "reviewed": 0, "entered": 0, "upgraded": 0, "downgraded": 0, "kept": 0,
                  "remapped": 0}
        for programme_id, code, plan in await self._programmes_with(lambda p: p.tiers is not None):
            tiers = plan.tiers
            assert tiers is not None
            counts["programmes"] += 1
            after = 0
            while True:
                async with self.db.begin() as conn:
                    batch = (await conn.execute(self._candidates(tiers, programme_id, after, at))).all()
                    if not batch:
                        break
                    after = batch[-1].id
                    found = [_Card(r.id, r.tier, r.tier_since, r.kept, r.activated_at, r.first_receipt)
                             for r in batch]
                    written = await self._review(conn, tiers, found, at, source)
                counts["reviewed"] += len(batch)
                for r in written:
                    counts[_COUNTED.get(r.reason, "remapped")] += 1
                log.info("tier review progress programme=%s after_card=%s reviewed=%s upgraded=%s downgraded=%s",
                         code, after, counts["reviewed"], counts["upgraded"], counts["downgraded"])
        log.info("tier review done source=%s actor=%s at=%s programmes=%s reviewed=%s entered=%s upgraded=%s "
                 "downgraded=%s kept=%s seconds=%.2f", source, actor, at.isoformat(), counts["programmes"],
                 counts["reviewed"], counts["entered"], counts["upgraded"], counts["downgraded"], counts["kept"],
                 time.monotonic() - started)
        return counts

    async def run_scheduled(self) -> dict[str, int]:
        """The scheduled tier job (now, source ``job``)."""
        return await self.run(source=TierSource.JOB)

    def _candidates(self, plan: TierPlan, programme_id: int, after: int, at: datetime):
        """The next chunk of the programme's cards that a review up to ``at`` may change."""
        last_boundary = plan.next_boundary(at) - plan.period
        kept = (sa.select(sa.func.max(tier_history.c.at))
                .where(tier_history.c.card_id == cards.c.id, tier_history.c.reason == REVIEW_KEPT,
                       tier_history.c.to_tier == loyalty_cards.c.tier).scalar_subquery())
        settled_at_last = sa.exists().where(
            tier_history.c.card_id == cards.c.id, tier_history.c.reason == REVIEW_KEPT,
            tier_history.c.to_tier == loyalty_cards.c.tier, tier_history.c.at >= last_boundary)
        in_use = sa.or_(cards.c.activated_at <= at,
                        sa.exists().where(receipts.c.card_id == cards.c.id, receipts.c.at <= at))
        may_change = [
            sa.and_(loyalty_cards.c.tier.is_(None), in_use),
            loyalty_cards.c.tier.not_in([t.code for t in plan.tiers]),
            sa.and_(loyalty_cards.c.tier_since < last_boundary, ~settled_at_last),
        ]
        if plan.upgrade.value == "immediate":
            may_change.append(sa.exists().where(receipts.c.card_id == cards.c.id,
                                                receipts.c.at > loyalty_cards.c.tier_since, receipts.c.at <= at))
        return (sa.select(cards.c.id, cards.c.activated_at, loyalty_cards.c.tier, loyalty_cards.c.tier_since,
                          kept.label("kept"), _FIRST_RECEIPT.label("first_receipt"))
                .select_from(cards.outerjoin(loyalty_cards, loyalty_cards.c.card_id == cards.c.id))
                .where(cards.c.programme_id == programme_id, cards.c.id > after,
                       cards.c.state.not_in(_OUT_OF_USE), sa.or_(*may_change))
                .order_by(cards.c.id).limit(self.chunk))

    async def _review(self, conn: AsyncConnection, plan: TierPlan, found: Sequence[_Card], at: datetime,
                      source: str) -> list[_Row]:
        """Review ``found`` cards (read without locks): pin the entry of those without a tier, lock their
        rows, read them again with their receipts, and write what core decides."""
        now = datetime.now(UTC)
        entries = {c.id: c.entry_since() for c in found if c.tier is None}
        entries = {card_id: since for card_id, since in entries.items() if since is not None and since <= at}
        if entries:
            insert = _dialect(conn).insert(loyalty_cards)
            await conn.execute(insert.on_conflict_do_update(
                index_elements=[loyalty_cards.c.card_id],
                set_={"tier": insert.excluded.tier, "tier_since": insert.excluded.tier_since,
                      "updated_at": insert.excluded.updated_at},
                where=loyalty_cards.c.tier.is_(None)),
                [{"card_id": card_id, "tier": plan.entry.code, "tier_since": since, "updated_at": now}
                 for card_id, since in entries.items()])
        ids = sorted(c.id for c in found)
        locked = (await conn.execute(
            sa.select(loyalty_cards.c.card_id, loyalty_cards.c.tier, loyalty_cards.c.tier_since,
                      _KEPT.label("kept"))
            .where(loyalty_cards.c.card_id.in_(ids)).order_by(loyalty_cards.c.card_id)
            .with_for_update(of=loyalty_cards))).all()
        current = [_Card(r.card_id, r.tier, r.tier_since, r.kept) for r in locked if r.tier is not None]
        rows = [_Row(c.id, None, c.tier, c.since, ENTRY, 0) for c in current
                if c.id in entries and c.since == entries[c.id] and c.tier == plan.entry.code]
        starts = [c.eval_since() for c in current if c.eval_since() is not None and c.eval_since() <= at]
        if starts:
            history: dict[int, list[TierFact]] = {}
            rows_read = await conn.execute(_facts_query([c.id for c in current], min(starts) - plan.period, at))
            for r in rows_read:
                history.setdefault(r.card_id, []).append(TierFact(r.at, r.total, r.points))
            for card in current:
                rows += _evaluate(plan, card, history.get(card.id, ()), at)
        if not rows:
            return rows
        await conn.execute(_dialect(conn).insert(tier_history).on_conflict_do_nothing(),
                           [r.values(source, now) for r in rows])
        final: dict[int, _Row] = {}
        for r in rows:
            if r.is_change and r.reason != ENTRY:
                final[r.card_id] = r
        if final:
            await conn.execute(
                sa.update(loyalty_cards).where(loyalty_cards.c.card_id == sa.bindparam("b_card"))
                .values(tier=sa.bindparam("b_tier"), tier_since=sa.bindparam("b_since", type_=UTCDateTime),
                        updated_at=now),
                [{"b_card": r.card_id, "b_tier": r.to_tier, "b_since": r.at} for r in final.values()])
        for r in rows:
            if r.is_change and r.reason != ENTRY:
                log.info("tier changed card_id=%s from=%s to=%s at=%s reason=%s qualifying=%s source=%s",
                         r.card_id, r.from_tier, r.to_tier, r.at.isoformat(), r.reason, r.qualifying, source)
        return rows

    # -- discount levels ---------------------------------------------------------------------------

    async def refresh_discounts(self, at: datetime | None = None) -> dict[str, int]:
        """Set every card's ``discount_bps`` from its turnover in its plan's discount period up to ``at``.

        Set-based: per programme, one INSERT of the rows missing for cards with receipts in the period,
        then one UPDATE (a CASE over the levels of the summed totals) per chunk of card ids, writing only
        the cards whose level changed. Idempotent.
        """
        at = at or datetime.now(UTC)
        started = time.monotonic()
        counts = {"programmes": 0, "cards": 0, "changed": 0}
        for programme_id, code, plan in await self._programmes_with(lambda p: True):
            counts["programmes"] += 1
            start = at - timedelta(days=plan.discount_period_days)
            now = datetime.now(UTC)
            async with self.db.begin() as conn:
                with_receipts = (sa.select(receipts.c.card_id, sa.literal(now, UTCDateTime))
                                 .join(cards, cards.c.id == receipts.c.card_id)
                                 .where(cards.c.programme_id == programme_id, receipts.c.at > start,
                                        receipts.c.at <= at)
                                 .distinct())
                await conn.execute(_dialect(conn).insert(loyalty_cards)
                                   .from_select(["card_id", "updated_at"], with_receipts).on_conflict_do_nothing())
            after = 0
            while True:
                async with self.db.begin() as conn:
                    ids = (await conn.execute(
                        sa.select(loyalty_cards.c.card_id).join(cards, cards.c.id == loyalty_cards.c.card_id)
                        .where(cards.c.programme_id == programme_id, loyalty_cards.c.card_id > after)
                        .order_by(loyalty_cards.c.card_id).limit(self.chunk))).scalars().all()
                    if not ids:
                        break
                    changed = await self._refresh_chunk(conn, plan, programme_id, after, ids[-1], start, at, now)
                after = ids[-1]
                counts["cards"] += len(ids)
                counts["changed"] += changed
                log.info("discount refresh progress programme=%s after_card=%s cards=%s changed=%s", code, after,
                         counts["cards"], counts["changed"])
        log.info("discount refresh done at=%s programmes=%s cards=%s changed=%s seconds=%.2f", at.isoformat(),
                 counts["programmes"], counts["cards"], counts["changed"], time.monotonic() - started)
        return counts

    @staticmethod
    async def _refresh_chunk(conn: AsyncConnection, plan: LoyaltyPlan, programme_id: int, low: int, high: int,
                             start: datetime, at: datetime, now: datetime) -> int:
        turnover = sa.func.coalesce(sa.func.sum(receipts.c.total), 0)
        levels = sorted(plan.discount_levels, key=lambda level: level.threshold, reverse=True)
        bps = (sa.case(*((turnover >= level.threshold, level.bps) for level in levels), else_=0) if levels
               else sa.literal(0))
        fresh = (sa.select(loyalty_cards.c.card_id.label("card_id"), bps.label("bps"))
                 .select_from(loyalty_cards.join(cards, cards.c.id == loyalty_cards.c.card_id)
                              .outerjoin(receipts, sa.and_(receipts.c.card_id == loyalty_cards.c.card_id,
                                                           receipts.c.at > start, receipts.c.at <= at)))
                 .where(cards.c.programme_id == programme_id, loyalty_cards.c.card_id > low,
                        loyalty_cards.c.card_id <= high)
                 .group_by(loyalty_cards.c.card_id)).subquery("fresh")
        result = await conn.execute(
            sa.update(loyalty_cards)
            .where(loyalty_cards.c.card_id == fresh.c.card_id, loyalty_cards.c.discount_bps != fresh.c.bps)
            .values(discount_bps=fresh.c.bps, updated_at=now))
        return result.rowcount

    async def refresh_scheduled(self) -> dict[str, int]:
        """The scheduled discount job (now)."""
        return await self.refresh_discounts()

    async def discount_of(self, number: str, at: datetime | None = None) -> dict[str, Any]:
        """The card's discount level now, computed from its receipts (not the job's last result)."""
        at = at or datetime.now(UTC)
        async with self.db.connect() as conn:
            card = await self._card(conn, number)
            plan = (await self.rules.current(conn)).plan(card.programme)
            days = plan.discount_period_days if plan is not None else LoyaltyPlan.discount_period_days
            turnover = (await conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(receipts.c.total), 0))
                .where(receipts.c.card_id == card.id, receipts.c.at > at - timedelta(days=days),
                       receipts.c.at <= at))).scalar_one()
        bps = discount_level(plan.discount_levels, int(turnover)) if plan is not None else 0
        return {"card": mask(number), "bps": bps, "turnover": int(turnover), "period_days": days}

    # -- queries and staff -------------------------------------------------------------------------

    async def history(self, number: str) -> dict[str, Any]:
        """Every recorded tier change (and kept review) of a card, oldest first."""
        async with self.db.connect() as conn:
            card = await self._card(conn, number)
            rows = (await conn.execute(sa.select(tier_history).where(tier_history.c.card_id == card.id)
                                       .order_by(tier_history.c.at, tier_history.c.id))).all()
        return {"card": mask(number), "changes": [_history_dict(r) for r in rows]}

    async def status(self, number: str, at: datetime | None = None) -> dict[str, Any]:
        """The card's tier at ``at`` (now), with every change due by then applied as the next review would
        (nothing is written), the qualifying total of the rolling period, the next review and what is
        missing to the next tier."""
        at = at or datetime.now(UTC)
        async with self.db.connect() as conn:
            card = await self._card(conn, number)
            plan = await self._tier_plan(conn, card.programme)
            if plan is None:
                return {"card": mask(number), "tier": None, "since": None}
            kept = (await conn.execute(
                sa.select(sa.func.max(tier_history.c.at)).where(
                    tier_history.c.card_id == card.id, tier_history.c.reason == REVIEW_KEPT,
                    tier_history.c.to_tier == card.tier))).scalar() if card.tier else None
            found = _Card(card.id, card.tier, card.tier_since, kept, card.activated_at, card.first_receipt)
            if found.tier is None:
                since = found.entry_since()
                if since is None or since > at:
                    return {"card": mask(number), "tier": None, "since": None, "basis": plan.basis.value}
                found = _Card(card.id, plan.entry.code, since, None)
            start = min(found.eval_since() or at, at) - plan.period
            facts = [TierFact(r.at, r.total, r.points) for r in await conn.execute(_facts_query([card.id], start, at))]
        tier, since = found.tier, found.since
        assert tier is not None and since is not None
        for r in _evaluate(plan, found, facts, at):
            if r.is_change:
                tier, since = r.to_tier, r.at
        qualifying = rolling_total(facts, at, plan.period_days, plan.basis)
        current = plan.tier(tier)
        higher = [t for t in plan.tiers if t.rank > current.rank]
        next_tier = None
        if higher:
            missing = max(higher[0].threshold - qualifying, 0)
            next_tier = {"tier": higher[0].code, "threshold": higher[0].threshold, "missing": missing}
        last_boundary = plan.next_boundary(at) - plan.period
        grace_until = None
        if plan.grace_days and last_boundary > since:
            ends = last_boundary + timedelta(days=plan.grace_days)
            judged = _window(plan, facts, last_boundary - plan.period, at)
            if ends > at and plan.earned(judged).rank < current.rank:
                grace_until = ends.isoformat()
        return {"card": mask(number), "tier": tier, "since": since.isoformat(), "basis": plan.basis.value,
                "period_days": plan.period_days, "qualifying": qualifying,
                "next_review": plan.next_boundary(at).isoformat(), "grace_until": grace_until,
                "next_tier": next_tier}

    async def set_tier(self, number: str, tier: str, reason: str, actor: str, remote: str | None = None,
                       at: datetime | None = None) -> dict[str, Any]:
        """Staff put a card in ``tier`` from now on: the changes due until now are applied first, then the
        override (source ``staff``), audited with the reason. The card is reviewed as usual from then on."""
        at = at or datetime.now(UTC)
        reason = reason.strip()
        if not reason:
            raise InvalidInput("a reason is required", code="reason_required")
        async with self.db.begin() as conn:
            card = await self._card(conn, number)
            plan = await self._tier_plan(conn, card.programme)
            if plan is None:
                raise InvalidInput(f"programme {card.programme} has no tiers", code="no_tiers")
            if tier not in {t.code for t in plan.tiers}:
                raise InvalidInput(f"the plan of {card.programme} has no tier {tier!r}", code="unknown_tier")
            await self.review_card(conn, card.id, at, TierSource.STAFF)
            row = (await conn.execute(sa.select(loyalty_cards.c.tier, loyalty_cards.c.tier_since)
                                      .where(loyalty_cards.c.card_id == card.id).with_for_update())).first()
            previous = row.tier if row is not None else None
            changed = previous != tier
            if changed:
                facts = [TierFact(r.at, r.total, r.points) for r in
                         await conn.execute(_facts_query([card.id], at - plan.period, at))]
                qualifying = rolling_total(facts, at, plan.period_days, plan.basis)
                now = datetime.now(UTC)
                await conn.execute(sa.insert(tier_history).values(
                    _Row(card.id, previous, tier, at, STAFF_OVERRIDE, qualifying).values(TierSource.STAFF, now)))
                insert = _dialect(conn).insert(loyalty_cards).values(card_id=card.id, tier=tier, tier_since=at,
                                                                     updated_at=now)
                await conn.execute(insert.on_conflict_do_update(
                    index_elements=[loyalty_cards.c.card_id],
                    set_={"tier": tier, "tier_since": at, "updated_at": now}))
            await audit(conn, actor, "loyalty.tier.set", f"card:{mask(number)}",
                        {"from": previous, "to": tier, "reason": reason, "changed": changed, "at": at.isoformat()},
                        remote)
        log.info("tier set by staff card=%s from=%s to=%s changed=%s by=%s", mask(number), previous, tier, changed,
                 actor)
        return {"card": mask(number), "from": previous, "tier": tier, "changed": changed, "at": at.isoformat()}

    # -- helpers -----------------------------------------------------------------------------------

    async def _card(self, conn: AsyncConnection, number: str) -> Any:
        row = (await conn.execute(_CARD.where(cards.c.number == number))).first()
        if row is None:
            raise NotFound("no such card")
        if row.kind != ProgrammeKind.LOYALTY.value:
            raise NotALoyaltyCard(f"card {mask(number)} is not a loyalty card")
        return row

    async def _tier_plan(self, conn: AsyncConnection, programme: str) -> TierPlan | None:
        plan = (await self.rules.current(conn)).plan(programme)
        return plan.tiers if plan is not None else None

    async def _programmes_with(self, wanted) -> list[tuple[int, str, Any]]:
        """(id, code, plan) of the loyalty programmes whose plan ``wanted`` accepts."""
        async with self.db.connect() as conn:
            rules = await self.rules.current(conn)
            plans = {code: plan for code, plan in rules.plans.items() if wanted(plan)}
            if not plans:
                return []
            found = (await conn.execute(sa.select(programmes.c.id, programmes.c.code).where(
                programmes.c.code.in_(sorted(plans)), programmes.c.kind == ProgrammeKind.LOYALTY.value))).all()
        return [(r.id, r.code, plans[r.code]) for r in sorted(found, key=lambda r: r.id)]


def _row_dict(row: _Row) -> dict[str, Any]:
    return {"from": row.from_tier, "to": row.to_tier, "at": row.at.isoformat(), "reason": row.reason,
            "qualifying": row.qualifying, "review": row.review.isoformat() if row.review else None}


def _history_dict(row: Any) -> dict[str, Any]:
    return {"from": row.from_tier, "to": row.to_tier, "at": row.at.isoformat(), "reason": row.reason,
            "qualifying": row.qualifying, "review": row.review.isoformat() if row.review else None,
            "source": row.source}


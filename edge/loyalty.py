"""Loyalty at the store when central does not answer.

Receipts and returns commute: the store records them and syncs them, whatever happens. A receipt earns
by the rules central shipped (the schemes in force at the receipt's time, combined by the programme
plan's mode); central later credits what the store gave and flags a difference. Returns are settled by
central, which knows the receipt's awards. Redemptions are debits: the store lets points be spent only
within the card's last known points and the programme's offline limits (on the discount they give),
and counts them against the store's exposure budget, as it does payments. Segments and discount levels
are answered from what central last shipped.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from central.services.ledger import mask
from central.services.vouchers import LookupDecline, lookup_hash, parse_code
from core import DeclineCode, Money, OfflineCard, OfflineLimits, OperationKind, decide_offline_debit
from core.authorization import Decision, decline
from core.loyalty import Receipt, ReceiptLine
from core.loyalty.tiers import RedemptionMethod, redemption
from core.loyalty.vouchers import Voucher, VoucherCard, VoucherDecline, VoucherKind, decide_voucher_offline
from sync import LoyaltyDetail, ProgrammeSpec, ReceiptLineData
from sync.loyalty import LoyaltyRules, RuleChange

from .db.tables import cards, loyalty_rules, outbox, segment_members, vouchers

__all__ = ["RulesCache", "receipt_offline", "return_offline", "redeem_offline", "unacked_points",
           "segments_of", "voucher_offline"]

log = logging.getLogger("tessera.edge.loyalty")
K = OperationKind
_LATEST = sa.select(sa.func.coalesce(sa.func.max(loyalty_rules.c.version), 0))


class RulesCache:
    """The rules in force at the store. They are built when the node starts and after a pull brought rule
    rows, off the event loop and outside any transaction (a thousand schemes take tens of milliseconds);
    a till request finds them built. ``current`` rebuilds in place only if that somehow did not happen."""

    def __init__(self) -> None:
        self.rules = LoyaltyRules(())

    async def refresh(self, db: Any) -> LoyaltyRules:
        async with db.begin() as conn:
            latest = (await conn.execute(_LATEST)).scalar_one()
            if latest == self.rules.version:
                return self.rules
            changes = await _stored(conn)
        self._adopt(await asyncio.to_thread(_build, changes))
        return self.rules

    async def current(self, conn: AsyncConnection) -> LoyaltyRules:
        latest = (await conn.execute(_LATEST)).scalar_one()
        if latest != self.rules.version:
            self._adopt(_build(await _stored(conn)))
        return self.rules

    def _adopt(self, rules: LoyaltyRules) -> None:
        if rules.version > self.rules.version or not self.rules.version:
            self.rules = rules
            log.info("loyalty rules loaded version=%s schemes=%s plans=%s", rules.version, len(rules.schemes),
                     len(rules.plans))
            gc.freeze()  # long-lived: keep them out of the collector's full passes


async def _stored(conn: AsyncConnection) -> list[RuleChange]:
    """The rule rows the store holds. They were validated when they arrived: constructed, not validated again."""
    rows = await conn.execute(sa.select(loyalty_rules).order_by(loyalty_rules.c.version))
    return [RuleChange.model_construct(version=r.version, kind=r.kind, code=r.code, revision=r.revision, body=r.body,
                                       retired=r.retired, at=r.at) for r in rows]


def _build(changes: list[RuleChange]) -> LoyaltyRules:
    rules = LoyaltyRules(changes)
    for programme in rules.plans:  # compiled now rather than in the first receipt
        rules.scheme_set(programme)
    return rules


def receipt_offline(rules: LoyaltyRules, spec: ProgrammeSpec | None, row: Any, body: Any, store: str,
                    store_groups: Iterable[str] = ()) -> tuple[Decision, dict[str, Any], dict[str, Any],
                                                               LoyaltyDetail | None]:
    """(decision, new card cache values, answer extras, the entry's loyalty detail) of a receipt."""
    if spec is None or spec.kind != "loyalty":
        return (decline(DeclineCode.UNKNOWN_OFFLINE, "central is unreachable and this store knows no loyalty "
                                                     "programme of that card"), {}, {}, None)
    if body.currency != spec.currency:
        return decline(DeclineCode.CURRENCY_MISMATCH, f"the card's programme is in {spec.currency}"), {}, {}, None
    dumped = [line.model_dump() for line in body.lines]  # once: the till's body was validated already
    lines = tuple(ReceiptLine(**line) for line in dumped)
    receipt = Receipt(id=str(body.txn_id), card=body.card_number, store=store, at=body.at, currency=body.currency,
                      lines=lines, store_groups=frozenset(store_groups),
                      customer_groups=frozenset(row.customer_groups or ()) if row is not None else frozenset(),
                      tier=row.tier if row is not None else None, card_type=spec.code)
    earning = rules.scheme_set(spec.code).evaluate(receipt)
    plan = rules.plan(spec.code)
    values: dict[str, Any] = {}
    if row is not None and row.points is not None and earning.total and (plan is None or not plan.points.pending):
        values["points"] = row.points + earning.total  # spendable at once when nothing pends
    awards = [{"line": a.line, "scheme": a.scheme, "version": a.version, "points": a.points} for a in earning.awards]
    detail = LoyaltyDetail(at=body.at, lines=tuple(ReceiptLineData.model_construct(**line) for line in dumped),
                           points=earning.total,
                           awards=tuple((a.line, a.scheme, a.version, a.points) for a in earning.awards))
    extra = {"points_earned": earning.total, "awards": awards, "bonus": None}
    return Decision(True, receipt.value), values, extra, detail


def return_offline(spec: ProgrammeSpec | None, body: Any) -> tuple[Decision, dict[str, Any], LoyaltyDetail | None]:
    """A return is recorded as brought back; central takes back the points the receipt's awards say."""
    if spec is None or spec.kind != "loyalty":
        return decline(DeclineCode.UNKNOWN_OFFLINE, "central is unreachable and this store knows no loyalty "
                                                    "programme of that card"), {}, None
    returned = tuple((li.line, li.quantity) for li in body.lines) if body.lines is not None else None
    extra = {"points_taken_back": None, "message": "points are taken back when central has the return"}
    return Decision(True, 0), extra, LoyaltyDetail(returned=returned)


async def redeem_offline(conn: AsyncConnection, rules: LoyaltyRules, spec: ProgrammeSpec | None, row: Any, body: Any,
                         denied: bool, budget: Any) -> tuple[Decision, dict[str, Any], dict[str, Any],
                                                             LoyaltyDetail | None]:
    """Points as a discount, within the card tier's cap, the card's last known points and the offline limits."""
    if spec is None or spec.kind != "loyalty" or row is None or row.points is None:
        return (decline(DeclineCode.UNKNOWN_OFFLINE, "central is unreachable and this store does not know the "
                                                     "card's points"), {}, {}, None)
    if row.state != "active":
        return decline(DeclineCode.NOT_ACTIVE, f"card is {row.state}"), {}, {}, None
    if body.currency != spec.currency:
        return decline(DeclineCode.CURRENCY_MISMATCH, f"the card's programme is in {spec.currency}"), {}, {}, None
    plan = rules.plan(spec.code)
    tier = plan.tier_of(row.tier) if plan else None
    if plan is None or tier is None:
        return decline(DeclineCode.REDEMPTION_NOT_ALLOWED, "the programme does not redeem points"), {}, {}, None
    available = max(row.points, 0)
    if available == 0 or (body.points is not None and body.points > available):
        return decline(DeclineCode.INSUFFICIENT_POINTS, f"{available} points known to be available"), {}, {}, None
    fallback = plan.fallback() if plan.redemption_method is RedemptionMethod.FALLBACK else None
    decided = redemption(tier, body.receipt_total, available, plan.redemption_method, fallback,
                         points_wanted=body.points)
    if decided.points == 0:
        return decline(DeclineCode.REDEMPTION_NOT_ALLOWED, f"nothing to redeem ({decided.limited_by.value})"), {}, {}, \
            None
    card = OfflineCard(available=decided.discount_minor, currency=spec.currency, offline_amount=row.offline_amount,
                       offline_count=row.offline_count, deny_listed=denied)
    limits = OfflineLimits(spec.floor_limit, spec.card_offline_amount, spec.card_offline_count)
    decision = decide_offline_debit(card, decided.discount_minor, limits, budget)
    if not decision.approved:
        return decision, {}, {}, None
    values = {"points": row.points - decided.points, "offline_amount": row.offline_amount + decided.discount_minor,
              "offline_count": row.offline_count + 1}
    extra = {"points_redeemed": decided.points, "discount": decided.discount_minor, "tier": decided.tier_code,
             "limited_by": decided.limited_by.value, "points": {"available": values["points"], "tier": row.tier,
                                                                "estimate": True}}
    return Decision(True, decided.discount_minor), values, extra, LoyaltyDetail(points=decided.points)


async def voucher_offline(conn: AsyncConnection, body: Any, now: datetime, budget: Any
                          ) -> tuple[Decision, dict[str, Any], LoyaltyDetail | None, int | None]:
    """A voucher taken while central is unreachable: only one central shipped as takeable offline (single use,
    worth no more than the floor limit, not personal), not used here yet, with the customer's card presented
    (the use is recorded against it), within the store's exposure budget. (decision, extras, detail, voucher id)"""
    if body.card_number is None:
        return decline(VoucherDecline.OFFLINE_NOT_ALLOWED, "offline, a voucher is taken only with the "
                                                           "customer's card"), {}, None, None
    code = parse_code(body.code)
    if code is None:
        return decline(LookupDecline.CODE_INVALID, "that is not a voucher code: check it"), {}, None, None
    row = (await conn.execute(sa.select(vouchers).where(vouchers.c.lookup_hash == lookup_hash(code)))).first()
    if row is None:
        return decline(VoucherDecline.OFFLINE_NOT_ALLOWED, "this voucher needs central, which is unreachable"), {}, \
            None, None
    if row.used:
        return decline(VoucherDecline.USED_UP, "this voucher was used already"), {}, None, None
    voucher = Voucher(code=str(row.id), kind=VoucherKind(row.kind), value=row.value, currency=row.currency,
                      valid_from=row.valid_from, valid_to=row.valid_to, min_basket=row.min_basket,
                      card=row.card_number)
    limits = OfflineLimits(floor_limit=row.value, card_amount=row.value, card_count=1)  # shipped as within them
    decided = decide_voucher_offline(voucher, Money(body.currency, body.basket_total), now,
                                     VoucherCard(body.card_number), limits)
    if not decided.approved:
        return Decision(False, 0, decided.code, decided.message), {}, None, None
    if decided.discount_minor > budget.left or budget.currency != row.currency:
        return decline(DeclineCode.OFFLINE_LIMIT, "the store's offline exposure budget is used up"), {}, None, None
    extra = {"voucher_id": row.id, "hint": row.hint, "discount": decided.discount_minor, "currency": row.currency,
             "uses_left": 0}
    detail = LoyaltyDetail(voucher=row.id, basket_total=body.basket_total)
    return Decision(True, decided.discount_minor), extra, detail, row.id


_ENTRY_KIND = sa.func.json_extract(outbox.c.entry, "$.kind")
_ENTRY_POINTS = sa.func.json_extract(outbox.c.entry, "$.loyalty.points")


async def unacked_points(conn: AsyncConnection, numbers: list[str]) -> dict[str, int]:
    """Points this store redeemed offline that central has not acknowledged yet, by card."""
    if not numbers:
        return {}
    rows = await conn.execute(sa.select(outbox.c.card, sa.func.sum(_ENTRY_POINTS)).where(
        outbox.c.card.in_(numbers), _ENTRY_KIND == K.POINTS_REDEEM.value).group_by(outbox.c.card))
    return {card: int(points or 0) for card, points in rows}


async def segments_of(conn: AsyncConnection, number: str) -> dict[str, Any]:
    """The POS's question "which segments is this card in", from central's last membership feed."""
    codes = sorted((await conn.execute(sa.select(segment_members.c.segment).where(
        segment_members.c.number == number))).scalars())
    known = (await conn.execute(sa.select(cards.c.number).where(cards.c.number == number))).first() is not None
    return {"card": mask(number), "segments": codes, "decision": "offline", "known": known or bool(codes)}

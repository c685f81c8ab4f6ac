"""Points at central: receipts earn, returns take back, redemptions and rewards spend, bonuses and staff
adjustments credit, the expiry job removes what has expired.

Each is one ledger operation (idempotent by its client id, or by a deterministic id for work the server
starts itself) whose entries move the card's points account (``accounts.kind = 'points'``), one entry
per lot touched. The lots (``points_lots``) and the debt (``loyalty_cards.points_debt``) are the state
:class:`core.loyalty.PointsBook` decides with; the account balance always equals lots minus debt and the
sum of the entries. Every change locks the card row first, as stored value does.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core import CardState, DeclineCode, EntryKind, InvalidInput, OperationKind, ProgrammeKind
from core.loyalty import Lot, MovementKind, PointsBook, PointsChange, PointsMovement, PointsPolicy, Receipt, ReceiptLine
from core.loyalty.plan import BonusKind, LoyaltyPlan
from core.loyalty.tiers import RedemptionMethod, emoney_to_points, points_to_emoney, redemption

from ..db import Database
from ..db.tables import (
    accounts,
    cards,
    customer_groups,
    customers,
    loyalty_cards,
    operations,
    points_lots,
    receipts,
    rewards,
    store_groups,
    stores,
)
from .admin import NotFound, audit, bump_config
from .ledger import CardRow, Ledger, Origin, Outcome, PendingEntry, card_declined, mask, system_id, unknown_card
from .loyalty_rules import RulesService

__all__ = ["LoyaltyService", "ReceiptInput", "ReturnInput", "POINTS", "POINTS_CURRENCY", "loyalty_snapshots"]

log = logging.getLogger("tessera.loyalty")
K = OperationKind
POINTS = "points"
POINTS_CURRENCY = "PTS"  # the points account's unit, in the ledger's currency column


@dataclass(frozen=True, slots=True)
class ReceiptInput:
    """A receipt as the till (or staff) sent it: ``at`` carries the store's UTC offset."""

    card_number: str
    at: datetime
    currency: str
    lines: tuple[ReceiptLine, ...]
    store_code: str | None = None  # staff adding a receipt later name the store; tills are their own store


@dataclass(frozen=True, slots=True)
class ReturnInput:
    """Goods of a receipt brought back: (line index, quantity) pairs, or None for everything left."""

    card_number: str
    original: uuid.UUID
    lines: tuple[tuple[int, int], ...] | None = None


@dataclass(slots=True)
class _Loyal:
    """A locked loyalty card with its points account, lots and loyalty state."""

    card: CardRow
    account_id: int
    balance: int
    book: PointsBook
    tier: str | None
    tier_since: datetime | None
    discount_bps: int
    first_purchase_at: datetime | None
    customer_id: int | None


def _lot(row: Any) -> Lot:
    return Lot(row.id, row.points, row.earned_at, row.available_at, row.expires_at,
               str(row.receipt_id) if row.receipt_id else None)


def _celebrates(birth: date, today: date) -> bool:
    """Whether someone born on ``birth`` has their birthday ``today`` (29 February: 28th in common years)."""
    if birth.month == 2 and birth.day == 29:
        leap = today.year % 4 == 0 and (today.year % 100 != 0 or today.year % 400 == 0)
        return (today.month, today.day) == ((2, 29) if leap else (2, 28))
    return (birth.month, birth.day) == (today.month, today.day)


class LoyaltyService:
    def __init__(self, db: Database, ledger: Ledger, rules: RulesService) -> None:
        self.db = db
        self.ledger = ledger
        self.rules = rules
        # Called in the receipt's transaction after its points are posted (the tier service's review).
        self.after_receipt: list[Callable[[AsyncConnection, int, datetime], Awaitable[Any]]] = []

    # -- the card ----------------------------------------------------------------------------------

    async def _load(self, conn: AsyncConnection, card: CardRow) -> _Loyal:
        """The loyalty side of a locked card, opening its points account and state row on first use."""
        account = (await conn.execute(sa.select(accounts.c.id, accounts.c.balance).where(
            accounts.c.card_id == card.id, accounts.c.kind == POINTS).with_for_update())).first()
        if account is None:
            account_id = (await conn.execute(sa.insert(accounts).values(
                card_id=card.id, kind=POINTS, currency=POINTS_CURRENCY, balance=0, held=0)
                .returning(accounts.c.id))).scalar_one()
            await conn.execute(sa.insert(loyalty_cards).values(card_id=card.id, updated_at=datetime.now(UTC)))
            balance = 0
        else:
            account_id, balance = account.id, account.balance
        state = (await conn.execute(sa.select(loyalty_cards).where(loyalty_cards.c.card_id == card.id))).first()
        if state is None:  # an account opened before loyalty state existed
            await conn.execute(sa.insert(loyalty_cards).values(card_id=card.id, updated_at=datetime.now(UTC)))
            state = (await conn.execute(sa.select(loyalty_cards).where(loyalty_cards.c.card_id == card.id))).one()
        lots = [_lot(r) for r in await conn.execute(sa.select(points_lots).where(points_lots.c.card_id == card.id))]
        customer_id = (await conn.execute(sa.select(cards.c.customer_id).where(cards.c.id == card.id))).scalar()
        return _Loyal(card, account_id, balance, PointsBook(tuple(lots), state.points_debt), state.tier,
                      state.tier_since, state.discount_bps, state.first_purchase_at, customer_id)

    async def _loyal_card(self, conn: AsyncConnection, number: str) -> _Loyal | Outcome:
        card = await self.ledger.lock_card(conn, number=number)
        if card is None:
            return unknown_card()
        if card.programme.kind is not ProgrammeKind.LOYALTY:
            return card_declined(card, DeclineCode.NOT_LOYALTY, f"{card.programme.code} is not a loyalty programme")
        if card.state is not CardState.ACTIVE:
            code = {CardState.BLOCKED: DeclineCode.BLOCKED, CardState.EXPIRED: DeclineCode.EXPIRED,
                    CardState.REPLACED: DeclineCode.REPLACED, CardState.CLOSED: DeclineCode.CLOSED}.get(
                card.state, DeclineCode.NOT_ACTIVE)
            return card_declined(card, code, f"card is {card.state}")
        return await self._load(conn, card)

    async def _apply(self, conn: AsyncConnection, loyal: _Loyal, change: PointsChange, op_id: uuid.UUID,
                     receipt_id: uuid.UUID | None, entry_kind: Callable[[Any], EntryKind] | None = None
                     ) -> list[PendingEntry]:
        """Write a PointsChange: lots deleted, shrunk or added, the debt, and one entry per movement."""
        before = {lot.id: lot for lot in loyal.book.lots}
        after = {lot.id: lot for lot in change.book.lots}
        gone = [lot_id for lot_id in before if lot_id not in after]
        if gone:
            await conn.execute(sa.delete(points_lots).where(points_lots.c.id.in_(gone)))
        for lot_id, lot in after.items():
            old = before.get(lot_id)
            if old is None:
                await conn.execute(sa.insert(points_lots).values(
                    id=lot.id, card_id=loyal.card.id, operation_id=op_id, receipt_id=receipt_id, points=lot.points,
                    earned=lot.points, earned_at=lot.earned_at, available_at=lot.available_at,
                    expires_at=lot.expires_at))
            elif old.points != lot.points:
                await conn.execute(sa.update(points_lots).where(points_lots.c.id == lot_id).values(points=lot.points))
        if change.book.debt != loyal.book.debt:
            await conn.execute(sa.update(loyalty_cards).where(loyalty_cards.c.card_id == loyal.card.id)
                               .values(points_debt=change.book.debt, updated_at=datetime.now(UTC)))
        lines = []
        for movement in change.movements:
            loyal.balance += movement.points
            kind = entry_kind(movement) if entry_kind else EntryKind(movement.kind.value)
            lines.append(PendingEntry(loyal.card.id, loyal.account_id, kind, movement.points, 0, loyal.balance,
                                      POINTS_CURRENCY))
        loyal.book = change.book
        return lines

    @staticmethod
    def _spendable(loyal: _Loyal, now: datetime) -> int:
        """Points a card may spend now: its available lots beyond what it owes (stores count the same)."""
        balances = loyal.book.balances(now)
        return max(balances.available - balances.debt, 0)

    @staticmethod
    def _points_view(loyal: _Loyal, now: datetime) -> dict[str, Any]:
        balances = loyal.book.balances(now)
        return {"balance": loyal.balance, "available": balances.available, "pending": balances.pending,
                "debt": balances.debt, "tier": loyal.tier}

    async def _plan(self, conn: AsyncConnection, card: CardRow) -> tuple[Any, LoyaltyPlan | None]:
        rules = await self.rules.current(conn)
        return rules, rules.plan(card.programme.code)

    # -- receipts ----------------------------------------------------------------------------------

    async def register_receipt(self, op_id: uuid.UUID, body: ReceiptInput, origin: Origin,
                               payload: dict[str, Any], device_time: datetime | None = None) -> tuple[dict, bool]:
        """Register a purchase on a loyalty card and credit what it earns (first-purchase bonus included)."""
        async def handler(conn: AsyncConnection, op: uuid.UUID, now: datetime) -> Outcome:
            loyal = await self._loyal_card(conn, body.card_number)
            if isinstance(loyal, Outcome):
                return loyal
            return await self._earn(conn, loyal, op, body, origin, now)

        return await self.ledger.execute(op_id=op_id, kind=K.RECEIPT, payload=payload, origin=origin,
                                         handler=handler, device_time=device_time)

    async def _store(self, conn: AsyncConnection, origin: Origin, store_code: str | None) -> tuple[int | None, str]:
        if store_code is not None:
            row = (await conn.execute(sa.select(stores.c.id, stores.c.code).where(stores.c.code == store_code))).first()
            if row is None:
                raise InvalidInput(f"unknown store {store_code!r}", code="unknown_store")
            return row.id, row.code
        if origin.store_id is None:
            raise InvalidInput("a receipt names its store", code="store_required")
        code = (await conn.execute(sa.select(stores.c.code).where(stores.c.id == origin.store_id))).scalar_one()
        return origin.store_id, code

    async def _earn(self, conn: AsyncConnection, loyal: _Loyal, op_id: uuid.UUID, body: ReceiptInput,
                    origin: Origin, now: datetime, awarded: int | None = None,
                    store_awards: list[dict[str, Any]] | None = None) -> Outcome:
        card = loyal.card
        if body.currency != card.programme.currency:
            return card_declined(card, DeclineCode.CURRENCY_MISMATCH,
                                 f"the card's programme is in {card.programme.currency}")
        store_id, store_code = await self._store(conn, origin, body.store_code)
        groups: frozenset[str] = frozenset()
        if loyal.customer_id is not None:
            groups = frozenset((await conn.execute(sa.select(customer_groups.c.code).where(
                customer_groups.c.customer_id == loyal.customer_id))).scalars())
        receipt = Receipt(id=str(op_id), card=card.number, store=store_code, at=body.at, currency=body.currency,
                          lines=body.lines, store_groups=await groups_of_store(conn, store_id),
                          customer_groups=groups, tier=loyal.tier, card_type=card.programme.code)
        rules, plan = await self._plan(conn, card)
        earning = rules.scheme_set(card.programme.code).evaluate(receipt)
        points = earning.total if awarded is None else awarded
        instant = min(body.at.astimezone(UTC), now)  # a clock ahead of ours cannot date points in the future
        policy = plan.points if plan else PointsPolicy()
        entries: list[PendingEntry] = []
        if points:
            change = loyal.book.earn(str(op_id), points, instant, policy,
                                     receipt=str(op_id))
            entries += await self._apply(conn, loyal, change, op_id, op_id)
        bonus = 0
        if loyal.first_purchase_at is None:
            bonus = plan.bonuses.first_purchase if plan else 0
            await conn.execute(sa.update(loyalty_cards).where(loyalty_cards.c.card_id == card.id)
                               .values(first_purchase_at=instant, updated_at=now))
            loyal.first_purchase_at = instant
            if bonus:
                change = loyal.book.earn(f"{op_id}:first", bonus, instant,
                                         policy)
                entries += await self._apply(conn, loyal, change, op_id, None,
                                             lambda m: EntryKind.BONUS if m.kind.value == "earn" else EntryKind(
                                                 m.kind.value))
        awards = [{"line": a.line, "scheme": a.scheme, "version": a.version, "points": a.points}
                  for a in earning.awards]
        if awarded is not None and awarded != earning.total and store_awards is not None:
            awards = store_awards  # the points stand as the store gave them: so do their awards (for returns)
        await conn.execute(sa.insert(receipts).values(
            id=op_id, card_id=card.id, customer_id=loyal.customer_id, store_id=store_id,
            terminal_id=origin.terminal_id, kind="sale", original_id=None, at=instant, local_date=body.at.date(),
            utc_offset=int(body.at.utcoffset().total_seconds() // 60), currency=body.currency, total=receipt.value,
            lines=[_line_json(line) for line in body.lines], items=sorted({line.item for line in body.lines}),
            item_groups=sorted({line.item_group for line in body.lines if line.item_group}), points=points,
            awards=awards, channel=origin.channel, created_at=now))
        for hook in self.after_receipt:
            await hook(conn, card.id, now)
        if self.after_receipt:  # a review may have moved the card's tier
            loyal.tier = (await conn.execute(sa.select(loyalty_cards.c.tier).where(
                loyalty_cards.c.card_id == card.id))).scalar()
        out = Outcome(True, card, receipt.value, entries=entries)
        out.extra = {"points_earned": points, "bonus": bonus, "awards": awards,
                     "points": self._points_view(loyal, now)}
        if awarded is not None and awarded != earning.total:
            out.extra["points_by_rules"] = earning.total
        return out

    async def return_goods(self, op_id: uuid.UUID, body: ReturnInput, origin: Origin, payload: dict[str, Any],
                           device_time: datetime | None = None) -> tuple[dict, bool]:
        """Register goods brought back: the receipt's points for them are taken back (into a debt if spent)."""
        async def handler(conn: AsyncConnection, op: uuid.UUID, now: datetime) -> Outcome:
            loyal = await self._loyal_card(conn, body.card_number)
            if isinstance(loyal, Outcome):
                return loyal
            return await self._take_back(conn, loyal, op, body, origin, now)

        return await self.ledger.execute(op_id=op_id, kind=K.RECEIPT_RETURN, payload=payload, origin=origin,
                                         handler=handler, device_time=device_time)

    async def _take_back(self, conn: AsyncConnection, loyal: _Loyal, op_id: uuid.UUID, body: ReturnInput,
                         origin: Origin, now: datetime) -> Outcome:
        card = loyal.card
        sale = (await conn.execute(sa.select(receipts).where(receipts.c.id == body.original,
                                                             receipts.c.kind == "sale"))).first()
        if sale is None or sale.card_id != card.id:
            return card_declined(card, DeclineCode.ORIGINAL_NOT_FOUND, "no receipt with that id on this card")
        returned = [0] * len(sale.lines)
        for row in await conn.execute(sa.select(receipts.c.lines).where(receipts.c.original_id == sale.id)):
            for line in row.lines:
                returned[line["line"]] += line["quantity"]
        wanted = body.lines if body.lines is not None else tuple(
            (i, line["quantity"] - returned[i]) for i, line in enumerate(sale.lines) if line["quantity"] > returned[i])
        if not wanted:
            return card_declined(card, DeclineCode.RETURN_EXCEEDS_RECEIPT, "everything on the receipt was returned")
        taken: dict[int, int] = {}
        for index, quantity in wanted:
            if not 0 <= index < len(sale.lines) or quantity <= 0:
                return card_declined(card, DeclineCode.RETURN_EXCEEDS_RECEIPT, f"the receipt has no line {index}")
            taken[index] = taken.get(index, 0) + quantity
            if returned[index] + taken[index] > sale.lines[index]["quantity"]:
                return card_declined(card, DeclineCode.RETURN_EXCEEDS_RECEIPT,
                                     f"line {index}: more returned than was bought")
        points = value = 0
        lines_json = []
        for index, quantity in taken.items():
            line = sale.lines[index]
            line_points = sum(a["points"] for a in sale.awards if a["line"] == index)
            # Points back are the line's points times the share returned so far, rounded up, less what
            # earlier part returns took: several part returns take exactly what one whole return would.
            points += _share_up(line_points, returned[index] + quantity, line["quantity"]) \
                - _share_up(line_points, returned[index], line["quantity"])
            part = line["value"] * quantity // line["quantity"]
            value += part
            lines_json.append({"line": index, "item": line["item"], "item_group": line.get("item_group"),
                               "quantity": quantity, "value": part})
        if all(returned[i] + taken.get(i, 0) == line["quantity"] for i, line in enumerate(sale.lines)):
            points += sum(a["points"] for a in sale.awards if a["line"] is None)  # per-receipt awards go too
        points = min(points, sale.points - await self._already_taken(conn, sale.id))
        entries: list[PendingEntry] = []
        if points > 0:
            change = loyal.book.claw_back(points, now, str(sale.id))
            entries = await self._apply(conn, loyal, change, op_id, sale.id)
        await conn.execute(sa.insert(receipts).values(
            id=op_id, card_id=card.id, customer_id=loyal.customer_id, store_id=origin.store_id or sale.store_id,
            terminal_id=origin.terminal_id, kind="return", original_id=sale.id, at=now, local_date=now.date(),
            utc_offset=0, currency=sale.currency, total=-value, lines=lines_json,
            items=sorted({li["item"] for li in lines_json}),
            item_groups=sorted({li["item_group"] for li in lines_json if li["item_group"]}), points=-max(points, 0),
            awards=[], channel=origin.channel, created_at=now))
        out = Outcome(True, card, value, entries=entries, reference=sale.id)
        out.extra = {"points_taken_back": max(points, 0), "value_returned": value,
                     "points": self._points_view(loyal, now)}
        return out

    @staticmethod
    async def _already_taken(conn: AsyncConnection, sale_id: uuid.UUID) -> int:
        total = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(receipts.c.points), 0))
                                    .where(receipts.c.original_id == sale_id))).scalar_one()
        return -total

    # -- spending ----------------------------------------------------------------------------------

    async def redeem(self, op_id: uuid.UUID, number: str, receipt_total: int, currency: str,
                     points_wanted: int | None, origin: Origin, payload: dict[str, Any],
                     device_time: datetime | None = None) -> tuple[dict, bool]:
        """Points become a discount on the receipt, within the card tier's rate and cap."""
        async def handler(conn: AsyncConnection, op: uuid.UUID, now: datetime) -> Outcome:
            loyal = await self._loyal_card(conn, number)
            if isinstance(loyal, Outcome):
                return loyal
            card = loyal.card
            if currency != card.programme.currency:
                return card_declined(card, DeclineCode.CURRENCY_MISMATCH,
                                     f"the card's programme is in {card.programme.currency}")
            _, plan = await self._plan(conn, card)
            tier = plan.tier_of(loyal.tier) if plan else None
            if plan is None or tier is None:
                return card_declined(card, DeclineCode.REDEMPTION_NOT_ALLOWED, "the programme does not redeem points")
            available = self._spendable(loyal, now)
            if available == 0 or (points_wanted is not None and points_wanted > available):
                return card_declined(card, DeclineCode.INSUFFICIENT_POINTS, f"{available} points available")
            fallback = plan.fallback() if plan.redemption_method is RedemptionMethod.FALLBACK else None
            decided = redemption(tier, receipt_total, available, plan.redemption_method, fallback,
                                 points_wanted=points_wanted)
            if decided.points == 0:
                return card_declined(card, DeclineCode.REDEMPTION_NOT_ALLOWED,
                                     f"nothing to redeem ({decided.limited_by.value})")
            before = {lot.id: lot for lot in loyal.book.lots}
            change = loyal.book.spend(decided.points, now, reference=str(op))
            spent = [_spent(before[m.lot], -m.points) for m in change.movements if m.lot]
            entries = await self._apply(conn, loyal, change, op, None)
            out = Outcome(True, card, decided.discount_minor, entries=entries)
            out.extra = {"points_redeemed": decided.points, "discount": decided.discount_minor,
                         "tier": decided.tier_code, "limited_by": decided.limited_by.value, "lots": spent,
                         "points": self._points_view(loyal, now)}
            return out

        return await self.ledger.execute(op_id=op_id, kind=K.POINTS_REDEEM, payload=payload, origin=origin,
                                         handler=handler, device_time=device_time)

    async def reverse_redemption(self, op_id: uuid.UUID, original: uuid.UUID, origin: Origin,
                                 payload: dict[str, Any], device_time: datetime | None = None) -> tuple[dict, bool]:
        """The till takes a redemption back: its points return to the card as they were (same expiry)."""
        async def handler(conn: AsyncConnection, op: uuid.UUID, now: datetime) -> Outcome:
            orig = await self.ledger.original(conn, original)
            if orig is None or orig.kind != K.POINTS_REDEEM.value or not orig.approved:
                return Outcome.declined(DeclineCode.ORIGINAL_NOT_FOUND, "no approved points redemption with that id")
            if orig.store_id != origin.store_id and origin.channel == "till":
                return Outcome.declined(DeclineCode.ORIGINAL_MISMATCH, "the redemption was made at another store")
            card = await self.ledger.lock_card(conn, card_id=orig.card_id)
            if await self.ledger.settled(conn, orig.id):
                return card_declined(card, DeclineCode.ALREADY_CANCELLED, "that redemption was already reversed")
            loyal = await self._load(conn, card)
            restored = tuple(Lot(f"{op}:{i}", lot["points"], datetime.fromisoformat(lot["earned_at"]),
                                 datetime.fromisoformat(lot["available_at"]),
                                 datetime.fromisoformat(lot["expires_at"]) if lot["expires_at"] else None,
                                 lot["receipt"]) for i, lot in enumerate(orig.result.get("lots", ())))
            # An offline redemption that went beyond the card's points made a debt: taking it back cancels
            # what is still owed of it; what was repaid since comes back as points.
            owed = int(orig.result.get("points_owed") or 0)
            forgiven = min(owed, loyal.book.debt)
            movements = [PointsMovement(MovementKind.EARN, lot.points, lot.id, now) for lot in restored]
            if forgiven:
                movements.append(PointsMovement(MovementKind.DEBT_REPAYMENT, forgiven, None, now))
            if owed > forgiven:
                repaid = Lot(f"{op}:repaid", owed - forgiven, now, now, None)
                restored += (repaid,)
                movements.append(PointsMovement(MovementKind.EARN, repaid.points, repaid.id, now))
            book = PointsBook(loyal.book.lots + restored, loyal.book.debt - forgiven)
            change = PointsChange(book, tuple(movements))
            entries = await self._apply(conn, loyal, change, op, None, lambda m: EntryKind.SPEND_CANCEL)
            out = Outcome(True, card, orig.amount, entries=entries, settles=orig.id)
            out.extra = {"points_returned": sum(lot.points for lot in restored) + forgiven,
                         "points": self._points_view(loyal, now)}
            return out

        return await self.ledger.execute(op_id=op_id, kind=K.POINTS_REDEEM_REVERSAL, payload=payload,
                                         origin=origin, handler=handler, device_time=device_time)

    async def redeem_reward(self, op_id: uuid.UUID, number: str, reward: str, origin: Origin,
                            payload: dict[str, Any]) -> tuple[dict, bool]:
        """Spend points on a reward of the catalogue (its stock, if counted, goes down by one)."""
        async def handler(conn: AsyncConnection, op: uuid.UUID, now: datetime) -> Outcome:
            loyal = await self._loyal_card(conn, number)
            if isinstance(loyal, Outcome):
                return loyal
            row = (await conn.execute(sa.select(rewards).where(rewards.c.code == reward).with_for_update())).first()
            if row is None or not row.active:
                raise NotFound(f"no active reward {reward!r}")
            if row.stock is not None and row.stock <= 0:
                return card_declined(loyal.card, DeclineCode.REWARD_OUT_OF_STOCK, f"reward {reward} is out of stock")
            available = self._spendable(loyal, now)
            if row.points > available:
                return card_declined(loyal.card, DeclineCode.INSUFFICIENT_POINTS, f"{available} points available")
            entries = await self._apply(conn, loyal, loyal.book.spend(row.points, now, reference=str(op)), op, None)
            if row.stock is not None:
                await conn.execute(sa.update(rewards).where(rewards.c.code == reward).values(stock=rewards.c.stock - 1))
            out = Outcome(True, loyal.card, 0, entries=entries)
            out.extra = {"reward": reward, "points_redeemed": row.points, "points": self._points_view(loyal, now)}
            return out

        return await self.ledger.execute(op_id=op_id, kind=K.REWARD, payload=payload, origin=origin, handler=handler)

    # -- what stores decided offline ---------------------------------------------------------------

    async def apply_synced(self, conn: AsyncConnection, entry: Any, card: CardRow, origin: Origin,
                           now: datetime) -> tuple[Outcome, list[str]]:
        """Apply a store's offline receipt, return or redemption (``sync.OutboxEntry``) to a card the sync
        batch has locked: (the outcome, flags for head office). A receipt earns what the store gave (the
        customer's slip says so) and is flagged when central's rules say otherwise; a redemption within the
        store's limits always posts, into a debt if the points were spent meanwhile elsewhere."""
        if card.programme.kind is not ProgrammeKind.LOYALTY:
            return card_declined(card, DeclineCode.NOT_LOYALTY, f"{card.programme.code} is not a loyalty programme"), []
        loyal = await self._load(conn, card)
        detail = entry.loyalty
        if entry.kind == K.RECEIPT:
            lines = tuple(ReceiptLine(**line.model_dump()) for line in detail.lines)
            body = ReceiptInput(card.number, detail.at, entry.currency, lines)
            given = [{"line": line, "scheme": scheme, "version": version, "points": points}
                     for line, scheme, version, points in detail.awards]
            out = await self._earn(conn, loyal, entry.txn_id, body, origin, now, awarded=detail.points,
                                   store_awards=given if sum(a["points"] for a in given) == detail.points else None)
            return out, (["points_differ"] if "points_by_rules" in out.extra else [])
        if entry.kind == K.RECEIPT_RETURN:
            wanted = tuple(tuple(pair) for pair in detail.returned) if detail.returned is not None else None
            out = await self._take_back(conn, loyal, entry.txn_id, ReturnInput(card.number, entry.original_txn_id,
                                                                                wanted), origin, now)
            return out, []
        available = self._spendable(loyal, now)
        taken = min(detail.points, available)
        entries: list[PendingEntry] = []
        spent: list[dict[str, Any]] = []
        if taken:
            before = {lot.id: lot for lot in loyal.book.lots}
            change = loyal.book.spend(taken, now, str(entry.txn_id))
            spent = [_spent(before[m.lot], -m.points) for m in change.movements if m.lot]
            entries += await self._apply(conn, loyal, change, entry.txn_id, None)
        owed = detail.points - taken
        if owed:
            debt = PointsMovement(MovementKind.CLAWBACK_DEBT, -owed, None, now, str(entry.txn_id))
            change = PointsChange(PointsBook(loyal.book.lots, loyal.book.debt + owed), (debt,))
            entries += await self._apply(conn, loyal, change, entry.txn_id, None, lambda m: EntryKind.SPEND)
        out = Outcome(True, card, entry.amount, entries=entries)
        out.extra = {"points_redeemed": detail.points, "discount": entry.amount, "lots": spent,
                     "points": self._points_view(loyal, now)}
        if owed:
            out.extra["points_owed"] = owed
        return out, (["points_overdrawn"] if owed else [])

    # -- a lost card replaced -----------------------------------------------------------------------

    async def move_to_replacement(self, conn: AsyncConnection, old: CardRow, new: CardRow,
                                  now: datetime) -> list[PendingEntry]:
        """A duplicate's loyalty side: the lots (with their dates), the debt, the tier and discount level, the
        first purchase and the customer move to the replacement; the points balance moves by a transfer pair.
        Nothing happens for a card that never had points or loyalty state."""
        if old.programme.kind is not ProgrammeKind.LOYALTY:
            return []
        has = (await conn.execute(sa.select(accounts.c.id).where(accounts.c.card_id == old.id,
                                                                 accounts.c.kind == POINTS))).first()
        customer = (await conn.execute(sa.select(cards.c.customer_id).where(cards.c.id == old.id))).scalar()
        if customer is not None:
            await conn.execute(sa.update(cards).where(cards.c.id == new.id).values(customer_id=customer))
        if has is None:
            return []
        source, target = await self._load(conn, old), await self._load(conn, new)
        state = (await conn.execute(sa.select(loyalty_cards).where(loyalty_cards.c.card_id == old.id))).one()
        await conn.execute(sa.update(points_lots).where(points_lots.c.card_id == old.id).values(card_id=new.id))
        await conn.execute(sa.update(loyalty_cards).where(loyalty_cards.c.card_id == new.id).values(
            tier=state.tier, tier_since=state.tier_since, discount_bps=state.discount_bps,
            points_debt=state.points_debt + target.book.debt,
            first_purchase_at=state.first_purchase_at, updated_at=now))
        await conn.execute(sa.update(loyalty_cards).where(loyalty_cards.c.card_id == old.id).values(
            points_debt=0, updated_at=now))
        moved = source.balance
        if not moved:
            return []
        return [PendingEntry(old.id, source.account_id, EntryKind.TRANSFER_OUT, -moved, 0, 0, POINTS_CURRENCY),
                PendingEntry(new.id, target.account_id, EntryKind.TRANSFER_IN, moved, 0, target.balance + moved,
                             POINTS_CURRENCY)]

    # -- e-money and points ------------------------------------------------------------------------

    async def convert(self, op_id: uuid.UUID, number: str, direction: str, amount: int, origin: Origin,
                      payload: dict[str, Any]) -> tuple[dict, bool]:
        """Between a card's points and its e-money at the plan's rates: ``to_emoney`` cashes in up to ``amount``
        points, ``to_points`` buys points with up to ``amount`` minor units; the side credited is floored and the
        side debited is the least that pays for it (a conversion never favours the customer)."""
        if direction not in ("to_emoney", "to_points"):
            raise InvalidInput("direction is to_emoney or to_points")

        async def handler(conn: AsyncConnection, op: uuid.UUID, now: datetime) -> Outcome:
            loyal = await self._loyal_card(conn, number)
            if isinstance(loyal, Outcome):
                return loyal
            card = loyal.card
            _, plan = await self._plan(conn, card)
            if plan is None or plan.emoney_rates is None:
                return card_declined(card, DeclineCode.REDEMPTION_NOT_ALLOWED, "the programme converts nothing")
            await self.ledger.ensure_account(conn, card)
            if direction == "to_emoney":
                deal = points_to_emoney(amount, plan.emoney_rates)
                available = self._spendable(loyal, now)
                if deal.points > available or not deal.minor:
                    return card_declined(card, DeclineCode.INSUFFICIENT_POINTS, f"{available} points available")
                change = loyal.book.spend(deal.points, now, reference=str(op))
                lines = await self._apply(conn, loyal, change, op, None, lambda m: EntryKind.CONVERSION)
                lines.append(self.ledger.entry(card, EntryKind.CONVERSION, deal.minor))
            else:
                deal = emoney_to_points(amount, plan.emoney_rates)
                if deal.minor > card.balance - card.held or not deal.points:
                    return card_declined(card, DeclineCode.INSUFFICIENT_FUNDS,
                                         f"{card.balance - card.held} of e-money available")
                lines = [self.ledger.entry(card, EntryKind.CONVERSION, -deal.minor)]
                change = loyal.book.earn(str(op), deal.points, now, plan.points)
                lines += await self._apply(conn, loyal, change, op, None, lambda m: EntryKind.CONVERSION)
            out = Outcome(True, card, deal.minor, entries=lines)
            out.extra = {"direction": direction, "points_converted": deal.points, "emoney": deal.minor,
                         "points": self._points_view(loyal, now)}
            return out

        return await self.ledger.execute(op_id=op_id, kind=K.POINTS_CONVERT, payload=payload, origin=origin,
                                         handler=handler)

    # -- credits the server or staff make ----------------------------------------------------------

    async def credit_in(self, conn: AsyncConnection, card: CardRow, op_id: uuid.UUID, kind: OperationKind,
                        points: int, origin: Origin, result_extra: dict[str, Any], now: datetime,
                        entry_kind: EntryKind = EntryKind.BONUS) -> bool:
        """Credit ``points`` to a locked card inside the caller's transaction, recorded once under ``op_id``
        (False if that id was recorded already)."""
        if (await conn.execute(sa.select(operations.c.id).where(operations.c.id == op_id))).first() is not None:
            return False
        loyal = await self._load(conn, card)
        _, plan = await self._plan(conn, card)
        policy = plan.points if plan else PointsPolicy()
        change = loyal.book.earn(str(op_id), points, now, policy)
        lines = await self._apply(conn, loyal, change, op_id, None,
                                  lambda m: entry_kind if m.kind.value == "earn" else EntryKind(m.kind.value))
        out = Outcome(True, card, 0, entries=lines)
        out.extra = {"points_credited": points, **result_extra, "points": self._points_view(loyal, now)}
        result = self.ledger.result(op_id, kind, out, now)
        digest = self.ledger.digest(kind, {"card": card.number, "points": points, **result_extra}, origin)
        await conn.execute(self.ledger.record_statement,
                           self.ledger.operation_row(op_id, kind, digest, origin, out, result, None, now))
        await self.ledger.post(conn, [(op_id, origin.store_id, e) for e in lines], now)
        return True

    async def on_card_bound(self, conn: AsyncConnection, card_id: int) -> None:
        """The registration bonus, when a card is first bound to a customer (once per card, ever)."""
        card = await self.ledger.lock_card(conn, card_id=card_id)
        if card is None or card.programme.kind is not ProgrammeKind.LOYALTY:
            return
        _, plan = await self._plan(conn, card)
        if plan is None or not plan.bonuses.registration:
            return
        now = datetime.now(UTC)
        await self.credit_in(conn, card, system_id("bonus", BonusKind.REGISTRATION, card.id), K.POINTS_BONUS,
                             plan.bonuses.registration, Origin("system", actor="registration"),
                             {"bonus": BonusKind.REGISTRATION}, now)

    async def birthday_bonuses(self, today: date | None = None) -> int:
        """Credit the birthday bonus to every active loyalty card whose customer celebrates ``today``
        (default: today in UTC); once per card and year, however often it runs. Returns the cards credited."""
        today = today or datetime.now(UTC).date()
        now = datetime.now(UTC)
        async with self.db.connect() as conn:
            rules = await self.rules.current(conn)
            months = {today.month} | ({2} if today.month == 2 else set())
            rows = (await conn.execute(
                sa.select(cards.c.id, customers.c.birth_date)
                .select_from(cards.join(customers, customers.c.id == cards.c.customer_id))
                .where(cards.c.state == CardState.ACTIVE.value, customers.c.active,
                       customers.c.birth_date.is_not(None)))).all()
        due = [r.id for r in rows if r.birth_date.month in months and _celebrates(r.birth_date, today)]
        credited = 0
        for card_id in due:
            async with self.db.begin() as conn:
                card = await self.ledger.lock_card(conn, card_id=card_id)
                plan = rules.plan(card.programme.code) if card.programme.kind is ProgrammeKind.LOYALTY else None
                if plan is None or not plan.bonuses.birthday:
                    continue
                if await self.credit_in(conn, card, system_id("bonus", BonusKind.BIRTHDAY, card_id, today.year),
                                        K.POINTS_BONUS, plan.bonuses.birthday, Origin("system", actor="birthday"),
                                        {"bonus": BonusKind.BIRTHDAY, "year": today.year}, now):
                    credited += 1
        log.info("birthday bonuses date=%s candidates=%s credited=%s", today.isoformat(), len(due), credited)
        return credited

    async def adjust(self, request_id: uuid.UUID, number: str, points: int, reason: str, actor: str,
                     remote: str | None = None) -> tuple[dict, bool]:
        """A staff credit (positive) or debit (negative, from available points) with a reason, audited."""
        if points == 0:
            raise InvalidInput("an adjustment moves at least one point")
        if not reason.strip():
            raise InvalidInput("an adjustment needs a reason")
        origin = Origin("admin", actor=actor)

        async def handler(conn: AsyncConnection, op: uuid.UUID, now: datetime) -> Outcome:
            card = await self.ledger.lock_card(conn, number=number)
            if card is None:
                raise NotFound("no such card")
            if card.programme.kind is not ProgrammeKind.LOYALTY:
                return card_declined(card, DeclineCode.NOT_LOYALTY, f"{card.programme.code} is not a loyalty programme")
            loyal = await self._load(conn, card)
            if points > 0:
                _, plan = await self._plan(conn, card)
                policy = plan.points if plan else PointsPolicy()
                change = loyal.book.earn(str(op), points, now, policy)
            else:
                available = self._spendable(loyal, now)
                if -points > available:
                    return card_declined(card, DeclineCode.INSUFFICIENT_POINTS, f"{available} points available")
                change = loyal.book.spend(-points, now, reference=str(op))
            entries = await self._apply(conn, loyal, change, op, None, lambda m: EntryKind.ADJUSTMENT)
            await audit(conn, actor, "points_adjust", f"card:{mask(number)}",
                        {"points": points, "reason": reason, "request_id": str(op)}, remote)
            out = Outcome(True, card, 0, entries=entries)
            out.extra = {"points_adjusted": points, "reason": reason, "points": self._points_view(loyal, now)}
            return out

        return await self.ledger.execute(op_id=request_id, kind=K.POINTS_ADJUST,
                                         payload={"card": number, "points": points, "reason": reason},
                                         origin=origin, handler=handler)

    # -- the expiry job ----------------------------------------------------------------------------

    async def expire_points(self, now: datetime | None = None, chunk: int = 500) -> int:
        """Remove the lots expired by ``now``, one operation per card; returns the points expired."""
        now = now or datetime.now(UTC)
        async with self.db.connect() as conn:
            card_ids = list((await conn.execute(sa.select(points_lots.c.card_id).distinct().where(
                points_lots.c.expires_at <= now))).scalars())
        total = 0
        for n, card_id in enumerate(card_ids, 1):
            async with self.db.begin() as conn:
                card = await self.ledger.lock_card(conn, card_id=card_id)
                loyal = await self._load(conn, card)
                change = loyal.book.expire(now)
                if not change.movements:
                    continue
                op_id = system_id("points-expiry", card_id, *sorted(m.lot for m in change.movements))
                entries = await self._apply(conn, loyal, change, op_id, None)
                out = Outcome(True, card, 0, entries=entries)
                out.extra = {"points_expired": -change.points, "points": self._points_view(loyal, now)}
                origin = Origin("system", actor="points-expiry")
                result = self.ledger.result(op_id, K.POINTS_EXPIRY, out, now)
                digest = self.ledger.digest(K.POINTS_EXPIRY, {"card": card.number}, origin)
                await conn.execute(self.ledger.record_statement, self.ledger.operation_row(
                    op_id, K.POINTS_EXPIRY, digest, origin, out, result, None, now))
                await self.ledger.post(conn, [(op_id, None, e) for e in entries], now)
                total -= change.points
            if n % chunk == 0:
                log.info("points expiry progress cards=%s/%s points=%s", n, len(card_ids), total)
        log.info("points expiry done cards=%s points=%s", len(card_ids), total)
        return total

    # -- reading -----------------------------------------------------------------------------------

    async def points_of(self, number: str, now: datetime | None = None) -> dict[str, Any]:
        """A card's points, tier and discount level, and its next expiring lot (the till's inquiry)."""
        now = now or datetime.now(UTC)
        async with self.db.connect() as conn:
            card = await self.ledger.lock_card(conn, number=number, lock=False)
            if card is None:
                raise NotFound("no such card")
            if card.programme.kind is not ProgrammeKind.LOYALTY:
                raise InvalidInput(f"{card.programme.code} is not a loyalty programme", code=DeclineCode.NOT_LOYALTY)
            state = (await conn.execute(sa.select(loyalty_cards).where(loyalty_cards.c.card_id == card.id))).first()
            lots = [_lot(r) for r in await conn.execute(sa.select(points_lots).where(points_lots.c.card_id == card.id))]
            balance = (await conn.execute(sa.select(accounts.c.balance).where(
                accounts.c.card_id == card.id, accounts.c.kind == POINTS))).scalar() or 0
        book = PointsBook(tuple(lots), state.points_debt if state else 0)
        balances = book.balances(now)
        live = [lot for lot in book.lots if lot.expires_at is not None and not lot.is_expired(now)]
        soonest = min(live, key=lambda lot: lot.expires_at, default=None)
        return {"card": mask(card.number), "card_state": card.state.value, "balance": balance,
                "available": balances.available, "pending": balances.pending, "debt": balances.debt,
                "tier": state.tier if state else None, "discount_bps": state.discount_bps if state else 0,
                "next_expiry": None if soonest is None else {
                    "at": soonest.expires_at.isoformat(),
                    "points": sum(lot.points for lot in live if lot.expires_at == soonest.expires_at)}}

    async def card_loyalty(self, number: str, limit: int = 50) -> dict[str, Any]:
        """Head office's view of a card: points, lots, recent receipts."""
        view = await self.points_of(number)
        async with self.db.connect() as conn:
            card_id = (await conn.execute(sa.select(cards.c.id).where(cards.c.number == number))).scalar_one()
            lots = (await conn.execute(sa.select(points_lots).where(points_lots.c.card_id == card_id)
                                       .order_by(points_lots.c.expires_at, points_lots.c.earned_at))).all()
            recent = (await conn.execute(sa.select(receipts).where(receipts.c.card_id == card_id)
                                         .order_by(receipts.c.at.desc()).limit(limit))).all()
        view["lots"] = [{"id": r.id, "points": r.points, "earned": r.earned, "earned_at": r.earned_at.isoformat(),
                         "available_at": r.available_at.isoformat(),
                         "expires_at": r.expires_at.isoformat() if r.expires_at else None} for r in lots]
        view["receipts"] = [{"id": str(r.id), "kind": r.kind, "at": r.at.isoformat(), "total": r.total,
                             "currency": r.currency, "points": r.points, "channel": r.channel,
                             "original_id": str(r.original_id) if r.original_id else None} for r in recent]
        return view

    # -- rewards catalogue -------------------------------------------------------------------------

    async def put_reward(self, code: str, name: str, points: int, active: bool, stock: int | None, actor: str,
                         remote: str | None = None) -> dict[str, Any]:
        async with self.db.begin() as conn:
            found = (await conn.execute(sa.select(rewards.c.code).where(rewards.c.code == code))).first()
            values = dict(name=name, points=points, active=active, stock=stock)
            if found:
                await conn.execute(sa.update(rewards).where(rewards.c.code == code).values(**values))
            else:
                await conn.execute(sa.insert(rewards).values(code=code, created_at=datetime.now(UTC), **values))
            await audit(conn, actor, "reward_put", f"reward:{code}", values, remote)
        return {"code": code, **values}

    # -- store groups ------------------------------------------------------------------------------

    async def set_store_groups(self, code: str, groups: list[str], actor: str,
                               remote: str | None = None) -> dict[str, Any]:
        """Replace the groups store ``code`` is in (audited with before and after); its edge learns them at
        its next pull."""
        async with self.db.begin() as conn:
            store_id = (await conn.execute(sa.select(stores.c.id).where(stores.c.code == code))).scalar()
            if store_id is None:
                raise NotFound(f"no store {code!r}")
            before = sorted(await groups_of_store(conn, store_id))
            after = sorted(set(groups))
            await conn.execute(sa.delete(store_groups).where(store_groups.c.store_id == store_id))
            if after:
                await conn.execute(sa.insert(store_groups), [{"store_id": store_id, "code": g} for g in after])
            await audit(conn, actor, "store_groups_set", f"store:{code}", {"before": before, "after": after}, remote)
            await bump_config(conn, store_id)
        return {"store": code, "groups": after}

    async def list_rewards(self) -> list[dict[str, Any]]:
        async with self.db.connect() as conn:
            rows = await conn.execute(sa.select(rewards).order_by(rewards.c.code))
            return [{"code": r.code, "name": r.name, "points": r.points, "active": r.active, "stock": r.stock}
                    for r in rows]


async def groups_of_store(conn: AsyncConnection, store_id: int | None) -> frozenset[str]:
    if store_id is None:
        return frozenset()
    return frozenset((await conn.execute(sa.select(store_groups.c.code).where(
        store_groups.c.store_id == store_id))).scalars())


async def loyalty_snapshots(conn: AsyncConnection, card_ids: list[int], now: datetime | None = None
                            ) -> dict[int, dict[str, Any]]:
    """What stores keep of loyalty cards: points available now (lots minus debt), tier, discount level."""
    if not card_ids:
        return {}
    now = now or datetime.now(UTC)
    live = sa.and_(points_lots.c.available_at <= now,
                   sa.or_(points_lots.c.expires_at.is_(None), points_lots.c.expires_at > now))
    available = dict((await conn.execute(
        sa.select(points_lots.c.card_id, sa.func.sum(points_lots.c.points)).where(
            points_lots.c.card_id.in_(card_ids), live).group_by(points_lots.c.card_id))).all())
    out = {card_id: {"points": int(available.get(card_id, 0)), "tier": None, "discount_bps": 0} for card_id in card_ids}
    for r in await conn.execute(sa.select(loyalty_cards).where(loyalty_cards.c.card_id.in_(card_ids))):
        out[r.card_id].update(points=out[r.card_id]["points"] - r.points_debt, tier=r.tier,
                              discount_bps=r.discount_bps)
    # The customer's groups, which earning schemes may name: stores earn by them offline.
    for card_id, code in await conn.execute(
            sa.select(cards.c.id, customer_groups.c.code)
            .join(customer_groups, customer_groups.c.customer_id == cards.c.customer_id)
            .where(cards.c.id.in_(card_ids)).order_by(cards.c.id, customer_groups.c.code)):
        out[card_id].setdefault("customer_groups", []).append(code)
    return out


def _line_json(line: ReceiptLine) -> dict[str, Any]:
    data: dict[str, Any] = {"item": line.item, "quantity": line.quantity, "value": line.value}
    if line.item_group is not None:
        data["item_group"] = line.item_group
    if line.discount:
        data["discount"] = line.discount
    if line.promotional:
        data["promotional"] = True
    return data


def _share_up(points: int, part: int, whole: int) -> int:
    """``points * part / whole`` rounded up, in exact integers."""
    return -(-points * part // whole)


def _spent(lot: Lot, points: int) -> dict[str, Any]:
    return {"lot": lot.id, "points": points, "earned_at": lot.earned_at.isoformat(),
            "available_at": lot.available_at.isoformat(),
            "expires_at": lot.expires_at.isoformat() if lot.expires_at else None, "receipt": lot.receipt}


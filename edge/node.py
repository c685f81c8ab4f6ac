"""Till operations at the store: online first (forwarded to central), offline within limits.

Every request with a ``txn_id`` is journalled once: a repeat returns the first answer, a repeat
with another payload is refused. Online answers come from central and stay out of the outbox
(central has them). Offline decisions are made with ``core`` and written together with their outbox
entry, the card cache and the next store sequence in one SQLite transaction.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncConnection

from central.services.ledger import mask
from core import (
    CANCELS,
    BlocksExhausted,
    CardState,
    CardView,
    Decision,
    DeclineCode,
    DomainError,
    IdempotencyConflict,
    InvalidInput,
    OfflineCard,
    OfflineLimits,
    OperationKind,
    StoreBudget,
    decide_credit,
    decide_debit,
    decide_offline_debit,
    decide_sale,
    decide_topup,
    expiry_date,
    fingerprint,
    next_number,
)
from core.authorization import decline
from core.secrets import hash_token
from sync import DEBIT_KINDS, OutboxEntry, ProgrammeSpec

from . import local, loyalty
from .config import EdgeConfig
from .db import EdgeDatabase
from .db.tables import cards, deny_list, holds, journal, number_blocks, outbox, sync_state, vouchers

__all__ = ["EdgeNode", "TillOp", "AuthError", "ISSUE"]

log = logging.getLogger("tessera.edge")

K = OperationKind
ISSUE = K.STORE_ISSUE

# The statements of every till request, built once (building them per request costs more than
# running them).
_CONFIG_VERSION = sa.select(sync_state.c.config_version).where(sync_state.c.id == 1)
_REPLAY = sa.select(journal.c.fingerprint, journal.c.result).where(journal.c.txn_id == sa.bindparam("txn"))
_ORIGINAL = sa.select(journal.c.card, journal.c.decision).where(journal.c.txn_id == sa.bindparam("txn"))
_CARD = sa.select(cards).where(cards.c.number == sa.bindparam("number"))
_DENIED = sa.select(deny_list.c.number).where(deny_list.c.number == sa.bindparam("number"))
_INSERT_JOURNAL = sa.insert(journal)
_INSERT_OUTBOX = sa.insert(outbox)
_NEXT_SEQ = sa.update(sync_state).where(sync_state.c.id == 1)
# Kinds central may decide while this store still has unsynced entries on the card: they do not read the
# card's e-money, and points they spend that the store's offline redemptions also spent become a flagged debt.
_ONLINE_WHEN_QUEUED = frozenset({K.RECEIPT, K.RECEIPT_RETURN, K.POINTS_REDEEM_REVERSAL, K.REWARD, K.VOUCHER_REDEEM,
                                 K.VOUCHER_REDEEM_REVERSAL})


class AuthError(DomainError):
    """No valid till token."""

    code = "unauthorized"


@dataclass(frozen=True, slots=True)
class TillOp:
    """One till request as the edge received it: the validated body and the raw bytes to forward."""

    kind: OperationKind
    path: str
    body: BaseModel
    raw: bytes
    authorization: str
    till: str

    @property
    def txn_id(self) -> uuid.UUID:
        return self.body.txn_id

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self.body, name, default)

    def fingerprint(self) -> str:
        fields = self.body.model_dump(mode="json", exclude={"txn_id", "device_time", "pin_block"})
        return fingerprint({"kind": self.kind.value, "till": self.till, **fields})


@dataclass
class _Offline:
    """What an offline handler decided and what it writes besides the journal."""

    decision: Decision
    card: Any = None  # the card row the answer describes
    card_values: dict[str, Any] = field(default_factory=dict)  # new cache values of the card
    entry: dict[str, Any] | None = None  # outbox: kind, amount, delta, debit, original, programme
    statements: list[sa.Executable] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    currency: str | None = None
    spec: ProgrammeSpec | None = None  # the card's programme, where a handler looked it up


class EdgeNode:
    """The store's decision point for its tills."""

    def __init__(self, config: EdgeConfig, db: EdgeDatabase, http: aiohttp.ClientSession) -> None:
        self.config = config
        self.db = db
        self.http = http
        self.clock_offset = 0.0  # central's clock minus ours, learned from sync answers
        self._down_until = 0.0
        self._down_reason: str | None = None
        self.configuration = local.Configuration()
        self.recovered_at = 0.0  # when a till request last found central back after an outage
        self.loyalty_rules = loyalty.RulesCache()

    async def start(self) -> None:
        async with self.db.begin() as conn:
            self.clock_offset = (await local.sync_position(conn)).clock_offset
        await self.refresh_configuration()
        await self.loyalty_rules.refresh(self.db)

    async def refresh_configuration(self) -> local.Configuration:
        """The configuration as last pulled (read again only when a pull changed it)."""
        async with self.db.begin() as conn:
            await self._specs(conn)
        return self.configuration

    # -- central reachability ----------------------------------------------------------------------

    def central_time(self) -> datetime:
        """Now on central's clock, as far as the store knows it."""
        return datetime.now(UTC) + timedelta(seconds=self.clock_offset)

    @property
    def central_down(self) -> bool:
        return time.monotonic() < self._down_until

    def mark_down(self, reason: str) -> None:
        """Decide offline for ``central_retry_seconds`` without trying central; one log line per outage."""
        if self._down_reason is None:
            log.warning("central unreachable: deciding offline reason=%s", reason)
        self._down_reason = reason
        self._down_until = time.monotonic() + self.config.central_retry_seconds

    def mark_up(self) -> None:
        if self._down_reason is not None:
            log.info("central reachable again: deciding online")
            self.recovered_at = time.monotonic()
        self._down_reason = None
        self._down_until = 0.0

    async def _specs(self, conn: AsyncConnection) -> dict[str, ProgrammeSpec]:
        """The programmes as shipped, read from the database once per configuration version."""
        version = (await conn.execute(_CONFIG_VERSION)).scalar_one()
        return (await self.configuration.current(conn, version)).specs

    # -- tills -------------------------------------------------------------------------------------

    async def till_for(self, authorization: str) -> str:
        """The code of the active till whose bearer token this is, or AuthError."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("send Authorization: Bearer <till token>")
        async with self.db.begin() as conn:
            config = await self.configuration.current(conn, (await conn.execute(_CONFIG_VERSION)).scalar_one())
        till = config.tills.get(hash_token(token.strip()))
        if till is None or not till[1]:
            raise AuthError("unknown or disabled till token")
        return till[0]

    # -- the decision flow -------------------------------------------------------------------------

    async def execute(self, op: TillOp) -> tuple[int, dict[str, Any], bool]:
        """(HTTP status, answer, replayed) for one till operation."""
        digest = op.fingerprint()
        async with self.db.begin() as conn:
            first = await self._replay(conn, op, digest)
            if first is not None:
                return 200, first, True
            number, local_only = await self._route(conn, op)
        if not local_only and not self.central_down:
            answer = await self._forward(op.path, op.raw, op.authorization)
            if answer is not None:
                status, data = answer
                if status != 200:
                    return status, data, False
                result, replayed = await self._record_online(op, digest, number, data)
                return 200, result, replayed
        return await self._offline(op, digest)

    async def _replay(self, conn: AsyncConnection, op: TillOp, digest: str) -> dict[str, Any] | None:
        row = (await conn.execute(_REPLAY, {"txn": str(op.txn_id)})).first()
        if row is None:
            return None
        if row.fingerprint != digest:
            raise IdempotencyConflict(f"transaction id {op.txn_id} was already used for a different request")
        return row.result

    async def _route(self, conn: AsyncConnection, op: TillOp) -> tuple[str | None, bool]:
        """The card the operation concerns, and whether only this store can decide it."""
        if op.kind == ISSUE:
            return None, True
        number = op.get("card_number")
        original = op.get("original_txn_id")
        if original is not None:
            orig = (await conn.execute(_ORIGINAL, {"txn": str(original)})).first()
            if orig is not None:
                number = number or orig.card
            if op.kind in (K.CONFIRM, K.VOID):
                hold = await conn.execute(sa.select(holds.c.txn_id).where(holds.c.txn_id == str(original)))
                if hold.first() is not None:
                    return number, True
        if number is not None and op.kind not in _ONLINE_WHEN_QUEUED and await local.has_unacked(conn, number):
            return number, True
        return number, False

    async def _forward(self, path: str, raw: bytes, authorization: str) -> tuple[int, Any] | None:
        """Central's (status, JSON) for the till's own request, or None if it did not answer in time."""
        try:
            async with self.http.post(self.config.central_url.rstrip("/") + path, data=raw,
                                      headers={"Authorization": authorization, "Content-Type": "application/json"},
                                      timeout=aiohttp.ClientTimeout(total=self.config.online_timeout)) as resp:
                if resp.status >= 500:
                    self.mark_down(f"HTTP {resp.status}")
                    return None
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.mark_down(type(exc).__name__)
            return None
        self.mark_up()
        return resp.status, data

    async def _record_online(self, op: TillOp, digest: str, number: str | None,
                             data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        now = self.central_time()
        async with self.db.begin() as conn:
            first = await self._replay(conn, op, digest)
            if first is not None:  # a concurrent repeat recorded it first
                return first, True
            await conn.execute(_INSERT_JOURNAL, dict(
                txn_id=str(op.txn_id), kind=op.kind.value, fingerprint=digest, card=number,
                amount=int(data.get("amount") or 0), original_txn_id=_text(op.get("original_txn_id")),
                decision="online", approved=bool(data.get("approved")), result=data, till=op.till, created_at=now))
            if number is not None and "card_state" in data:
                await self._seen_online(conn, number, data, now)
        return data, False

    async def _seen_online(self, conn: AsyncConnection, number: str, data: dict[str, Any], now: datetime) -> None:
        """Central's word on a card: cache it and restart the card's offline counters."""
        values = dict(state=data["card_state"], balance=int(data["balance"]),
                      held=int(data["balance"]) - int(data["available"]),
                      expires_on=local.parse_date(data.get("expires_on")), offline_amount=0, offline_count=0,
                      last_online_at=now)
        points = data.get("points")
        if isinstance(points, dict) and isinstance(points.get("available"), int):  # a loyalty answer
            values.update(points=points["available"] - int(points.get("debt") or 0), tier=points.get("tier"))
        if await local.has_unacked(conn, number):
            # Decided offline meanwhile (central went down under a concurrent request): central's
            # figures miss that, so keep it on top and keep counting it against the limits.
            values["balance"] += await local.unacked_deltas(conn, number)
            values["held"] += await local.pending_held(conn, number)
            if "points" in values:
                values["points"] -= (await loyalty.unacked_points(conn, [number])).get(number, 0)
            for name in ("offline_amount", "offline_count", "state", "expires_on"):
                values.pop(name)
        known = (await conn.execute(_CARD, {"number": number})).first()
        if known is None:
            spec = local.programme_for_number(await self._specs(conn), number)
            programme = data.get("programme") or (spec.code if spec else None)
            if programme is None:
                return
            values.update(programme=programme, watch=True)  # new to the store: central should tell it more
        await local.upsert_card(conn, number, now, **values)

    async def balance(self, body: BaseModel, raw: bytes, authorization: str) -> tuple[int, dict[str, Any]]:
        """Balance inquiry: central's answer if it gives one, else the store's best estimate."""
        number = body.card_number
        async with self.db.begin() as conn:
            local_only = await local.has_unacked(conn, number)
        if not local_only and not self.central_down:
            answer = await self._forward("/api/v1/till/balance", raw, authorization)
            if answer is not None:
                status, data = answer
                if status == 200 and isinstance(data, dict):
                    data.setdefault("decision", "online")
                    if data.get("found"):
                        async with self.db.begin() as conn:
                            await self._seen_online(conn, number, {**data, "card_state": data["state"]},
                                                    self.central_time())
                return status, data
        return 200, await self.local_balance(number)

    async def local_balance(self, number: str) -> dict[str, Any]:
        """The store's own view of a card (cache, unsynced decisions and local holds included)."""
        async with self.db.begin() as conn:
            row = (await conn.execute(_CARD, {"number": number})).first()
            specs = await self._specs(conn)
        if row is None:
            return {"card": mask(number), "found": False, "decline_code": DeclineCode.UNKNOWN_OFFLINE.value,
                    "decision": "offline"}
        spec = specs.get(row.programme)
        answer = {"card": mask(number), "found": True, "state": row.state, "programme": row.programme,
                  "currency": spec.currency if spec else None, "balance": row.balance, "held": row.held,
                  "available": row.balance - row.held,
                  "expires_on": row.expires_on.isoformat() if row.expires_on else None, "decision": "offline"}
        if row.points is not None:  # a loyalty card: points and tier as central last shipped them
            answer.update(points=row.points, tier=row.tier)
        return answer

    # -- offline -----------------------------------------------------------------------------------

    async def _offline(self, op: TillOp, digest: str) -> tuple[int, dict[str, Any], bool]:
        now = self.central_time()
        async with self.db.begin() as conn:
            first = await self._replay(conn, op, digest)
            if first is not None:
                return 200, first, True
            ctx = await _Context.load(conn, now, self.configuration)
            handler = getattr(self, f"_off_{op.kind.value}")
            out: _Offline = await handler(conn, ctx, op)
            number = out.card.number if out.card is not None else op.get("card_number")
            if out.decision.approved:
                if out.card_values:
                    await local.upsert_card(conn, number, now, **out.card_values)
                for statement in out.statements:
                    await conn.execute(statement)
                if out.entry is not None:
                    await self._enqueue(conn, ctx, op, number, out, now)
            result = self._result(op, out, number, now)
            await conn.execute(_INSERT_JOURNAL, dict(
                txn_id=str(op.txn_id), kind=op.kind.value, fingerprint=digest, card=number,
                amount=out.decision.amount, original_txn_id=_text(op.get("original_txn_id")), decision="offline",
                approved=out.decision.approved, result=result, till=op.till, created_at=now))
        if out.decision.approved:
            log.info("offline %s approved card=%s amount=%s", op.kind.value, mask(number or ""), out.decision.amount)
        return 200, result, False

    async def _enqueue(self, conn: AsyncConnection, ctx: _Context, op: TillOp, number: str, out: _Offline,
                       now: datetime) -> None:
        e = out.entry
        entry = OutboxEntry(seq=ctx.state.next_seq, txn_id=op.txn_id, kind=e["kind"], card_number=number,
                            amount=e["amount"], currency=out.currency, till=op.till,
                            original_txn_id=e.get("original"), programme=e.get("programme"),
                            deny_version=ctx.state.deny_version, decided_at=now, device_time=op.get("device_time"),
                            loyalty=e.get("loyalty"))
        await conn.execute(_INSERT_OUTBOX, dict(
            seq=entry.seq, txn_id=str(op.txn_id), card=number, delta=e["delta"], debit=e["kind"] in DEBIT_KINDS,
            amount=e["amount"], entry=entry.model_dump(mode="json"), created_at=now))
        await conn.execute(_NEXT_SEQ, {"next_seq": entry.seq + 1})

    def _result(self, op: TillOp, out: _Offline, number: str | None, now: datetime) -> dict[str, Any]:
        d = out.decision
        result: dict[str, Any] = {
            "txn_id": str(op.txn_id), "operation": op.kind.value, "approved": d.approved,
            "decline_code": d.code.value if d.code else None,
            "message": d.message or ("approved" if d.approved else ""),
            "amount": d.amount, "decision": "offline", "at": now.isoformat(),
        }
        row = out.card
        if row is not None:
            merged = {**row._mapping, **(out.card_values if d.approved else {})}
            expires = merged.get("expires_on")
            result.update(card=mask(number), card_state=merged["state"], currency=out.currency,
                          balance=merged["balance"], available=merged["balance"] - merged["held"],
                          expires_on=expires.isoformat() if expires else None)
        result.update(out.extra)
        return result

    # Each handler decides one kind offline; only an approval writes anything besides the journal.

    async def _card(self, conn: AsyncConnection, ctx: _Context, number: str | None) -> Any:
        if number is None:
            return None
        return (await conn.execute(_CARD, {"number": number})).first()

    async def _known_card(self, conn, ctx: _Context, op: TillOp) -> tuple[Any, ProgrammeSpec] | _Offline:
        row = await self._card(conn, ctx, op.get("card_number"))
        spec = ctx.specs.get(row.programme) if row is not None else None
        if row is None or spec is None:
            return _Offline(decline(DeclineCode.UNKNOWN_OFFLINE, "central is unreachable and this store does not "
                                                                 "know the card"))
        currency = op.get("currency")
        if currency is not None and currency != spec.currency:
            return _Offline(decline(DeclineCode.CURRENCY_MISMATCH, f"card is in {spec.currency}, not {currency}"),
                            row, currency=spec.currency)
        return row, spec

    async def _offline_debit(self, conn, ctx: _Context, row: Any, spec: ProgrammeSpec, amount: int,
                             allow_partial: bool = False, check_card: bool = True) -> Decision:
        """The card's own checks (state, expiry), then every offline limit."""
        if check_card and spec.pin_required:  # only central holds the PINs' hashes
            return decline(DeclineCode.OFFLINE_LIMIT, "the card's PIN can be checked only while central answers")
        view = ctx.view(row, spec)
        if check_card:
            first = decide_debit(view, amount, ctx.today, allow_partial)
            if not first.approved and first.code != DeclineCode.INSUFFICIENT_FUNDS:
                denied = await ctx.denied(conn, row.number)
                return decline(DeclineCode.DENY_LISTED, "card is on the deny list") if denied else first
        card = OfflineCard(available=view.available, currency=spec.currency, offline_amount=row.offline_amount,
                           offline_count=row.offline_count, deny_listed=await ctx.denied(conn, row.number))
        limits = OfflineLimits(spec.floor_limit, spec.card_offline_amount, spec.card_offline_count)
        return decide_offline_debit(card, amount, limits, await ctx.budget(conn, spec.currency), allow_partial)

    async def _debit_on_known_card(self, conn, ctx: _Context, op: TillOp) -> _Offline:
        """A payment or authorization: the card must be known here, then every offline limit."""
        found = await self._known_card(conn, ctx, op)
        if isinstance(found, _Offline):
            return found
        row, spec = found
        d = await self._offline_debit(conn, ctx, row, spec, op.get("amount"), op.get("allow_partial", False))
        return _Offline(d, row, currency=spec.currency, spec=spec)

    async def _off_payment(self, conn, ctx: _Context, op: TillOp) -> _Offline:
        out = await self._debit_on_known_card(conn, ctx, op)
        d, row = out.decision, out.card
        if d.approved:
            out.card_values = dict(balance=row.balance - d.amount, offline_amount=row.offline_amount + d.amount,
                                   offline_count=row.offline_count + 1)
            out.entry = dict(kind=K.PAYMENT, amount=d.amount, delta=-d.amount)
        return out

    async def _off_authorize(self, conn, ctx: _Context, op: TillOp) -> _Offline:
        out = await self._debit_on_known_card(conn, ctx, op)
        d, row, spec = out.decision, out.card, out.spec
        if d.approved:
            expires = ctx.now + timedelta(seconds=spec.hold_ttl_seconds)
            out.card_values = dict(held=row.held + d.amount, offline_amount=row.offline_amount + d.amount,
                                   offline_count=row.offline_count + 1)
            out.statements.append(sa.insert(holds).values(
                txn_id=str(op.txn_id), card=row.number, amount=d.amount, currency=spec.currency, status="pending",
                expires_at=expires, created_at=ctx.now))
            out.extra["hold_expires_at"] = expires.isoformat()
        return out

    async def _local_hold(self, conn, ctx: _Context, op: TillOp) -> tuple[Any, Any, ProgrammeSpec] | _Offline:
        original = str(op.get("original_txn_id"))
        hold = (await conn.execute(sa.select(holds).where(holds.c.txn_id == original))).first()
        if hold is None:
            online = (await conn.execute(sa.select(journal.c.txn_id).where(
                journal.c.txn_id == original, journal.c.kind == K.AUTHORIZE.value, journal.c.approved))).first()
            if online is not None:
                return _Offline(decline(DeclineCode.OFFLINE_LIMIT, "the authorization is held at central, which is "
                                                                   "unreachable: try again later"))
            return _Offline(decline(DeclineCode.ORIGINAL_NOT_FOUND, "no approved authorize with that id"))
        row = await self._card(conn, ctx, hold.card)
        spec = ctx.specs[row.programme]
        if hold.status != "pending":
            return _Offline(decline(DeclineCode.HOLD_NOT_PENDING, f"authorization is {hold.status}"), row,
                            currency=spec.currency)
        return hold, row, spec

    async def _off_confirm(self, conn, ctx: _Context, op: TillOp) -> _Offline:
        found = await self._local_hold(conn, ctx, op)
        if isinstance(found, _Offline):
            return found
        hold, row, spec = found
        amount = op.get("amount") or hold.amount
        if amount > hold.amount:
            return _Offline(decline(DeclineCode.AMOUNT_EXCEEDS_HOLD, f"authorization was for {hold.amount}"), row,
                            currency=spec.currency)
        out = _Offline(Decision(True, amount), row, currency=spec.currency, extra={"authorization": hold.txn_id})
        # The hold's reservation becomes the captured payment; what was not captured stops counting.
        out.card_values = dict(held=row.held - hold.amount, balance=row.balance - amount,
                               offline_amount=max(row.offline_amount - (hold.amount - amount), 0))
        out.statements.append(_close_hold(hold, "confirmed", op.txn_id))
        out.entry = dict(kind=K.PAYMENT, amount=amount, delta=-amount)
        return out

    async def _off_void(self, conn, ctx: _Context, op: TillOp) -> _Offline:
        found = await self._local_hold(conn, ctx, op)
        if isinstance(found, _Offline):
            return found
        hold, row, spec = found
        out = _Offline(Decision(True, 0), row, currency=spec.currency, extra={"authorization": hold.txn_id})
        out.card_values = dict(held=row.held - hold.amount, offline_amount=max(row.offline_amount - hold.amount, 0))
        out.statements.append(_close_hold(hold, "voided", op.txn_id))
        return out

    async def _off_sale(self, conn, ctx: _Context, op: TillOp) -> _Offline:
        found = await self._known_card(conn, ctx, op)
        if isinstance(found, _Offline):
            return found
        row, spec = found
        if op.get("pin_block") is not None:  # the PIN would be lost: only central keeps it (hashed)
            return _Offline(decline(DeclineCode.OFFLINE_LIMIT, "a card's PIN can be set only while central answers"),
                            row, currency=spec.currency)
        d = decide_sale(ctx.view(row, spec), op.get("amount"), None)
        out = _Offline(d, row, currency=spec.currency)
        if d.approved:
            out.card_values = dict(state=CardState.ACTIVE.value, balance=row.balance + d.amount,
                                   expires_on=expiry_date(ctx.today, spec.validity_months))
            out.entry = dict(kind=K.SALE, amount=d.amount, delta=d.amount)
        return out

    async def _off_topup(self, conn, ctx: _Context, op: TillOp) -> _Offline:
        found = await self._known_card(conn, ctx, op)
        if isinstance(found, _Offline):
            return found
        row, spec = found
        d = decide_topup(ctx.view(row, spec), op.get("amount"), ctx.today)
        out = _Offline(d, row, currency=spec.currency)
        if d.approved:
            out.card_values = dict(balance=row.balance + d.amount)
            out.entry = dict(kind=K.TOPUP, amount=d.amount, delta=d.amount)
        return out

    async def _off_refund(self, conn, ctx: _Context, op: TillOp) -> _Offline:
        found = await self._known_card(conn, ctx, op)
        if isinstance(found, _Offline):
            return found
        row, spec = found
        amount, original = op.get("amount"), op.get("original_txn_id")
        if original is not None:
            orig = await _journalled(conn, original, K.PAYMENT)
            if orig is None:
                return _Offline(decline(DeclineCode.ORIGINAL_NOT_FOUND, "no approved payment with that id at this "
                                                                        "store"), row, currency=spec.currency)
            if await _settled(conn, original, K.PAYMENT_CANCEL):
                return _Offline(decline(DeclineCode.ALREADY_CANCELLED, "that payment was cancelled"), row,
                                currency=spec.currency)
            if orig.card != row.number and row.state != CardState.IN_PACK:
                return _Offline(decline(DeclineCode.ORIGINAL_MISMATCH, "refund goes onto the card paid with or "
                                                                       "onto a new card"), row, currency=spec.currency)
            refunded = await _refunded(conn, original)
            if amount > orig.amount - refunded:
                left = orig.amount - refunded
                return _Offline(decline(DeclineCode.REFUND_EXCEEDS_PAYMENT, f"at most {left} can be refunded"), row,
                                currency=spec.currency)
        view = ctx.view(row, spec)
        values: dict[str, Any] = dict(balance=row.balance + amount)
        if row.state == CardState.IN_PACK:
            d = decide_sale(view, None, None)
            if not d.approved and d.code not in (DeclineCode.NOT_A_NOMINAL_VALUE, DeclineCode.AMOUNT_OUT_OF_RANGE):
                return _Offline(d, row, currency=spec.currency)
            cap = spec.max_balance if spec.max_balance is not None else spec.max_amount
            d = decline(DeclineCode.MAX_BALANCE_EXCEEDED, f"a new card holds at most {cap}") if amount > cap \
                else Decision(True, amount)
            values.update(state=CardState.ACTIVE.value, expires_on=expiry_date(ctx.today, spec.validity_months))
        else:
            d = decide_credit(view, amount, ctx.today)
        out = _Offline(d, row, currency=spec.currency)
        if d.approved:
            out.card_values = values
            out.entry = dict(kind=K.REFUND, amount=amount, delta=amount, original=original)
        return out

    async def _cancel(self, conn, ctx: _Context, op: TillOp) -> _Offline:
        original = op.get("original_txn_id")
        orig = await _journalled(conn, original, CANCELS[op.kind])
        if orig is None:
            return _Offline(decline(DeclineCode.ORIGINAL_NOT_FOUND,
                                    f"no approved {CANCELS[op.kind]} with that id at this store"))
        row = await self._card(conn, ctx, orig.card)
        spec = ctx.specs.get(row.programme) if row is not None else None
        if row is None or spec is None:
            return _Offline(decline(DeclineCode.UNKNOWN_OFFLINE, "this store does not know the card"))
        refuse = None
        if op.get("card_number") and op.get("card_number") != row.number:
            refuse = decline(DeclineCode.ORIGINAL_MISMATCH, "original was made with another card")
        elif await _settled(conn, original, op.kind):
            refuse = decline(DeclineCode.ALREADY_CANCELLED, f"that {CANCELS[op.kind]} was already cancelled")
        elif row.state in (CardState.REPLACED, CardState.CLOSED):
            refuse = decline(DeclineCode.CLOSED if row.state == CardState.CLOSED else DeclineCode.REPLACED,
                             f"card is {row.state}")
        elif op.kind == K.PAYMENT_CANCEL and await _refunded(conn, original):
            refuse = decline(DeclineCode.CANCEL_NOT_ALLOWED, "payment was partly refunded already")
        elif op.kind == K.SALE_CANCEL and (row.state != CardState.ACTIVE or await _used_after(conn, orig)):
            refuse = decline(DeclineCode.CARD_USED, "card was used after it was sold")
        if refuse is not None:
            return _Offline(refuse, row, currency=spec.currency)
        amount = orig.amount
        if op.kind == K.PAYMENT_CANCEL:
            out = _Offline(Decision(True, amount), row, currency=spec.currency)
            out.card_values = dict(balance=row.balance + amount)
            out.entry = dict(kind=op.kind, amount=amount, delta=amount, original=original)
            return out
        d = await self._offline_debit(conn, ctx, row, spec, amount, check_card=False)
        out = _Offline(Decision(True, amount) if d.approved else d, row, currency=spec.currency)
        if d.approved:
            out.card_values = dict(balance=row.balance - amount, offline_amount=row.offline_amount + amount,
                                   offline_count=row.offline_count + 1)
            if op.kind == K.SALE_CANCEL:
                out.card_values.update(state=CardState.IN_PACK.value, expires_on=None)
            out.entry = dict(kind=op.kind, amount=amount, delta=-amount, original=original)
        return out

    _off_sale_cancel = _off_payment_cancel = _off_topup_cancel = _off_refund_cancel = _cancel

    async def _off_store_issue(self, conn, ctx: _Context, op: TillOp) -> _Offline:
        code = op.get("programme")
        spec = ctx.specs.get(code)
        if spec is None:
            raise InvalidInput(f"unknown programme {code!r}", code="unknown_programme")
        programme = local.programme_of(spec)
        probe = CardView(number="0" * 8, state=CardState.IN_PACK, programme=programme, balance=0, held=0,
                         pack_sellable=True)
        d = decide_sale(probe, op.get("amount"), None)
        if not d.approved:
            return _Offline(d, currency=spec.currency)
        try:
            block, number = next_number(await local.load_blocks(conn, code), code, programme.template)
        except BlocksExhausted:
            return _Offline(decline(DeclineCode.OFFLINE_LIMIT, f"no card numbers left for {code} at this store"),
                            currency=spec.currency)
        await conn.execute(sa.update(number_blocks).where(number_blocks.c.id == block.id).values(used=block.used))
        values = dict(programme=code, state=CardState.ACTIVE.value, balance=d.amount, held=0,
                      expires_on=expiry_date(ctx.today, spec.validity_months))
        await local.upsert_card(conn, number, ctx.now, **values)
        row = (await conn.execute(sa.select(cards).where(cards.c.number == number))).first()
        out = _Offline(d, row, currency=spec.currency, extra={"card_number": number, "programme": code})
        out.entry = dict(kind=K.STORE_ISSUE, amount=d.amount, delta=d.amount, programme=code)
        return out

    # -- holds -------------------------------------------------------------------------------------

    # -- loyalty (see edge.loyalty) -----------------------------------------------------------------

    async def _loyalty_card(self, conn, ctx: _Context, number: str) -> tuple[Any, ProgrammeSpec | None]:
        row = await self._card(conn, ctx, number)
        spec = ctx.specs.get(row.programme) if row is not None else local.programme_for_number(ctx.specs, number)
        return row, spec

    async def _off_receipt(self, conn, ctx: _Context, op: TillOp) -> _Offline:
        row, spec = await self._loyalty_card(conn, ctx, op.get("card_number"))
        rules = await self.loyalty_rules.current(conn)
        groups = ctx.settings.groups if ctx.settings is not None else ()
        decision, values, extra, detail = loyalty.receipt_offline(rules, spec, row, op.body, self.config.store, groups)
        if not decision.approved:
            return _Offline(decision, row, currency=spec.currency if spec else None)
        extra["points"] = {"available": values.get("points", row.points if row is not None else None),
                           "tier": row.tier if row is not None else None, "estimate": True}
        return _Offline(decision, row, card_values=values, currency=spec.currency, extra=extra, entry={
            "kind": K.RECEIPT, "amount": decision.amount, "delta": 0, "loyalty": detail})

    async def _off_receipt_return(self, conn, ctx: _Context, op: TillOp) -> _Offline:
        row, spec = await self._loyalty_card(conn, ctx, op.get("card_number"))
        decision, extra, detail = loyalty.return_offline(spec, op.body)
        if not decision.approved:
            return _Offline(decision, row)
        return _Offline(decision, row, currency=spec.currency, extra=extra, entry={
            "kind": K.RECEIPT_RETURN, "amount": 0, "delta": 0, "original": op.get("original_txn_id"),
            "loyalty": detail})

    async def _off_points_redeem(self, conn, ctx: _Context, op: TillOp) -> _Offline:
        row, spec = await self._loyalty_card(conn, ctx, op.get("card_number"))
        rules = await self.loyalty_rules.current(conn)
        budget = await ctx.budget(conn, spec.currency) if spec is not None else None
        decision, values, extra, detail = await loyalty.redeem_offline(
            conn, rules, spec, row, op.body, await ctx.denied(conn, op.get("card_number")), budget)
        if not decision.approved:
            return _Offline(decision, row, currency=spec.currency if spec else None)
        return _Offline(decision, row, card_values=values, currency=spec.currency, extra=extra, entry={
            "kind": K.POINTS_REDEEM, "amount": decision.amount, "delta": 0, "loyalty": detail})

    async def _off_points_redeem_reversal(self, conn, ctx: _Context, op: TillOp) -> _Offline:
        return _Offline(decline(DeclineCode.OFFLINE_LIMIT, "a redemption is taken back only while central answers"))

    async def _off_reward(self, conn, ctx: _Context, op: TillOp) -> _Offline:
        return _Offline(decline(DeclineCode.OFFLINE_LIMIT, "rewards are redeemed only while central answers"))

    async def _off_voucher_redeem(self, conn, ctx: _Context, op: TillOp) -> _Offline:
        budget = await ctx.budget(conn, op.get("currency"))
        decision, extra, detail, voucher = await loyalty.voucher_offline(conn, op.body, ctx.now, budget)
        row = await self._card(conn, ctx, op.get("card_number"))
        if not decision.approved:
            return _Offline(decision, row, currency=op.get("currency"))
        return _Offline(decision, row, currency=op.get("currency"), extra=extra,
                        statements=[sa.update(vouchers).where(vouchers.c.id == voucher).values(used=True)],
                        entry={"kind": K.VOUCHER_REDEEM, "amount": decision.amount, "delta": 0, "loyalty": detail})

    async def _off_voucher_redeem_reversal(self, conn, ctx: _Context, op: TillOp) -> _Offline:
        return _Offline(decline(DeclineCode.OFFLINE_LIMIT, "a voucher use is taken back only while central answers"))

    async def _off_points_convert(self, conn, ctx: _Context, op: TillOp) -> _Offline:
        return _Offline(decline(DeclineCode.OFFLINE_LIMIT, "points and e-money convert only while central answers"))

    async def local_loyalty(self, number: str, what: str) -> dict[str, Any]:
        """The store's own answer to a points, discount-level or segments question (central unreachable)."""
        async with self.db.begin() as conn:
            if what == "segments":
                return await loyalty.segments_of(conn, number)
            row = (await conn.execute(_CARD, {"number": number})).first()
        if row is None:
            return {"card": mask(number), "found": False, "decline_code": DeclineCode.UNKNOWN_OFFLINE.value,
                    "decision": "offline"}
        if what == "discount-level":
            return {"card": mask(number), "bps": row.discount_bps or 0, "decision": "offline"}
        if what == "tier":
            return {"card": mask(number), "tier": row.tier, "decision": "offline"}
        return {"card": mask(number), "found": True, "available": row.points, "tier": row.tier,
                "discount_bps": row.discount_bps or 0, "decision": "offline", "estimate": True}

    async def expire_holds(self) -> int:
        """Release offline holds past their time, each exactly once (the update is conditional)."""
        now = self.central_time()
        expired = 0
        async with self.db.begin() as conn:
            due = (await conn.execute(sa.select(holds).where(holds.c.status == "pending",
                                                             holds.c.expires_at <= now))).all()
            for hold in due:
                done = await conn.execute(_close_hold(hold, "expired", None))
                if done.rowcount != 1:
                    continue
                row = (await conn.execute(sa.select(cards).where(cards.c.number == hold.card))).first()
                await local.upsert_card(conn, hold.card, now, held=row.held - hold.amount,
                                        offline_amount=max(row.offline_amount - hold.amount, 0))
                expired += 1
        if expired:
            log.info("offline holds expired count=%s", expired)
        return expired


@dataclass
class _Context:
    """What every offline decision reads once per transaction."""

    now: datetime
    state: local.SyncState
    specs: dict[str, ProgrammeSpec]
    settings: Any

    @classmethod
    async def load(cls, conn: AsyncConnection, now: datetime, configuration: local.Configuration) -> _Context:
        state = await local.sync_position(conn)
        config = await configuration.current(conn, state.config_version)
        return cls(now, state, config.specs, config.settings)

    @property
    def today(self):
        return self.now.date()

    def view(self, row: Any, spec: ProgrammeSpec) -> CardView:
        return CardView(number=row.number, state=CardState(row.state), programme=local.programme_of(spec),
                        balance=row.balance, held=row.held, expires_on=row.expires_on,
                        pack_sellable=row.pack_sellable)

    async def denied(self, conn: AsyncConnection, number: str) -> bool:
        return (await conn.execute(_DENIED, {"number": number})).first() is not None

    async def budget(self, conn: AsyncConnection, currency: str) -> StoreBudget:
        if self.settings is None:  # never pulled: no budget at all
            return StoreBudget(currency, 0)
        return StoreBudget(self.settings.budget_currency, self.settings.exposure_budget, await local.exposure(conn))


def _close_hold(hold: Any, status: str, by: uuid.UUID | None) -> sa.Update:
    return (sa.update(holds).where(holds.c.txn_id == hold.txn_id, holds.c.status == "pending")
            .values(status=status, resolved_by=_text(by)))


def _text(value: Any) -> str | None:
    return str(value) if value is not None else None


async def _journalled(conn: AsyncConnection, txn_id: uuid.UUID | None, kind: OperationKind) -> Any:
    """An approved operation of ``kind`` this store recorded (online or offline), or None."""
    if txn_id is None:
        return None
    return (await conn.execute(sa.select(journal).where(journal.c.txn_id == str(txn_id), journal.c.kind == kind.value,
                                                        journal.c.approved))).first()


async def _settled(conn: AsyncConnection, original: uuid.UUID, cancel: OperationKind) -> bool:
    row = await conn.execute(sa.select(journal.c.txn_id).where(
        journal.c.original_txn_id == str(original), journal.c.kind == cancel.value, journal.c.approved))
    return row.first() is not None


async def _refunded(conn: AsyncConnection, payment: uuid.UUID) -> int:
    refunds = journal.alias("refunds")
    cancels = journal.alias("cancels")
    query = sa.select(sa.func.coalesce(sa.func.sum(refunds.c.amount), 0)).where(
        refunds.c.original_txn_id == str(payment), refunds.c.kind == K.REFUND.value, refunds.c.approved,
        ~sa.exists().where(cancels.c.original_txn_id == refunds.c.txn_id, cancels.c.kind == K.REFUND_CANCEL.value,
                           cancels.c.approved))
    return int((await conn.execute(query)).scalar_one())


async def _used_after(conn: AsyncConnection, sale: Any) -> bool:
    later = await conn.execute(sa.select(journal.c.txn_id).where(
        journal.c.card == sale.card, journal.c.approved, journal.c.txn_id != sale.txn_id,
        journal.c.kind != K.STORE_ISSUE.value, journal.c.created_at > sale.created_at).limit(1))
    return later.first() is not None


"""E-vouchers at central: issuing (one or a batch), online redemption at the till and its reversal,
revocation by staff, lookups, the expiry job, and what the edge needs to accept vouchers offline.

Codes are 16 characters from the eCode alphabet (no 0/O, 1/I): 15 random ones and an ISO 7064 hybrid
check character (python-stdnum's Mod 37, 36 over that 32-letter alphabet, i.e. Mod 33, 32), so a mistyped
code is told apart from an unknown one without a lookup. A code is stored only as its keyed hash under
the eCode pepper (:func:`core.secrets.hash_ecode` with the fixed subject ``voucher``) and its last four
characters (the hint); the clear code leaves central once, in the answer to the issuing request.

Every change is an operation in the ledger (VOUCHER_ISSUE, VOUCHER_REDEEM, VOUCHER_REDEEM_REVERSAL,
VOUCHER_REVOKE) recorded by :meth:`Ledger.execute`, so client ids make each of them idempotent. The voucher
row is locked (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite has one writer) before a use is decided,
so concurrent redemptions never take more than ``max_uses``.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from stdnum.iso7064 import mod_37_36

from core import DeclineCode, DomainError, IllegalTransition, InvalidInput, OperationKind
from core.limits import OfflineLimits
from core.loyalty.vouchers import (
    Voucher,
    VoucherCard,
    VoucherKind,
    VoucherState,
    cancel_voucher,
    decide_voucher,
    offline_allowed,
    reverse_voucher_use,
    use_voucher,
)
from core.money import Money
from core.secrets import hash_ecode, new_ecodes

from ..db import Database
from ..db.tables import cards, customers, operations, programmes, vouchers
from .admin import NotFound, audit
from .ledger import Ledger, Origin, Outcome, system_id

__all__ = ["VoucherSpec", "RedeemRequest", "ReversalRequest", "VoucherService", "LookupDecline", "CODE_ALPHABET",
           "new_codes", "parse_code", "format_code", "code_hash", "lookup_hash", "MAX_BATCH"]

log = logging.getLogger("tessera.vouchers")

K = OperationKind
CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # core.secrets' eCode alphabet: read off paper or a screen
CODE_LENGTH = 16  # 15 random characters (75 bits) and a check character
HINT_LENGTH = 4
MAX_BATCH = 10_000
_SUBJECT = "voucher"  # what hash_ecode binds voucher codes to (card eCodes are bound to card numbers)
_LIVE = (VoucherState.ISSUED.value, VoucherState.ACTIVE.value)


class _IssuedAlready(DomainError):
    """The issuing request was recorded meanwhile: the ledger replays its first result."""

    code = "idempotency_conflict"


class LookupDecline(StrEnum):
    """Till declines that come before a voucher is found (the domain's VoucherDecline starts after)."""

    CODE_INVALID = "voucher_code_invalid"  # malformed or a wrong check character: most likely mistyped
    UNKNOWN = "voucher_unknown"  # well formed, but no voucher has it


# -- codes ----------------------------------------------------------------------------------------

def new_codes(count: int) -> list[str]:
    """``count`` fresh voucher codes: random characters plus their check character."""
    return [body + mod_37_36.calc_check_digit(body, alphabet=CODE_ALPHABET)
            for body in new_ecodes(count, CODE_LENGTH - 1)]


def _squeeze(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch not in " -")


def parse_code(text: str) -> str | None:
    """The code as stored (upper case, no spaces or dashes) if ``text`` is a well-formed code with the right
    check character; None otherwise."""
    code = _squeeze(text)
    if len(code) != CODE_LENGTH or any(ch not in CODE_ALPHABET for ch in code):
        return None
    return code if mod_37_36.is_valid(code, alphabet=CODE_ALPHABET) else None


def lookup_hash(code: str) -> str:
    """The unkeyed hash stores find a code by offline (of the code as stored; see :func:`parse_code`)."""
    return hashlib.sha256(f"{_SUBJECT}:{code}".encode()).hexdigest()


def format_code(code: str) -> str:
    """A code as printed and shown: groups of four joined by dashes."""
    return "-".join(code[i:i + 4] for i in range(0, len(code), 4))


def code_hash(pepper: bytes, text: str) -> str:
    """The keyed hash a code is stored and looked up by (of any text: a malformed code has one too, so a
    request's fingerprint never needs the clear code)."""
    return hash_ecode(pepper, _SUBJECT, _squeeze(text))


# -- requests -------------------------------------------------------------------------------------

def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@dataclass(frozen=True, slots=True)
class VoucherSpec:
    """What every voucher of an issuing request is: ``value`` is minor units (VALUE) or basis points
    (PERCENT); ``max_uses`` 1 is single use; the window is ``valid_from <= at < valid_to``."""

    kind: VoucherKind
    value: int
    currency: str
    max_uses: int = 1
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    min_basket: int = 0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", VoucherKind(self.kind))
        except ValueError:
            raise InvalidInput(f"voucher kind is value or percent, not {self.kind!r}") from None

    def check(self, now: datetime) -> None:
        """InvalidInput unless the domain accepts such a voucher and its window has not ended already."""
        Voucher("check", self.kind, self.value, self.currency, self.max_uses, 0, self.valid_from, self.valid_to,
                self.min_basket)
        if self.valid_to is not None and self.valid_to <= now:
            raise InvalidInput("valid_to is in the past: the voucher could never be used")

    def payload(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "value": self.value, "currency": self.currency,
                "max_uses": self.max_uses, "valid_from": _iso(self.valid_from), "valid_to": _iso(self.valid_to),
                "min_basket": self.min_basket}


@dataclass(frozen=True, slots=True)
class RedeemRequest:
    """A till's voucher use on a basket (``basket_total`` in minor units, before this voucher)."""

    txn_id: uuid.UUID
    code: str = field(repr=False)
    basket_total: int
    currency: str
    card_number: str | None = None
    device_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class ReversalRequest:
    """A till takes back a voucher use it was given (the sale was cancelled)."""

    txn_id: uuid.UUID
    original_txn_id: uuid.UUID
    device_time: datetime | None = None


# -- rows -----------------------------------------------------------------------------------------

_VIEW = sa.select(vouchers, cards.c.number.label("card_number")).select_from(
    vouchers.outerjoin(cards, cards.c.id == vouchers.c.card_id))


def _domain(row: Any, card: str | None) -> Voucher:
    """The row as the domain sees it. An offline overuse (uses beyond max_uses, see apply_offline_use) is a
    used-up voucher to the domain."""
    uses = min(row.uses, row.max_uses)
    state = VoucherState(row.state)
    if state is VoucherState.ACTIVE and uses == row.max_uses:  # not expected; refuse as used up rather than fail
        state = VoucherState.USED
    return Voucher(f"v{row.id}", VoucherKind(row.kind), row.value, row.currency, row.max_uses, uses,
                   row.valid_from, row.valid_to, row.min_basket, card,
                   str(row.customer_id) if row.customer_id is not None else None, state)


def _effective_state(row: Any, now: datetime) -> str:
    """The state, with a live voucher past its window shown expired before the expiry job marks it."""
    if row.state in _LIVE and row.valid_to is not None and row.valid_to <= now:
        return VoucherState.EXPIRED.value
    return row.state


def _view(row: Any, now: datetime) -> dict[str, Any]:
    return {
        "id": row.id, "hint": row.hint, "kind": row.kind, "value": row.value, "currency": row.currency,
        "max_uses": row.max_uses, "uses": row.uses, "uses_left": max(row.max_uses - row.uses, 0),
        "valid_from": _iso(row.valid_from), "valid_to": _iso(row.valid_to), "min_basket": row.min_basket,
        "card_number": row.card_number, "customer_id": row.customer_id, "state": row.state,
        "effective_state": _effective_state(row, now), "issued_by": row.issued_by,
        "request_id": str(row.request_id) if row.request_id else None, "created_at": _iso(row.created_at),
        "cancelled_at": _iso(row.cancelled_at),
    }


def _public(row: Any, now: datetime) -> dict[str, Any]:
    """What a website may show of a voucher whose code it was given."""
    return {"hint": row.hint, "kind": row.kind, "value": row.value, "currency": row.currency,
            "uses_left": max(row.max_uses - row.uses, 0), "valid_from": _iso(row.valid_from),
            "valid_to": _iso(row.valid_to), "min_basket": row.min_basket,
            "personal": row.card_id is not None or row.customer_id is not None,
            "state": _effective_state(row, now)}


def _money(currency: str, minor: int) -> Money:
    try:
        return Money(currency, minor)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(str(exc)) from None


def _declined(code: StrEnum, message: str, currency: str | None, **extra: Any) -> Outcome:
    # Voucher declines are not DeclineCodes, but the ledger records any code by its value.
    out = Outcome(False, None, 0, code, message, currency=currency)  # type: ignore[arg-type]
    out.extra.update(extra, **({"currency": currency} if currency else {}))
    return out


def _set_card(op_id: uuid.UUID, card_id: int | None) -> list[sa.Executable]:
    """Name the card on the operation row (the ledger fills card_id only for stored-value cards)."""
    if card_id is None:
        return []
    return [sa.update(operations).where(operations.c.id == op_id).values(card_id=card_id)]


def _after_reversal(row: Any) -> tuple[int, str]:
    """Uses and state once one use is given back."""
    if row.uses > row.max_uses:  # an offline overuse: still every use taken after this one returns
        return row.uses - 1, row.state
    back = reverse_voucher_use(_domain(row, None))
    return back.uses, back.state.value


def voucher_of(row: Any) -> Voucher:
    """The domain voucher of a vouchers row (bound to no card: the binding is checked apart)."""
    return _domain(row, None)


async def offline_voucher_limits(conn: AsyncConnection) -> dict[str, OfflineLimits]:
    """The limits vouchers are taken offline under, by currency: the strictest of the currency's programmes."""
    limits: dict[str, OfflineLimits] = {}
    for r in await conn.execute(sa.select(programmes.c.currency, programmes.c.floor_limit,
                                          programmes.c.card_offline_amount, programmes.c.card_offline_count)):
        new = OfflineLimits(r.floor_limit, r.card_offline_amount, r.card_offline_count)
        old = limits.get(r.currency)
        limits[r.currency] = new if old is None or new.floor_limit < old.floor_limit else old
    return limits


class VoucherService:
    """Issues, redeems, reverses, revokes and expires e-vouchers through the :class:`Ledger`."""

    def __init__(self, db: Database, ledger: Ledger, pepper: bytes) -> None:
        self.db = db
        self.ledger = ledger
        self.pepper = pepper

    # -- issuing ----------------------------------------------------------------------------------

    async def issue(self, request_id: uuid.UUID, spec: VoucherSpec, origin: Origin, *, card_number: str | None = None,
                    customer_id: int | None = None, remote: str | None = None) -> tuple[dict[str, Any], bool]:
        """Issue one voucher: bound to a card, to a customer (any of their cards), or to no one.

        Idempotent by ``request_id``: a repeat with the same request returns ``(answer, True)`` naming the same
        voucher, but the clear code only ever appears in the first answer (central keeps no copy of it): the
        repeat has ``code`` None and ``code_already_given`` true. Another request under the same id raises
        IdempotencyConflict."""
        if card_number is not None and customer_id is not None:
            raise InvalidInput("bind a voucher to a card or to a customer, not both")
        result, codes, replayed = await self._issue(
            request_id, spec, origin, [card_number] if card_number else [], [customer_id] if customer_id else [],
            0 if card_number or customer_id else 1, remote)
        voucher = await self.get(result["vouchers"][0]["id"])
        return {"request_id": str(request_id), "voucher": voucher,
                "code": format_code(codes[0]) if codes else None, "code_already_given": replayed}, replayed

    async def issue_batch(self, request_id: uuid.UUID, spec: VoucherSpec, origin: Origin, *,
                          card_numbers: Sequence[str] = (), customer_ids: Sequence[int] = (), count: int = 0,
                          remote: str | None = None) -> tuple[dict[str, Any], bool]:
        """Issue one voucher per card, one per customer, and ``count`` unbound ones, all alike, in one
        transaction (all or nothing: an unknown card or customer refuses the batch). Idempotent like
        :meth:`issue`: the codes are in the first answer only."""
        result, codes, replayed = await self._issue(request_id, spec, origin, list(card_numbers),
                                                    list(customer_ids), count, remote)
        listed = [{**v, "code": format_code(codes[i]) if codes else None} for i, v in enumerate(result["vouchers"])]
        return {"request_id": str(request_id), "count": len(listed), "vouchers": listed,
                "code_already_given": replayed}, replayed

    async def _issue(self, request_id: uuid.UUID, spec: VoucherSpec, origin: Origin, card_numbers: list[str],
                     customer_ids: list[int], count: int, remote: str | None
                     ) -> tuple[dict[str, Any], list[str], bool]:
        total = len(card_numbers) + len(customer_ids) + count
        if not 1 <= total <= MAX_BATCH:
            raise InvalidInput(f"an issuing request makes 1 to {MAX_BATCH} vouchers, not {total}")
        if len(set(card_numbers)) != len(card_numbers) or len(set(customer_ids)) != len(customer_ids):
            raise InvalidInput("a card or customer is listed twice")
        actor = origin.actor or origin.channel
        issued: list[str] = []  # the clear codes of this run; not recorded anywhere

        async def run(conn: AsyncConnection, op_id: uuid.UUID, now: datetime) -> Outcome:
            # A repeat must not make vouchers again (their request ids are unique): the ledger answers it with
            # the first result, or refuses it if its payload differs.
            if (await conn.execute(sa.select(operations.c.id).where(operations.c.id == op_id))).first():
                raise _IssuedAlready("this request was issued already")
            spec.check(now)
            targets = await self._targets(conn, card_numbers, customer_ids) + [(None, None, None)] * count
            codes = new_codes(len(targets))
            single = len(targets) == 1
            rows = [dict(code_hash=hash_ecode(self.pepper, _SUBJECT, code), lookup_hash=lookup_hash(code),
                         hint=code[-HINT_LENGTH:], updated_at=now,
                         request_id=op_id if single else uuid.uuid5(op_id, str(i)), kind=spec.kind.value,
                         value=spec.value, currency=spec.currency, max_uses=spec.max_uses, uses=0,
                         valid_from=spec.valid_from, valid_to=spec.valid_to, min_basket=spec.min_basket,
                         card_id=card_id, customer_id=cust, state=VoucherState.ACTIVE.value, issued_by=actor,
                         created_at=now)
                    for i, (code, (card_id, _, cust)) in enumerate(zip(codes, targets))]
            try:
                ids = (await conn.execute(sa.insert(vouchers).returning(vouchers.c.id, sort_by_parameter_order=True),
                                          rows)).scalars().all()
            except IntegrityError:  # the same request, run concurrently, got there first
                raise _IssuedAlready("this request is being issued by another call: repeat it") from None
            listed = [{"id": vid, "hint": row["hint"], "card_number": number, "customer_id": cust}
                      for vid, row, (_, number, cust) in zip(ids, rows, targets)]
            target = f"voucher:{ids[0]}" if single else f"vouchers:{ids[0]}-{ids[-1]}"
            await audit(conn, actor, "voucher_issue", target, {
                "outcome": "ok", "request_id": str(op_id), "count": len(ids), **spec.payload(),
                "vouchers": [{"id": v["id"], "hint": v["hint"], "card": v["card_number"],
                              "customer_id": v["customer_id"]} for v in listed[:100]]}, remote)
            issued[:] = codes
            face = spec.value * len(ids) if spec.kind is VoucherKind.VALUE else 0
            out = Outcome(True, None, face, currency=spec.currency, extra={"vouchers": listed, **spec.payload()})
            out.after.extend(_set_card(op_id, targets[0][0] if single else None))
            return out

        payload = {**spec.payload(), "cards": card_numbers, "customers": customer_ids, "count": count}
        result, replayed = await self.ledger.execute(op_id=request_id, kind=K.VOUCHER_ISSUE, payload=payload,
                                                     origin=origin, handler=run)
        return result, ([] if replayed else issued), replayed

    async def _targets(self, conn: AsyncConnection, numbers: list[str], customer_ids: list[int]
                       ) -> list[tuple[int | None, str | None, int | None]]:
        """(card id, card number, customer id) per voucher to make, in the order asked."""
        found_cards: dict[str, int] = {}
        for chunk in range(0, len(numbers), 1000):
            part = numbers[chunk:chunk + 1000]
            found_cards.update((r.number, r.id) for r in await conn.execute(
                sa.select(cards.c.number, cards.c.id).where(cards.c.number.in_(part))))
        missing = [n for n in numbers if n not in found_cards]
        if missing:
            raise NotFound(f"no such card: {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
        active: dict[int, bool] = {}
        for chunk in range(0, len(customer_ids), 1000):
            part = customer_ids[chunk:chunk + 1000]
            active.update((r.id, r.active) for r in await conn.execute(
                sa.select(customers.c.id, customers.c.active).where(customers.c.id.in_(part))))
        absent = [str(c) for c in customer_ids if c not in active]
        if absent:
            raise NotFound(f"no such customer: {', '.join(absent[:10])}" + (" ..." if len(absent) > 10 else ""))
        inactive = [str(c) for c in customer_ids if not active[c]]
        if inactive:
            raise IllegalTransition(f"inactive customers get no vouchers: {', '.join(inactive[:10])}")
        return ([(found_cards[n], n, None) for n in numbers] + [(None, None, c) for c in customer_ids])

    # -- the till ---------------------------------------------------------------------------------

    async def redeem(self, req: RedeemRequest, origin: Origin, *, now: datetime | None = None
                     ) -> tuple[dict[str, Any], bool]:
        """Use a voucher on a basket: approved with the discount (minor units), or declined with a VoucherDecline
        (or LookupDecline) code. Idempotent by ``txn_id`` like every till operation."""
        if type(req.basket_total) is not int or req.basket_total < 0:
            raise InvalidInput("basket_total is a non-negative number of minor units")
        basket = _money(req.currency, req.basket_total)

        async def run(conn: AsyncConnection, op_id: uuid.UUID, at: datetime) -> Outcome:
            code = parse_code(req.code)
            if code is None:
                return _declined(LookupDecline.CODE_INVALID, "not a voucher code: check how it was typed",
                                 req.currency)
            row = (await conn.execute(_VIEW.where(vouchers.c.code_hash == hash_ecode(self.pepper, _SUBJECT, code))
                                      .with_for_update(of=vouchers))).first()
            if row is None:
                return _declined(LookupDecline.UNKNOWN, "no voucher has this code", req.currency)
            ref = {"voucher_id": row.id, "hint": row.hint}
            presented = None
            if req.card_number is not None:
                card = (await conn.execute(sa.select(cards.c.id, cards.c.customer_id)
                                           .where(cards.c.number == req.card_number))).first()
                if card is None:
                    return _declined(DeclineCode.UNKNOWN_CARD, "no such card", req.currency, **ref)
                presented = VoucherCard(str(card.id), str(card.customer_id) if card.customer_id else None)
            bound = str(await self._current_card(conn, row.card_id)) if row.card_id is not None else None
            voucher = _domain(row, bound)
            decision = decide_voucher(voucher, basket, at, presented)
            if not decision.approved:
                return _declined(decision.code, decision.message, req.currency, **ref)
            used = use_voucher(voucher)
            await conn.execute(sa.update(vouchers).where(vouchers.c.id == row.id)
                               .values(uses=used.uses, state=used.state.value))
            out = Outcome(True, None, decision.discount_minor, currency=row.currency, extra={
                **ref, "discount": decision.discount_minor, "currency": row.currency, "uses_left": used.uses_left})
            out.after.extend(_set_card(op_id, int(presented.number) if presented else None))
            return out

        payload = {"voucher": code_hash(self.pepper, req.code), "card": req.card_number, "basket": req.basket_total,
                   "currency": req.currency}
        return await self.ledger.execute(op_id=req.txn_id, kind=K.VOUCHER_REDEEM, payload=payload, origin=origin,
                                         handler=run, device_time=req.device_time, now=now)

    async def _current_card(self, conn: AsyncConnection, card_id: int) -> int:
        """The card a voucher bound to ``card_id`` goes with now: a lost card's replacement takes its vouchers."""
        for _ in range(20):  # replacement chains are short; a cycle would be a data fault
            successor = (await conn.execute(sa.select(cards.c.replaced_by).where(cards.c.id == card_id))).scalar()
            if successor is None:
                return card_id
            card_id = successor
        return card_id

    async def reverse(self, req: ReversalRequest, origin: Origin) -> tuple[dict[str, Any], bool]:
        """Give back the use an approved redemption took, exactly once (the reversal settles it)."""

        async def run(conn: AsyncConnection, op_id: uuid.UUID, now: datetime) -> Outcome:
            orig = await self.ledger.original(conn, req.original_txn_id)
            if orig is None or orig.kind != K.VOUCHER_REDEEM.value or not orig.approved:
                return _declined(DeclineCode.ORIGINAL_NOT_FOUND, "no approved voucher redemption with that id", None)
            row = (await conn.execute(sa.select(vouchers).where(vouchers.c.id == orig.result.get("voucher_id"))
                                      .with_for_update())).first()
            if row is None:  # an offline use of an unknown voucher: nothing to give back
                return _declined(DeclineCode.ORIGINAL_NOT_FOUND, "that use names no voucher", orig.currency)
            ref = {"voucher_id": row.id, "hint": row.hint, "original_txn_id": str(orig.id)}
            # Checked under the voucher's lock: a concurrent reversal of the same use waits and sees this one.
            if await self.ledger.settled(conn, orig.id):
                return _declined(DeclineCode.ALREADY_CANCELLED, "that voucher use was reversed already",
                                 row.currency, **ref)
            uses, state = _after_reversal(row)
            await conn.execute(sa.update(vouchers).where(vouchers.c.id == row.id).values(uses=uses, state=state))
            out = Outcome(True, None, orig.amount, settles=orig.id, currency=row.currency, extra={
                **ref, "currency": row.currency, "uses_left": max(row.max_uses - uses, 0)})
            out.after.extend(_set_card(op_id, orig.card_id))
            return out

        return await self.ledger.execute(op_id=req.txn_id, kind=K.VOUCHER_REDEEM_REVERSAL,
                                         payload={"original": str(req.original_txn_id)}, origin=origin, handler=run,
                                         device_time=req.device_time)

    # -- staff ------------------------------------------------------------------------------------

    async def revoke(self, voucher_id: int, reason: str, origin: Origin, *, remote: str | None = None
                     ) -> tuple[dict[str, Any], bool]:
        """Cancel a voucher for good (audited with the reason). Revoking it again answers the first revocation;
        a voucher whose every use is taken, or that expired, cannot be revoked (IllegalTransition)."""
        actor = origin.actor or origin.channel

        async def run(conn: AsyncConnection, op_id: uuid.UUID, now: datetime) -> Outcome:
            row = (await conn.execute(sa.select(vouchers).where(vouchers.c.id == voucher_id)
                                      .with_for_update())).first()
            if row is None:
                raise NotFound(f"no voucher {voucher_id}")
            cancelled = cancel_voucher(_domain(row, None))
            await conn.execute(sa.update(vouchers).where(vouchers.c.id == row.id)
                               .values(state=cancelled.state.value, cancelled_at=now))
            await audit(conn, actor, "voucher_revoke", f"voucher:{row.id}",
                        {"outcome": "ok", "reason": reason, "hint": row.hint, "uses": row.uses}, remote)
            out = Outcome(True, None, 0, currency=row.currency, extra={
                "voucher_id": row.id, "hint": row.hint, "reason": reason, "revoked_by": actor})
            out.after.extend(_set_card(op_id, row.card_id))
            return out

        # One revocation per voucher: its id is derived from the voucher's.
        return await self.ledger.execute(op_id=system_id("voucher-revoke", voucher_id), kind=K.VOUCHER_REVOKE,
                                         payload={"voucher": voucher_id}, origin=origin, handler=run)

    async def get(self, voucher_id: int) -> dict[str, Any]:
        """A voucher as staff see it (never its code)."""
        async with self.db.reader() as conn:
            row = (await conn.execute(_VIEW.where(vouchers.c.id == voucher_id))).first()
        if row is None:
            raise NotFound(f"no voucher {voucher_id}")
        return _view(row, datetime.now(UTC))

    async def find(self, text: str) -> dict[str, Any]:
        """The voucher with this code (NotFound for a mistyped or unknown code)."""
        code = parse_code(text)
        row = None
        if code is not None:
            async with self.db.reader() as conn:
                row = (await conn.execute(
                    _VIEW.where(vouchers.c.code_hash == hash_ecode(self.pepper, _SUBJECT, code)))).first()
        if row is None:
            raise NotFound("no voucher has this code" if code else "not a voucher code: check how it was typed",
                           code=LookupDecline.UNKNOWN.value if code else LookupDecline.CODE_INVALID.value)
        return _view(row, datetime.now(UTC))

    async def list_for(self, *, card_number: str | None = None, customer_id: int | None = None,
                       state: str | None = None, after_id: int = 0, limit: int = 50) -> dict[str, Any]:
        """Vouchers a card or a customer may use, in id order: for a card, those bound to it and to its customer;
        for a customer, those bound to them and to any of their cards. ``next`` is the next page's after_id."""
        if (card_number is None) == (customer_id is None):
            raise InvalidInput("list the vouchers of a card or of a customer")
        async with self.db.reader() as conn:
            if card_number is not None:
                card = (await conn.execute(sa.select(cards.c.id, cards.c.customer_id)
                                           .where(cards.c.number == card_number))).first()
                if card is None:
                    raise NotFound("no such card")
                mine = vouchers.c.card_id == card.id
                if card.customer_id is not None:
                    mine = sa.or_(mine, vouchers.c.customer_id == card.customer_id)
            else:
                mine = sa.or_(vouchers.c.customer_id == customer_id, vouchers.c.card_id.in_(
                    sa.select(cards.c.id).where(cards.c.customer_id == customer_id)))
            query = _VIEW.where(mine, vouchers.c.id > after_id).order_by(vouchers.c.id).limit(limit + 1)
            if state is not None:
                query = query.where(vouchers.c.state == state)
            rows = (await conn.execute(query)).all()
        now = datetime.now(UTC)
        more = len(rows) > limit
        rows = rows[:limit]
        return {"vouchers": [_view(r, now) for r in rows], "next": rows[-1].id if more else None}

    async def check(self, text: str, *, card_number: str | None = None, basket_total: int | None = None,
                    currency: str | None = None) -> dict[str, Any]:
        """A website's look at a voucher it was given the code of: what it is and, with a basket, whether it
        would be accepted and for how much. Nothing is recorded or used."""
        code = parse_code(text)
        now = datetime.now(UTC)
        async with self.db.reader() as conn:
            row = None if code is None else (await conn.execute(
                _VIEW.where(vouchers.c.code_hash == hash_ecode(self.pepper, _SUBJECT, code)))).first()
            if row is None:
                decline = LookupDecline.UNKNOWN if code else LookupDecline.CODE_INVALID
                return {"found": False, "decline_code": decline.value}
            answer: dict[str, Any] = {"found": True, "voucher": _public(row, now)}
            if basket_total is None:
                return answer
            presented = None
            if card_number is not None:
                card = (await conn.execute(sa.select(cards.c.id, cards.c.customer_id)
                                           .where(cards.c.number == card_number))).first()
                if card is None:
                    return {**answer, "approved": False, "decline_code": DeclineCode.UNKNOWN_CARD.value,
                            "discount": 0}
                presented = VoucherCard(str(card.id), str(card.customer_id) if card.customer_id else None)
            bound = str(await self._current_card(conn, row.card_id)) if row.card_id is not None else None
        decision = decide_voucher(_domain(row, bound), _money(currency or row.currency, basket_total), now, presented)
        return {**answer, "approved": decision.approved, "discount": decision.discount_minor,
                "decline_code": decision.code.value if decision.code else None, "message": decision.message}

    # -- jobs -------------------------------------------------------------------------------------

    async def expire_due(self, now: datetime | None = None) -> int:
        """Mark live vouchers whose window has ended as expired; how many it marked. Idempotent (a second run
        finds nothing), so several workers may run it at once."""
        now = now or datetime.now(UTC)
        async with self.db.begin() as conn:
            marked = (await conn.execute(sa.update(vouchers).where(
                vouchers.c.state.in_(_LIVE), vouchers.c.valid_to.is_not(None), vouchers.c.valid_to <= now)
                .values(state=VoucherState.EXPIRED.value))).rowcount
        if marked:
            log.info("vouchers expired count=%d", marked)
        return marked

    # -- the edge ---------------------------------------------------------------------------------

    async def offline_vouchers(self, conn: AsyncConnection, limits: Mapping[str, OfflineLimits], *,
                               now: datetime | None = None, after_id: int = 0, limit: int = 1000
                               ) -> list[dict[str, Any]]:
        """The vouchers a store may accept while central is unreachable, in id order from ``after_id``: live,
        unused, inside or before their window, and :func:`core.loyalty.vouchers.offline_allowed` under the
        limits of their currency (``limits``: currency -> OfflineLimits; a currency without limits has no
        offline vouchers). It is a snapshot, not a feed: a voucher used or revoked since drops out of it.

        Each carries what the edge decides with (:func:`core.loyalty.vouchers.decide_voucher_offline`): the
        code's hash and hint, kind, value, window, minimum basket and binding (card number, customer id)."""
        now = now or datetime.now(UTC)
        currencies = list(limits)
        if not currencies:
            return []
        query = (_VIEW.where(vouchers.c.id > after_id, vouchers.c.state == VoucherState.ACTIVE.value,
                             vouchers.c.kind == VoucherKind.VALUE.value, vouchers.c.max_uses == 1,
                             vouchers.c.uses == 0, vouchers.c.currency.in_(currencies),
                             sa.or_(vouchers.c.valid_to.is_(None), vouchers.c.valid_to > now))
                 .order_by(vouchers.c.id).limit(limit))
        out = []
        for row in await conn.execute(query):
            if not offline_allowed(_domain(row, None), limits[row.currency]):
                continue
            out.append({"id": row.id, "code_hash": row.code_hash, "hint": row.hint, "kind": row.kind,
                        "value": row.value, "currency": row.currency, "valid_from": _iso(row.valid_from),
                        "valid_to": _iso(row.valid_to), "min_basket": row.min_basket,
                        "card_number": row.card_number, "customer_id": row.customer_id})
        return out

    async def apply_offline_use(self, conn: AsyncConnection, *, txn_id: uuid.UUID, voucher_id: int,
                                store_id: int, discount: int, basket_total: int, currency: str,
                                terminal_id: int | None = None, card_number: str | None = None,
                                at: datetime | None = None, device_time: datetime | None = None,
                                limits: OfflineLimits | None = None, now: datetime | None = None
                                ) -> dict[str, Any]:
        """Post a voucher use a store approved offline, in the caller's (sync) transaction, exactly once.

        The goods left the store, so the use always posts — even past ``max_uses``, on a revoked or expired
        voucher, or for more than central would have allowed — and what central would have refused is *flagged*:
        the flags are the VoucherDecline codes of central's own decision (judged at ``at``, the instant the sync
        attributes to the use; central's clock if None), plus ``voucher_offline_not_allowed`` when ``limits`` are
        given and the voucher was not one a store may take offline (a store fault), ``voucher_discount_exceeds``
        when the store gave more than the voucher allows, and ``voucher_unknown`` (nothing to post: the id names
        no voucher). A use beyond ``max_uses`` is kept as ``uses`` > ``max_uses`` (an overuse) and the voucher
        is used up.

        Recorded as a VOUCHER_REDEEM operation (channel ``store``, decision ``offline``) under ``txn_id``, so an
        online reversal can take it back. Returns the recorded result, with ``status`` ``applied`` or
        ``duplicate`` (``txn_id`` was recorded already: nothing changes, and the first result is returned). The
        sync must not record another operation under the same id.
        """
        now = now or datetime.now(UTC)
        at = at or now
        known = (await conn.execute(sa.select(operations.c.result).where(operations.c.id == txn_id))).first()
        if known is not None:
            return {**known.result, "status": "duplicate"}
        origin = Origin("store", store_id, terminal_id)
        row = (await conn.execute(_VIEW.where(vouchers.c.id == voucher_id).with_for_update(of=vouchers))).first()
        presented = None
        card_id = None
        if card_number is not None:
            card = (await conn.execute(sa.select(cards.c.id, cards.c.customer_id)
                                       .where(cards.c.number == card_number))).first()
            if card is not None:
                card_id = card.id
                presented = VoucherCard(str(card.id), str(card.customer_id) if card.customer_id else None)
        flags: list[str] = []
        if row is None:
            flags.append(LookupDecline.UNKNOWN.value)
            out = Outcome(True, None, discount, currency=currency,
                          extra={"voucher_id": voucher_id, "discount": discount, "currency": currency})
        else:
            bound = str(await self._current_card(conn, row.card_id)) if row.card_id is not None else None
            voucher = _domain(row, bound)
            if presented is None and card_number is not None:
                flags.append(DeclineCode.UNKNOWN_CARD.value)
            decision = decide_voucher(voucher, _money(currency, basket_total), at, presented)
            if not decision.approved:
                flags.append(decision.code.value)
            elif discount > decision.discount_minor:
                flags.append("voucher_discount_exceeds")
            if limits is not None and not offline_allowed(voucher, limits):
                flags.append("voucher_offline_not_allowed")
            uses = row.uses + 1
            state = row.state
            if state == VoucherState.ACTIVE.value and uses >= row.max_uses:
                state = VoucherState.USED.value
            await conn.execute(sa.update(vouchers).where(vouchers.c.id == row.id).values(uses=uses, state=state))
            out = Outcome(True, None, discount, currency=currency, extra={
                "voucher_id": row.id, "hint": row.hint, "discount": discount, "currency": currency,
                "uses_left": max(row.max_uses - uses, 0)})
        out.extra.update(decision="offline", flags=flags)
        payload = {"voucher": voucher_id, "card": card_number, "basket": basket_total, "currency": currency,
                   "discount": discount}
        result = self.ledger.result(txn_id, K.VOUCHER_REDEEM, out, now)
        record = self.ledger.operation_row(txn_id, K.VOUCHER_REDEEM, self.ledger.digest(K.VOUCHER_REDEEM, payload,
                                                                                        origin),
                                           origin, out, result, device_time, now)
        await conn.execute(self.ledger.record_statement, {**record, "card_id": card_id})
        return {**result, "status": "applied"}

"""Loyalty customers at central: registration by staff, websites and tills (idempotent by a client
request id), profile changes with their before and after in the audit log, consent history, cards bound
to customers, search, and CSV imports from an earlier system (all or nothing, or the valid lines).

Phone and e-mail are unique among active customers, external ids among all: unique indexes enforce it
and a clash is a :class:`DuplicateCustomer` naming the field. Every change is audited in the
transaction that makes it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from core import CardState, DomainError, IdempotencyConflict, IllegalTransition, fingerprint
from core.loyalty.customers import (
    Address,
    CardAlreadyBound,
    Channel,
    Consent,
    ConsentSource,
    CustomerFile,
    DuplicateCustomer,
    Gender,
    ImportLine,
    LineProblem,
    Profile,
    changed_profile,
    consent,
    consent_changes,
    current_consents,
    make_profile,
    normalise_email,
    normalise_phone,
    parse_customers_csv,
    profile_diff,
)

from ..db import Database
from ..db.tables import cards, customer_consents, customer_groups, customer_requests, customers, stores, terminals
from .admin import NotFound, audit
from .ledger import Origin, insert_rows_sql, json_document

__all__ = ["CustomerService", "CustomerQuery", "ConsentAnswer", "CustomersRejected", "current_consents_of",
           "SOURCE_OF_CHANNEL"]

log = logging.getLogger("tessera.customers")

# Who registers or changes a customer (an Origin's channel) -> the source recorded with their consents.
SOURCE_OF_CHANNEL = {"admin": ConsentSource.STAFF, "web": ConsentSource.WEB, "till": ConsentSource.TILL,
                     "import": ConsentSource.IMPORT}
_REGISTERED_BY = {"admin": "staff", "web": "web", "till": "till", "import": "import"}
_UNBINDABLE = {CardState.CLOSED.value, CardState.REPLACED.value}
_CHUNK = 5000  # keys per lookup, rows per write

_CLAIM = {name: dialect.insert(customer_requests).on_conflict_do_nothing().returning(customer_requests.c.request_id)
          for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))}
_CUSTOMER_TYPES = {
    "id": "bigint", "external_id": "varchar", "first_name": "varchar", "last_name": "varchar", "name_key": "varchar",
    "gender": "varchar", "birth_date": "date", "address_lines": "json", "postcode": "varchar", "city": "varchar",
    "country": "varchar", "phone": "varchar", "email": "varchar", "email_key": "varchar", "social": "json",
    "active": "boolean", "channel": "varchar", "store_id": "bigint", "created_at": "timestamptz",
    "updated_at": "timestamptz"}
_GROUP_TYPES = {"customer_id": "bigint", "code": "varchar"}
_CONSENT_TYPES = {"customer_id": "bigint", "channel": "varchar", "granted": "boolean", "source": "varchar",
                  "at": "timestamptz", "recorded_at": "timestamptz", "actor": "varchar"}
_PG_INSERT = {table.name: sa.text(insert_rows_sql(table, "rows", types)) for table, types in (
    (customers, _CUSTOMER_TYPES), (customer_groups, _GROUP_TYPES), (customer_consents, _CONSENT_TYPES))}
_PG_BIND = sa.text("UPDATE cards SET customer_id = r.customer_id "
                   "FROM json_to_recordset(CAST(:rows AS json)) AS r(card_id bigint, customer_id bigint) "
                   "WHERE cards.id = r.card_id AND cards.customer_id IS NULL")
_SQLITE_BIND = (sa.update(cards).where(cards.c.id == sa.bindparam("card_id"), cards.c.customer_id.is_(None))
                .values(customer_id=sa.bindparam("owner")))
_PG_IDS = sa.text("SELECT nextval(pg_get_serial_sequence('customers', 'id')) FROM generate_series(1, :n)")
# The partial unique indexes cover active customers; lookups name the same condition so SQLite uses them.
_ACTIVE = sa.text("customers.active")


def _keyed(columns: Sequence[Any], key: sa.Column, *where: Any) -> dict[str, sa.Select]:
    """SELECT ``columns`` of the rows whose ``key`` is among the bound ``keys``, per dialect. PostgreSQL
    joins the keys as a table (a fresh table has no statistics, and ``= ANY`` of thousands of keys was
    then planned as a scan); SQLite expands an IN list."""
    keys = sa.func.unnest(sa.bindparam("keys", type_=postgresql.ARRAY(sa.String))).table_valued("key").render_derived()
    return {"postgresql": sa.select(*columns).select_from(key.table.join(keys, key == keys.c.key)).where(*where),
            "sqlite": sa.select(*columns).where(key.in_(sa.bindparam("keys", expanding=True)), *where)}


_EXISTING = {
    "phone": _keyed([customers.c.phone], customers.c.phone, _ACTIVE),
    "email": _keyed([customers.c.email_key], customers.c.email_key, _ACTIVE),
    "external_id": _keyed([customers.c.external_id], customers.c.external_id),
}
_CARDS = {name: statement.with_for_update(of=cards) for name, statement in
          _keyed([cards.c.id, cards.c.number, cards.c.state, cards.c.customer_id], cards.c.number).items()}


class CustomersRejected(DomainError):
    """A customer file of which nothing was imported; ``lines`` says which lines and why."""

    code = "invalid_customer_file"

    def __init__(self, message: str, lines: Sequence[dict[str, Any]]) -> None:
        super().__init__(message)
        self.lines = list(lines)


class _Repeat(Exception):
    """The request id was claimed before: answer with the first result."""


class _Refusal(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


@dataclass(frozen=True, slots=True)
class ConsentAnswer:
    """A consent as a caller gives it; the source comes from who calls, ``at`` None means now."""

    channel: str
    granted: bool
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CustomerQuery:
    """What staff search customers by; every field optional, all given must match."""

    phone: str | None = None
    email: str | None = None
    name: str | None = None  # every word starts the first or the last name
    card: str | None = None
    external_id: str | None = None
    group: str | None = None
    active: bool | None = None
    after_id: int = 0
    limit: int = 50


def _profile(row: Any, groups: Iterable[str]) -> Profile:
    return Profile(first_name=row.first_name, last_name=row.last_name, gender=Gender(row.gender),
                   birth_date=row.birth_date, address=Address(tuple(row.address_lines), row.postcode, row.city,
                                                              row.country),
                   phone=row.phone, email=row.email, social=tuple(sorted(row.social.items())),
                   groups=tuple(sorted(groups)), external_id=row.external_id)


def _columns(profile: Profile) -> dict[str, Any]:
    a = profile.address
    return {"external_id": profile.external_id, "first_name": profile.first_name, "last_name": profile.last_name,
            "name_key": profile.name_key, "gender": profile.gender.value, "birth_date": profile.birth_date,
            "address_lines": list(a.lines), "postcode": a.postcode, "city": a.city, "country": a.country,
            "phone": profile.phone, "email": profile.email, "email_key": profile.email_key,
            "social": dict(profile.social)}


def _consent_row(customer_id: int, c: Consent, actor: str, now: datetime) -> dict[str, Any]:
    return {"customer_id": customer_id, "channel": c.channel.value, "granted": c.granted, "source": c.source.value,
            "at": c.at, "recorded_at": now, "actor": actor[:64]}


def _consent_of(row: Any) -> Consent:
    return Consent(Channel(row.channel), row.granted, ConsentSource(row.source), row.at)


# The unique index of each field, as PostgreSQL and SQLite name it in their errors.
_UNIQUE_INDEXES = {"external_id": ("uq_customers_external_id", "customers.external_id"),
                   "phone": ("uq_customers_phone_active", "customers.phone"),
                   "email": ("uq_customers_email_key_active", "customers.email_key")}


def _duplicate_from(exc: IntegrityError) -> DuplicateCustomer:
    """The field a unique index refused (a concurrent registration won the race)."""
    text = str(exc.orig)
    for field, names in _UNIQUE_INDEXES.items():
        if any(name in text for name in names):
            return DuplicateCustomer(field)
    raise exc


async def current_consents_of(conn: AsyncConnection, customer_ids: Sequence[int]) -> dict[int, dict[Channel, Consent]]:
    """Each customer's current consent per channel (channels never answered are absent): what mailings
    must honour."""
    out: dict[int, dict[Channel, Consent]] = {cid: {} for cid in customer_ids}
    for i in range(0, len(customer_ids), _CHUNK):
        rows = await conn.execute(sa.select(customer_consents).where(
            customer_consents.c.customer_id.in_(customer_ids[i:i + _CHUNK])).order_by(customer_consents.c.id))
        history: dict[int, list[Consent]] = {}
        for r in rows:
            history.setdefault(r.customer_id, []).append(_consent_of(r))
        for cid, items in history.items():
            out[cid] = current_consents(items)
    return out


class CustomerService:
    def __init__(self, db: Database, *, progress_every: int = 10_000,
                 on_bound: Callable[[AsyncConnection, int], Awaitable[None]] | None = None) -> None:
        self.db = db
        self.progress_every = progress_every
        # Called in the binding's transaction when a card is first bound at a till, on the web or by staff
        # (the registration bonus); imports bring customers registered elsewhere before, and earn none.
        self.on_bound = on_bound

    @property
    def _dialect(self) -> str:
        return "sqlite" if self.db.sqlite else "postgresql"

    # -- registration ------------------------------------------------------------------------------

    async def create(self, request_id: uuid.UUID, fields: Mapping[str, Any], consents: Sequence[ConsentAnswer],
                     origin: Origin, *, card_number: str | None = None,
                     remote: str | None = None) -> tuple[dict[str, Any], bool]:
        """Register a customer (and bind ``card_number`` to them, in the same transaction).

        Returns ``(customer, replayed)``: a repeat of ``request_id`` with the same request returns the
        first result; with another request it raises IdempotencyConflict and changes nothing. Consents
        are recorded with the caller's source (staff, web or till).
        """
        now = datetime.now(UTC)
        profile = make_profile(fields, now.date())
        source = SOURCE_OF_CHANNEL[origin.channel]
        given = consent_changes({}, [consent(a.channel, a.granted, source.value, a.at or now) for a in consents], now)
        digest = fingerprint({
            "op": "customer_create", "channel": origin.channel, "store": origin.store_id,
            "terminal": origin.terminal_id, "profile": profile.as_dict(), "card": card_number,
            "consents": sorted((a.channel, a.granted, a.at.isoformat() if a.at else None) for a in consents)})
        try:
            async with self.db.begin() as conn:
                claimed = await conn.execute(_CLAIM[self._dialect], {
                    "request_id": request_id, "fingerprint": digest, "created_at": now})
                if claimed.first() is None:
                    raise _Repeat
                actor = await self._actor(conn, origin)
                customer_id = await self._insert(conn, profile, origin, now)
                if given:
                    await conn.execute(sa.insert(customer_consents),
                                       [_consent_row(customer_id, c, actor, now) for c in given])
                if card_number is not None:
                    await self._bind(conn, customer_id, card_number)
                result = (await self._customers(conn, [customer_id]))[0]
                await conn.execute(sa.update(customer_requests).where(customer_requests.c.request_id == request_id)
                                   .values(customer_id=customer_id, result=result))
                await audit(conn, actor, "customer_create", f"customer:{customer_id}", {
                    "outcome": "ok", "channel": origin.channel, "request_id": str(request_id),
                    "profile": profile.as_dict(), "consents": [c.as_dict() for c in given], "card": card_number},
                    remote)
            log.info("customer registered id=%d channel=%s", customer_id, origin.channel)
            return result, False
        except _Repeat:
            pass
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(customer_requests.c.fingerprint, customer_requests.c.result)
                                      .where(customer_requests.c.request_id == request_id))).one()
        if row.fingerprint != digest:
            raise IdempotencyConflict(f"request id {request_id} was already used for a different request")
        return row.result, True

    async def _actor(self, conn: AsyncConnection, origin: Origin) -> str:
        """Who acts, as the audit log names them: a staff user, or ``till:STORE/TILL``, ``web:CLIENT``."""
        if origin.actor:
            return origin.actor
        if origin.terminal_id is None:
            return origin.channel
        row = (await conn.execute(sa.select(terminals.c.code, stores.c.code.label("store"))
                                  .select_from(terminals.outerjoin(stores, stores.c.id == terminals.c.store_id))
                                  .where(terminals.c.id == origin.terminal_id))).one()
        return f"{origin.channel}:{row.store + '/' if row.store else ''}{row.code}"[:64]

    async def _insert(self, conn: AsyncConnection, profile: Profile, origin: Origin, now: datetime) -> int:
        await self._check_unique(conn, profile)
        try:
            customer_id = (await conn.execute(sa.insert(customers).values(
                **_columns(profile), active=True, channel=_REGISTERED_BY[origin.channel], store_id=origin.store_id,
                created_at=now, updated_at=now).returning(customers.c.id))).scalar_one()
        except IntegrityError as exc:
            raise _duplicate_from(exc) from None
        if profile.groups:
            await conn.execute(sa.insert(customer_groups), [{"customer_id": customer_id, "code": g}
                                                            for g in profile.groups])
        return customer_id

    @staticmethod
    async def _check_unique(conn: AsyncConnection, profile: Profile, *, other_than: int | None = None,
                            fields: Iterable[str] = ("external_id", "phone", "email")) -> None:
        """DuplicateCustomer naming the first of ``fields`` another customer has (phone and e-mail: an
        active customer)."""
        values = {"external_id": profile.external_id, "phone": profile.phone, "email": profile.email_key}
        checks = {"external_id": lambda v: customers.c.external_id == v,
                  "phone": lambda v: sa.and_(_ACTIVE, customers.c.phone == v),
                  "email": lambda v: sa.and_(_ACTIVE, customers.c.email_key == v)}
        for field in fields:
            if values[field] is None:
                continue
            query = sa.select(customers.c.id).where(checks[field](values[field])).limit(1)
            if other_than is not None:
                query = query.where(customers.c.id != other_than)
            if (await conn.execute(query)).first() is not None:
                raise DuplicateCustomer(field)

    # -- reading -----------------------------------------------------------------------------------

    async def _customers(self, conn: AsyncConnection, ids: Sequence[int]) -> list[dict[str, Any]]:
        """Customers as the APIs show them, with groups, current consents and cards, in ``ids`` order."""
        if not ids:
            return []
        rows = {r.id: r for r in await conn.execute(sa.select(customers).where(customers.c.id.in_(ids)))}
        groups: dict[int, list[str]] = {}
        for r in await conn.execute(sa.select(customer_groups).where(customer_groups.c.customer_id.in_(ids))):
            groups.setdefault(r.customer_id, []).append(r.code)
        numbers: dict[int, list[str]] = {}
        for r in await conn.execute(sa.select(cards.c.customer_id, cards.c.number)
                                    .where(cards.c.customer_id.in_(ids)).order_by(cards.c.id)):
            numbers.setdefault(r.customer_id, []).append(r.number)
        consents = await current_consents_of(conn, list(ids))
        out = []
        for cid in ids:
            row = rows.get(cid)
            if row is None:
                continue
            current = consents.get(cid, {})
            out.append({
                "id": row.id, **_profile(row, groups.get(cid, ())).as_dict(), "active": row.active,
                "consents": {ch.value: ({k: v for k, v in current[ch].as_dict().items() if k != "channel"}
                                        if ch in current else None) for ch in Channel},
                "cards": numbers.get(cid, []),
                "registered": {"channel": row.channel, "store_id": row.store_id, "at": row.created_at.isoformat()},
                "updated_at": row.updated_at.isoformat()})
        return out

    async def get(self, customer_id: int) -> dict[str, Any]:
        async with self.db.connect() as conn:
            found = await self._customers(conn, [customer_id])
        if not found:
            raise NotFound(f"no customer {customer_id}")
        return found[0]

    async def search(self, q: CustomerQuery) -> dict[str, Any]:
        """Customers matching every given criterion, in id order after ``after_id``; ``next`` is the next
        page's ``after_id`` (None: no more)."""
        query = sa.select(customers.c.id).where(customers.c.id > q.after_id).order_by(customers.c.id).limit(q.limit)
        if q.phone:
            query = query.where(customers.c.phone == normalise_phone(q.phone))
        if q.email:
            query = query.where(customers.c.email_key == normalise_email(q.email).lower())
        if q.external_id:
            query = query.where(customers.c.external_id == q.external_id)
        if q.active is not None:
            query = query.where(customers.c.active.is_(q.active))
        if q.card:
            query = query.where(customers.c.id.in_(sa.select(cards.c.customer_id).where(cards.c.number == q.card)))
        if q.group:
            query = query.where(customers.c.id.in_(sa.select(customer_groups.c.customer_id)
                                                   .where(customer_groups.c.code == q.group)))
        for word in (q.name or "").casefold().split():
            escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(sa.or_(customers.c.name_key.like(f"{escaped}%", escape="\\"),
                                       customers.c.name_key.like(f"% {escaped}%", escape="\\")))
        async with self.db.connect() as conn:
            ids = (await conn.execute(query)).scalars().all()
            found = await self._customers(conn, ids)
        return {"customers": found, "next": ids[-1] if len(ids) == q.limit else None}

    async def consent_history(self, customer_id: int) -> dict[str, Any]:
        """Every consent recorded for the customer, oldest first, and the current state it gives."""
        async with self.db.connect() as conn:
            if (await conn.execute(sa.select(customers.c.id).where(customers.c.id == customer_id))).first() is None:
                raise NotFound(f"no customer {customer_id}")
            rows = (await conn.execute(sa.select(customer_consents).where(customer_consents.c.customer_id ==
                                                                          customer_id)
                                       .order_by(customer_consents.c.id))).all()
        current = current_consents(_consent_of(r) for r in rows)
        return {"customer_id": customer_id,
                "current": {ch.value: current[ch].as_dict() if ch in current else None for ch in Channel},
                "history": [{**_consent_of(r).as_dict(), "recorded_at": r.recorded_at.isoformat(), "actor": r.actor}
                            for r in rows]}

    # -- changes -----------------------------------------------------------------------------------

    async def _lock(self, conn: AsyncConnection, customer_id: int) -> Any:
        row = (await conn.execute(sa.select(customers).where(customers.c.id == customer_id)
                                  .with_for_update())).first()
        if row is None:
            raise NotFound(f"no customer {customer_id}")
        return row

    async def update(self, customer_id: int, changes: Mapping[str, Any], consents: Sequence[ConsentAnswer],
                     origin: Origin, *, active: bool | None = None, remote: str | None = None) -> dict[str, Any]:
        """Change profile fields (None clears one; ``address``, ``social`` and ``groups`` are replaced as a
        whole), record consents that change a channel's state, and (de)activate. Audited with each
        changed field's value before and after; a request that changes nothing records nothing."""
        now = datetime.now(UTC)
        source = SOURCE_OF_CHANNEL[origin.channel]
        answers = [consent(a.channel, a.granted, source.value, a.at or now) for a in consents]
        async with self.db.begin() as conn:
            row = await self._lock(conn, customer_id)
            groups = (await conn.execute(sa.select(customer_groups.c.code)
                                         .where(customer_groups.c.customer_id == customer_id))).scalars().all()
            before = _profile(row, groups)
            after = changed_profile(before, changes, now.date())
            diff = profile_diff(before, after)
            if active is not None and active != row.active:
                diff["active"] = {"before": row.active, "after": active}
            now_active = row.active if active is None else active
            # External ids are unique among all customers; phone and e-mail among the active ones.
            contested = [f for f in ("external_id", "phone", "email")
                         if f in diff or (f != "external_id" and now_active and "active" in diff)]
            await self._check_unique(conn, after, other_than=customer_id,
                                     fields=[f for f in contested if now_active or f == "external_id"])
            history = (await conn.execute(sa.select(customer_consents).where(
                customer_consents.c.customer_id == customer_id).order_by(customer_consents.c.id))).all()
            given = consent_changes(current_consents(_consent_of(r) for r in history), answers, now)
            if not diff and not given:
                return (await self._customers(conn, [customer_id]))[0]
            actor = await self._actor(conn, origin)
            if diff:
                try:
                    await conn.execute(sa.update(customers).where(customers.c.id == customer_id).values(
                        **_columns(after), active=now_active, updated_at=now))
                except IntegrityError as exc:
                    raise _duplicate_from(exc) from None
            if "groups" in diff:
                await conn.execute(sa.delete(customer_groups).where(customer_groups.c.customer_id == customer_id))
                if after.groups:
                    await conn.execute(sa.insert(customer_groups), [{"customer_id": customer_id, "code": g}
                                                                    for g in after.groups])
            if given:
                await conn.execute(sa.insert(customer_consents),
                                   [_consent_row(customer_id, c, actor, now) for c in given])
            await audit(conn, actor, "customer_update", f"customer:{customer_id}", {
                "outcome": "ok", "changed": diff, "consents": [c.as_dict() for c in given]}, remote)
            return (await self._customers(conn, [customer_id]))[0]

    # -- cards -------------------------------------------------------------------------------------

    async def _bind(self, conn: AsyncConnection, customer_id: int, number: str) -> bool:
        """Bind a card to a customer; False if it was theirs already."""
        card = (await conn.execute(sa.select(cards.c.id, cards.c.state, cards.c.customer_id)
                                   .where(cards.c.number == number).with_for_update())).first()
        if card is None:
            raise NotFound("no such card")
        if card.customer_id == customer_id:
            return False
        if card.customer_id is not None:
            raise CardAlreadyBound("the card belongs to another customer")
        if card.state in _UNBINDABLE:
            raise IllegalTransition(f"a card that is {card.state} cannot be bound to a customer")
        await conn.execute(sa.update(cards).where(cards.c.id == card.id).values(customer_id=customer_id))
        if self.on_bound is not None:
            await self.on_bound(conn, card.id)
        return True

    async def bind_card(self, customer_id: int, number: str, origin: Origin, *,
                        remote: str | None = None) -> dict[str, Any]:
        """Bind an anonymous card to an active customer. A card is bound once: binding it to its own
        customer again changes nothing, to another customer is refused (CardAlreadyBound)."""
        async with self.db.begin() as conn:
            row = await self._lock(conn, customer_id)
            if not row.active:
                raise IllegalTransition("an inactive customer cannot get a card")
            if await self._bind(conn, customer_id, number):
                await audit(conn, await self._actor(conn, origin), "customer_card_bind", f"customer:{customer_id}",
                            {"outcome": "ok", "card": number}, remote)
            return (await self._customers(conn, [customer_id]))[0]

    async def unbind_card(self, customer_id: int, number: str, reason: str, origin: Origin, *,
                          remote: str | None = None) -> dict[str, Any]:
        """Make a customer's card anonymous again (staff only; audited with the reason)."""
        async with self.db.begin() as conn:
            await self._lock(conn, customer_id)
            done = await conn.execute(sa.update(cards).where(cards.c.number == number,
                                                             cards.c.customer_id == customer_id)
                                      .values(customer_id=None))
            if done.rowcount != 1:
                raise NotFound(f"customer {customer_id} has no card {number}")
            await audit(conn, await self._actor(conn, origin), "customer_card_unbind", f"customer:{customer_id}",
                        {"outcome": "ok", "card": number, "reason": reason}, remote)
            return (await self._customers(conn, [customer_id]))[0]

    # -- import ------------------------------------------------------------------------------------

    async def import_csv(self, text: str, *, actor: str, partial: bool = False, source: str = "upload.csv",
                         remote: str | None = None,
                         progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Import customers from an earlier system's CSV (see :func:`core.loyalty.customers.parse_customers_csv`).

        A line is refused for its own problems, for repeating an external id, phone, e-mail or card of an
        earlier line, for a customer that exists already (same external id, or an active one with the
        same phone or e-mail), and for a card that is unknown or bound already. Any refused line refuses
        the whole file (:class:`CustomersRejected`, nothing written) unless ``partial``, which imports the
        valid lines and reports the others. One transaction, written in sets; audited either way.
        """
        now = datetime.now(UTC)
        parsed = await asyncio.to_thread(parse_customers_csv, text, now)  # 100k lines take seconds of CPU
        problems = list(parsed.problems)
        summary: dict[str, Any] = {"partial": partial, "rows": parsed.rows}
        try:
            async with self.db.begin() as conn:
                card_ids: dict[str, int] = {}
                if not parsed.fatal:
                    problems += await self._conflicts(conn, parsed, card_ids)
                refusal = self._refusal(parsed, problems, partial)
                if refusal is not None:
                    raise _Refusal(refusal)
                bad = {p.line for p in problems}
                valid = [c for c in parsed.customers if c.line not in bad]
                counts = await self._write_import(conn, valid, card_ids, actor, now, progress)
                summary.update(counts, invalid_lines=len(bad))
                await audit(conn, actor, "customer_import", f"customers:{source}"[:100],
                            {"outcome": "ok", **summary}, remote)
        except _Refusal as refused:
            lines = sorted((p.as_dict() for p in problems), key=lambda p: p["line"])
            async with self.db.begin() as conn:
                await audit(conn, actor, "customer_import", f"customers:{source}"[:100], {
                    "outcome": CustomersRejected.code, **summary,
                    "invalid_lines": len({p.line for p in problems})}, remote)
            log.info("customer import refused source=%s rows=%d problems=%d", source, parsed.rows, len(problems))
            raise CustomersRejected(refused.message, lines) from None
        log.info("customer import source=%s rows=%d imported=%d invalid_lines=%d cards_bound=%d", source,
                 parsed.rows, summary["imported"], summary["invalid_lines"], summary["cards_bound"])
        return {**summary, "lines": sorted((p.as_dict() for p in problems), key=lambda p: p["line"])}

    @staticmethod
    def _refusal(parsed: CustomerFile, problems: Sequence[LineProblem], partial: bool) -> str | None:
        if parsed.fatal:
            return "the file is not a readable customer file: " + parsed.problems[0].message
        if problems and not partial:
            bad = len({p.line for p in problems})
            return f"{bad} line{'s' if bad != 1 else ''} of {parsed.rows} refused: nothing imported"
        return None

    async def _conflicts(self, conn: AsyncConnection, parsed: CustomerFile,
                         card_ids: dict[str, int]) -> list[LineProblem]:
        """Problems of lines against what the database holds (looked up in sets); fills ``card_ids`` with
        the cards to bind, locked until the import commits."""
        by_key: dict[str, dict[str, int]] = {"external_id": {}, "phone": {}, "email": {}, "card_number": {}}
        for c in parsed.customers:
            for field, key in (("external_id", c.profile.external_id), ("phone", c.profile.phone),
                               ("email", c.profile.email_key), ("card_number", c.card_number)):
                if key is not None:
                    by_key[field][key] = c.line
        problems = []
        for field in ("external_id", "phone", "email"):
            keys = list(by_key[field])
            for i in range(0, len(keys), _CHUNK):
                found = await conn.execute(_EXISTING[field][self._dialect], {"keys": keys[i:i + _CHUNK]})
                problems += [LineProblem(by_key[field][key], field, DuplicateCustomer.code,
                                         f"a customer with this {field.replace('_', ' ')} exists already")
                             for (key,) in found]
        numbers = list(by_key["card_number"])
        seen = set()
        for i in range(0, len(numbers), _CHUNK):
            for card in await conn.execute(_CARDS[self._dialect], {"keys": numbers[i:i + _CHUNK]}):
                seen.add(card.number)
                line = by_key["card_number"][card.number]
                if card.customer_id is not None:
                    problems.append(LineProblem(line, "card_number", CardAlreadyBound.code,
                                                "the card belongs to another customer"))
                elif card.state in _UNBINDABLE:
                    problems.append(LineProblem(line, "card_number", "card_not_bindable",
                                                f"the card is {card.state}"))
                else:
                    card_ids[card.number] = card.id
        problems += [LineProblem(by_key["card_number"][n], "card_number", "unknown_card", "no such card")
                     for n in numbers if n not in seen]
        return problems

    async def _new_ids(self, conn: AsyncConnection, n: int) -> list[int]:
        """Ids for ``n`` new customers, so their groups, consents and cards are written in sets too."""
        if n == 0:
            return []
        if self.db.sqlite:  # one writer (BEGIN IMMEDIATE): the ids after the highest are ours
            top = (await conn.execute(sa.select(sa.func.coalesce(sa.func.max(customers.c.id), 0)))).scalar_one()
            return list(range(top + 1, top + n + 1))
        return sorted((await conn.execute(_PG_IDS, {"n": n})).scalars().all())

    async def _write_import(self, conn: AsyncConnection, lines: Sequence[ImportLine], card_ids: Mapping[str, int],
                            actor: str, now: datetime,
                            progress: Callable[[int, int], None] | None) -> dict[str, int]:
        ids = await self._new_ids(conn, len(lines))
        written = consents_written = bound = 0
        for start in range(0, len(lines), _CHUNK):
            chunk = list(zip(ids[start:start + _CHUNK], lines[start:start + _CHUNK], strict=True))
            rows = [{"id": cid, **_columns(c.profile), "active": True, "channel": "import", "store_id": None,
                     "created_at": now, "updated_at": now} for cid, c in chunk]
            groups = [{"customer_id": cid, "code": g} for cid, c in chunk for g in c.profile.groups]
            consents = [_consent_row(cid, k, actor, now) for cid, c in chunk for k in c.consents]
            binds = [{"card_id": card_ids[c.card_number], "owner": cid} for cid, c in chunk if c.card_number]
            try:
                await self._insert_rows(conn, customers, rows)
            except IntegrityError as exc:  # registered meanwhile, by a till or website
                raise _duplicate_from(exc) from None
            await self._insert_rows(conn, customer_groups, groups)
            await self._insert_rows(conn, customer_consents, consents)
            if binds:
                if self.db.sqlite:
                    done = (await conn.execute(_SQLITE_BIND, binds)).rowcount
                else:
                    done = (await conn.execute(_PG_BIND, {"rows": json_document(
                        [{"card_id": b["card_id"], "customer_id": b["owner"]} for b in binds])})).rowcount
                if done != len(binds):  # the cards are locked since the check: cannot happen
                    raise RuntimeError(f"bound {done} of {len(binds)} cards")
            written += len(rows)
            consents_written += len(consents)
            bound += len(binds)
            if written // self.progress_every > (written - len(rows)) // self.progress_every or written == len(lines):
                log.info("customer import progress written=%d of=%d", written, len(lines))
                if progress:
                    progress(written, len(lines))
        return {"imported": written, "consents": consents_written, "cards_bound": bound,
                "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None}

    async def _insert_rows(self, conn: AsyncConnection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.db.sqlite:
            # The driver's executemany of ready values: SQLAlchemy's per-row parameter handling took more
            # time than SQLite's writing. Values go through the columns' own bind processors (memoised:
            # an import repeats its timestamps), so they are stored exactly as SQLAlchemy stores them.
            columns = list(rows[0])
            processors = [_memoised(table.c[c].type.dialect_impl(conn.dialect).bind_processor(conn.dialect))
                          for c in columns]
            sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            await conn.exec_driver_sql(sql, [tuple(v if p is None else p(v) for v, p in
                                                   zip(row.values(), processors, strict=True)) for row in rows])
        else:  # one statement per chunk, the rows as one JSON document
            await conn.execute(_PG_INSERT[table.name], {"rows": json_document(rows)})


def _memoised(process: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """A bind processor that converts each hashable value once."""
    if process is None:
        return None
    memo: dict[Any, Any] = {}

    def cached(value: Any) -> Any:
        if isinstance(value, list | dict):
            return process(value)
        try:
            return memo[value]
        except KeyError:
            memo[value] = out = process(value)
            return out

    return cached


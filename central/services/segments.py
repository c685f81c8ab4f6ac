"""Customer segments at central: their definitions (versioned rows of ``loyalty_rules``), the job that
computes their members in one set-based query per segment, the membership feed stores pull, the till's
"which segments is this card in", and mailing exports that honour consents.

A segment's rule is the JSON form of :mod:`core.loyalty.segments`; :func:`member_query` compiles it to
one SQLAlchemy Core SELECT (SQLite and PostgreSQL) whose answer is exactly the cards
:func:`core.loyalty.segments.evaluate` accepts, given each card's facts read as follows:

- purchases: every receipt of the card (sales and returns: a return's negative total lowers the spend,
  and its date counts as a visit), dated by ``receipts.local_date`` (the store's business date);
- birth date, customer groups, consents: those of the customer the card belongs to (none for an
  anonymous card); the current consent of a channel is the one given last (``at``; of equal times the
  one recorded last);
- tier: ``loyalty_cards.tier``;
- home store: the store that registered the card's customer (``customers.store_id``; customers
  registered by staff, a website or an import have none).

The candidates are the cards of loyalty programmes that can be used: active cards, and pre-issued
cards (still generated or in a pack) once bound to a customer. Blocked, expired, closed and replaced
cards are in no segment (a card unblocked joins its segments again at the next run).

A run diffs the new members against ``segment_members`` and writes one ``segment_changes`` row per card
that joined or left: the chain-wide feed (increasing ``version``) from which stores keep their own copy
of the memberships, to answer the till offline. Feed writers hold a table lock until they commit, so
versions become visible in increasing order and a store's cursor never skips a row.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from core import CardState, IllegalTransition, InvalidInput
from core.loyalty.customers import Channel
from core.loyalty.segments import (
    And,
    BirthdayThisMonth,
    BirthdayWithin,
    BoughtGroup,
    BoughtItem,
    CustomerGroupIn,
    HasConsent,
    Not,
    Or,
    SegmentRule,
    SpentBetween,
    SpentOver,
    StoreIn,
    TierIn,
    VisitsAtLeast,
    exportable,
    from_data,
    to_data,
)
from core.programmes import ProgrammeKind

from ..db import Database
from ..db.tables import (
    UTCDateTime,
    cards,
    customer_consents,
    customer_groups,
    customers,
    loyalty_cards,
    loyalty_rules,
    programmes,
    receipts,
    segment_changes,
    segment_members,
    segment_runs,
    stores,
)
from .admin import NotFound, audit, bump_config
from .customers import current_consents_of

__all__ = ["SegmentService", "member_query", "celebration_keys", "SEGMENT_KIND", "USABLE_STATES",
           "BOUND_STATES", "EXPORT_COLUMNS", "check_segment_code"]

log = logging.getLogger("tessera.segments")

SEGMENT_KIND = "segment"  # loyalty_rules.kind
USABLE_STATES = (CardState.ACTIVE.value,)
BOUND_STATES = (CardState.GENERATED.value, CardState.IN_PACK.value)  # pre-issued: a candidate once bound
TRIGGERS = ("schedule", "demand")
_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_CHUNK = 5000  # customers per export chunk
_MAX_FEED_PAGE = 10_000
_ROWCOUNT = {"preserve_rowcount": True}  # INSERT ... SELECT reports its rows only when asked

# Common columns of every export, then those of the channel (the address, the phone, the e-mail).
EXPORT_COLUMNS = {
    Channel.MAIL: ("address_line1", "address_line2", "address_line3", "address_line4", "postcode", "city",
                   "country"),
    Channel.SMS: ("phone",),
    Channel.EMAIL: ("email",),
}
_COMMON_COLUMNS = ("customer_id", "card_number", "first_name", "last_name")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


# -- rule → SQL ------------------------------------------------------------------------------------


def celebration_keys(today: date, days: int) -> list[int]:
    """Birthdays (``month * 100 + day`` of the birth date) celebrated from ``today`` to ``days`` days
    later: someone born on 29 February celebrates on 28 February in common years."""
    keys = set()
    for offset in range(days + 1):
        day = today + timedelta(days=offset)
        keys.add(day.month * 100 + day.day)
        if day.month == 2 and day.day == 28 and not _leap(day.year):
            keys.add(229)
    return sorted(keys)


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


class _Compiler:
    """One boolean SQL expression per rule node, over a row of the candidate cards (``cards`` joined to
    its customer and loyalty state). Every expression is TRUE or FALSE, never NULL, so NOT is exact."""

    def __init__(self, today: date, dialect: str) -> None:
        self.today = today
        self.dialect = dialect

    def __call__(self, rule: SegmentRule) -> Any:
        match rule:
            case And(rules=rules):
                return sa.and_(*(self(child) for child in rules))
            case Or(rules=rules):
                return sa.or_(*(self(child) for child in rules))
            case Not(rule=child):
                return sa.not_(self(child))
            case SpentOver(amount=amount, days=days):
                return cards.c.id.in_(self._per_card(days).having(sa.func.sum(receipts.c.total) > amount))
            case SpentBetween(low=low, high=high, days=days):
                spent = sa.func.sum(receipts.c.total)
                if low > 0:
                    return cards.c.id.in_(self._per_card(days).having(spent.between(low, high)))
                # 0 is in range: cards without receipts in the window belong, so exclude those outside it.
                return sa.not_(cards.c.id.in_(self._per_card(days).having(sa.or_(spent < low, spent > high))))
            case BoughtGroup(group=group, days=days):
                return cards.c.id.in_(self._receipts(days).where(self._contains(receipts.c.item_groups, group)))
            case BoughtItem(item=item, days=days):
                return cards.c.id.in_(self._receipts(days).where(self._contains(receipts.c["items"], item)))
            case VisitsAtLeast(n=n, days=days):
                visits = sa.func.count(sa.distinct(receipts.c.local_date))
                return cards.c.id.in_(self._per_card(days).having(visits >= n))
            case BirthdayThisMonth():
                return sa.and_(customers.c.birth_date.is_not(None),
                               sa.extract("month", customers.c.birth_date) == self.today.month)
            case BirthdayWithin(days=days):
                key = sa.extract("month", customers.c.birth_date) * 100 + sa.extract("day", customers.c.birth_date)
                return sa.and_(customers.c.birth_date.is_not(None), key.in_(celebration_keys(self.today, days)))
            case TierIn(tiers=tiers):
                return sa.and_(loyalty_cards.c.tier.is_not(None), loyalty_cards.c.tier.in_(sorted(tiers)))
            case HasConsent(channel=channel):
                return sa.and_(cards.c.customer_id.is_not(None), cards.c.customer_id.in_(_granted(channel)))
            case CustomerGroupIn(groups=groups):
                members = sa.select(customer_groups.c.customer_id).where(customer_groups.c.code.in_(sorted(groups)))
                return sa.and_(cards.c.customer_id.is_not(None), cards.c.customer_id.in_(members))
            case StoreIn(stores=codes):
                ids = sa.select(stores.c.id).where(stores.c.code.in_(sorted(codes)))
                return sa.and_(customers.c.store_id.is_not(None), customers.c.store_id.in_(ids))
        raise InvalidInput(f"not a segment rule: {rule!r}")

    def _window(self, days: int) -> Any:
        return sa.and_(receipts.c.local_date > self.today - timedelta(days=days), receipts.c.local_date <= self.today)

    def _receipts(self, days: int) -> sa.Select:
        return sa.select(receipts.c.card_id).where(self._window(days))

    def _per_card(self, days: int) -> sa.Select:
        return self._receipts(days).group_by(receipts.c.card_id)

    def _contains(self, column: sa.Column, code: str) -> Any:
        """The receipt's JSON array of distinct codes holds ``code``: JSONB's ``?`` on PostgreSQL,
        json_each on SQLite."""
        if self.dialect == "postgresql":
            return sa.type_coerce(column, postgresql.JSONB).has_key(code)
        value = sa.func.json_each(column).table_valued("value")
        return sa.exists(sa.select(sa.literal(1)).select_from(value).where(value.c.value == code))


def _granted(channel: Channel) -> sa.Select:
    """Customers whose current consent on ``channel`` (the last given; of equal times the last recorded)
    is a grant."""
    ranked = sa.select(
        customer_consents.c.customer_id, customer_consents.c.granted,
        sa.func.row_number().over(partition_by=customer_consents.c.customer_id,
                                  order_by=(customer_consents.c.at.desc(), customer_consents.c.id.desc()))
        .label("latest"),
    ).where(customer_consents.c.channel == Channel(channel).value).subquery("consents")
    return sa.select(ranked.c.customer_id).where(ranked.c.latest == 1, ranked.c.granted == sa.true())


_CANDIDATE = sa.and_(
    programmes.c.kind == ProgrammeKind.LOYALTY.value,
    sa.or_(cards.c.state.in_(USABLE_STATES),
           sa.and_(cards.c.state.in_(BOUND_STATES), cards.c.customer_id.is_not(None))))


def member_query(rule: SegmentRule, today: date, dialect: str) -> sa.Select:
    """One SELECT of the ids (column ``card_id``) of the candidate cards in the segment ``rule`` defines,
    as of the business date ``today``, for ``dialect`` ("postgresql" or "sqlite")."""
    if dialect not in ("postgresql", "sqlite"):
        raise ValueError(f"unsupported dialect {dialect!r}")
    source = (cards.join(programmes, programmes.c.id == cards.c.programme_id)
              .outerjoin(customers, customers.c.id == cards.c.customer_id)
              .outerjoin(loyalty_cards, loyalty_cards.c.card_id == cards.c.id))
    return sa.select(cards.c.id.label("card_id")).select_from(source).where(_CANDIDATE, _Compiler(today, dialect)(rule))


# The members a run computed and those of them that joined, diffed against segment_members in the run's
# transaction (dropped at its end).
_run_metadata = sa.MetaData()
_run_members = sa.Table("segment_run_members", _run_metadata, sa.Column("card_id", sa.BigInteger, primary_key=True),
                        prefixes=["TEMPORARY"], postgresql_on_commit="DROP")
_run_joined = sa.Table("segment_run_joined", _run_metadata, sa.Column("card_id", sa.BigInteger, primary_key=True),
                       prefixes=["TEMPORARY"], postgresql_on_commit="DROP")


# -- the service -----------------------------------------------------------------------------------


def _revision(row: Any) -> dict[str, Any]:
    return {"code": row.code, "revision": row.revision, "name": row.body.get("name"), "rule": row.body.get("rule"),
            "retired": row.retired, "version": row.version, "created_by": row.created_by,
            "created_at": row.created_at.isoformat()}


def _run(row: Any) -> dict[str, Any]:
    return {"id": row.id, "segment": row.segment, "revision": row.revision, "trigger": row.trigger,
            "actor": row.actor, "started_at": row.started_at.isoformat(),
            "finished_at": row.finished_at.isoformat() if row.finished_at else None,
            "members": row.members, "added": row.added, "removed": row.removed}


def _cell(value: Any) -> str:
    """A CSV cell; free text starting like a spreadsheet formula is quoted with ``'``."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def check_segment_code(code: str) -> str:
    if not isinstance(code, str) or not _CODE.match(code):
        raise InvalidInput(f"a segment code is 1-32 letters, digits, '_', '.' or '-', got {code!r}")
    return code


class SegmentService:
    def __init__(self, db: Database, *, export_chunk: int = _CHUNK) -> None:
        self.db = db
        self.export_chunk = export_chunk

    @property
    def dialect(self) -> str:
        return "sqlite" if self.db.sqlite else "postgresql"

    async def _lock(self, conn: AsyncConnection, table: sa.Table) -> None:
        """Serialise writers of a versioned feed until commit (SQLite has one writer anyway): rows then
        commit in version order. Readers are not blocked."""
        if not self.db.sqlite:
            await conn.execute(sa.text(f"LOCK TABLE {table.name} IN SHARE ROW EXCLUSIVE MODE"))

    # -- definitions ----------------------------------------------------------------------------

    @staticmethod
    async def _current(conn: AsyncConnection, code: str) -> Any:
        return (await conn.execute(sa.select(loyalty_rules).where(
            loyalty_rules.c.kind == SEGMENT_KIND, loyalty_rules.c.code == code)
            .order_by(loyalty_rules.c.revision.desc()).limit(1))).first()

    async def _insert_revision(self, conn: AsyncConnection, code: str, revision: int, body: dict[str, Any],
                               retired: bool, actor: str) -> Any:
        try:
            return (await conn.execute(sa.insert(loyalty_rules).values(
                kind=SEGMENT_KIND, code=code, revision=revision, body=body, retired=retired, created_by=actor[:64],
                created_at=datetime.now(UTC)).returning(*loyalty_rules.c))).one()
        except IntegrityError:  # only without the table lock, i.e. never on PostgreSQL; kept as a 409
            raise IllegalTransition(f"segment {code} was changed at the same time; try again") from None

    async def define(self, code: str, name: str, rule: Any, actor: str, *,
                     remote: str | None = None) -> dict[str, Any]:
        """Define a segment, or replace its rule and name (the next revision; a retired code comes back).
        The same name and rule as the current revision change nothing (``changed`` False). The rule is
        validated first: :class:`core.loyalty.segments.InvalidSegmentRule` names the bad node's path."""
        check_segment_code(code)
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise InvalidInput("a segment's name is 1-100 characters")
        body = {"name": name.strip(), "rule": to_data(from_data(rule))}
        async with self.db.begin() as conn:
            await self._lock(conn, loyalty_rules)
            current = await self._current(conn, code)
            if current is not None and not current.retired and current.body == body:
                return {**_revision(current), "changed": False}
            revision = 1 if current is None else current.revision + 1
            row = await self._insert_revision(conn, code, revision, body, False, actor)
            await audit(conn, actor, "segment_define", f"segment:{code}", {
                "outcome": "ok", "revision": revision, "name": body["name"], "rule": body["rule"],
                "previous_revision": current.revision if current is not None else None}, remote)
            await bump_config(conn)  # stores pull the rule rows with their configuration
        log.info("segment defined code=%s revision=%d actor=%s", code, revision, actor)
        return {**_revision(row), "changed": True}

    async def retire(self, code: str, actor: str, *, remote: str | None = None) -> dict[str, Any]:
        """Retire a segment: a retired revision, and every card leaves it (feed rows, so stores drop it)."""
        check_segment_code(code)
        async with self.db.begin() as conn:
            await self._lock(conn, loyalty_rules)
            current = await self._current(conn, code)
            if current is None:
                raise NotFound(f"no segment {code}")
            if current.retired:
                raise IllegalTransition(f"segment {code} is retired already")
            row = await self._insert_revision(conn, code, current.revision + 1, current.body, True, actor)
            await self._lock(conn, segment_changes)
            now = datetime.now(UTC)
            leaving = (sa.select(sa.literal(code), segment_members.c.card_id, cards.c.number,
                                 sa.literal(False, sa.Boolean), sa.literal(now, UTCDateTime))
                       .select_from(segment_members.join(cards, cards.c.id == segment_members.c.card_id))
                       .where(segment_members.c.segment == code).order_by(segment_members.c.card_id))
            await conn.execute(sa.insert(segment_changes).from_select(
                ["segment", "card_id", "number", "member", "at"], leaving))
            removed = (await conn.execute(sa.delete(segment_members).where(segment_members.c.segment == code))).rowcount
            await audit(conn, actor, "segment_retire", f"segment:{code}", {
                "outcome": "ok", "revision": row.revision, "removed": removed}, remote)
            await bump_config(conn)
        log.info("segment retired code=%s revision=%d removed=%d actor=%s", code, row.revision, removed, actor)
        return {**_revision(row), "removed": removed}

    async def list(self, *, include_retired: bool = False) -> list[dict[str, Any]]:
        """The current revision of every segment (code order) with its member count and last run."""
        latest = (sa.select(loyalty_rules.c.code, sa.func.max(loyalty_rules.c.revision).label("revision"))
                  .where(loyalty_rules.c.kind == SEGMENT_KIND).group_by(loyalty_rules.c.code).subquery())
        async with self.db.reader() as conn:
            rows = (await conn.execute(sa.select(loyalty_rules).join(latest, sa.and_(
                latest.c.code == loyalty_rules.c.code, latest.c.revision == loyalty_rules.c.revision))
                .where(loyalty_rules.c.kind == SEGMENT_KIND).order_by(loyalty_rules.c.code))).all()
            counts = dict((await conn.execute(sa.select(segment_members.c.segment, sa.func.count())
                                              .group_by(segment_members.c.segment))).all())
            last = {r.segment: _run(r) for r in await conn.execute(sa.select(segment_runs).where(
                segment_runs.c.id.in_(sa.select(sa.func.max(segment_runs.c.id)).group_by(segment_runs.c.segment))))}
        return [{**_revision(r), "members": counts.get(r.code, 0), "last_run": last.get(r.code)}
                for r in rows if include_retired or not r.retired]

    async def get(self, code: str) -> dict[str, Any]:
        """A segment's current revision, every revision (oldest first), member count and last run."""
        async with self.db.reader() as conn:
            rows = (await conn.execute(sa.select(loyalty_rules).where(
                loyalty_rules.c.kind == SEGMENT_KIND, loyalty_rules.c.code == code)
                .order_by(loyalty_rules.c.revision))).all()
            if not rows:
                raise NotFound(f"no segment {code}")
            members = (await conn.execute(sa.select(sa.func.count()).select_from(segment_members)
                                          .where(segment_members.c.segment == code))).scalar_one()
            last = (await conn.execute(sa.select(segment_runs).where(segment_runs.c.segment == code)
                                       .order_by(segment_runs.c.id.desc()).limit(1))).first()
        return {**_revision(rows[-1]), "members": members, "last_run": _run(last) if last else None,
                "revisions": [_revision(r) for r in rows]}

    async def runs(self, code: str, *, limit: int = 50) -> list[dict[str, Any]]:
        """A segment's runs, newest first (``finished_at`` None: running, or died before it finished)."""
        async with self.db.reader() as conn:
            rows = (await conn.execute(sa.select(segment_runs).where(segment_runs.c.segment == code)
                                       .order_by(segment_runs.c.id.desc()).limit(limit))).all()
        return [_run(r) for r in rows]

    # -- runs -----------------------------------------------------------------------------------

    async def run(self, code: str, *, today: date | None = None, trigger: str = "demand",
                  actor: str = "system") -> dict[str, Any]:
        """Compute the segment's members as of the business date ``today`` (default: the UTC date) and
        record what changed: members that joined or left (``segment_members``), one feed row per change
        (``segment_changes``), and the run (``segment_runs``). Running again on the same data changes no
        membership and writes no feed row."""
        if trigger not in TRIGGERS:
            raise InvalidInput(f"trigger is one of {TRIGGERS}")
        today = today or datetime.now(UTC).date()
        started, clock = datetime.now(UTC), time.monotonic()
        async with self.db.begin() as conn:
            current = await self._current(conn, code)
            if current is None:
                raise NotFound(f"no segment {code}")
            if current.retired:
                raise IllegalTransition(f"segment {code} is retired")
            run_id = (await conn.execute(sa.insert(segment_runs).values(
                segment=code, revision=current.revision, trigger=trigger, actor=actor[:64], started_at=started)
                .returning(segment_runs.c.id))).scalar_one()
        log.info("segment run start code=%s revision=%d run=%d today=%s trigger=%s", code, current.revision, run_id,
                 today, trigger)
        rule = from_data(current.body["rule"])
        async with self.db.begin() as conn:
            members, added, removed = await self._apply(conn, code, rule, today, clock)
            finished = datetime.now(UTC)
            await conn.execute(sa.update(segment_runs).where(segment_runs.c.id == run_id).values(
                finished_at=finished, members=members, added=added, removed=removed))
        log.info("segment run done code=%s run=%d members=%d added=%d removed=%d seconds=%.3f", code, run_id, members,
                 added, removed, time.monotonic() - clock)
        return {"id": run_id, "segment": code, "revision": current.revision, "trigger": trigger, "actor": actor,
                "today": today.isoformat(), "started_at": started.isoformat(), "finished_at": finished.isoformat(),
                "members": members, "added": added, "removed": removed}

    async def _apply(self, conn: AsyncConnection, code: str, rule: SegmentRule, today: date,
                     clock: float) -> tuple[int, int, int]:
        for table in (_run_members, _run_joined):
            await conn.execute(sa.text(f"DROP TABLE IF EXISTS {table.name}"))
            await conn.run_sync(table.create)
        members = (await conn.execute(sa.insert(_run_members).from_select(
            ["card_id"], member_query(rule, today, self.dialect)), execution_options=_ROWCOUNT)).rowcount
        if not self.db.sqlite:
            await conn.execute(sa.text(f"ANALYZE {_run_members.name}"))  # a fresh table has no statistics
        log.info("segment run computed code=%s members=%d seconds=%.3f", code, members, time.monotonic() - clock)
        await self._lock(conn, segment_changes)
        now = datetime.now(UTC)
        mine = segment_members.c.segment == code
        left = ~sa.exists().where(_run_members.c.card_id == segment_members.c.card_id)
        await conn.execute(sa.insert(segment_changes).from_select(
            ["segment", "card_id", "number", "member", "at"],
            sa.select(sa.literal(code), segment_members.c.card_id, cards.c.number, sa.literal(False, sa.Boolean),
                      sa.literal(now, UTCDateTime))
            .select_from(segment_members.join(cards, cards.c.id == segment_members.c.card_id))
            .where(mine, left).order_by(segment_members.c.card_id)))
        removed = (await conn.execute(sa.delete(segment_members).where(mine, left))).rowcount
        # The cards that join, set aside first: an INSERT into segment_members that tested segment_members
        # row by row would rescan a table it grows (planned while it was small: quadratic on a first run).
        added = (await conn.execute(sa.insert(_run_joined).from_select(["card_id"], sa.select(_run_members.c.card_id)
                                    .where(~sa.exists().where(mine, segment_members.c.card_id
                                                              == _run_members.c.card_id))),
                                    execution_options=_ROWCOUNT)).rowcount
        await conn.execute(sa.insert(segment_changes).from_select(
            ["segment", "card_id", "number", "member", "at"],
            sa.select(sa.literal(code), _run_joined.c.card_id, cards.c.number, sa.literal(True, sa.Boolean),
                      sa.literal(now, UTCDateTime))
            .select_from(_run_joined.join(cards, cards.c.id == _run_joined.c.card_id)).order_by(_run_joined.c.card_id)))
        await conn.execute(sa.insert(segment_members).from_select(
            ["segment", "card_id", "since"],
            sa.select(sa.literal(code), _run_joined.c.card_id, sa.literal(now, UTCDateTime))))
        for table in (_run_members, _run_joined):
            await conn.execute(sa.text(f"DROP TABLE {table.name}"))
        return members, added, removed

    async def run_all(self, today: date | None = None, *, actor: str = "scheduler") -> list[dict[str, Any]]:
        """The scheduled job: run every segment that is not retired, one after the other. A segment that
        fails is logged and skipped; the others still run."""
        today = today or datetime.now(UTC).date()
        codes = [s["code"] for s in await self.list()]
        log.info("segment job start segments=%d today=%s", len(codes), today)
        clock, done = time.monotonic(), []
        for i, code in enumerate(codes, 1):
            try:
                done.append(await self.run(code, today=today, trigger="schedule", actor=actor))
            except Exception:
                log.exception("segment job failed code=%s", code)
            log.info("segment job progress done=%d of=%d seconds=%.1f", i, len(codes), time.monotonic() - clock)
        log.info("segment job done segments=%d failed=%d seconds=%.1f", len(codes), len(codes) - len(done),
                 time.monotonic() - clock)
        return done

    # -- the till and the stores ----------------------------------------------------------------

    async def segments_of_card(self, number: str) -> list[str]:
        """The codes of the segments the card is in, as the last runs computed them (NotFound: no card)."""
        async with self.db.reader() as conn:
            card_id = (await conn.execute(sa.select(cards.c.id).where(cards.c.number == number))).scalar()
            if card_id is None:
                raise NotFound("no such card")
            return list((await conn.execute(sa.select(segment_members.c.segment).where(
                segment_members.c.card_id == card_id).order_by(segment_members.c.segment))).scalars())

    async def changes_since(self, version: int, limit: int = 1000) -> dict[str, Any]:
        """The membership feed after ``version``, oldest first: ``changes`` (version, segment, card_number,
        member, at), ``next`` (the cursor to send next time) and ``more`` (another page is waiting)."""
        limit = max(1, min(limit, _MAX_FEED_PAGE))
        async with self.db.reader() as conn:
            rows = (await conn.execute(sa.select(segment_changes).where(segment_changes.c.version > version)
                                       .order_by(segment_changes.c.version).limit(limit))).all()
        return {"changes": [{"version": r.version, "segment": r.segment, "card_number": r.number,
                             "member": r.member, "at": r.at.isoformat()} for r in rows],
                "next": rows[-1].version if rows else version, "more": len(rows) == limit}

    # -- exports --------------------------------------------------------------------------------

    async def export(self, code: str, channel: str, write: Callable[[bytes], Awaitable[Any]], actor: str, *,
                     remote: str | None = None) -> int:
        """Write the CSV of a segment's members to contact on ``channel`` (mail: name and address; sms:
        phone; email: e-mail) through ``write``, in chunks; returns the rows written.

        One row per customer (their lowest card number in the segment), only active customers whose
        current consent on the channel is a grant and who have the contact detail. Audited at the end
        (who, which segment, channel, rows, and whether the export completed)."""
        try:
            channel = Channel(channel)
        except ValueError:
            raise InvalidInput(f"channel is one of {[c.value for c in Channel]}, got {channel!r}") from None
        async with self.db.reader() as conn:
            current = await self._current(conn, code)
        if current is None:
            raise NotFound(f"no segment {code}")
        rows, complete = 0, False
        try:
            await write(self._csv([_COMMON_COLUMNS + EXPORT_COLUMNS[channel]]))
            after = 0
            while True:
                async with self.db.reader() as conn:
                    chunk = await self._export_chunk(conn, code, channel, after)
                    consents = await current_consents_of(conn, [r.id for r in chunk]) if chunk else {}
                if not chunk:
                    break
                after = chunk[-1].id
                lines = [self._export_line(r, channel) for r in chunk if exportable(consents[r.id], channel)]
                lines = [line for line in lines if line is not None]
                if lines:
                    await write(self._csv(lines))
                    rows += len(lines)
            complete = True
        finally:
            async with self.db.begin() as conn:
                await audit(conn, actor, "segment_export", f"segment:{code}", {
                    "outcome": "ok" if complete else "interrupted", "channel": channel.value, "rows": rows,
                    "revision": current.revision}, remote)
            log.info("segment export code=%s channel=%s rows=%d complete=%s actor=%s", code, channel.value, rows,
                     complete, actor)
        return rows

    async def _export_chunk(self, conn: AsyncConnection, code: str, channel: Channel, after: int) -> Sequence[Any]:
        contact = {Channel.MAIL: sa.true(), Channel.SMS: customers.c.phone.is_not(None),
                   Channel.EMAIL: customers.c.email.is_not(None)}[channel]
        # Grouped by the customer's key: PostgreSQL lets the other customer columns follow it.
        return (await conn.execute(
            sa.select(customers.c.id, sa.func.min(cards.c.number).label("card_number"), customers.c.first_name,
                      customers.c.last_name, customers.c.address_lines, customers.c.postcode, customers.c.city,
                      customers.c.country, customers.c.phone, customers.c.email)
            .select_from(segment_members.join(cards, cards.c.id == segment_members.c.card_id)
                         .join(customers, customers.c.id == cards.c.customer_id))
            .where(segment_members.c.segment == code, customers.c.active == sa.true(), customers.c.id > after, contact)
            .group_by(customers.c.id).order_by(customers.c.id).limit(self.export_chunk))).all()

    @staticmethod
    def _export_line(row: Any, channel: Channel) -> list[str] | None:
        common = [str(row.id), row.card_number, _cell(row.first_name), _cell(row.last_name)]
        if channel is Channel.MAIL:
            lines = [line for line in row.address_lines if line]
            if not lines:
                return None
            return common + [_cell(v) for v in (lines + [""] * 4)[:4]] + [
                _cell(row.postcode), _cell(row.city), row.country or ""]
        return common + [row.phone if channel is Channel.SMS else _cell(row.email)]

    @staticmethod
    def _csv(lines: Sequence[Sequence[str]]) -> bytes:
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerows(lines)
        return out.getvalue().encode()


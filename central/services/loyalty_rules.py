"""Loyalty rules at central: earning schemes, programme plans and segments, each change a new version.

Nothing is edited: a change is a new row of ``loyalty_rules`` with the next chain-wide version, audited
in the same transaction. A scheme's revision is its version number (1, 2, ...), and a new version of a
scheme starts where the last one ends, never earlier than now: receipts already registered keep what
they earned, and a receipt earns by the version in force at its own time. Stores pull the rows after
their cursor and build the same :class:`sync.loyalty.LoyaltyRules`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core import InvalidInput
from sync.loyalty import LoyaltyRules, RuleChange, RuleKind, parse_body

from ..db import Database
from ..db.tables import loyalty_rules, programmes
from .admin import NotFound, audit, bump_config

__all__ = ["RulesService", "RETROACTIVE_TOLERANCE"]

log = logging.getLogger("tessera.loyalty")

# A version may start this far in the past (clocks of staff and server differ a little), not more.
RETROACTIVE_TOLERANCE = timedelta(minutes=5)
_LATEST = sa.select(sa.func.coalesce(sa.func.max(loyalty_rules.c.version), 0))


def _change(row: Any) -> RuleChange:
    return RuleChange(version=row.version, kind=row.kind, code=row.code, revision=row.revision, body=row.body,
                      retired=row.retired, at=row.created_at)


class RulesService:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._rules = LoyaltyRules(())
        self._lock = asyncio.Lock()

    # -- reading -----------------------------------------------------------------------------------

    async def current(self, conn: AsyncConnection | None = None) -> LoyaltyRules:
        """The rules in force, rebuilt only when a version was added since the last call."""
        if conn is None:
            async with self.db.connect() as own:
                return await self.current(own)
        latest = (await conn.execute(_LATEST)).scalar_one()
        if latest == self._rules.version:
            return self._rules
        async with self._lock:
            if latest != self._rules.version:
                rows = (await conn.execute(sa.select(loyalty_rules).order_by(loyalty_rules.c.version))).all()
                self._rules = LoyaltyRules([_change(r) for r in rows])
                log.info("loyalty rules loaded version=%s schemes=%s plans=%s segments=%s", self._rules.version,
                         len(self._rules.schemes), len(self._rules.plans), len(self._rules.segments))
        return self._rules

    async def changes_since(self, conn: AsyncConnection, version: int, limit: int = 1000) -> list[RuleChange]:
        """The rule rows after ``version``, oldest first (what a store's pull ships)."""
        rows = await conn.execute(sa.select(loyalty_rules).where(loyalty_rules.c.version > version)
                                  .order_by(loyalty_rules.c.version).limit(limit))
        return [_change(r) for r in rows]

    async def history(self, kind: str, code: str | None = None) -> list[dict[str, Any]]:
        """Every version of one rule (or of every rule of ``kind``), oldest first."""
        query = sa.select(loyalty_rules).where(loyalty_rules.c.kind == kind).order_by(loyalty_rules.c.version)
        if code is not None:
            query = query.where(loyalty_rules.c.code == code)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        if code is not None and not rows:
            raise NotFound(f"no {kind} {code!r}")
        return [_change(r).model_dump(mode="json") | {"created_by": r.created_by} for r in rows]

    # -- changing ----------------------------------------------------------------------------------

    async def publish(self, kind: str, body: Any, actor: str, remote: str | None = None,
                      now: datetime | None = None) -> dict[str, Any]:
        """Validate ``body`` as a scheme or a plan and record it as the next version, audited (segments are
        defined through the segment service)."""
        now = now or datetime.now(UTC)
        canonical, domain = parse_body(kind, body)
        code = domain.code if kind == RuleKind.SCHEME else domain.programme
        async with self.db.begin() as conn:
            if kind == RuleKind.PLAN:
                await self._check_programme(conn, code)
            last = (await conn.execute(
                sa.select(loyalty_rules.c.revision, loyalty_rules.c.retired, loyalty_rules.c.body)
                .where(loyalty_rules.c.kind == kind, loyalty_rules.c.code == code)
                .order_by(loyalty_rules.c.revision.desc()).limit(1).with_for_update())).first()
            revision = (last.revision if last else 0) + 1
            if kind == RuleKind.SCHEME:
                self._check_scheme(domain, last, revision, now)
            row = dict(kind=kind, code=code, revision=revision, body=canonical, retired=False, created_by=actor,
                       created_at=now)
            version = (await conn.execute(sa.insert(loyalty_rules).values(**row)
                                          .returning(loyalty_rules.c.version))).scalar_one()
            await audit(conn, actor, f"loyalty.{kind}.publish", f"{kind}:{code}",
                        {"revision": revision, "version": version, "body": canonical}, remote)
            await bump_config(conn)
        log.info("loyalty rule published kind=%s code=%s revision=%s version=%s by=%s", kind, code, revision,
                 version, actor)
        return {"kind": kind, "code": code, "revision": revision, "version": version, "body": canonical}

    async def retire(self, kind: str, code: str, actor: str, at: datetime | None = None,
                     remote: str | None = None, now: datetime | None = None) -> dict[str, Any]:
        """Withdraw rule ``code`` of ``kind`` (a scheme from ``at``, default now; never in the past)."""
        now = now or datetime.now(UTC)
        at = at or now
        if at < now - RETROACTIVE_TOLERANCE:
            raise InvalidInput("a rule cannot be retired in the past", code="invalid_rule")
        async with self.db.begin() as conn:
            last = (await conn.execute(
                sa.select(loyalty_rules.c.revision, loyalty_rules.c.retired)
                .where(loyalty_rules.c.kind == kind, loyalty_rules.c.code == code)
                .order_by(loyalty_rules.c.revision.desc()).limit(1).with_for_update())).first()
            if last is None:
                raise NotFound(f"no {kind} {code!r}")
            if last.retired:
                raise InvalidInput(f"{kind} {code} is already retired", code="already_retired")
            body = {"at": at.isoformat()}
            version = (await conn.execute(sa.insert(loyalty_rules).values(
                kind=kind, code=code, revision=last.revision + 1, body=body, retired=True, created_by=actor,
                created_at=now).returning(loyalty_rules.c.version))).scalar_one()
            await audit(conn, actor, f"loyalty.{kind}.retire", f"{kind}:{code}",
                        {"revision": last.revision + 1, "version": version, "at": body["at"]}, remote)
            await bump_config(conn)
        return {"kind": kind, "code": code, "revision": last.revision + 1, "version": version, "retired": True}

    @staticmethod
    def _check_scheme(scheme: Any, last: Any, revision: int, now: datetime) -> None:
        if scheme.version != revision:
            raise InvalidInput(f"the next version of scheme {scheme.code} is {revision}, not {scheme.version}",
                               code="invalid_rule")
        if scheme.valid_from < now - RETROACTIVE_TOLERANCE:
            raise InvalidInput("a scheme version cannot start in the past: receipts already earned by the rules "
                               "then in force", code="invalid_rule")
        if last is not None and not last.retired:
            previous_start = datetime.fromisoformat(last.body["valid_from"])
            if scheme.valid_from <= previous_start:
                raise InvalidInput(f"version {revision} must start after version {revision - 1} "
                                   f"({previous_start.isoformat()})", code="invalid_rule")

    @staticmethod
    async def _check_programme(conn: AsyncConnection, code: str) -> None:
        kind = (await conn.execute(sa.select(programmes.c.kind).where(programmes.c.code == code))).scalar()
        if kind is None:
            raise InvalidInput(f"unknown programme {code!r}", code="unknown_programme")
        if kind != "loyalty":
            raise InvalidInput(f"programme {code} is not a loyalty programme", code="not_a_loyalty_programme")

"""Head-office administration: stores, counterparties, terminals, staff users, tokens and the audit log."""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from core import DomainError, InvalidInput
from core.secrets import hash_token, new_token

from ..db import Database
from ..db.tables import audit_log, counterparties, staff_tokens, stores, terminals, users

__all__ = ["ROLES", "Staff", "Terminal", "AuthError", "Forbidden", "NotFound", "AdminService", "audit", "bump_config"]

ROLES = ("admin", "operator", "auditor")
_hasher = PasswordHasher()
MAX_LOGIN_FAILURES = 5
LOGIN_LOCKOUT = timedelta(minutes=15)


@functools.cache
def _dummy_hash() -> str:
    """An argon2 hash to verify against for unknown users (made once, on first need)."""
    return _hasher.hash("not a real password")



class AuthError(DomainError):
    code = "unauthorized"


class Forbidden(DomainError):
    code = "forbidden"


class NotFound(DomainError):
    code = "not_found"


@dataclass(frozen=True, slots=True)
class Staff:
    id: int
    username: str
    role: str


@dataclass(frozen=True, slots=True)
class Terminal:
    id: int
    kind: str
    store_id: int | None
    code: str


async def audit(conn: AsyncConnection, actor: str, action: str, target: str | None = None,
                details: dict[str, Any] | None = None, remote: str | None = None) -> None:
    """Append one audit record in the caller's transaction, so it stands or falls with the action."""
    await conn.execute(sa.insert(audit_log).values(actor=actor, action=action, target=target,
                                                   details=details or {}, remote=remote, at=datetime.now(UTC)))


async def bump_config(conn: AsyncConnection, store_id: int | None = None) -> None:
    """Mark what pulls ship as configuration changed: for one store, or for all (programme limits)."""
    statement = sa.update(stores).values(config_version=stores.c.config_version + 1)
    await conn.execute(statement if store_id is None else statement.where(stores.c.id == store_id))


async def _insert(conn: AsyncConnection, statement, what: str) -> Any:
    try:
        return (await conn.execute(statement)).scalar_one()
    except IntegrityError:
        raise InvalidInput(f"{what} exists already", code="duplicate") from None


class AdminService:
    def __init__(self, db: Database, token_hours: int = 12) -> None:
        self.db = db
        self.token_hours = token_hours
        self._terminals: dict[str, tuple[float, Terminal | None]] = {}

    # -- staff ------------------------------------------------------------------------------------

    async def create_user(self, conn: AsyncConnection, username: str, password: str, role: str) -> int:
        if role not in ROLES:
            raise InvalidInput(f"role is one of {', '.join(ROLES)}")
        if len(password) < 8:
            raise InvalidInput("password must be at least 8 characters")
        digest = await asyncio.to_thread(_hasher.hash, password)
        return await _insert(conn, sa.insert(users).values(username=username, password_hash=digest, role=role,
                                                           active=True).returning(users.c.id), f"user {username!r}")

    async def set_user_active(self, conn: AsyncConnection, username: str, active: bool) -> None:
        values = {"active": active} if not active else {"active": True, "failed_logins": 0, "locked_until": None}
        res = await conn.execute(sa.update(users).where(users.c.username == username).values(**values))
        if res.rowcount == 0:
            raise NotFound(f"no user {username!r}")
        if not active:
            uid = (await conn.execute(sa.select(users.c.id).where(users.c.username == username))).scalar_one()
            await conn.execute(sa.delete(staff_tokens).where(staff_tokens.c.user_id == uid))

    async def list_users(self, conn: AsyncConnection) -> list[dict[str, Any]]:
        rows = await conn.execute(sa.select(users.c.id, users.c.username, users.c.role, users.c.active,
                                            users.c.created_at).order_by(users.c.id))
        return [{"id": r.id, "username": r.username, "role": r.role, "active": r.active,
                 "created_at": r.created_at.isoformat()} for r in rows]

    async def login(self, username: str, password: str, remote: str | None = None) -> dict[str, Any]:
        """Check a password (argon2, off the event loop) and issue a bearer token.

        After ``MAX_LOGIN_FAILURES`` wrong passwords in a row the account is locked for
        ``LOGIN_LOCKOUT``; the answer stays the same 401, so it does not confirm usernames.
        """
        now = datetime.now(UTC)
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(users).where(users.c.username == username))).first()
        locked = row is not None and row.locked_until is not None and row.locked_until > now
        ok = False
        # Unknown users cost one argon2 verification too, so timing does not reveal usernames.
        digest = row.password_hash if row is not None else _dummy_hash()
        try:
            ok = await asyncio.to_thread(_hasher.verify, digest, password) and row is not None and row.active
        except (VerificationError, InvalidHashError):
            ok = False
        if locked or not ok:
            async with self.db.begin() as conn:
                if row is not None and not locked:
                    failures = row.failed_logins + 1
                    lock = now + LOGIN_LOCKOUT if failures >= MAX_LOGIN_FAILURES else None
                    await conn.execute(sa.update(users).where(users.c.id == row.id).values(
                        failed_logins=0 if lock else failures, locked_until=lock))
                    if lock:
                        await audit(conn, username, "login_locked", remote=remote,
                                    details={"until": lock.isoformat()})
                await audit(conn, username, "login_failed", remote=remote, details={"locked": locked})
            raise AuthError("wrong username or password")
        async with self.db.begin() as conn:
            if row.failed_logins:
                await conn.execute(sa.update(users).where(users.c.id == row.id).values(failed_logins=0))
            token = new_token()
            expires = now + timedelta(hours=self.token_hours)
            await conn.execute(sa.insert(staff_tokens).values(token_hash=hash_token(token), user_id=row.id,
                                                              expires_at=expires, created_at=now))
            await audit(conn, username, "login", remote=remote)
        return {"token": token, "expires_at": expires.isoformat(), "role": row.role}

    async def logout(self, token: str) -> None:
        async with self.db.begin() as conn:
            await conn.execute(sa.delete(staff_tokens).where(staff_tokens.c.token_hash == hash_token(token)))

    async def staff_for(self, token: str) -> Staff:
        query = (sa.select(users.c.id, users.c.username, users.c.role, staff_tokens.c.expires_at)
                 .join(staff_tokens, staff_tokens.c.user_id == users.c.id)
                 .where(staff_tokens.c.token_hash == hash_token(token), users.c.active))
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or row.expires_at <= datetime.now(UTC):
            raise AuthError("missing, unknown or expired staff token")
        return Staff(row.id, row.username, row.role)

    # -- stores, counterparties, terminals -------------------------------------------------------------

    async def create_store(self, conn: AsyncConnection, code: str, name: str) -> int:
        return await _insert(conn, sa.insert(stores).values(code=code, name=name, active=True)
                             .returning(stores.c.id), f"store {code!r}")

    async def create_counterparty(self, conn: AsyncConnection, code: str, name: str) -> int:
        return await _insert(conn, sa.insert(counterparties).values(code=code, name=name)
                             .returning(counterparties.c.id), f"counterparty {code!r}")

    async def list_table(self, conn: AsyncConnection, table: sa.Table) -> list[dict[str, Any]]:
        rows = await conn.execute(sa.select(table).order_by(table.c.id))
        return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r._mapping.items()}
                for r in rows]

    async def store_id(self, conn: AsyncConnection, code: str) -> int:
        sid = (await conn.execute(sa.select(stores.c.id).where(stores.c.code == code))).scalar()
        if sid is None:
            raise NotFound(f"no store {code!r}")
        return sid

    async def counterparty_id(self, conn: AsyncConnection, code: str) -> int:
        cid = (await conn.execute(sa.select(counterparties.c.id).where(counterparties.c.code == code))).scalar()
        if cid is None:
            raise NotFound(f"no counterparty {code!r}")
        return cid

    async def create_terminal(self, conn: AsyncConnection, kind: str, code: str,
                              store_code: str | None) -> dict[str, Any]:
        """A till (of a store) or a website client; its token is returned now and never again."""
        if kind not in ("till", "web"):
            raise InvalidInput("terminal kind is till or web")
        if kind == "till" and not store_code:
            raise InvalidInput("a till belongs to a store: give store_code")
        store_id = await self.store_id(conn, store_code) if store_code else None
        same = await conn.execute(sa.select(terminals.c.id).where(
            terminals.c.code == code,
            terminals.c.store_id == store_id if store_id is not None else terminals.c.store_id.is_(None)))
        if same.first() is not None:  # NULL store ids never collide in the unique index
            raise InvalidInput(f"terminal {code!r} exists already", code="duplicate")
        token = new_token()
        tid = await _insert(conn, sa.insert(terminals).values(kind=kind, code=code, store_id=store_id,
                                                               token_hash=hash_token(token), active=True)
                            .returning(terminals.c.id), f"terminal {code!r}")
        if store_id is not None:
            await bump_config(conn, store_id)  # the store's edge learns of the new till on its next pull
        return {"id": tid, "kind": kind, "code": code, "store_id": store_id, "token": token}

    async def set_terminal_active(self, conn: AsyncConnection, terminal_id: int, active: bool) -> None:
        store_id = (await conn.execute(sa.update(terminals).where(terminals.c.id == terminal_id)
                                       .values(active=active).returning(terminals.c.store_id))).first()
        if store_id is None:
            raise NotFound(f"no terminal {terminal_id}")
        if store_id[0] is not None:
            await bump_config(conn, store_id[0])
        self._terminals.clear()

    async def terminal_for(self, token: str) -> Terminal:
        """Resolve a till or web token; cached briefly since every till request carries one."""
        digest = hash_token(token)
        hit = self._terminals.get(digest)
        if hit is None or hit[0] < time.monotonic():
            query = (sa.select(terminals.c.id, terminals.c.kind, terminals.c.store_id, terminals.c.code)
                     .outerjoin(stores, stores.c.id == terminals.c.store_id)
                     .where(terminals.c.token_hash == digest, terminals.c.active,
                            sa.or_(terminals.c.store_id.is_(None), stores.c.active)))
            async with self.db.connect() as conn:
                row = (await conn.execute(query)).first()
            if len(self._terminals) > 10_000:
                self._terminals.clear()
            hit = (time.monotonic() + 30, Terminal(row.id, row.kind, row.store_id, row.code) if row else None)
            self._terminals[digest] = hit
        if hit[1] is None:
            raise AuthError("missing, unknown or disabled terminal token")
        return hit[1]

    async def audit_entries(self, conn: AsyncConnection, *, actor: str | None = None, action: str | None = None,
                            since: datetime | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if actor:
            query = query.where(audit_log.c.actor == actor)
        if action:
            query = query.where(audit_log.c.action == action)
        if since:
            query = query.where(audit_log.c.at >= since)
        rows = await conn.execute(query)
        return [{"id": r.id, "at": r.at.isoformat(), "actor": r.actor, "action": r.action, "target": r.target,
                 "details": r.details, "remote": r.remote} for r in rows]

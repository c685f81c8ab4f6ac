"""Issuing cards in batches (with their production file), packs, and pack authorization/activation."""

from __future__ import annotations

import csv
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from core import (
    CardEvent,
    CardState,
    DeclineCode,
    EntryKind,
    IllegalTransition,
    InvalidInput,
    OperationKind,
    Programme,
    expiry_date,
    next_state,
)
from core.authorization import decide_sale
from core.secrets import hash_ecode, new_ecodes
from core.track import track1, track2

from ..db import Database
from ..db.tables import card_issues, cards, counterparties, packs, programmes, stores
from .admin import NotFound
from .ledger import Ledger, Origin, Outcome, card_declined
from .offline import watch_pack

__all__ = ["IssuingService", "MAX_ISSUE", "MAX_PACK", "reserve_serials"]

log = logging.getLogger("tessera.issuing")
MAX_ISSUE = 10_000_000
MAX_PACK = 100_000
CHUNK = 20_000
_CARD_COLUMNS = ("number", "programme_id", "issue_id", "state", "ecode_hash", "ecode_failures", "created_at")

Progress = Callable[[int, int], None]


def _keep_committed_rows(path: Path, rows: int) -> None:
    """Cut the production file to its header and the first ``rows`` cards (those committed)."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        for _ in range(rows + 1 if rows else 0):
            if not f.readline():
                raise RuntimeError(f"{path} holds fewer cards than were committed")
        f.truncate(f.tell())


async def reserve_serials(conn: AsyncConnection, programme: Programme, quantity: int) -> int:
    """Take ``quantity`` serials of the programme's one counter and return the first.

    Card issues and stores' number blocks both draw here, in the caller's transaction (the update
    locks the programme row until it ends), so no serial is ever handed out twice chain-wide.
    """
    new_next = (await conn.execute(
        sa.update(programmes).where(programmes.c.id == programme.id)
        .values(next_serial=programmes.c.next_serial + quantity).returning(programmes.c.next_serial)
    )).scalar_one()
    if new_next > programme.template.capacity:
        left = programme.template.capacity - new_next + quantity
        raise InvalidInput(f"programme {programme.code} has only {left} numbers left", code="numbers_exhausted")
    return new_next - quantity


def _track_name(name: str) -> str:
    cleaned = "".join(ch for ch in name.upper() if ch.isalnum() or ch in " ./-")[:26].strip()
    return cleaned if len(cleaned) >= 2 else "GIFT CARD"


class IssuingService:
    def __init__(self, db: Database, ledger: Ledger, production_dir: Path, pepper: bytes) -> None:
        self.db = db
        self.ledger = ledger
        self.production_dir = production_dir
        self.pepper = pepper
        self.chunk = CHUNK

    # -- issues ----------------------------------------------------------------------------------

    async def start_issue(self, conn: AsyncConnection, programme_code: str, quantity: int,
                          requested_by: str, track_expiry: str | None = None) -> int:
        """Reserve ``quantity`` serials of the programme and open an issue for them."""
        if not 1 <= quantity <= MAX_ISSUE:
            raise InvalidInput(f"quantity is 1 to {MAX_ISSUE}")
        programme = await self.ledger.programme_by_code(conn, programme_code)
        if track_expiry is None:
            end = expiry_date(datetime.now(UTC).date(), (programme.validity_months or 60) + 12)
            track_expiry = end.strftime("%y%m")
        track2("0" * 8, track_expiry, programme.service_code)  # validates the YYMM
        first_serial = await reserve_serials(conn, programme, quantity)
        return (await conn.execute(sa.insert(card_issues).values(
            programme_id=programme.id, quantity=quantity, first_serial=first_serial, generated=0,
            status="running", track_expiry=track_expiry, requested_by=requested_by, heartbeat_at=datetime.now(UTC),
            created_at=datetime.now(UTC)).returning(card_issues.c.id))).scalar_one()

    def production_path(self, issue_id: int) -> Path:
        return self.production_dir / f"issue-{issue_id}.csv"

    async def run_issue(self, issue_id: int, progress: Progress | None = None) -> dict[str, Any]:
        """Generate an issue's cards in chunks (bounded memory), writing the production file beside.

        Each chunk's cards and the issue's progress counter commit together, and the file is synced
        before that commit, so the file always holds at least every committed card.
        """
        async with self.db.connect() as conn:
            issue = (await conn.execute(sa.select(card_issues).where(card_issues.c.id == issue_id))).one()
            programme = await self.ledger.programmes.get(conn, issue.programme_id)
        name = _track_name(programme.name)
        path = self.production_path(issue_id)
        self.production_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        done = issue.generated
        _keep_committed_rows(path, done)  # a resumed run drops rows whose cards never committed
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", newline="") as fh:
                writer = csv.writer(fh)
                if done == 0:
                    writer.writerow(["card_number", "track1", "track2", "barcode", "ecode", "expiry"])
                while done < issue.quantity:
                    n = min(self.chunk, issue.quantity - done)
                    first = issue.first_serial + done
                    numbers = [programme.template.number(s) for s in range(first, first + n)]
                    codes = new_ecodes(n)
                    now = datetime.now(UTC)
                    rows = [(num, programme.id, issue_id, CardState.GENERATED.value,
                             hash_ecode(self.pepper, num, code), 0, now) for num, code in zip(numbers, codes)]
                    writer.writerows(
                        (num, track1(num, name, issue.track_expiry, programme.service_code),
                         track2(num, issue.track_expiry, programme.service_code), num, code, issue.track_expiry)
                        for num, code in zip(numbers, codes))
                    fh.flush()
                    os.fsync(fh.fileno())
                    async with self.db.begin() as conn:
                        await self._insert_cards(conn, rows)
                        done += n
                        await conn.execute(sa.update(card_issues).where(card_issues.c.id == issue_id)
                                           .values(generated=done, production_file=str(path),
                                                   heartbeat_at=datetime.now(UTC)))
                    if progress:
                        progress(done, issue.quantity)
        except Exception as exc:
            async with self.db.begin() as conn:
                await conn.execute(sa.update(card_issues).where(card_issues.c.id == issue_id)
                                   .values(status="failed", error=str(exc)[:2000]))
            log.exception("issue failed issue=%s generated=%s", issue_id, done)
            raise
        async with self.db.begin() as conn:
            await conn.execute(sa.update(card_issues).where(card_issues.c.id == issue_id)
                               .values(status="completed", error=None, completed_at=datetime.now(UTC)))
        seconds = time.monotonic() - started
        log.info("issue completed issue=%s cards=%s seconds=%.1f", issue_id, done, seconds)
        return {**await self.get_issue(issue_id), "seconds": round(seconds, 2)}

    async def claim_for_resume(self, issue_id: int, stale_after: float = 120.0) -> None:
        """Take over an issue whose run failed or died (no progress for ``stale_after`` seconds)."""
        now = datetime.now(UTC)
        c = card_issues.c
        issue = await self.get_issue(issue_id)
        if issue["generated"] and not self.production_path(issue_id).exists():
            # The committed cards' eCodes exist nowhere else: resuming would make a file without them.
            raise IllegalTransition(f"issue {issue_id} lost its production file; its cards cannot be resumed")
        async with self.db.begin() as conn:
            claimed = await conn.execute(sa.update(card_issues).where(
                c.id == issue_id,
                sa.or_(c.status == "failed", sa.and_(c.status == "running", sa.or_(
                    c.heartbeat_at.is_(None), c.heartbeat_at < now - timedelta(seconds=stale_after)))),
            ).values(status="running", error=None, heartbeat_at=now))
        if claimed.rowcount != 1:
            issue = await self.get_issue(issue_id)
            raise IllegalTransition(f"issue {issue_id} is {issue['status']} and not stalled; nothing to resume")

    async def _insert_cards(self, conn: AsyncConnection, rows: list[tuple]) -> None:
        if self.db.sqlite:
            await conn.execute(sa.insert(cards), [dict(zip(_CARD_COLUMNS, r)) for r in rows])
            return
        raw = (await conn.get_raw_connection()).driver_connection
        async with raw.cursor() as cur:
            async with cur.copy(f"COPY cards ({', '.join(_CARD_COLUMNS)}) FROM STDIN") as copy:
                for r in rows:
                    await copy.write_row(r)

    async def get_issue(self, issue_id: int) -> dict[str, Any]:
        async with self.db.connect() as conn:
            row = (await conn.execute(
                sa.select(card_issues, programmes.c.code, programmes.c.number_prefix, programmes.c.number_length,
                          programmes.c.luhn)
                .join(programmes, programmes.c.id == card_issues.c.programme_id)
                .where(card_issues.c.id == issue_id))).first()
            if row is None:
                raise NotFound(f"no issue {issue_id}")
            programme = await self.ledger.programmes.get(conn, row.programme_id)
        last = row.first_serial + row.quantity - 1
        return {"id": row.id, "programme": row.code, "quantity": row.quantity, "generated": row.generated,
                "status": row.status, "first_number": programme.template.number(row.first_serial),
                "last_number": programme.template.number(last), "track_expiry": row.track_expiry,
                "error": row.error, "created_at": row.created_at.isoformat(),
                "completed_at": row.completed_at.isoformat() if row.completed_at else None,
                "production_file_ready": row.status == "completed"}

    async def list_issues(self, limit: int = 100) -> list[dict[str, Any]]:
        async with self.db.connect() as conn:
            ids = (await conn.execute(sa.select(card_issues.c.id).order_by(card_issues.c.id.desc())
                                      .limit(limit))).scalars().all()
        return [await self.get_issue(i) for i in ids]

    # -- packs -----------------------------------------------------------------------------------

    async def create_pack(self, conn: AsyncConnection, *, actor: str, numbers: list[str] | None = None,
                          first_number: str | None = None, last_number: str | None = None,
                          store_code: str | None = None, counterparty_code: str | None = None) -> dict[str, Any]:
        """Put stock cards (a list, or a number range) into a pack for one store or counterparty."""
        if (store_code is None) == (counterparty_code is None):
            raise InvalidInput("a pack goes to exactly one recipient: store_code or counterparty_code")
        if (numbers is None) == (first_number is None or last_number is None):
            raise InvalidInput("give either numbers or first_number and last_number")
        store_id = cp_id = None
        if store_code:
            store_id = (await conn.execute(sa.select(stores.c.id).where(stores.c.code == store_code))).scalar()
            if store_id is None:
                raise NotFound(f"no store {store_code!r}")
        else:
            cp_id = (await conn.execute(sa.select(counterparties.c.id)
                                        .where(counterparties.c.code == counterparty_code))).scalar()
            if cp_id is None:
                raise NotFound(f"no counterparty {counterparty_code!r}")
        if numbers is not None:
            wanted = sorted(set(numbers))
            if not wanted or len(wanted) > MAX_PACK:
                raise InvalidInput(f"a pack holds 1 to {MAX_PACK} cards")
            where = cards.c.number.in_(wanted)
            expected = len(wanted)
        else:
            if len(first_number) != len(last_number) or first_number > last_number:
                raise InvalidInput("first_number and last_number must be of one length and in order")
            where = sa.and_(cards.c.number >= first_number, cards.c.number <= last_number,
                            sa.func.length(cards.c.number) == len(first_number))
            expected = None
        found = (await conn.execute(sa.select(cards.c.number, cards.c.state, cards.c.programme_id)
                                    .where(where).limit(MAX_PACK + 1))).all()
        if expected is not None and len(found) != expected:
            missing = sorted(set(wanted) - {r.number for r in found})[:10]
            raise InvalidInput(f"unknown cards: {', '.join(missing)}", code="unknown_card")
        if not found:
            raise InvalidInput("no cards in that range", code="no_cards")
        if len(found) > MAX_PACK:
            raise InvalidInput(f"a pack holds at most {MAX_PACK} cards")
        if len({r.programme_id for r in found}) != 1:
            raise InvalidInput("a pack holds cards of one programme", code="mixed_programmes")
        unavailable = [f"{r.number} ({r.state})" for r in found if r.state != CardState.GENERATED.value][:10]
        if unavailable:
            raise InvalidInput(f"cards not in stock: {', '.join(unavailable)}", code="not_in_stock")
        next_state(CardState.GENERATED, CardEvent.PACK)
        now = datetime.now(UTC)
        pack_id = (await conn.execute(sa.insert(packs).values(
            programme_id=found[0].programme_id, store_id=store_id, counterparty_id=cp_id, status="created",
            card_count=len(found), created_by=actor, created_at=now).returning(packs.c.id))).scalar_one()
        moved = await conn.execute(sa.update(cards).where(where, cards.c.state == CardState.GENERATED.value)
                                   .values(pack_id=pack_id, state=CardState.IN_PACK.value))
        if moved.rowcount != len(found):  # a concurrent pack took some: refuse the whole pack
            raise InvalidInput("cards changed while the pack was made; try again", code="conflict")
        return await self.pack(conn, pack_id)

    async def pack(self, conn: AsyncConnection, pack_id: int) -> dict[str, Any]:
        row = (await conn.execute(
            sa.select(packs, stores.c.code.label("store"), counterparties.c.code.label("counterparty"),
                      programmes.c.code.label("programme"))
            .join(programmes, programmes.c.id == packs.c.programme_id)
            .outerjoin(stores, stores.c.id == packs.c.store_id)
            .outerjoin(counterparties, counterparties.c.id == packs.c.counterparty_id)
            .where(packs.c.id == pack_id))).first()
        if row is None:
            raise NotFound(f"no pack {pack_id}")
        span = (await conn.execute(sa.select(sa.func.min(cards.c.number), sa.func.max(cards.c.number))
                                   .where(cards.c.pack_id == pack_id))).one()
        return {"id": row.id, "programme": row.programme, "store": row.store, "counterparty": row.counterparty,
                "status": row.status, "card_count": row.card_count, "first_number": span[0],
                "last_number": span[1], "created_by": row.created_by, "created_at": row.created_at.isoformat(),
                "authorized_at": row.authorized_at.isoformat() if row.authorized_at else None,
                "activated_at": row.activated_at.isoformat() if row.activated_at else None}

    async def authorize_pack(self, conn: AsyncConnection, pack_id: int) -> dict[str, Any]:
        """Release a delivered pack: its cards may now be sold at its store's tills."""
        res = await conn.execute(sa.update(packs).where(packs.c.id == pack_id, packs.c.status == "created")
                                 .values(status="authorized", authorized_at=datetime.now(UTC)))
        if res.rowcount == 0:
            current = await self.pack(conn, pack_id)
            raise IllegalTransition(f"pack {pack_id} is {current['status']}, not created")
        await watch_pack(conn, pack_id)  # the store follows these cards so it can sell them offline
        return await self.pack(conn, pack_id)

    async def activate_pack(self, pack_id: int, amount: int | None, op_id: uuid.UUID,
                            origin: Origin) -> dict[str, Any]:
        """Activate every stock card of a pack with one value (e.g. a corporate order)."""

        async def run(conn, _op, now):
            pack = (await conn.execute(sa.select(packs).where(packs.c.id == pack_id).with_for_update())).first()
            if pack is None:
                raise NotFound(f"no pack {pack_id}")
            if pack.status not in ("created", "authorized"):
                raise IllegalTransition(f"pack {pack_id} is {pack.status}")
            ids = (await conn.execute(sa.select(cards.c.id).where(
                cards.c.pack_id == pack_id, cards.c.state == CardState.IN_PACK.value)
                .order_by(cards.c.id))).scalars().all()
            out = Outcome(True, None, 0, currency=(await self.ledger.programmes.get(conn, pack.programme_id)).currency)
            for cid in ids:
                card = await self.ledger.lock_card(conn, card_id=cid)
                # The pack itself is being sold, so its cards count as released for sale.
                decision = decide_sale(replace(card.view(), pack_sellable=True), amount, None)
                if not decision.approved:
                    return card_declined(card, decision.code or DeclineCode.AMOUNT_OUT_OF_RANGE, decision.message)
                await self.ledger.ensure_account(conn, card)
                await self.ledger.move_card(conn, card, CardEvent.ACTIVATE, activated_at=now,
                                            expires_on=expiry_date(now.date(), card.programme.validity_months))
                out.entries.append(self.ledger.entry(card, EntryKind.ACTIVATION, decision.amount))
                out.amount += decision.amount
            if not ids:
                raise InvalidInput(f"pack {pack_id} has no cards left to activate", code="no_cards")
            await conn.execute(sa.update(packs).where(packs.c.id == pack_id)
                               .values(status="activated", activated_at=now))
            out.extra.update(pack_id=pack_id, activated=len(ids), currency=out.currency)
            return out

        result, _ = await self.ledger.execute(op_id=op_id, kind=OperationKind.PACK_ACTIVATION,
                                              payload={"pack": pack_id, "amount": amount}, origin=origin,
                                              handler=run)
        return result

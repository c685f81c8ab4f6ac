"""Bulk loads from CSV (e.g. employee-welfare transfers): one idempotent credit per line."""

from __future__ import annotations

import csv
import io
import logging
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from core import DeclineCode, DomainError, EntryKind, OperationKind, decide_credit, validate_currency

from ..db.tables import bulk_loads
from .admin import audit
from .ledger import Ledger, Origin, Outcome

__all__ = ["BulkLoadService", "REQUIRED_COLUMNS"]

log = logging.getLogger("tessera.bulk")
REQUIRED_COLUMNS = ("reference", "card_number", "amount")
BULK_NAMESPACE = uuid.UUID("0d1f2b9a-55c4-4d6e-8a0e-7b1c9e3f4a21")
MAX_LINES = 200_000


class BulkLoadService:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def load(self, text: str, filename: str, actor: str,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Credit each line's card. A line is identified by its ``reference``: loading the same file
        again credits nothing twice. Each line stands alone; the result file says what became of it."""
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DomainError(f"CSV lacks column(s): {', '.join(missing)}", code="invalid_csv")
        lines = list(reader)
        if not lines or len(lines) > MAX_LINES:
            raise DomainError(f"a bulk load has 1 to {MAX_LINES} lines", code="invalid_csv")
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["line", "reference", "card_number", "amount", "status", "code", "message", "balance"])
        counts = {"credited": 0, "duplicate": 0, "failed": 0}
        for no, line in enumerate(lines, start=2):  # line 1 is the header
            status, code, message, balance = await self._line(line, actor)
            counts[status] += 1
            writer.writerow([no, line.get("reference", ""), line.get("card_number", ""), line.get("amount", ""),
                             status, code, message, balance])
            if progress and ((no - 1) % 1000 == 0 or no - 1 == len(lines)):
                progress(no - 1, len(lines))
        summary = {"filename": filename, "lines": len(lines), **counts}
        async with self.ledger.db.begin() as conn:
            load_id = (await conn.execute(sa.insert(bulk_loads).values(
                filename=filename, uploaded_by=actor, lines=len(lines), credited=counts["credited"],
                duplicates=counts["duplicate"], failed=counts["failed"], result_csv=out.getvalue())
                .returning(bulk_loads.c.id))).scalar_one()
            await audit(conn, actor, "bulk_load", f"bulk_load:{load_id}", summary)
        log.info("bulk load id=%s lines=%s credited=%s duplicate=%s failed=%s", load_id, len(lines),
                 counts["credited"], counts["duplicate"], counts["failed"])
        return {"id": load_id, **summary, "result_csv": out.getvalue()}

    async def _line(self, line: dict[str, str], actor: str) -> tuple[str, str, str, Any]:
        reference = (line.get("reference") or "").strip()
        number = (line.get("card_number") or "").strip()
        raw_amount = (line.get("amount") or "").strip()
        currency = (line.get("currency") or "").strip() or None
        if not reference or not number:
            return "failed", "invalid_line", "reference and card_number are required", ""
        if not raw_amount.isdigit() or int(raw_amount) <= 0:
            return "failed", "invalid_amount", "amount is a positive whole number of minor units", ""
        if currency is not None:
            try:
                validate_currency(currency)
            except ValueError as exc:
                return "failed", "invalid_currency", str(exc), ""
        amount = int(raw_amount)

        async def run(conn, _op, now):
            # A refused line is not recorded, so a corrected file can load it under the same reference.
            card = await self.ledger.lock_card(conn, number=number)
            if card is None:
                raise DomainError("no such card", code=DeclineCode.UNKNOWN_CARD.value)
            if currency and currency != card.programme.currency:
                raise DomainError(f"card is in {card.programme.currency}", code=DeclineCode.CURRENCY_MISMATCH.value)
            decision = decide_credit(card.view(), amount, now.date())
            if not decision.approved:
                raise DomainError(decision.message, code=decision.code.value)
            result = Outcome(True, card, amount)
            result.entries.append(self.ledger.entry(card, EntryKind.LOAD, amount))
            return result

        try:
            result, replayed = await self.ledger.execute(
                op_id=uuid.uuid5(BULK_NAMESPACE, reference), kind=OperationKind.LOAD,
                payload={"card": number, "amount": amount, "currency": currency},
                origin=Origin("bulk", actor=actor), handler=run)
        except DomainError as exc:
            return "failed", exc.code, exc.message, ""
        if replayed:
            return "duplicate", "already_loaded", "this reference was loaded before", result.get("balance", "")
        return "credited", "", "", result["balance"]

    async def result_file(self, load_id: int) -> str | None:
        async with self.ledger.db.connect() as conn:
            return (await conn.execute(sa.select(bulk_loads.c.result_csv).where(bulk_loads.c.id == load_id))).scalar()

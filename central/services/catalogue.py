"""The product catalogue at central: CSV imports (all or nothing, or the valid lines), lookups, and
the changes stores pull.

An import is one transaction. It locks the catalogue version counter, so imports take versions one
after the other and commit in version order: a store reading changes after its version never skips
one that commits later. Every changed product takes the next version (unique per row), so a pull pages
by version alone; unchanged products keep theirs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from core import DomainError, InvalidInput
from core.barcodes import product_key
from core.catalogue import CatalogueParse, parse_catalogue_csv
from sync.messages import ProductChange

from ..db import Database
from ..db.tables import catalogue_state, products
from .admin import NotFound, audit
from .ledger import insert_rows_sql, json_document

__all__ = ["CatalogueService", "CatalogueRejected", "MODES", "catalogue_changes", "product_dict"]

log = logging.getLogger("tessera.catalogue")
MODES = ("upsert", "replace")
_FIELDS = ("code", "name", "currency", "price", "member_price", "unit", "item_group", "active")
_TYPES = {"key": "varchar", "code": "varchar", "name": "varchar", "currency": "varchar", "price": "bigint",
          "member_price": "bigint", "unit": "varchar", "item_group": "varchar", "active": "boolean",
          "version": "bigint", "updated_at": "timestamptz"}
_PG_UPSERT = sa.text(insert_rows_sql(products, "rows", _TYPES) + " ON CONFLICT (key) DO UPDATE SET "
                     + ", ".join(f"{c} = EXCLUDED.{c}" for c in _TYPES if c != "key"))
_sqlite_insert = sqlite.insert(products)
_SQLITE_UPSERT = _sqlite_insert.on_conflict_do_update(
    index_elements=[products.c.key], set_={c: _sqlite_insert.excluded[c] for c in _TYPES if c != "key"})
# PostgreSQL joins the keys as a table: a fresh table has no statistics, and ``key = ANY(5000 keys)``
# was then planned as a scan comparing every row with every key.
_KEYS = sa.func.unnest(sa.bindparam("keys", type_=postgresql.ARRAY(sa.String))).table_valued("key").render_derived()
_COMPARED = sa.select(products.c.key, *(products.c[c] for c in _FIELDS))
_EXISTING = {"postgresql": _COMPARED.join(_KEYS, products.c.key == _KEYS.c.key),
             "sqlite": _COMPARED.where(products.c.key.in_(sa.bindparam("keys", expanding=True)))}
_STATE = {name: dialect.insert(catalogue_state).values(id=1, version=0).on_conflict_do_nothing()
          for name, dialect in (("sqlite", sqlite), ("postgresql", postgresql))}
_CHUNK = 5000  # keys per lookup, rows per write


class CatalogueRejected(DomainError):
    """A catalogue file with lines that may not be imported; ``lines`` says which and why."""

    code = "invalid_catalogue"

    def __init__(self, message: str, lines: Sequence[dict[str, Any]]) -> None:
        super().__init__(message)
        self.lines = list(lines)


def product_dict(row: Any) -> dict[str, Any]:
    """A product row as the admin API shows it (prices in minor units)."""
    return {"key": row.key, "code": row.code, "name": row.name, "currency": row.currency, "price": row.price,
            "member_price": row.member_price, "unit": row.unit, "group": row.item_group, "active": row.active,
            "version": row.version, "updated_at": row.updated_at.isoformat()}


async def catalogue_changes(conn: AsyncConnection, after: int, limit: int) -> tuple[list[ProductChange], int, bool]:
    """Product changes after version ``after`` in version order, at most ``limit``: the changes, the
    version they bring a store to, and whether more are waiting."""
    rows = (await conn.execute(sa.select(products).where(products.c.version > after)
                               .order_by(products.c.version).limit(limit))).all()
    changes = [ProductChange(key=r.key, code=r.code, name=r.name, currency=r.currency, price=r.price,
                             member_price=r.member_price, unit=r.unit, group=r.item_group, active=r.active,
                             version=r.version) for r in rows]
    return changes, rows[-1].version if rows else after, len(rows) == limit


class CatalogueService:
    def __init__(self, db: Database, *, progress_every: int = 10_000) -> None:
        self.db = db
        self.progress_every = progress_every

    # -- import ------------------------------------------------------------------------------------

    async def import_csv(self, text: str, *, actor: str, mode: str = "upsert", partial: bool = False,
                         default_currency: str | None = None, source: str = "upload.csv", remote: str | None = None,
                         progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Import a catalogue file. ``upsert`` adds and updates the file's products; ``replace`` also
        deactivates those the file does not name. Any bad line refuses the whole file
        (:class:`CatalogueRejected`, nothing written) unless ``partial``, which imports the valid lines
        and reports the others. Audited either way."""
        if mode not in MODES:
            raise InvalidInput(f"mode is one of {', '.join(MODES)}")
        try:
            # Reading 100k lines takes a second of CPU: off the event loop.
            parsed = await asyncio.to_thread(parse_catalogue_csv, text, default_currency)
        except ValueError as exc:  # the default currency
            raise InvalidInput(str(exc)) from None
        lines = [e.as_dict() for e in parsed.errors]
        refusal = self._refusal(parsed, mode, partial)
        if refusal is not None:
            async with self.db.begin() as conn:
                await audit(conn, actor, "catalogue_import", f"catalogue:{source}", {
                    "outcome": CatalogueRejected.code, "mode": mode, "partial": partial, "rows": parsed.rows,
                    "invalid_lines": len({e.line for e in parsed.errors})}, remote)
            log.info("catalogue import refused source=%s rows=%d errors=%d", source, parsed.rows, len(lines))
            raise CatalogueRejected(refusal, lines)
        async with self.db.begin() as conn:
            counts = await self._write(conn, parsed, mode, progress)
            summary = {"mode": mode, "partial": partial, "rows": parsed.rows, "valid": len(parsed.products),
                       "invalid_lines": len({e.line for e in parsed.errors}), **counts}
            await audit(conn, actor, "catalogue_import", f"catalogue:{source}", {"outcome": "ok", **summary}, remote)
        log.info("catalogue import source=%s mode=%s rows=%d inserted=%d updated=%d unchanged=%d deactivated=%d "
                 "invalid_lines=%d version=%d", source, mode, parsed.rows, counts["inserted"], counts["updated"],
                 counts["unchanged"], counts["deactivated"], summary["invalid_lines"], counts["version"])
        return {**summary, "lines": lines}

    @staticmethod
    def _refusal(parsed: CatalogueParse, mode: str, partial: bool) -> str | None:
        """Why nothing of the file may be imported, if so."""
        if parsed.fatal:
            return "the file is not a readable catalogue: " + parsed.errors[0].message
        if parsed.errors and not partial:
            bad = len({e.line for e in parsed.errors})
            return f"{bad} line{'s' if bad != 1 else ''} of {parsed.rows} invalid: nothing imported"
        if mode == "replace" and not parsed.products:
            return "a replacing import needs at least one valid product (it would withdraw every product)"
        return None

    async def _write(self, conn: AsyncConnection, parsed: CatalogueParse, mode: str,
                     progress: Callable[[int, int], None] | None) -> dict[str, int]:
        now = datetime.now(UTC)
        version = await self._lock(conn)
        dialect = conn.dialect.name
        # What each product is now, as a tuple of _FIELDS, to compare with what the file says.
        existing: dict[str, tuple[Any, ...]] = {}
        if mode == "replace":  # every product: those the file leaves out are withdrawn
            existing.update((r[0], tuple(r[1:])) for r in await conn.execute(_COMPARED))
        else:
            keys = [p.key for p in parsed.products]
            for i in range(0, len(keys), _CHUNK):
                found = await conn.execute(_EXISTING[dialect], {"keys": keys[i:i + _CHUNK]})
                existing.update((r[0], tuple(r[1:])) for r in found)
        rows: list[dict[str, Any]] = []
        inserted = updated = deactivated = 0
        for p in parsed.products:
            old = existing.get(p.key)
            values = (p.code, p.name, p.currency, p.price, p.member_price, p.unit, p.group, p.active)
            if old == values:
                continue
            version += 1
            rows.append({"key": p.key, **dict(zip(_FIELDS, values, strict=True)), "version": version,
                         "updated_at": now})
            inserted += old is None
            updated += old is not None
        if mode == "replace":
            named = {p.key for p in parsed.products} | parsed.rejected_keys  # a refused line withdraws nothing
            active = _FIELDS.index("active")
            for key, old in existing.items():
                if old[active] and key not in named:
                    version += 1
                    rows.append({"key": key, **dict(zip(_FIELDS, old, strict=True)), "active": False,
                                 "version": version, "updated_at": now})
                    deactivated += 1
        for i in range(0, len(rows), _CHUNK):
            chunk = rows[i:i + _CHUNK]
            if dialect == "postgresql":  # one statement per chunk, the rows as one JSON document
                await conn.execute(_PG_UPSERT, {"rows": json_document(chunk)})
            else:
                await conn.execute(_SQLITE_UPSERT, chunk)
            done = i + len(chunk)
            if done // self.progress_every > i // self.progress_every or done == len(rows):
                log.info("catalogue import progress written=%d of=%d", done, len(rows))
                if progress:
                    progress(done, len(rows))
        await conn.execute(sa.update(catalogue_state).where(catalogue_state.c.id == 1).values(version=version))
        return {"inserted": inserted, "updated": updated, "unchanged": len(parsed.products) - inserted - updated,
                "deactivated": deactivated, "version": version}

    @staticmethod
    async def _lock(conn: AsyncConnection) -> int:
        """Lock the version counter for this transaction; the last version given out."""
        await conn.execute(_STATE[conn.dialect.name])
        state = (await conn.execute(sa.select(catalogue_state.c.version).where(catalogue_state.c.id == 1)
                                    .with_for_update())).scalar_one()
        # Never below a version in use, whatever happened to the counter row.
        used = (await conn.execute(sa.select(sa.func.coalesce(sa.func.max(products.c.version), 0)))).scalar_one()
        return max(state, used)

    # -- reading -----------------------------------------------------------------------------------

    @staticmethod
    async def version(conn: AsyncConnection) -> int:
        """The catalogue's current version (0: nothing imported yet)."""
        return (await conn.execute(sa.select(sa.func.coalesce(sa.func.max(products.c.version), 0)))).scalar_one()

    async def product(self, conn: AsyncConnection, code: str) -> dict[str, Any]:
        """The product of a code (any spelling of it: a UPC-A finds its EAN-13), active or not."""
        row = (await conn.execute(sa.select(products).where(products.c.key == product_key(code)))).first()
        if row is None:
            raise NotFound(f"no product {code!r}")
        return product_dict(row)

    async def products(self, conn: AsyncConnection, *, after: str = "", limit: int = 100) -> dict[str, Any]:
        """A page of products in key order after the key ``after``; ``next`` is the next page's ``after``."""
        rows = (await conn.execute(sa.select(products).where(products.c.key > after).order_by(products.c.key)
                                   .limit(limit))).all()
        return {"products": [product_dict(r) for r in rows], "next": rows[-1].key if len(rows) == limit else None,
                "version": await self.version(conn)}

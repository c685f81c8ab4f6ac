"""Card programmes: creation, listing, and an in-process cache of their (immutable) rules."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from core import HoldExpiryPolicy, InvalidInput, NumberTemplate, Programme, ProgrammeKind, ValueRules

from ..db.tables import programmes
from .admin import bump_config

__all__ = ["ProgrammeCache", "programme_from_row", "create_programme", "list_programmes", "programme_dict"]


def programme_from_row(row: Any) -> Programme:
    return Programme(
        id=row.id, code=row.code, name=row.name, kind=ProgrammeKind(row.kind), currency=row.currency,
        template=NumberTemplate(row.number_prefix, row.number_length, row.luhn),
        values=ValueRules(tuple(row.nominal_values), row.min_amount, row.max_amount, row.topup_allowed,
                          row.max_balance),
        validity_months=row.validity_months, hold_ttl_seconds=row.hold_ttl_seconds,
        hold_expiry_policy=HoldExpiryPolicy(row.hold_expiry_policy), service_code=row.service_code,
        pin_required=row.pin_required,
    )


def programme_dict(p: Programme) -> dict[str, Any]:
    return {
        "id": p.id, "code": p.code, "name": p.name, "kind": p.kind.value, "currency": p.currency,
        "number_prefix": p.template.prefix, "number_length": p.template.length, "luhn": p.template.luhn,
        "nominal_values": list(p.values.nominal_values), "min_amount": p.values.min_amount,
        "max_amount": p.values.max_amount, "topup_allowed": p.values.topup_allowed,
        "max_balance": p.values.max_balance, "validity_months": p.validity_months,
        "hold_ttl_seconds": p.hold_ttl_seconds, "hold_expiry_policy": p.hold_expiry_policy.value,
        "service_code": p.service_code, "pin_required": p.pin_required, "capacity": p.template.capacity,
    }


class ProgrammeCache:
    """Programme rules are immutable once created, so each process reads each one once."""

    def __init__(self) -> None:
        self._by_id: dict[int, Programme] = {}

    async def get(self, conn: AsyncConnection, programme_id: int) -> Programme:
        found = self._by_id.get(programme_id)
        if found is None:
            row = (await conn.execute(sa.select(programmes).where(programmes.c.id == programme_id))).one()
            found = self._by_id[programme_id] = programme_from_row(row)
        return found


async def create_programme(conn: AsyncConnection, spec: dict[str, Any]) -> Programme:
    """Validate a programme through the domain types, then store it; the code must be new."""
    draft = Programme(
        id=0, code=spec["code"], name=spec["name"], kind=ProgrammeKind(spec.get("kind", "gift")),
        currency=spec["currency"],
        template=NumberTemplate(spec["number_prefix"], spec["number_length"], spec.get("luhn", True)),
        values=ValueRules(tuple(spec.get("nominal_values") or ()), spec.get("min_amount", 1),
                          spec.get("max_amount", 50_000_00), spec.get("topup_allowed", False),
                          spec.get("max_balance")),
        validity_months=spec.get("validity_months", 36), hold_ttl_seconds=spec.get("hold_ttl_seconds", 900),
        hold_expiry_policy=HoldExpiryPolicy(spec.get("hold_expiry_policy", "reverse")),
        service_code=spec.get("service_code", "120"), pin_required=spec.get("pin_required", False),
    )
    await _refuse_overlap(conn, draft.template)
    values = programme_dict(draft)
    for k in ("id", "capacity"):
        values.pop(k)
    try:
        new_id = (await conn.execute(
            sa.insert(programmes).values(**values, next_serial=0).returning(programmes.c.id))).scalar_one()
    except IntegrityError:
        raise InvalidInput(f"programme {draft.code!r} exists already", code="duplicate") from None
    await bump_config(conn)  # every store's edge learns of the new programme on its next pull
    return programme_from_row((await conn.execute(sa.select(programmes).where(programmes.c.id == new_id))).one())


async def _refuse_overlap(conn: AsyncConnection, template: NumberTemplate) -> None:
    """Two programmes whose number spaces overlap could make one number twice."""
    rows = await conn.execute(sa.select(programmes.c.code, programmes.c.number_prefix, programmes.c.number_length))
    for code, prefix, length in rows:
        if length == template.length and (prefix.startswith(template.prefix) or template.prefix.startswith(prefix)):
            raise InvalidInput(f"numbers would overlap programme {code!r}", code="number_space_overlap")


async def list_programmes(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = await conn.execute(sa.select(programmes).order_by(programmes.c.id))
    return [{**programme_dict(programme_from_row(r)), "offline_limits": {
        "floor_limit": r.floor_limit, "card_offline_amount": r.card_offline_amount,
        "card_offline_count": r.card_offline_count}} for r in rows]

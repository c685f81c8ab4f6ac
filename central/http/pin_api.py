"""Staff set or reset a card's PIN. Audited here rather than by the route, whose audit keeps the body."""

from __future__ import annotations

from core import DomainError

from ..services import audit
from ..services.pins import set_card_pin
from . import schemas as s
from .admin import OPERATE
from .routing import Call, route


@route("PUT", "/api/v1/admin/cards/{number:\\d{8,19}}/pin",
       summary="Set or reset a card's PIN; clears its count of wrong PINs", tag="cards", auth="staff",
       roles=OPERATE, body=s.PinBody, audit_action=False, responses={404: "no such card"})
async def card_pin_set(call: Call):
    path = call.request.path
    try:
        return await set_card_pin(call.central.db, call.request.match_info["number"], call.body.pin,
                                  actor=call.staff.username, path=path, remote=call.remote)
    except DomainError as exc:
        async with call.central.db.begin() as conn:
            await audit(conn, call.staff.username, "card_pin_set", path,
                        {"outcome": exc.code, "method": "PUT", "path": path}, call.remote)
        raise

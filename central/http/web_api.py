"""The web service for websites: card number + eCode."""

from __future__ import annotations

from aiohttp import web

from core import OperationKind

from ..services import Origin, TillRequest
from . import schemas as s
from .routing import Call, route

_ECODE = {403: "card number or eCode wrong", 423: "too many wrong eCodes: locked for a while"}


@route("POST", "/api/v1/web/balance", summary="Balance of a card (number + eCode)", tag="web", auth="web",
       body=s.WebCardBody, responses=_ECODE)
async def web_balance(call: Call):
    return await call.central.web.balance(call.body.card_number, call.body.ecode)


@route("POST", "/api/v1/web/history", summary="Balance and history of a card (number + eCode)", tag="web",
       auth="web", body=s.WebCardBody, responses=_ECODE)
async def web_history(call: Call):
    return await call.central.web.history(call.body.card_number, call.body.ecode)


@route("POST", "/api/v1/web/payment", summary="Pay with a card on a website (number + eCode)", tag="web",
       auth="web", body=s.WebPaymentBody, responses=_ECODE)
async def web_payment(call: Call):
    b = call.body
    req = TillRequest(kind=OperationKind.PAYMENT, txn_id=b.txn_id, card_number=b.card_number, amount=b.amount,
                      currency=b.currency)
    result, replayed = await call.central.web.pay(req, b.ecode, Origin("web", None, call.terminal.id))
    return web.json_response(result, headers={"Idempotent-Replay": "true"} if replayed else None)

"""The till API: online authorization of every gift-card operation, idempotent by txn_id."""

from __future__ import annotations

from aiohttp import web

from core import OperationKind

from ..services import Origin, TillRequest
from . import schemas as s
from .routing import Call, route

K = OperationKind
_DESCRIBED = {200: "the decision: approved, or declined with a stable decline_code",
              409: "txn_id reused for a different request"}


def _till_route(path: str, kind: OperationKind, body, summary: str):
    async def handler(call: Call) -> web.Response:
        b = call.body
        req = TillRequest(kind=kind, txn_id=b.txn_id, card_number=getattr(b, "card_number", None),
                          amount=getattr(b, "amount", None), currency=getattr(b, "currency", None),
                          original_txn_id=getattr(b, "original_txn_id", None),
                          allow_partial=getattr(b, "allow_partial", False), device_time=b.device_time,
                          pin_block=bytes.fromhex(b.pin_block) if getattr(b, "pin_block", None) else None)
        t = call.terminal
        result, replayed = await call.central.group.execute(req, Origin("till", t.store_id, t.id))
        return web.json_response(result, headers={"Idempotent-Replay": "true"} if replayed else None)

    handler.__name__ = f"till_{kind.value}"
    route("POST", f"/api/v1/till/{path}", summary=summary, tag="till", auth="till", body=body,
          responses=_DESCRIBED)(handler)


_till_route("sale", K.SALE, s.SaleBody, "Sell (activate) a card with a nominal or open value")
_till_route("sale/cancel", K.SALE_CANCEL, s.CancelBody, "Cancel a sale of an unused card")
_till_route("payment", K.PAYMENT, s.PaymentBody, "Pay with a card (partial payments allowed)")
_till_route("payment/cancel", K.PAYMENT_CANCEL, s.CancelBody, "Cancel a payment (credits it back)")
_till_route("topup", K.TOPUP, s.TopupBody, "Load more value onto a card")
_till_route("topup/cancel", K.TOPUP_CANCEL, s.CancelBody, "Cancel a top-up")
_till_route("refund", K.REFUND, s.RefundBody, "Refund onto the card paid with or onto a new card")
_till_route("refund/cancel", K.REFUND_CANCEL, s.CancelBody, "Cancel a refund")
_till_route("authorize", K.AUTHORIZE, s.PaymentBody, "Authorize (hold) an amount for a later confirm")
_till_route("confirm", K.CONFIRM, s.ConfirmBody, "Confirm (capture) an authorization")
_till_route("void", K.VOID, s.VoidBody, "Void an authorization (releases the hold)")


@route("POST", "/api/v1/till/balance", summary="Balance inquiry", tag="till", auth="till", body=s.BalanceBody)
async def till_balance(call: Call):
    return await call.central.till.balance(call.body.card_number)

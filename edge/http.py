"""The edge's till API: the same paths and bodies as central's, plus card issue from the store's blocks."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from pydantic import BaseModel, Field

from central.http import schemas as s
from central.http.routing import error_middleware_for
from core import IdempotencyConflict, OperationKind

from . import local
from .db.tables import outbox
from .keys import CONFIG, DATABASE, NODE
from .node import AuthError, TillOp

__all__ = ["IssueBody", "add_routes", "error_middleware", "build_openapi"]

log = logging.getLogger("tessera.edge.http")
K = OperationKind
VERSION = "0.1.0"


class IssueBody(s.TillBase):
    programme: s.Code
    amount: s.Amount | None = Field(None, description="value loaded; default: the programme's single nominal value")


# path -> (operation, body model, summary)
TILL_ROUTES: dict[str, tuple[OperationKind, type[BaseModel], str]] = {
    "sale": (K.SALE, s.SaleBody, "Sell (activate) a card with a nominal or open value"),
    "sale/cancel": (K.SALE_CANCEL, s.CancelBody, "Cancel a sale of an unused card"),
    "payment": (K.PAYMENT, s.PaymentBody, "Pay with a card (partial payments allowed)"),
    "payment/cancel": (K.PAYMENT_CANCEL, s.CancelBody, "Cancel a payment (credits it back)"),
    "topup": (K.TOPUP, s.TopupBody, "Load more value onto a card"),
    "topup/cancel": (K.TOPUP_CANCEL, s.CancelBody, "Cancel a top-up"),
    "refund": (K.REFUND, s.RefundBody, "Refund onto the card paid with or onto a new card"),
    "refund/cancel": (K.REFUND_CANCEL, s.CancelBody, "Cancel a refund"),
    "authorize": (K.AUTHORIZE, s.PaymentBody, "Authorize (hold) an amount for a later confirm"),
    "confirm": (K.CONFIRM, s.ConfirmBody, "Confirm (capture) an authorization"),
    "void": (K.VOID, s.VoidBody, "Void an authorization (releases the hold)"),
    "issue": (K.STORE_ISSUE, IssueBody, "Issue a new card from the store's number block (always recorded locally)"),
}


# The edge's failures leave as central's do; only its own errors are mapped.
error_middleware = error_middleware_for({AuthError: 401, IdempotencyConflict: 409})


def _till_handler(path: str, kind: OperationKind, model: type[BaseModel]):
    async def handle(request: web.Request) -> web.Response:
        node = request.app[NODE]
        authorization = request.headers.get("Authorization", "")
        till = await node.till_for(authorization)
        raw = await request.read()
        body = model.model_validate_json(raw or b"null")
        op = TillOp(kind, request.path, body, raw, authorization, till)
        status, result, replayed = await node.execute(op)
        return web.json_response(result, status=status, headers={"Idempotent-Replay": "true"} if replayed else None)

    handle.__name__ = f"till_{kind.value}"
    return handle


async def till_balance(request: web.Request) -> web.Response:
    node = request.app[NODE]
    authorization = request.headers.get("Authorization", "")
    await node.till_for(authorization)
    raw = await request.read()
    body = s.BalanceBody.model_validate_json(raw or b"null")
    status, result = await node.balance(body, raw, authorization)
    return web.json_response(result, status=status)


async def health(request: web.Request) -> web.Response:
    """Database, central's reachability, the sync position and the offline exposure."""
    node = request.app[NODE]
    async with request.app[DATABASE].begin() as conn:
        state = await local.sync_position(conn)
        backlog = (await conn.execute(sa.select(sa.func.count()).select_from(outbox))).scalar_one()
        exposure = await local.exposure(conn)
    return web.json_response({
        "status": "ok", "database": "ok", "version": VERSION, "store": request.app[CONFIG].store,
        "central": "down" if node.central_down else "reachable",
        "last_push_at": state.last_push_at.isoformat() if state.last_push_at else None,
        "last_pull_at": state.last_pull_at.isoformat() if state.last_pull_at else None,
        "last_error": state.last_error, "backlog": backlog, "acked_seq": state.acked_seq,
        "next_seq": state.next_seq, "epoch": state.epoch, "offline_exposure": exposure,
        "quarantined": state.quarantined, "clock_offset": round(node.clock_offset, 3)})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_openapi())


def build_openapi() -> dict[str, Any]:
    """The edge API's OpenAPI 3.1 document, from the same models that validate requests."""
    error = {"$ref": "#/components/schemas/Error"}
    components: dict[str, Any] = {"Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"],
                                 "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}}
    paths: dict[str, Any] = {}
    routes = [(p, kind.value, model, summary) for p, (kind, model, summary) in TILL_ROUTES.items()]
    routes.append(("balance", "balance", s.BalanceBody, "Balance inquiry"))
    for path, name, model, summary in routes:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
        paths[f"/api/v1/till/{path}"] = {"post": {
            "operationId": f"till_{name}", "summary": summary, "tags": ["till"], "security": [{"till": []}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}},
            "responses": {
                "200": {"description": "the decision, with \"decision\": \"online\" or \"offline\""},
                **{str(code): {"description": text, "content": {"application/json": {"schema": error}}}
                   for code, text in ((400, "malformed request"), (401, "missing or unknown till token"),
                                      (409, "txn_id reused for a different request"), (422, "invalid input"))}}}}
    for path, summary in (("/health", "Database, central, sync position and offline exposure"),
                          ("/openapi.json", "This API's OpenAPI 3.1 document")):
        paths[path] = {"get": {"summary": summary, "tags": ["system"], "responses": {"200": {"description": "ok"}}}}
    return {"openapi": "3.1.0",
            "info": {"title": "Tessera store edge node", "version": VERSION,
                     "description": "Till API of one store: online through central when it answers, offline "
                                    "within central's limits when it does not. Amounts in minor units."},
            "paths": paths,
            "components": {"schemas": components, "securitySchemes": {
                "till": {"type": "http", "scheme": "bearer", "description": "the till's token, as at central"}}}}


def add_routes(app: web.Application) -> None:
    for path, (kind, model, _) in TILL_ROUTES.items():
        app.router.add_post(f"/api/v1/till/{path}", _till_handler(path, kind, model), name=f"till_{kind.value}")
    app.router.add_post("/api/v1/till/balance", till_balance, name="till_balance")
    app.router.add_get("/health", health, name="health")
    app.router.add_get("/openapi.json", openapi, name="openapi")

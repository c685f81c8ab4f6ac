"""The edge's till API: the same paths and bodies as central's, plus card issue from the store's blocks."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

import sqlalchemy as sa
from aiohttp import web
from pydantic import BaseModel, Field

from central.http import customers_api as ca
from central.http import loyalty_api as la
from central.http import schemas as s
from central.http import vouchers_api as va
from central.http.routing import error_middleware_for
from core import IdempotencyConflict, InvalidInput, OperationKind
from drivers.transport import DeviceUnavailable

from . import local
from .db.tables import outbox
from .devices import DeviceBusy, PinCancelledError
from .keys import CONFIG, DATABASE, DEVICES, NODE
from .node import AuthError, TillOp
from .pricecheck import kiosk_lookup, kiosk_page

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
    "receipts": (K.RECEIPT, la.ReceiptBody, "Register a receipt on a loyalty card: it earns points (offline too)"),
    "receipts/return": (K.RECEIPT_RETURN, la.ReturnBody,
                        "Goods of a receipt brought back: their points are taken back (offline: by central later)"),
    "points/redeem": (K.POINTS_REDEEM, la.RedeemBody,
                      "Points become a discount on this receipt (offline within the programme's limits)"),
    "points/redeem/reverse": (K.POINTS_REDEEM_REVERSAL, la.ReverseBody, "Take a redemption back (online only)"),
    "rewards/redeem": (K.REWARD, la.RewardRedeemBody, "Spend points on a reward (online only)"),
    "points/convert": (K.POINTS_CONVERT, la.ConvertBody, "Convert between points and e-money (online only)"),
    "vouchers/redeem": (K.VOUCHER_REDEEM, va.RedeemBody, "Take an e-voucher off a basket (offline: only vouchers "
                                                         "central shipped as takeable offline, with the card)"),
    "vouchers/redeem/reverse": (K.VOUCHER_REDEEM_REVERSAL, va.ReverseBody, "Take a voucher use back (online only)"),
}

# Loyalty questions the POS asks: central's answer when it gives one, else the store's own.
INQUIRIES: dict[str, str] = {
    "points": "A loyalty card's points, tier and discount level",
    "segments": "Which segments a card is in (offline: as central last shipped them)",
    "discount-level": "A card's discount level (offline: as central last shipped it)",
    "tier": "A card's tier (offline: as central last shipped it)",
}


PadLine = Annotated[str, Field(max_length=20, pattern=r"^[\x20-\x7e]*$")]


class PadDisplayBody(s.Model):
    lines: Annotated[tuple[PadLine, ...], Field(max_length=2)] = ()
    amount: s.Amount | None = Field(None, description="show this amount instead of lines")
    currency: s.Currency | None = None


class PadCardBody(s.Model):
    prompt: PadLine = "SWIPE CARD"
    timeout: Annotated[float, Field(gt=0, le=300)] = 60.0


class PadPinBody(s.Model):
    card_number: s.CardNumber
    amount: s.Amount | None = Field(None, description="shown to the customer with the PIN prompt")
    currency: s.Currency | None = None


# The edge's failures leave as central's do; only its own errors are mapped.
error_middleware = error_middleware_for({AuthError: 401, IdempotencyConflict: 409, DeviceUnavailable: 503,
                                         DeviceBusy: 409, PinCancelledError: 409})

# Operations whose body may carry the one-time token of a PIN entered on the till's pad.
PIN_KINDS = {K.PAYMENT, K.AUTHORIZE, K.SALE}


def _with_pin_block(request: web.Request, raw: bytes) -> bytes:
    """The body with ``pin_token`` replaced by the PIN block it stands for (bodies without one unchanged)."""
    if b'"pin_token"' not in raw:
        return raw
    try:
        data = json.loads(raw)
    except ValueError:
        return raw  # validation reports it
    if not isinstance(data, dict) or not isinstance(data.get("pin_token"), str):
        return raw
    token = data.pop("pin_token")
    block = request.app[DEVICES].take_pin_block(token, str(data.get("card_number")), str(data.get("txn_id")))
    if block is not None:  # None: the same transaction again, answered from the journal
        data["pin_block"] = block.hex().upper()
    return json.dumps(data).encode()


def _till_handler(path: str, kind: OperationKind, model: type[BaseModel]):
    async def handle(request: web.Request) -> web.Response:
        node = request.app[NODE]
        authorization = request.headers.get("Authorization", "")
        till = await node.till_for(authorization)
        raw = await request.read()
        if kind in PIN_KINDS:
            raw = _with_pin_block(request, raw)
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


async def _ask_central(request: web.Request, what: str) -> tuple[bytes, tuple[int, Any] | None]:
    """The till's request (its token checked) and central's (status, JSON) for it, or None if central is down
    or did not answer in time."""
    node = request.app[NODE]
    authorization = request.headers.get("Authorization", "")
    await node.till_for(authorization)
    raw = await request.read()
    return raw, None if node.central_down else await node._forward(f"/api/v1/till/{what}", raw, authorization)


def _till_inquiry(what: str):
    async def handle(request: web.Request) -> web.Response:
        raw, answer = await _ask_central(request, what)
        body = la.CardBody.model_validate_json(raw or b"null")
        if answer is None:
            return web.json_response(await request.app[NODE].local_loyalty(body.card_number, what))
        status, data = answer
        if status == 200 and isinstance(data, dict):
            data.setdefault("decision", "online")
        return web.json_response(data, status=status)

    handle.__name__ = f"till_{what.replace('-', '_')}"
    return handle


# Till requests only central can answer (customer registration checks uniqueness chain-wide): forwarded as
# they are; while central is unreachable the till gets a 503 it can retry later.
ONLINE_ONLY: dict[str, str] = {
    "customers": "Register a customer at the till, optionally binding the card handed over (needs central)",
}


def _online_only(what: str):
    async def handle(request: web.Request) -> web.Response:
        _, answer = await _ask_central(request, what)
        if answer is None:
            return web.json_response({"error": {"code": "central_unreachable", "message": (
                "central does not answer: try again later")}}, status=503)
        status, data = answer
        return web.json_response(data, status=status)

    handle.__name__ = f"till_{what}"
    return handle


async def till_devices(request: web.Request) -> web.Response:
    """This till's devices and whether each is connected."""
    till = await request.app[NODE].till_for(request.headers.get("Authorization", ""))
    return web.json_response({"till": till, "devices": request.app[DEVICES].status(till)})


def _number(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise InvalidInput(f"{name} is a number from {low:g} to {high:g}")
    return value


async def till_events(request: web.Request) -> web.Response:
    """Events of this till's devices after ``after``, waiting up to ``wait`` seconds for one (long poll)."""
    till = await request.app[NODE].till_for(request.headers.get("Authorization", ""))
    after = int(_number(request, "after", 0, 0, 2**62))
    wait = _number(request, "wait", 0, 0, 60)
    events, last = await request.app[DEVICES].events(till, after, wait)
    return web.json_response({"events": events, "last": last})


async def pad_display(request: web.Request) -> web.Response:
    till = await request.app[NODE].till_for(request.headers.get("Authorization", ""))
    body = PadDisplayBody.model_validate_json(await request.read() or b"null")
    await request.app[DEVICES].display(till, body.lines, body.amount, body.currency)
    return web.json_response({"shown": True})


async def pad_card(request: web.Request) -> web.Response:
    till = await request.app[NODE].till_for(request.headers.get("Authorization", ""))
    body = PadCardBody.model_validate_json(await request.read() or b"{}")
    read = await request.app[DEVICES].read_card(till, body.prompt, body.timeout)
    return web.json_response({"card_number": read.number, "expiry": read.expiry, "source": read.source})


async def pad_pin(request: web.Request) -> web.Response:
    """Ask for the card's PIN on this till's pad; a one-time ``pin_token`` for the next payment."""
    till = await request.app[NODE].till_for(request.headers.get("Authorization", ""))
    body = PadPinBody.model_validate_json(await request.read() or b"null")
    token = await request.app[DEVICES].request_pin(till, body.card_number, body.amount, body.currency)
    return web.json_response({"pin_token": token, "expires_in": request.app[CONFIG].pin_token_ttl})


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
        "quarantined": state.quarantined, "clock_offset": round(node.clock_offset, 3),
        "devices": request.app[DEVICES].status()})


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
    routes += [(what, what.replace("-", "_"), la.CardBody, summary) for what, summary in INQUIRIES.items()]
    routes += [(what, what, ca.CardRegistrationBody, summary) for what, summary in ONLINE_ONLY.items()]
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
    errors = {str(code): {"description": text, "content": {"application/json": {"schema": error}}}
              for code, text in ((400, "malformed request"), (401, "missing or unknown till token"),
                                 (409, "the pad is busy, or the customer cancelled or did not answer"),
                                 (422, "invalid input"), (503, "the device is not connected"))}
    for path, model, summary in (
            ("/api/v1/till/pinpad/display", PadDisplayBody, "Show two lines, or an amount, on the till's PIN pad"),
            ("/api/v1/till/pinpad/card", PadCardBody, "Have the customer swipe or insert a card at the pad; "
                                                      "answers the card number"),
            ("/api/v1/till/pinpad/pin", PadPinBody, "Ask for the card's PIN at the pad; answers a one-time pin_token "
                                                    "to send with the payment, authorization or sale")):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
        paths[path] = {"post": {
            "operationId": path.rsplit("/", 2)[-2] + "_" + path.rsplit("/", 1)[-1], "summary": summary,
            "tags": ["devices"], "security": [{"till": []}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}},
            "responses": {"200": {"description": "done"}, **errors}}}
    paths["/api/v1/till/events"] = {"get": {
        "operationId": "till_events", "tags": ["devices"], "security": [{"till": []}],
        "summary": "Events of this till's devices (barcode, card_read, read_failed, key, device_available, "
                   "device_unavailable), long polling",
        "parameters": [
            {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0},
             "description": "the last sequence number the till has seen"},
            {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 60},
             "description": "seconds to wait for an event when there is none yet"}],
        "responses": {"200": {"description": "{\"events\": [...], \"last\": n}"}, **errors}}}
    paths["/api/v1/till/devices"] = {"get": {
        "operationId": "till_devices", "tags": ["devices"], "security": [{"till": []}],
        "summary": "This till's devices and whether each is connected",
        "responses": {"200": {"description": "the devices"}, **errors}}}
    paths["/api/v1/kiosk/lookup"] = {"get": {
        "operationId": "kiosk_lookup", "tags": ["kiosk"],
        "summary": "What a price checker shows for a scanned code: a card's balance or a product's prices",
        "parameters": [{"name": "code", "in": "query", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "the lines to show"},
                      "400": errors["400"], "429": {"description": "too many lookups from this client"}}}}
    for path, summary in (("/health", "Database, central, sync position, offline exposure and devices"),
                          ("/openapi.json", "This API's OpenAPI 3.1 document"),
                          ("/kiosk", "The customer price-check page (HTML)")):
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
    for what in INQUIRIES:
        app.router.add_post(f"/api/v1/till/{what}", _till_inquiry(what), name=f"till_{what.replace('-', '_')}")
    for what in ONLINE_ONLY:
        app.router.add_post(f"/api/v1/till/{what}", _online_only(what), name=f"till_{what}")
    app.router.add_get("/api/v1/till/devices", till_devices, name="till_devices")
    app.router.add_get("/api/v1/till/events", till_events, name="till_events")
    app.router.add_post("/api/v1/till/pinpad/display", pad_display, name="pad_display")
    app.router.add_post("/api/v1/till/pinpad/card", pad_card, name="pad_card")
    app.router.add_post("/api/v1/till/pinpad/pin", pad_pin, name="pad_pin")
    app.router.add_get("/api/v1/kiosk/lookup", kiosk_lookup, name="kiosk_lookup")
    app.router.add_get("/kiosk", kiosk_page, name="kiosk")
    app.router.add_get("/health", health, name="health")
    app.router.add_get("/openapi.json", openapi, name="openapi")

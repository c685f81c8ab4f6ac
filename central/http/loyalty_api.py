"""Loyalty over HTTP: receipts, returns, points and rewards at the till; schemes, plans, rewards, card
views, receipts added later, adjustments and the jobs for head office."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, Field

from core.loyalty import ReceiptLine
from sync.loyalty import RuleKind

from ..services import Origin
from ..services.loyalty import ReceiptInput, ReturnInput
from .admin import OPERATE, READ
from .routing import BadRequest, Call, route
from .schemas import Amount, CardNumber, Code, Currency, Model, Name, TillBase

_NUMBER = "{number:\\d{8,19}}"
_CODE = "{code:[A-Za-z0-9_.-]{1,32}}"
_DECIDED = {200: "the decision: approved, or declined with a stable decline_code",
            409: "txn_id reused for a different request"}
Points = Annotated[int, Field(strict=True, gt=0, le=10**15)]
ItemCode = Annotated[str, Field(min_length=1, max_length=64)]


class LineBody(Model):
    item: ItemCode
    quantity: Annotated[int, Field(strict=True, ge=1, le=10**12, description="thousandths of the sale unit")]
    value: Annotated[int, Field(strict=True, ge=0, le=10**12, description="minor units paid, net of discount")]
    item_group: ItemCode | None = None
    discount: Annotated[int, Field(strict=True, ge=0, le=10**12)] = 0
    promotional: bool = False


class ReceiptBody(TillBase):
    card_number: CardNumber
    at: AwareDatetime = Field(description="when the purchase happened, with the store's UTC offset")
    currency: Currency
    lines: Annotated[list[LineBody], Field(min_length=1, max_length=10_000)]


class ReturnLineBody(Model):
    line: Annotated[int, Field(strict=True, ge=0, description="index of the line on the original receipt")]
    quantity: Annotated[int, Field(strict=True, ge=1, le=10**12)]


class ReturnBody(TillBase):
    card_number: CardNumber
    original_txn_id: uuid.UUID = Field(description="the receipt's txn_id")
    lines: Annotated[list[ReturnLineBody], Field(min_length=1, max_length=10_000)] | None = Field(
        None, description="what comes back; omitted: everything not returned yet")


class CardBody(Model):
    card_number: CardNumber


class RedeemBody(TillBase):
    card_number: CardNumber
    receipt_total: Amount
    currency: Currency
    points: Points | None = Field(None, description="at most this many points (default: as many as allowed)")


class ReverseBody(TillBase):
    original_txn_id: uuid.UUID


class RewardRedeemBody(TillBase):
    card_number: CardNumber
    reward: Code


class ConvertBody(TillBase):
    card_number: CardNumber
    direction: Literal["to_emoney", "to_points"]
    amount: Annotated[int, Field(strict=True, gt=0, le=10**12,
                                 description="to_emoney: points to cash in; to_points: minor units to spend")]


class PoolBody(Model):
    request_id: uuid.UUID
    master_card_number: CardNumber = Field(description="the card whose e-money this card will spend and load")


class PoolLeaveBody(Model):
    request_id: uuid.UUID


class AddReceiptBody(Model):
    request_id: uuid.UUID = Field(description="client-generated id; a repeat returns the first result")
    store_code: Code
    at: AwareDatetime
    currency: Currency
    lines: Annotated[list[LineBody], Field(min_length=1, max_length=10_000)]


class AdjustBody(Model):
    request_id: uuid.UUID
    points: Annotated[int, Field(strict=True, ge=-10**15, le=10**15, description="positive credits, negative debits")]
    reason: Annotated[str, Field(min_length=1, max_length=200)]


class RetireBody(Model):
    at: AwareDatetime | None = Field(None, description="from when (default now; never in the past)")


class RewardBody(Model):
    name: Name
    points: Points
    active: bool = True
    stock: Annotated[int, Field(strict=True, ge=0)] | None = None


class StoreGroupsBody(Model):
    groups: Annotated[list[Code], Field(max_length=100)]


class BirthdayQuery(Model):
    on: date | None = Field(None, description="the day (default today, UTC)")


def _lines(lines: list[LineBody]) -> tuple[ReceiptLine, ...]:
    return tuple(ReceiptLine(**line.model_dump()) for line in lines)


def _till_origin(call: Call) -> Origin:
    t = call.terminal
    return Origin("till", t.store_id, t.id)


def _payload(body: Model, *exclude: str) -> dict[str, Any]:
    return body.model_dump(mode="json", exclude={"txn_id", "device_time", *exclude})


def _answer(result: tuple[dict, bool]) -> web.Response:
    data, replayed = result
    return web.json_response(data, headers={"Idempotent-Replay": "true"} if replayed else None)


# -- the till ----------------------------------------------------------------------------------------

@route("POST", "/api/v1/till/receipts", summary="Register a receipt on a loyalty card: it earns points",
       tag="loyalty", auth="till", body=ReceiptBody, responses=_DECIDED)
async def till_receipt(call: Call):
    b = call.body
    body = ReceiptInput(b.card_number, b.at, b.currency, _lines(b.lines))
    return _answer(await call.central.loyalty.register_receipt(b.txn_id, body, _till_origin(call), _payload(b),
                                                               b.device_time))


@route("POST", "/api/v1/till/receipts/return",
       summary="Goods of a receipt brought back: their points are taken back (into a debt if spent)",
       tag="loyalty", auth="till", body=ReturnBody, responses=_DECIDED)
async def till_return(call: Call):
    b = call.body
    lines = tuple((li.line, li.quantity) for li in b.lines) if b.lines is not None else None
    return _answer(await call.central.loyalty.return_goods(
        b.txn_id, ReturnInput(b.card_number, b.original_txn_id, lines), _till_origin(call), _payload(b),
        b.device_time))


@route("POST", "/api/v1/till/points", summary="A loyalty card's points, tier and discount level",
       tag="loyalty", auth="till", body=CardBody, responses={404: "no such card"})
async def till_points(call: Call):
    return await call.central.loyalty.points_of(call.body.card_number) | {"decision": "online"}


@route("POST", "/api/v1/till/points/redeem",
       summary="Points become a discount on this receipt, within the card tier's rate and cap",
       tag="loyalty", auth="till", body=RedeemBody, responses=_DECIDED)
async def till_redeem(call: Call):
    b = call.body
    return _answer(await call.central.loyalty.redeem(b.txn_id, b.card_number, b.receipt_total, b.currency, b.points,
                                                     _till_origin(call), _payload(b), b.device_time))


@route("POST", "/api/v1/till/points/redeem/reverse", summary="Take a redemption back: its points return",
       tag="loyalty", auth="till", body=ReverseBody, responses=_DECIDED)
async def till_redeem_reverse(call: Call):
    b = call.body
    return _answer(await call.central.loyalty.reverse_redemption(b.txn_id, b.original_txn_id, _till_origin(call),
                                                                 _payload(b), b.device_time))


@route("POST", "/api/v1/till/rewards/redeem", summary="Spend points on a reward of the catalogue",
       tag="loyalty", auth="till", body=RewardRedeemBody, responses=_DECIDED | {404: "no such reward"})
async def till_reward(call: Call):
    b = call.body
    return _answer(await call.central.loyalty.redeem_reward(b.txn_id, b.card_number, b.reward, _till_origin(call),
                                                            _payload(b)))


@route("POST", "/api/v1/till/points/convert",
       summary="Convert between the card's points and its e-money at the programme's rates",
       tag="loyalty", auth="till", body=ConvertBody, responses=_DECIDED)
async def till_convert(call: Call):
    b = call.body
    return _answer(await call.central.loyalty.convert(b.txn_id, b.card_number, b.direction, b.amount,
                                                      _till_origin(call), _payload(b)))


# -- head office: rules ------------------------------------------------------------------------------

async def _body(call: Call) -> Any:
    try:
        return await call.request.json()
    except ValueError:
        raise BadRequest("the body is not JSON", code="invalid_json") from None


@route("POST", "/api/v1/admin/loyalty/schemes",
       summary="Publish the next version of an earning scheme (see docs/loyalty.md for the JSON form)",
       tag="loyalty rules", auth="staff", roles=OPERATE, audit_action=False,
       responses={200: "the version recorded", 400: "the body is not JSON",
                  422: "invalid_rule: what is wrong, by field"})
async def schemes_publish(call: Call):
    return await call.central.rules.publish(RuleKind.SCHEME, await _body(call), call.staff.username, call.remote)


@route("GET", "/api/v1/admin/loyalty/schemes", summary="Every version of every earning scheme",
       tag="loyalty rules", auth="staff", roles=READ)
async def schemes_list(call: Call):
    return await call.central.rules.history(RuleKind.SCHEME)


@route("GET", f"/api/v1/admin/loyalty/schemes/{_CODE}", summary="The versions of one earning scheme",
       tag="loyalty rules", auth="staff", roles=READ, responses={404: "no such scheme"})
async def schemes_get(call: Call):
    return await call.central.rules.history(RuleKind.SCHEME, call.request.match_info["code"])


@route("POST", f"/api/v1/admin/loyalty/schemes/{_CODE}/retire", summary="Withdraw an earning scheme from a time on",
       tag="loyalty rules", auth="staff", roles=OPERATE, body=RetireBody, audit_action=False)
async def schemes_retire(call: Call):
    return await call.central.rules.retire(RuleKind.SCHEME, call.request.match_info["code"], call.staff.username,
                                           call.body.at, call.remote)


@route("POST", "/api/v1/admin/loyalty/plans",
       summary="Publish a loyalty programme's plan (combination, points lifetime, tiers, redemption, bonuses)",
       tag="loyalty rules", auth="staff", roles=OPERATE, audit_action=False,
       responses={200: "the revision recorded", 400: "the body is not JSON",
                  422: "invalid_rule: what is wrong, by field"})
async def plans_publish(call: Call):
    return await call.central.rules.publish(RuleKind.PLAN, await _body(call), call.staff.username, call.remote)


@route("GET", f"/api/v1/admin/loyalty/plans/{_CODE}", summary="The revisions of a programme's plan",
       tag="loyalty rules", auth="staff", roles=READ, responses={404: "no plan for that programme"})
async def plans_get(call: Call):
    return await call.central.rules.history(RuleKind.PLAN, call.request.match_info["code"])


# -- head office: cards, rewards, jobs ---------------------------------------------------------------

@route("GET", f"/api/v1/admin/cards/{_NUMBER}/loyalty", summary="A card's points, lots and latest receipts",
       tag="loyalty", auth="staff", roles=READ, responses={404: "no such card"})
async def card_loyalty(call: Call):
    return await call.central.loyalty.card_loyalty(call.request.match_info["number"])


@route("POST", f"/api/v1/admin/cards/{_NUMBER}/receipts",
       summary="Add a receipt to a card after the fact (it earns by the rules in force at its time)",
       tag="loyalty", auth="staff", roles=OPERATE, body=AddReceiptBody, responses=_DECIDED)
async def card_add_receipt(call: Call):
    b = call.body
    number = call.request.match_info["number"]
    body = ReceiptInput(number, b.at, b.currency, _lines(b.lines), store_code=b.store_code)
    return _answer(await call.central.loyalty.register_receipt(
        b.request_id, body, Origin("admin", actor=call.staff.username),
        {"card_number": number, **_payload(b, "request_id")}))


@route("POST", f"/api/v1/admin/cards/{_NUMBER}/points/adjust",
       summary="Credit or debit points by hand, with a reason (audited)", tag="loyalty", auth="staff",
       roles=OPERATE, body=AdjustBody, audit_action=False, responses=_DECIDED | {404: "no such card"})
async def card_adjust(call: Call):
    b = call.body
    return _answer(await call.central.loyalty.adjust(b.request_id, call.request.match_info["number"], b.points,
                                                     b.reason, call.staff.username, call.remote))


@route("POST", f"/api/v1/admin/cards/{_NUMBER}/pool",
       summary="Pool a card's e-money with a master card's (its balance moves to the master; audited)",
       tag="loyalty", auth="staff", roles=OPERATE, body=PoolBody, audit_action=False,
       responses=_DECIDED | {404: "no such card"})
async def card_pool(call: Call):
    return await call.central.cards.join_pool(call.request.match_info["number"], call.body.master_card_number,
                                              Origin("admin", actor=call.staff.username), call.body.request_id)


@route("POST", f"/api/v1/admin/cards/{_NUMBER}/pool/leave",
       summary="Take a card out of its pool (the e-money stays with the master; audited)", tag="loyalty",
       auth="staff", roles=OPERATE, body=PoolLeaveBody, audit_action=False, responses=_DECIDED | {404: "no such card"})
async def card_pool_leave(call: Call):
    return await call.central.cards.leave_pool(call.request.match_info["number"],
                                               Origin("admin", actor=call.staff.username), call.body.request_id)


@route("PUT", f"/api/v1/admin/loyalty/rewards/{_CODE}", summary="Create or change a reward of the catalogue",
       tag="loyalty", auth="staff", roles=OPERATE, body=RewardBody, audit_action=False)
async def reward_put(call: Call):
    b = call.body
    return await call.central.loyalty.put_reward(call.request.match_info["code"], b.name, b.points, b.active,
                                                 b.stock, call.staff.username, call.remote)


@route("PUT", f"/api/v1/admin/stores/{_CODE}/groups",
       summary="Set the groups a store is in (earning schemes may name store groups; audited)", tag="loyalty rules",
       auth="staff", roles=OPERATE, body=StoreGroupsBody, audit_action=False, responses={404: "no such store"})
async def store_groups_put(call: Call):
    return await call.central.loyalty.set_store_groups(call.request.match_info["code"], call.body.groups,
                                                       call.staff.username, call.remote)


@route("GET", "/api/v1/admin/loyalty/rewards", summary="The rewards catalogue", tag="loyalty", auth="staff",
       roles=READ)
async def rewards_list(call: Call):
    return await call.central.loyalty.list_rewards()


@route("POST", "/api/v1/admin/loyalty/jobs/points-expiry", summary="Run the points expiry job now",
       tag="loyalty", auth="staff", roles=OPERATE)
async def job_expiry(call: Call):
    return {"points_expired": await call.central.loyalty.expire_points()}


@route("POST", "/api/v1/admin/loyalty/jobs/birthdays", summary="Credit today's birthday bonuses now",
       tag="loyalty", auth="staff", roles=OPERATE, query=BirthdayQuery)
async def job_birthdays(call: Call):
    return {"cards_credited": await call.central.loyalty.birthday_bonuses(call.query.on)}

"""E-vouchers over HTTP: staff issue, look up, list and revoke them; tills redeem and reverse them online;
websites check one.

Issuing and revoking are audited by the service, in the transaction that makes the change (with the voucher's
id, which the route does not know); a refused attempt is audited here with its error code. No route takes a
voucher code where an audit or an access log would keep it: codes travel in POST bodies only.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, Field, model_validator

from core import DomainError

from ..services import Origin, audit
from ..services.vouchers import MAX_BATCH, RedeemRequest, ReversalRequest, VoucherService, VoucherSpec
from . import schemas as s
from .admin import OPERATE, READ
from .routing import Call, route

_ID = "{voucher_id:\\d+}"
Count = Annotated[int, Field(strict=True, ge=0, le=MAX_BATCH)]
Minor = Annotated[int, Field(strict=True, ge=0, le=10**12, description="minor units (cents)")]
CodeText = Annotated[str, Field(min_length=1, max_length=64, repr=False, description=(
    "the voucher code as printed (16 characters; case, spaces and dashes do not matter)"))]


class VoucherBody(s.Model):
    request_id: uuid.UUID = Field(description="client-generated id (UUID); a repeat returns the first result, "
                                              "without the code")
    kind: Literal["value", "percent"]
    value: Annotated[int, Field(strict=True, gt=0, le=10**12, description=(
        "value: minor units taken off the basket at most; percent: basis points of the basket (1-10000)"))]
    currency: s.Currency
    max_uses: Annotated[int, Field(strict=True, ge=1, le=1_000_000, description="1: single use")] = 1
    valid_from: AwareDatetime | None = Field(None, description="usable from this instant (default: at once)")
    valid_to: AwareDatetime | None = Field(None, description="usable until just before this instant (default: "
                                                             "no end)")
    min_basket: Minor = 0

    def spec(self) -> VoucherSpec:
        return VoucherSpec(self.kind, self.value, self.currency, self.max_uses, self.valid_from, self.valid_to,
                           self.min_basket)


class IssueBody(VoucherBody):
    card_number: s.CardNumber | None = Field(None, description="bind the voucher to this card")
    customer_id: Annotated[int, Field(gt=0)] | None = Field(None, description="bind it to this customer (any of "
                                                                             "their cards)")

    @model_validator(mode="after")
    def _one_binding(self) -> IssueBody:
        if self.card_number is not None and self.customer_id is not None:
            raise ValueError("bind a voucher to a card or to a customer, not both")
        return self


class BatchBody(VoucherBody):
    card_numbers: list[s.CardNumber] = Field(default_factory=list, max_length=MAX_BATCH,
                                             description="one voucher bound to each card")
    customer_ids: list[Annotated[int, Field(gt=0)]] = Field(default_factory=list, max_length=MAX_BATCH,
                                                            description="one voucher bound to each customer")
    count: Count = Field(0, description="this many unbound vouchers")


class RevokeBody(s.Model):
    reason: Annotated[str, Field(min_length=1, max_length=200)]


class LookupBody(s.Model):
    code: CodeText


class VoucherList(s.Model):
    card_number: s.CardNumber | None = None
    customer_id: Annotated[int, Field(gt=0)] | None = None
    state: Literal["issued", "active", "used", "cancelled", "expired"] | None = None
    after_id: Annotated[int, Field(ge=0, description="the previous page's next")] = 0
    limit: Annotated[int, Field(ge=1, le=200)] = 50


class RedeemBody(s.TillBase):
    code: CodeText
    basket_total: Minor = Field(description="the basket before this voucher, minor units")
    currency: s.Currency
    card_number: s.CardNumber | None = Field(None, description="the card presented (needed for a personal voucher)")


class ReverseBody(s.TillBase):
    original_txn_id: uuid.UUID = Field(description="the txn_id of the redemption taken back")


class CheckBody(s.Model):
    code: CodeText
    card_number: s.CardNumber | None = None
    basket_total: Minor | None = Field(None, description="with a basket, the answer says whether the voucher "
                                                         "would be accepted and for how much")
    currency: s.Currency | None = None


def _service(call: Call) -> VoucherService:
    return call.central.vouchers


def _voucher_id(call: Call) -> int:
    return int(call.request.match_info["voucher_id"])


def _staff(call: Call) -> Origin:
    return Origin("admin", actor=call.staff.username)


def _replayable(answer: dict[str, Any], replayed: bool) -> web.Response:
    return web.json_response(answer, headers={"Idempotent-Replay": "true"} if replayed else None)


async def _audited(call: Call, work: Awaitable[tuple[dict[str, Any], bool]], action: str) -> web.Response:
    """Run a staff change (the service audits it); audit a refused one here with its error code."""
    try:
        answer, replayed = await work
    except DomainError as exc:
        path = call.request.path
        async with call.central.db.begin() as conn:
            await audit(conn, call.staff.username, action, path,
                        {"outcome": exc.code, "method": call.request.method, "path": path}, call.remote)
        raise
    return _replayable(answer, replayed)


_ISSUED = {200: "the voucher and its code (a repeat of request_id: the voucher with code null and "
                "code_already_given true, header Idempotent-Replay)",
           404: "no such card or customer", 409: "request_id reused for another request (idempotency_conflict), "
                                                 "or an inactive customer", 422: "invalid voucher"}


# -- staff ----------------------------------------------------------------------------------------

@route("POST", "/api/v1/admin/vouchers", summary="Issue an e-voucher to a card, a customer or no one",
       tag="vouchers", auth="staff", roles=OPERATE, body=IssueBody, audit_action=False, responses=_ISSUED)
async def vouchers_issue(call: Call):
    b = call.body
    return await _audited(call, _service(call).issue(b.request_id, b.spec(), _staff(call), card_number=b.card_number,
                                                     customer_id=b.customer_id, remote=call.remote), "voucher_issue")


@route("POST", "/api/v1/admin/vouchers/batch",
       summary="Issue alike e-vouchers to many cards or customers, or unbound ones, in one transaction",
       tag="vouchers", auth="staff", roles=OPERATE, body=BatchBody, audit_action=False, responses=_ISSUED)
async def vouchers_issue_batch(call: Call):
    b = call.body
    return await _audited(call, _service(call).issue_batch(
        b.request_id, b.spec(), _staff(call), card_numbers=b.card_numbers, customer_ids=b.customer_ids,
        count=b.count, remote=call.remote), "voucher_issue")


@route("GET", "/api/v1/admin/vouchers", summary="The vouchers of a card (and its customer) or of a customer",
       tag="vouchers", auth="staff", roles=READ, query=VoucherList,
       responses={200: "vouchers (id order) and next: the after_id of the next page, or null"})
async def vouchers_list(call: Call):
    q = call.query
    return await _service(call).list_for(card_number=q.card_number, customer_id=q.customer_id, state=q.state,
                                         after_id=q.after_id, limit=q.limit)


@route("GET", f"/api/v1/admin/vouchers/{_ID}", summary="An e-voucher (never its code)", tag="vouchers",
       auth="staff", roles=READ)
async def vouchers_get(call: Call):
    return await _service(call).get(_voucher_id(call))


@route("POST", "/api/v1/admin/vouchers/lookup", summary="Find an e-voucher by its code", tag="vouchers",
       auth="staff", roles=READ, body=LookupBody, audit_action=False,
       responses={404: "voucher_unknown, or voucher_code_invalid (mistyped: wrong length, letters or check "
                       "character)"})
async def vouchers_lookup(call: Call):
    return await _service(call).find(call.body.code)


@route("POST", f"/api/v1/admin/vouchers/{_ID}/revoke", summary="Revoke (cancel) an e-voucher for good",
       tag="vouchers", auth="staff", roles=OPERATE, body=RevokeBody, audit_action=False,
       responses={200: "the revocation (again: the first one, header Idempotent-Replay)", 404: "no such voucher",
                  409: "illegal_transition: the voucher is used up or expired"})
async def vouchers_revoke(call: Call):
    return await _audited(call, _service(call).revoke(_voucher_id(call), call.body.reason, _staff(call),
                                                      remote=call.remote), "voucher_revoke")


@route("POST", "/api/v1/admin/vouchers/expire", summary="Mark vouchers past their window expired (the scheduled "
       "job, now)", tag="vouchers", auth="staff", roles=OPERATE)
async def vouchers_expire(call: Call):
    return {"expired": await _service(call).expire_due()}


# -- tills and websites ---------------------------------------------------------------------------

_TILL = {200: "the decision: approved with discount (minor units), or declined with a stable decline_code",
         409: "txn_id reused for a different request"}


@route("POST", "/api/v1/till/vouchers/redeem", summary="Use an e-voucher on a basket (online)", tag="till",
       auth="till", body=RedeemBody, responses=_TILL)
async def till_voucher_redeem(call: Call):
    b = call.body
    t = call.terminal
    req = RedeemRequest(b.txn_id, b.code, b.basket_total, b.currency, b.card_number, b.device_time)
    return _replayable(*await _service(call).redeem(req, Origin("till", t.store_id, t.id)))


@route("POST", "/api/v1/till/vouchers/redeem/reverse", summary="Take back an e-voucher use (gives the use back)",
       tag="till", auth="till", body=ReverseBody, responses=_TILL)
async def till_voucher_reverse(call: Call):
    b = call.body
    t = call.terminal
    req = ReversalRequest(b.txn_id, b.original_txn_id, b.device_time)
    return _replayable(*await _service(call).reverse(req, Origin("till", t.store_id, t.id)))


@route("POST", "/api/v1/web/vouchers/check", summary="Check an e-voucher (and, with a basket, what it would take "
       "off); nothing is used", tag="web", auth="web", body=CheckBody,
       responses={200: "found false with decline_code voucher_unknown or voucher_code_invalid; or the voucher "
                       "(and, with basket_total, approved, discount and decline_code)"})
async def web_voucher_check(call: Call):
    b = call.body
    return await _service(call).check(b.code, card_number=b.card_number, basket_total=b.basket_total,
                                      currency=b.currency)

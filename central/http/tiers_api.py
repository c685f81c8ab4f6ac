"""Tiers and discount levels over HTTP: staff run the jobs now, read a card's tier and history and
override it; tills ask a card's discount level and tier (online, from central's books)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from .admin import OPERATE, READ
from .routing import Call, route
from .schemas import CardNumber

_CARD = "/api/v1/admin/loyalty/cards/{number:\\d{8,19}}/tier"
_CARD_ERRORS = {404: "no such card", 422: "not_a_loyalty_card"}


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JobQuery(Model):
    at: AwareDatetime | None = Field(None, description="review up to this instant (default now; never the future)")


class TierOverrideBody(Model):
    tier: Annotated[str, Field(min_length=1, max_length=32, description="a tier code of the card's plan")]
    reason: Annotated[str, Field(min_length=1, max_length=200, description="why (kept in the audit log)")]


class TillCardBody(Model):
    card_number: CardNumber


# -- staff ---------------------------------------------------------------------------------------

@route("POST", "/api/v1/admin/loyalty/tiers/run",
       summary="Run the tier review now over every card of every tiered programme (source batch)",
       tag="loyalty", auth="staff", roles=OPERATE, query=JobQuery,
       responses={200: "counts: programmes, reviewed, entered, upgraded, downgraded, kept, remapped",
                  422: "future_review: at is in the future"})
async def tiers_run(call: Call):
    return await call.central.tiers.run(call.query.at, source="batch", actor=call.staff.username)


@route("POST", "/api/v1/admin/loyalty/discounts/refresh",
       summary="Recompute every card's discount level from its turnover now", tag="loyalty", auth="staff",
       roles=OPERATE, query=JobQuery, responses={200: "counts: programmes, cards, changed"})
async def discounts_refresh(call: Call):
    return await call.central.tiers.refresh_discounts(call.query.at)


@route("GET", _CARD, summary="A card's tier now (with the changes due applied), its discount level and tier history",
       tag="loyalty", auth="staff", roles=READ, responses=_CARD_ERRORS)
async def card_tier_get(call: Call):
    number = call.request.match_info["number"]
    tiers = call.central.tiers
    status = await tiers.status(number)
    discount = await tiers.discount_of(number)
    history = await tiers.history(number)
    return status | {"discount": {k: discount[k] for k in ("bps", "turnover", "period_days")},
                     "history": history["changes"]}


@route("POST", _CARD, summary="Put a card in a tier from now on (staff override, audited with the reason)",
       tag="loyalty", auth="staff", roles=OPERATE, body=TierOverrideBody,
       responses={**_CARD_ERRORS, 422: "unknown_tier, no_tiers, not_a_loyalty_card"})
async def card_tier_set(call: Call):
    return await call.central.tiers.set_tier(call.request.match_info["number"], call.body.tier, call.body.reason,
                                             call.staff.username, call.remote)


# -- tills ---------------------------------------------------------------------------------------

@route("POST", "/api/v1/till/discount-level", summary="A loyalty card's discount level (from its turnover history)",
       tag="till", auth="till", body=TillCardBody,
       responses={200: "card (masked), bps, turnover and period_days, decision online", **_CARD_ERRORS})
async def till_discount_level(call: Call):
    return await call.central.tiers.discount_of(call.body.card_number) | {"decision": "online"}


@route("POST", "/api/v1/till/tier", summary="A loyalty card's tier, qualifying total and what the next tier needs",
       tag="till", auth="till", body=TillCardBody, responses={200: "the card's tier status", **_CARD_ERRORS})
async def till_tier(call: Call):
    return await call.central.tiers.status(call.body.card_number) | {"decision": "online"}

"""Customer segments over HTTP: staff define, retire, run and export them (admin API); the till asks which
segments a card is in.

Definitions, retirements and exports are audited by the service (with the rule, the revision, the rows
exported); a refused definition is audited here with its error code. Runs on demand are audited by the
route and recorded as segment runs.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from core.loyalty.segments import InvalidSegmentRule

from ..services import audit
from ..services.ledger import mask
from ..services.segments import SegmentService
from .admin import OPERATE, READ
from .routing import CSV, Call, error_response, route

_CODE = "{code:[A-Za-z0-9_.-]{1,32}}"
CardNumber = Annotated[str, Field(pattern=r"^\d{8,19}$", description="the card number, digits only")]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SegmentBody(Model):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    rule: Any = Field(description="the rule in JSON form: {\"op\": ..., ...} (see docs/segments.md)")


class SegmentList(Model):
    retired: bool = Field(False, description="1: include retired segments")


class RunQuery(Model):
    today: date | None = Field(None, description="the business date to compute as of (default: today, UTC)")


class RunsQuery(Model):
    limit: Annotated[int, Field(ge=1, le=500)] = 50


class ExportQuery(Model):
    channel: Literal["mail", "sms", "email"] = Field(description="mail: names and addresses; sms: phones; "
                                                                 "email: e-mail addresses")


class FeedQuery(Model):
    after: Annotated[int, Field(ge=0, description="the last version already held (the previous page's next)")] = 0
    limit: Annotated[int, Field(ge=1, le=10_000)] = 1000


class TillSegmentsBody(Model):
    card_number: CardNumber


def _service(call: Call) -> SegmentService:
    return call.central.segments


def _code(call: Call) -> str:
    return call.request.match_info["code"]


# -- staff ---------------------------------------------------------------------------------------

@route("GET", "/api/v1/admin/segments", summary="List segments (current revision, members, last run)",
       tag="segments", auth="staff", roles=READ, query=SegmentList)
async def segments_list(call: Call):
    return {"segments": await _service(call).list(include_retired=call.query.retired)}


@route("PUT", f"/api/v1/admin/segments/{_CODE}",
       summary="Define a segment or replace its rule (a new revision; the same rule again changes nothing)",
       tag="segments", auth="staff", roles=OPERATE, body=SegmentBody, audit_action=False,
       responses={200: "the current revision; changed: whether this request made it",
                  400: "invalid_segment_rule: error.path locates the bad node ($.rules[1].rule), error.op names it"})
async def segments_define(call: Call):
    b = call.body
    try:
        return await _service(call).define(_code(call), b.name, b.rule, call.staff.username, remote=call.remote)
    except InvalidSegmentRule as exc:
        path = call.request.path
        async with call.central.db.begin() as conn:
            await audit(conn, call.staff.username, "segment_define", f"segment:{_code(call)}",
                        {"outcome": exc.code, "path": exc.path, "reason": exc.reason, "rule": b.rule,
                         "method": call.request.method, "request": path}, call.remote)
        return error_response(400, exc.code, exc.message, path=exc.path, op=exc.op)


@route("GET", f"/api/v1/admin/segments/{_CODE}",
       summary="A segment: current revision, every revision (oldest first), members and last run",
       tag="segments", auth="staff", roles=READ, responses={404: "no such segment"})
async def segments_show(call: Call):
    return await _service(call).get(_code(call))


@route("POST", f"/api/v1/admin/segments/{_CODE}/retire",
       summary="Retire a segment (every card leaves it; stores drop it through the feed)", tag="segments",
       auth="staff", roles=OPERATE, audit_action=False,
       responses={404: "no such segment", 409: "illegal_transition: retired already"})
async def segments_retire(call: Call):
    return await _service(call).retire(_code(call), call.staff.username, remote=call.remote)


@route("POST", f"/api/v1/admin/segments/{_CODE}/run",
       summary="Compute a segment's members now (on demand) and publish the changes", tag="segments",
       auth="staff", roles=OPERATE, query=RunQuery,
       responses={200: "the run: members, added, removed", 404: "no such segment", 409: "the segment is retired"})
async def segments_run(call: Call):
    return await _service(call).run(_code(call), today=call.query.today, trigger="demand",
                                    actor=call.staff.username)


@route("GET", f"/api/v1/admin/segments/{_CODE}/runs", summary="A segment's runs, newest first", tag="segments",
       auth="staff", roles=READ, query=RunsQuery)
async def segments_runs(call: Call):
    return {"runs": await _service(call).runs(_code(call), limit=call.query.limit)}


@route("GET", f"/api/v1/admin/segments/{_CODE}/export.csv",
       summary="Export a segment's members for a mailing: only customers whose current consent on the channel "
               "is a grant (audited)", tag="segments", auth="staff", roles=OPERATE, query=ExportQuery, produces=CSV,
       responses={200: "CSV: customer_id, card_number, first_name, last_name, then the channel's columns",
                  404: "no such segment"})
async def segments_export(call: Call):
    service = _service(call)
    code, channel = _code(call), call.query.channel
    await service.get(code)  # a 404 before the answer starts
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="segment-{code}-{channel}.csv"'})
    await response.prepare(call.request)
    await service.export(code, channel, response.write, call.staff.username, remote=call.remote)
    await response.write_eof()
    return response


@route("GET", "/api/v1/admin/segment-changes",
       summary="The segment membership feed after a version (what stores pull), oldest first", tag="segments",
       auth="staff", roles=READ, query=FeedQuery)
async def segments_feed(call: Call):
    return await _service(call).changes_since(call.query.after, call.query.limit)


# -- tills ---------------------------------------------------------------------------------------

@route("POST", "/api/v1/till/segments", summary="The segments a card is in (as the last runs computed them)",
       tag="till", auth="till", body=TillSegmentsBody, responses={404: "no such card"})
async def till_segments(call: Call):
    number = call.body.card_number
    return {"card": mask(number), "segments": await _service(call).segments_of_card(number), "decision": "online"}

"""Store sync over HTTP: the two signed msgpack routes edges call, and their head-office administration."""

from __future__ import annotations

import logging
import time
import uuid

from aiohttp import web

from core import DomainError
from sync import MSGPACK, ProtocolError, SignatureError, encode
from sync.signing import STORE

from ..services import Forbidden
from . import schemas as s
from .routing import Call, error_response, route

log = logging.getLogger("tessera.sync")
ADMIN = ("admin",)
OPERATE = ("admin", "operator")
READ = ("admin", "operator", "auditor")
TIME_HEADER = "X-Tessera-Time"
PUSH, PULL = "/api/v1/sync/push", "/api/v1/sync/pull"
_SIGNED = {400: "not a valid sync message (bad_sync_message, unsupported_version)",
           401: "unsigned, bad signature, stale timestamp, unknown store or replayed request",
           403: "the message names another store than the one that signed it"}
_STATUS = ((ProtocolError, 400), (SignatureError, 401), (Forbidden, 403))


def _stamped(response: web.Response) -> web.Response:
    """Every sync answer tells central's time, so an edge with a wrong clock can sign with ours."""
    response.headers[TIME_HEADER] = f"{time.time():.3f}"
    return response


async def _signed(call: Call, path: str, apply) -> web.Response:
    request = call.request
    sync = call.central.sync
    try:
        body = await request.read()
        store = await sync.authenticate(request.headers, request.method, path, body)
        answer = await apply(store, body)
    except DomainError as exc:
        status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 422)
        if status == 401:
            log.warning("sync request refused code=%s store=%s remote=%s", exc.code, request.headers.get(STORE),
                        request.remote)
        return _stamped(error_response(status, exc.code, exc.message))
    except Exception:
        incident = uuid.uuid4().hex[:12]
        log.exception("sync request failed incident=%s path=%s", incident, path)
        return _stamped(error_response(500, "internal_error", f"internal error (incident {incident})"))
    return _stamped(web.Response(body=encode(answer), content_type=MSGPACK))


@route("POST", PUSH, summary="A store pushes the entries it decided offline (signed msgpack PushRequest)",
       tag="sync", auth="public", consumes=MSGPACK, produces=MSGPACK, responses=_SIGNED)
async def sync_push(call: Call):
    return await _signed(call, PUSH, call.central.sync.push)


@route("POST", PULL, summary="A store pulls deny list, card states, limits, tills and number blocks "
       "(signed msgpack PullRequest)", tag="sync", auth="public", consumes=MSGPACK, produces=MSGPACK,
       responses=_SIGNED)
async def sync_pull(call: Call):
    return await _signed(call, PULL, call.central.sync.pull)


# -- administration ------------------------------------------------------------------------------

@route("POST", "/api/v1/admin/stores/{code}/sync-secret",
       summary="Issue a new sync secret for a store's edge node (shown once; the old one stops working)",
       tag="sync", auth="staff", roles=ADMIN)
async def sync_secret_rotate(call: Call):
    async with call.central.db.begin() as conn:
        return await call.central.sync.rotate_secret(conn, call.request.match_info["code"])


@route("POST", "/api/v1/admin/programmes/{code}/offline-limits",
       summary="Set a programme's offline limits (floor limit, per-card amount and count)", tag="sync",
       auth="staff", roles=ADMIN, body=s.OfflineLimitsBody)
async def offline_limits_set(call: Call):
    b = call.body
    async with call.central.db.begin() as conn:
        return await call.central.sync.set_limits(conn, call.request.match_info["code"], b.floor_limit,
                                                  b.card_offline_amount, b.card_offline_count)


@route("POST", "/api/v1/admin/stores/{code}/offline-budget", summary="Set a store's offline exposure budget",
       tag="sync", auth="staff", roles=ADMIN, body=s.OfflineBudgetBody)
async def offline_budget_set(call: Call):
    async with call.central.db.begin() as conn:
        return await call.central.sync.set_budget(conn, call.request.match_info["code"], call.body.amount,
                                                  call.body.currency)


@route("GET", "/api/v1/admin/sync/stores",
       summary="Stores' sync state: last contact, acknowledged sequence, backlog, offline exposure, quarantine",
       tag="sync", auth="staff", roles=READ)
async def sync_stores(call: Call):
    async with call.central.db.connect() as conn:
        return await call.central.sync.status(conn)


@route("GET", "/api/v1/admin/sync/exceptions", summary="Exception cases opened by store sync", tag="sync",
       auth="staff", roles=READ, query=s.ExceptionSearch)
async def sync_exceptions_list(call: Call):
    q = call.query
    async with call.central.db.connect() as conn:
        return await call.central.sync.exceptions(conn, status=q.status, store=q.store, kind=q.kind,
                                                  after_id=q.after_id, limit=q.limit)


@route("POST", "/api/v1/admin/sync/exceptions/{exception_id:\\d+}/close", summary="Close an exception case",
       tag="sync", auth="staff", roles=OPERATE, body=s.ExceptionCloseBody)
async def sync_exception_close(call: Call):
    async with call.central.db.begin() as conn:
        return await call.central.sync.close_exception(conn, int(call.request.match_info["exception_id"]),
                                                        call.staff.username, call.body.note)


@route("GET", "/api/v1/admin/sync/quarantine", summary="Batches kept aside from quarantined stores", tag="sync",
       auth="staff", roles=READ, query=s.QuarantineSearch)
async def sync_quarantine_list(call: Call):
    async with call.central.db.connect() as conn:
        return await call.central.sync.quarantined(conn, call.query.store)


@route("GET", "/api/v1/admin/sync/quarantine/{batch_id:\\d+}/body",
       summary="A quarantined batch as the store sent it (msgpack PushRequest)", tag="sync", auth="staff",
       roles=OPERATE, produces=MSGPACK)
async def sync_quarantine_body(call: Call):
    async with call.central.db.connect() as conn:
        body = await call.central.sync.quarantined_body(conn, int(call.request.match_info["batch_id"]))
    return web.Response(body=body, content_type=MSGPACK)


@route("POST", "/api/v1/admin/stores/{code}/sync/release",
       summary="Release a quarantined store: a new epoch, in which it renumbers what central did not acknowledge",
       tag="sync", auth="staff", roles=OPERATE)
async def sync_release(call: Call):
    async with call.central.db.begin() as conn:
        return await call.central.sync.release(conn, call.request.match_info["code"])


@route("GET", "/api/v1/admin/stores/{code}/number-blocks", summary="Card-number blocks granted to a store",
       tag="sync", auth="staff", roles=READ)
async def number_blocks_list(call: Call):
    async with call.central.db.connect() as conn:
        return await call.central.sync.blocks(conn, call.request.match_info["code"])


@route("POST", "/api/v1/admin/stores/{code}/number-blocks",
       summary="Grant a store a block of card numbers to issue offline", tag="sync", auth="staff", roles=ADMIN,
       body=s.NumberBlockBody)
async def number_block_grant(call: Call):
    async with call.central.db.begin() as conn:
        return await call.central.sync.grant_block(conn, call.request.match_info["code"], call.body.programme,
                                                   call.body.count)

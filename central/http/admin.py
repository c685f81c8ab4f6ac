"""The head-office admin API: staff log in and manage programmes, stores, cards and reports."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

from aiohttp import web

from ..db.tables import counterparties, stores, terminals
from ..keys import BACKGROUND
from ..services import CardQuery, NotFound, Origin, TransactionQuery, create_programme, list_programmes
from ..services.programmes import programme_dict
from ..services.reports import liability_csv, reconciliation, turnover_csv
from . import schemas as s
from .routing import CSV, Call, csv_upload, route

log = logging.getLogger("tessera.admin")
ADMIN = ("admin",)
OPERATE = ("admin", "operator")
READ = ("admin", "operator", "auditor")


def _origin(call: Call) -> Origin:
    return Origin("admin", actor=call.staff.username)


# -- sessions -----------------------------------------------------------------------------------

@route("POST", "/api/v1/auth/login", summary="Log in with username and password; returns a bearer token",
       tag="auth", auth="public", body=s.LoginBody, responses={401: "wrong username or password"})
async def login(call: Call):
    return await call.central.admin.login(call.body.username, call.body.password, call.remote)


@route("POST", "/api/v1/auth/logout", summary="End this token's session", tag="auth", auth="staff",
       audit_action=False)
async def logout(call: Call):
    await call.central.admin.logout(call.request.headers["Authorization"].split(" ", 1)[1].strip())
    return {"ok": True}


# -- reference data -----------------------------------------------------------------------------

@route("GET", "/api/v1/admin/programmes", summary="List card programmes", tag="admin", auth="staff", roles=READ)
async def programmes_list(call: Call):
    async with call.central.db.connect() as conn:
        return await list_programmes(conn)


@route("POST", "/api/v1/admin/programmes", summary="Create a card programme", tag="admin", auth="staff",
       roles=ADMIN, body=s.ProgrammeBody)
async def programme_create(call: Call):
    async with call.central.db.begin() as conn:
        return programme_dict(await create_programme(conn, call.body.model_dump()))


@route("GET", "/api/v1/admin/stores", summary="List stores", tag="admin", auth="staff", roles=READ)
async def stores_list(call: Call):
    async with call.central.db.connect() as conn:
        return await call.central.admin.list_table(conn, stores)


@route("POST", "/api/v1/admin/stores", summary="Create a store", tag="admin", auth="staff", roles=ADMIN,
       body=s.StoreBody)
async def store_create(call: Call):
    async with call.central.db.begin() as conn:
        return {"id": await call.central.admin.create_store(conn, call.body.code, call.body.name),
                **call.body.model_dump()}


@route("GET", "/api/v1/admin/counterparties", summary="List external counterparties", tag="admin", auth="staff",
       roles=READ)
async def counterparties_list(call: Call):
    async with call.central.db.connect() as conn:
        return await call.central.admin.list_table(conn, counterparties)


@route("POST", "/api/v1/admin/counterparties", summary="Create an external counterparty", tag="admin",
       auth="staff", roles=ADMIN, body=s.StoreBody)
async def counterparty_create(call: Call):
    async with call.central.db.begin() as conn:
        return {"id": await call.central.admin.create_counterparty(conn, call.body.code, call.body.name),
                **call.body.model_dump()}


@route("GET", "/api/v1/admin/terminals", summary="List tills and website clients", tag="admin", auth="staff",
       roles=READ)
async def terminals_list(call: Call):
    async with call.central.db.connect() as conn:
        rows = await call.central.admin.list_table(conn, terminals)
    return [{k: v for k, v in r.items() if k != "token_hash"} for r in rows]


@route("POST", "/api/v1/admin/terminals", summary="Register a till or website client (token shown once)",
       tag="admin", auth="staff", roles=ADMIN, body=s.TerminalBody)
async def terminal_create(call: Call):
    b = call.body
    async with call.central.db.begin() as conn:
        return await call.central.admin.create_terminal(conn, b.kind, b.code, b.store_code)


@route("POST", "/api/v1/admin/terminals/{terminal_id:\\d+}/disable", summary="Disable a till or website client",
       tag="admin", auth="staff", roles=ADMIN)
async def terminal_disable(call: Call):
    async with call.central.db.begin() as conn:
        await call.central.admin.set_terminal_active(conn, int(call.request.match_info["terminal_id"]), False)
    return {"ok": True}


@route("GET", "/api/v1/admin/users", summary="List staff users", tag="admin", auth="staff", roles=ADMIN)
async def users_list(call: Call):
    async with call.central.db.connect() as conn:
        return await call.central.admin.list_users(conn)


@route("POST", "/api/v1/admin/users", summary="Create a staff user", tag="admin", auth="staff", roles=ADMIN,
       body=s.UserBody)
async def user_create(call: Call):
    b = call.body
    async with call.central.db.begin() as conn:
        uid = await call.central.admin.create_user(conn, b.username, b.password, b.role)
    return {"id": uid, "username": b.username, "role": b.role}


@route("POST", "/api/v1/admin/users/{username}/disable", summary="Disable a staff user (ends their sessions)",
       tag="admin", auth="staff", roles=ADMIN)
async def user_disable(call: Call):
    async with call.central.db.begin() as conn:
        await call.central.admin.set_user_active(conn, call.request.match_info["username"], False)
    return {"ok": True}


@route("POST", "/api/v1/admin/users/{username}/enable",
       summary="Enable a staff user again (also lifts a login lockout)", tag="admin", auth="staff", roles=ADMIN)
async def user_enable(call: Call):
    async with call.central.db.begin() as conn:
        await call.central.admin.set_user_active(conn, call.request.match_info["username"], True)
    return {"ok": True}


# -- issues and packs ---------------------------------------------------------------------------

@route("POST", "/api/v1/admin/issues", summary="Issue a batch of cards (runs in the background)", tag="issuing",
       auth="staff", roles=OPERATE, body=s.IssueBody, responses={202: "accepted; poll the issue for progress"})
async def issue_create(call: Call):
    b = call.body
    central = call.central
    async with central.db.begin() as conn:
        issue_id = await central.issuing.start_issue(conn, b.programme, b.quantity, call.staff.username,
                                                     b.track_expiry)
    _background(call, central.issuing.run_issue(issue_id), f"issue-{issue_id}")
    return web.json_response(await central.issuing.get_issue(issue_id), status=202)


@route("POST", "/api/v1/admin/issues/{issue_id:\\d+}/resume",
       summary="Resume an issue whose run failed or stopped (e.g. a restart)", tag="issuing", auth="staff",
       roles=OPERATE, responses={202: "accepted; poll the issue for progress"})
async def issue_resume(call: Call):
    issue_id = int(call.request.match_info["issue_id"])
    await call.central.issuing.claim_for_resume(issue_id)
    _background(call, call.central.issuing.run_issue(issue_id), f"issue-{issue_id}")
    return web.json_response(await call.central.issuing.get_issue(issue_id), status=202)


def _background(call: Call, work, name: str) -> None:
    """Run long work after answering; its failure is recorded by the work itself and logged here."""
    task = asyncio.create_task(work, name=name)
    tasks = call.request.app[BACKGROUND]
    tasks.add(task)

    def done(t: asyncio.Task) -> None:
        tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:
            log.warning("background work failed task=%s error=%s", t.get_name(), t.exception())

    task.add_done_callback(done)


@route("GET", "/api/v1/admin/issues", summary="List issues with their progress", tag="issuing", auth="staff",
       roles=READ)
async def issues_list(call: Call):
    return await call.central.issuing.list_issues()


@route("GET", "/api/v1/admin/issues/{issue_id:\\d+}", summary="An issue and its progress", tag="issuing",
       auth="staff", roles=READ)
async def issue_get(call: Call):
    return await call.central.issuing.get_issue(int(call.request.match_info["issue_id"]))


@route("GET", "/api/v1/admin/issues/{issue_id:\\d+}/production-file",
       summary="Download the card production file (numbers, tracks, barcodes, eCodes) as CSV", tag="issuing",
       auth="staff", roles=ADMIN, produces=CSV, audit_action=True)
async def issue_production_file(call: Call):
    issue_id = int(call.request.match_info["issue_id"])
    issue = await call.central.issuing.get_issue(issue_id)
    path: Path = call.central.issuing.production_path(issue_id)
    if issue["status"] != "completed" or not path.exists():
        raise NotFound(f"issue {issue_id} has no production file (status {issue['status']})")
    return web.FileResponse(path, headers={"Content-Type": "text/csv",
                                           "Content-Disposition": f'attachment; filename="issue-{issue_id}.csv"'})


@route("POST", "/api/v1/admin/packs", summary="Make a pack of stock cards for a store or counterparty",
       tag="issuing", auth="staff", roles=OPERATE, body=s.PackBody)
async def pack_create(call: Call):
    b = call.body
    async with call.central.db.begin() as conn:
        return await call.central.issuing.create_pack(
            conn, actor=call.staff.username, numbers=b.numbers, first_number=b.first_number,
            last_number=b.last_number, store_code=b.store_code, counterparty_code=b.counterparty_code)


@route("GET", "/api/v1/admin/packs/{pack_id:\\d+}", summary="A pack", tag="issuing", auth="staff", roles=READ)
async def pack_get(call: Call):
    async with call.central.db.connect() as conn:
        return await call.central.issuing.pack(conn, int(call.request.match_info["pack_id"]))


@route("POST", "/api/v1/admin/packs/{pack_id:\\d+}/authorize",
       summary="Authorize a pack's cards for sale at its store", tag="issuing", auth="staff", roles=OPERATE)
async def pack_authorize(call: Call):
    async with call.central.db.begin() as conn:
        return await call.central.issuing.authorize_pack(conn, int(call.request.match_info["pack_id"]))


@route("POST", "/api/v1/admin/packs/{pack_id:\\d+}/activate", summary="Activate every card of a pack",
       tag="issuing", auth="staff", roles=OPERATE, body=s.PackActivationBody)
async def pack_activate(call: Call):
    return await call.central.issuing.activate_pack(int(call.request.match_info["pack_id"]), call.body.amount,
                                                    call.body.request_id, _origin(call))


# -- cards and transactions ---------------------------------------------------------------------

@route("GET", "/api/v1/admin/cards", summary="Search cards", tag="cards", auth="staff", roles=READ,
       query=s.CardSearch)
async def cards_search(call: Call):
    q = call.query
    return await call.central.cards.search_cards(CardQuery(q.prefix, q.programme, q.state, q.store, q.after_id,
                                                           q.limit))


@route("GET", "/api/v1/admin/cards/{number:\\d{8,19}}", summary="A card with its balance, lineage and history",
       tag="cards", auth="staff", roles=READ)
async def card_get(call: Call):
    return await call.central.cards.detail(call.request.match_info["number"])


@route("POST", "/api/v1/admin/cards/{number:\\d{8,19}}/block", summary="Block a card", tag="cards",
       auth="staff", roles=OPERATE, body=s.CardActionBody)
async def card_block(call: Call):
    return await call.central.cards.block(call.request.match_info["number"], call.body.reason, _origin(call),
                                          call.body.request_id)


@route("POST", "/api/v1/admin/cards/{number:\\d{8,19}}/unblock", summary="Unblock a card", tag="cards",
       auth="staff", roles=OPERATE, body=s.CardActionBody)
async def card_unblock(call: Call):
    return await call.central.cards.unblock(call.request.match_info["number"], call.body.reason, _origin(call),
                                            call.body.request_id)


@route("POST", "/api/v1/admin/cards/{number:\\d{8,19}}/duplicate",
       summary="Replace a card by a stock card; its balance moves over", tag="cards", auth="staff",
       roles=OPERATE, body=s.DuplicateBody)
async def card_duplicate(call: Call):
    return await call.central.cards.duplicate(call.request.match_info["number"], call.body.new_card_number,
                                              _origin(call), call.body.request_id)


@route("GET", "/api/v1/admin/transactions", summary="Search transactions by a complex key", tag="cards",
       auth="staff", roles=READ, query=s.TransactionSearch)
async def transactions_search(call: Call):
    q = call.query
    return await call.central.cards.search_transactions(TransactionQuery(
        q.card, q.prefix, q.store, q.since, q.until, tuple(q.kind), q.min_amount, q.max_amount, q.status,
        q.before, q.limit))


@route("GET", "/api/v1/admin/holds", summary="Unconfirmed authorizations (pending or in clarification)",
       tag="cards", auth="staff", roles=READ, query=s.HoldSearch)
async def holds_list(call: Call):
    store_id = None
    if call.query.store:
        async with call.central.db.connect() as conn:
            store_id = await call.central.admin.store_id(conn, call.query.store)
    return await call.central.holds.unconfirmed(call.query.limit, store_id)


@route("POST", "/api/v1/admin/holds/{hold_id}/resolve",
       summary="Resolve an unconfirmed authorization: confirm or reverse", tag="cards", auth="staff",
       roles=OPERATE, body=s.HoldResolutionBody)
async def hold_resolve(call: Call):
    try:
        hold_id = uuid.UUID(call.request.match_info["hold_id"])
    except ValueError:
        raise NotFound("no such authorization") from None
    return await call.central.holds.resolve(hold_id, call.body.action, call.staff.username)


# -- bulk loads, reports, audit -----------------------------------------------------------------

@route("POST", "/api/v1/admin/bulk-loads", summary="Credit cards from a CSV (reference,card_number,amount[,currency])",
       tag="cards", auth="staff", roles=OPERATE, consumes=CSV)
async def bulk_load(call: Call):
    text, name = await csv_upload(call.request)
    result = await call.central.bulk.load(
        text, name, call.staff.username,
        progress=lambda done, total: log.info("bulk load progress file=%s lines=%d of=%d", name, done, total))
    return {k: v for k, v in result.items() if k != "result_csv"}


@route("GET", "/api/v1/admin/bulk-loads/{load_id:\\d+}/result.csv", summary="Per-line result file of a bulk load",
       tag="cards", auth="staff", roles=READ, produces=CSV)
async def bulk_load_result(call: Call):
    text = await call.central.bulk.result_file(int(call.request.match_info["load_id"]))
    if text is None:
        raise NotFound("no such bulk load")
    return web.Response(text=text, content_type="text/csv")


@route("GET", "/api/v1/admin/reports/turnover.csv", summary="Turnover by store, day and type (CSV)",
       tag="reports", auth="staff", roles=READ, query=s.Period, produces=CSV)
async def report_turnover(call: Call):
    return web.Response(text=await turnover_csv(call.central.db, call.query.since, call.query.until),
                        content_type="text/csv")


@route("GET", "/api/v1/admin/reports/liability.csv", summary="Outstanding liability by programme (CSV)",
       tag="reports", auth="staff", roles=READ, produces=CSV)
async def report_liability(call: Call):
    return web.Response(text=await liability_csv(call.central.db), content_type="text/csv")


@route("GET", "/api/v1/admin/reports/reconciliation",
       summary="Check that every balance equals its entries and every held amount its open holds",
       tag="reports", auth="staff", roles=READ)
async def report_reconciliation(call: Call):
    return await reconciliation(call.central.db)


@route("GET", "/api/v1/admin/audit", summary="The audit log of admin actions", tag="reports", auth="staff",
       roles=("admin", "auditor"), query=s.AuditSearch)
async def audit_list(call: Call):
    q = call.query
    async with call.central.db.connect() as conn:
        return await call.central.admin.audit_entries(conn, actor=q.actor, action=q.action, since=q.since,
                                                      limit=q.limit)

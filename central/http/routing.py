"""Route declarations with their contract (auth, roles, body and query models) in one place.

Each handler is declared once with :func:`route`; the same declaration authenticates the caller,
validates the input with pydantic, audits staff actions and feeds the served OpenAPI document.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from core import DomainError, IdempotencyConflict, IllegalTransition

from ..keys import CENTRAL
from ..services import AuthError, EcodeLocked, EcodeRejected, Forbidden, NotFound, Staff, Terminal, audit

__all__ = ["BadRequest", "RouteSpec", "route", "ROUTES", "Call", "csv_upload", "error_response", "error_middleware",
           "error_middleware_for", "add_routes"]

log = logging.getLogger("tessera.http")

JSON = "application/json"
CSV = "text/csv"


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str
    handler: Callable[..., Awaitable[Any]]
    summary: str
    tag: str
    auth: str  # public | till | web | staff
    roles: tuple[str, ...] = ()
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    produces: str = JSON
    consumes: str = JSON
    audit: bool = False
    responses: dict[int, str] = field(default_factory=dict)


ROUTES: list[RouteSpec] = []


@dataclass
class Call:
    """What a handler receives: the request, who made it, and its validated input."""

    request: web.Request
    principal: Staff | Terminal | None
    body: Any = None
    query: Any = None

    @property
    def central(self):
        return self.request.app[CENTRAL]

    @property
    def staff(self) -> Staff:
        assert isinstance(self.principal, Staff)
        return self.principal

    @property
    def terminal(self) -> Terminal:
        assert isinstance(self.principal, Terminal)
        return self.principal

    @property
    def remote(self) -> str | None:
        return self.request.remote


def route(method: str, path: str, *, summary: str, tag: str, auth: str, roles: tuple[str, ...] = (),
          body: type[BaseModel] | None = None, query: type[BaseModel] | None = None, produces: str = JSON,
          consumes: str = JSON, audit_action: bool | None = None, responses: dict[int, str] | None = None):
    """Declare an HTTP operation. Staff writes are audited unless ``audit_action`` says otherwise."""

    def register(fn):
        audited = audit_action if audit_action is not None else (auth == "staff" and method != "GET")
        ROUTES.append(RouteSpec(method, path, fn, summary, tag, auth, roles, body, query, produces, consumes,
                                audited, responses or {}))
        return fn

    return register


# -- errors -------------------------------------------------------------------------------------


class BadRequest(DomainError):
    """The request itself is malformed (not JSON, not UTF-8...)."""

    code = "bad_request"


_STATUS = {BadRequest: 400, AuthError: 401, Forbidden: 403, EcodeRejected: 403, NotFound: 404, IdempotencyConflict: 409,
           IllegalTransition: 409, EcodeLocked: 423}


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    body = {"error": {"code": code, "message": message, **extra}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)


def error_middleware_for(statuses: dict[type[DomainError], int]):
    """A middleware under which every failure leaves as ``{"error": {"code", "message"}}`` with a
    fitting status: ``statuses`` maps domain errors to theirs (first match wins), others are 422."""

    def status_for(exc: DomainError) -> int:
        return next((status for kind, status in statuses.items() if isinstance(exc, kind)), 422)

    @web.middleware
    async def error_middleware(request: web.Request, handler):
        try:
            return await handler(request)
        except DomainError as exc:
            return error_response(status_for(exc), exc.code, exc.message)
        except ValidationError as exc:
            bad_json = next((e for e in exc.errors() if e["type"] == "json_invalid"), None)
            if bad_json is not None:
                return error_response(400, "invalid_json", f"body is not valid JSON: {bad_json['msg']}")
            details = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()]
            first = details[0] if details else {"field": "", "problem": "invalid"}
            return error_response(422, "invalid_request", f"{first['field']}: {first['problem']}", details=details)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status,
                                                                                               "http_error")
            return error_response(exc.status, code, exc.reason)
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("unhandled error incident=%s method=%s path=%s", incident, request.method, request.path)
            return error_response(500, "internal_error", f"internal error (incident {incident})")

    return error_middleware


error_middleware = error_middleware_for(_STATUS)


# -- authentication and input -------------------------------------------------------------------


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("send Authorization: Bearer <token>")
    return token.strip()


async def _authenticate(request: web.Request, spec: RouteSpec) -> Staff | Terminal | None:
    central = request.app[CENTRAL]
    if spec.auth == "public":
        return None
    token = _bearer(request)
    if spec.auth == "staff":
        return await central.admin.staff_for(token)
    terminal = await central.admin.terminal_for(token)
    if terminal.kind != spec.auth:
        raise Forbidden(f"a {terminal.kind} terminal may not call this operation")
    return terminal


async def csv_upload(request: web.Request) -> tuple[str, str]:
    """An uploaded CSV file's text (UTF-8, with or without a BOM) and its name (``X-Filename``)."""
    raw = await request.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("CSV must be UTF-8", code="invalid_csv") from None
    return text, request.headers.get("X-Filename", "upload.csv")[:200]


async def _json_body(request: web.Request) -> Any:
    if not request.can_read_body:
        raise BadRequest("a JSON body is required", code="invalid_json")
    try:
        return json.loads(await request.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}", code="invalid_json") from None


async def _model_from_json(request: web.Request, model: type[BaseModel]) -> BaseModel:
    if not request.can_read_body:
        raise BadRequest("a JSON body is required", code="invalid_json")
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        bad_json = next((e for e in exc.errors() if e["type"] == "json_invalid"), None)
        if bad_json is not None:
            raise BadRequest(f"body is not valid JSON: {bad_json['msg']}", code="invalid_json") from None
        raise


def _query(request: web.Request, model: type[BaseModel]) -> BaseModel:
    data: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        multi = model.model_fields.get(key)
        is_list = multi is not None and "list" in str(multi.annotation).lower()
        data[key] = [v for raw in values for v in raw.split(",") if v] if is_list else values[-1]
    return model.model_validate(data)


_SECRET_FIELDS = {"password", "ecode", "token", "pin", "pin_block"}


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("***" if k in _SECRET_FIELDS else _redacted(v)) for k, v in value.items()}
    return value


def _wrap(spec: RouteSpec):
    async def handle(request: web.Request) -> web.StreamResponse:
        principal = await _authenticate(request, spec)
        call = Call(request, principal)
        raw_body = None
        try:
            if isinstance(principal, Staff) and spec.roles and principal.role not in spec.roles:
                raise Forbidden(f"role {principal.role} may not {spec.summary[0].lower()}{spec.summary[1:]}")
            if spec.body is not None and spec.audit:  # the audit keeps the body as sent
                raw_body = await _json_body(request)
                call.body = spec.body.model_validate(raw_body)
            elif spec.body is not None:  # parse and validate in one pass (pydantic-core)
                call.body = await _model_from_json(request, spec.body)
            if spec.query is not None:
                call.query = _query(request, spec.query)
            response = await spec.handler(call)
        except Exception as exc:
            if spec.audit and isinstance(principal, Staff):
                await _audit(request, principal, spec, raw_body, getattr(exc, "code", "error"))
            raise
        if spec.audit and isinstance(principal, Staff):
            await _audit(request, principal, spec, raw_body, "ok")
        if isinstance(response, web.StreamResponse):
            return response
        return web.json_response(response)

    handle.__name__ = spec.handler.__name__
    return handle


async def _audit(request: web.Request, staff: Staff, spec: RouteSpec, body: Any, outcome: str) -> None:
    details = {"outcome": outcome, "method": request.method, "path": request.path}
    if isinstance(body, dict):
        details["body"] = _redacted(body)
    async with request.app[CENTRAL].db.begin() as conn:
        await audit(conn, staff.username, spec.handler.__name__, request.path, details, request.remote)


def add_routes(app: web.Application) -> None:
    for spec in ROUTES:
        app.router.add_route(spec.method, spec.path, _wrap(spec), name=spec.handler.__name__)

"""Health, version and the OpenAPI document."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from .routing import CSV, JSON, ROUTES, Call, route

VERSION = "0.1.0"
_ERROR = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"],
                             "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}},
}
_ERRORS = {400: "malformed request", 401: "missing or bad credentials", 403: "not allowed for this caller",
           404: "no such thing", 409: "conflict (reused id, illegal transition)", 422: "invalid input"}


@route("GET", "/health", summary="Liveness and database health", tag="system", auth="public")
async def health(call: Call):
    async with call.central.db.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))
    group = call.central.group
    return {"status": "ok", "database": "ok", "version": VERSION,
            "backend": "sqlite" if call.central.db.sqlite else "postgresql",
            "group_commit": {"batches": group.batches, "operations": group.grouped}}


@route("GET", "/openapi.json", summary="This API's OpenAPI 3.1 document", tag="system", auth="public")
async def openapi(call: Call):
    return build_openapi()


def openapi_path(path: str) -> str:
    """``/cards/{number:\\d{8,19}}`` -> ``/cards/{number}`` (patterns may nest braces)."""
    out, depth = [], 0
    i = 0
    while i < len(path):
        ch = path[i]
        if depth == 0 and ch == "{":
            match = re.match(r"\{(\w+)", path[i:])
            out.append("{" + match.group(1) + "}")
            i += match.end()
            depth = 1
            continue
        if depth:
            depth += {"{": 1, "}": -1}.get(ch, 0)
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _raw(media_type: str) -> dict[str, str]:
    """A body that is not JSON: text (CSV) or bytes (msgpack)."""
    return {"type": "string"} if media_type == CSV else {"type": "string", "format": "binary"}


def build_openapi() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    components: dict[str, Any] = {"Error": _ERROR}
    for spec in ROUTES:
        path = openapi_path(spec.path)
        op: dict[str, Any] = {"operationId": spec.handler.__name__, "summary": spec.summary, "tags": [spec.tag]}
        if spec.auth != "public":
            op["security"] = [{spec.auth: []}]
            if spec.roles:
                op["description"] = f"Roles: {', '.join(spec.roles)}."
        params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                  for n in re.findall(r"\{(\w+)", path)]
        if spec.query is not None:
            schema = spec.query.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            for name, prop in schema.get("properties", {}).items():
                params.append({"name": name, "in": "query", "required": name in schema.get("required", []),
                               "schema": prop})
        if params:
            op["parameters"] = params
        if spec.body is not None:
            schema = spec.body.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[spec.body.__name__] = schema
            op["requestBody"] = {"required": True, "content": {
                JSON: {"schema": {"$ref": f"#/components/schemas/{spec.body.__name__}"}}}}
        elif spec.consumes != JSON:
            op["requestBody"] = {"required": True, "content": {spec.consumes: {"schema": _raw(spec.consumes)}}}
        ok = {"description": spec.responses.get(200, "success"),
              "content": {spec.produces: {"schema": {} if spec.produces == JSON else _raw(spec.produces)}}}
        responses: dict[str, Any] = {"200": ok}
        for status, text in {**_ERRORS, **{k: v for k, v in spec.responses.items() if k != 200}}.items():
            if status == 401 and spec.auth == "public" and status not in spec.responses:
                continue
            responses[str(status)] = {"description": text, "content": {JSON: {
                "schema": {"$ref": "#/components/schemas/Error"}}}} if status >= 400 else {"description": text}
        op["responses"] = responses
        paths.setdefault(path, {})[spec.method.lower()] = op
    bearer = {"type": "http", "scheme": "bearer"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tessera central server", "version": VERSION,
                 "description": "Gift-card and stored-value authorization, administration and web service. "
                                "Amounts are integers in minor units. Errors: {\"error\": {\"code\", \"message\"}}."},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {
            "staff": {**bearer, "description": "token from POST /api/v1/auth/login"},
            "till": {**bearer, "description": "a till's token (admin: register a terminal of kind till)"},
            "web": {**bearer, "description": "a website client's token (terminal of kind web)"}}},
    }

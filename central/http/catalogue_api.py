"""The admin API of the product catalogue: CSV imports, a product by its code, the catalogue in pages."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..services.catalogue import CatalogueRejected, CatalogueService
from .admin import OPERATE, READ
from .routing import CSV, Call, csv_upload, error_response, route


class CatalogueImportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["upsert", "replace"] = Field(
        "upsert", description="replace: products the file does not name are withdrawn (made inactive)")
    partial: bool = Field(False, description="1: import the valid lines and report the others; 0: all or nothing")
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = Field(
        None, description="currency of lines that name none")


class CatalogueListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    after: Annotated[str, Field(max_length=48, description="the previous page's next")] = ""
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


def _service(call: Call) -> CatalogueService:
    return CatalogueService(call.central.db)


@route("POST", "/api/v1/admin/catalogue/import",
       summary="Import products from a CSV (code,name,price[,member_price,currency,unit,group,active])",
       tag="catalogue", auth="staff", roles=OPERATE, query=CatalogueImportQuery, consumes=CSV,
       responses={200: "imported: counts, the new catalogue version and (partial) the refused lines",
                  422: "invalid_catalogue: nothing imported; error.lines lists line, column, code and message"})
async def import_catalogue(call: Call):
    text, source = await csv_upload(call.request)
    q = call.query
    try:
        return await _service(call).import_csv(text, actor=call.staff.username, mode=q.mode, partial=q.partial,
                                               default_currency=q.currency, source=source, remote=call.remote)
    except CatalogueRejected as exc:  # the error body carries the per-line report
        return error_response(422, exc.code, exc.message, lines=exc.lines)


@route("GET", "/api/v1/admin/catalogue/products/{code:.+}",
       summary="A product by its code (any spelling: a UPC-A finds its EAN-13), active or withdrawn",
       tag="catalogue", auth="staff", roles=READ)
async def catalogue_product(call: Call):
    async with call.central.db.connect() as conn:
        return await _service(call).product(conn, call.request.match_info["code"])


@route("GET", "/api/v1/admin/catalogue", summary="The catalogue in pages by product key, with its version",
       tag="catalogue", auth="staff", roles=READ, query=CatalogueListQuery)
async def catalogue_list(call: Call):
    async with call.central.db.connect() as conn:
        return await _service(call).products(conn, after=call.query.after, limit=call.query.limit)

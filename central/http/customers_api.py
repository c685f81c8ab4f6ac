"""Loyalty customers over HTTP: staff manage them (admin API), websites and tills register them.

Creations are idempotent by the client's ``request_id``. Staff changes are audited by the service with
their before and after (and a refused change with its error code), rather than by the route, whose
audit would keep the request's personal data a second time.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from datetime import date
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from core import DomainError
from core.loyalty.customers import PROFILE_FIELDS, CardAlreadyBound, DuplicateCustomer, InvalidProfile

from ..services import Origin, audit
from ..services.customers import ConsentAnswer, CustomerQuery, CustomerService, CustomersRejected
from .admin import OPERATE, READ
from .routing import CSV, Call, csv_upload, error_response, route

Text = Annotated[str, Field(max_length=100)]
CardNumber = Annotated[str, Field(pattern=r"^\d{8,19}$", description="the card number, digits only")]
_ID = "{customer_id:\\d+}"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AddressBody(Model):
    lines: list[Text] = Field(default_factory=list, max_length=4)
    postcode: Annotated[str, Field(max_length=16)] | None = None
    city: Text | None = None
    country: Annotated[str, Field(min_length=2, max_length=2)] | None = Field(None, description="ISO 3166-1 alpha-2")


class ConsentBody(Model):
    channel: Literal["mail", "sms", "email"]
    granted: bool = Field(description="true: the customer agrees to be contacted this way; false: withdrawn")
    at: AwareDatetime | None = Field(None, description="when the customer gave it (default: now)")


_PROFILE_DOC = {
    "external_id": "the customer's id in an earlier system",
    "phone": "mobile number in international form (+ and 8 to 15 digits; spaces and dashes are dropped)",
    "email": "unique among active customers, whatever its case",
    "social": "network -> the customer's id there",
    "groups": "customer group codes",
}


class ProfileBody(Model):
    external_id: Annotated[str, Field(max_length=64, description=_PROFILE_DOC["external_id"])] | None = None
    first_name: Text | None = None
    last_name: Text | None = None
    gender: Literal["female", "male", "other", "unspecified"] = "unspecified"
    birth_date: date | None = None
    address: AddressBody | None = None
    phone: Annotated[str, Field(max_length=32, description=_PROFILE_DOC["phone"])] | None = None
    email: Annotated[str, Field(max_length=254, description=_PROFILE_DOC["email"])] | None = None
    social: dict[Annotated[str, Field(max_length=32)], Annotated[str, Field(max_length=200)]] = Field(
        default_factory=dict, max_length=20, description=_PROFILE_DOC["social"])
    groups: list[Annotated[str, Field(max_length=32)]] = Field(default_factory=list, max_length=50,
                                                               description=_PROFILE_DOC["groups"])


class RegistrationBody(ProfileBody):
    request_id: uuid.UUID = Field(description="client-generated id (UUID); a repeat returns the first result")
    consents: list[ConsentBody] = Field(default_factory=list, max_length=3)


class WebRegistrationBody(RegistrationBody):
    """A website's registration (or a paper form typed in): consents are recorded with source web."""


class CardRegistrationBody(RegistrationBody):
    card_number: CardNumber | None = Field(None, description="an anonymous card to bind in the same transaction")


class CustomerPatchBody(Model):
    """Only the fields sent change; null clears one. address, social and groups are replaced whole."""

    external_id: Annotated[str, Field(max_length=64)] | None = None
    first_name: Text | None = None
    last_name: Text | None = None
    gender: Literal["female", "male", "other", "unspecified"] | None = None
    birth_date: date | None = None
    address: AddressBody | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None
    email: Annotated[str, Field(max_length=254)] | None = None
    social: dict[Annotated[str, Field(max_length=32)], Annotated[str, Field(max_length=200)]] | None = Field(
        None, max_length=20)
    groups: list[Annotated[str, Field(max_length=32)]] | None = Field(None, max_length=50)
    consents: list[ConsentBody] = Field(default_factory=list, max_length=3,
                                        description="recorded with source staff when they change a channel")
    active: bool | None = Field(None, description="false: deactivate (frees the phone and e-mail)")


class CardBindBody(Model):
    card_number: CardNumber


class CardUnbindBody(Model):
    reason: Annotated[str, Field(min_length=1, max_length=200)]


class CustomerSearch(Model):
    phone: Annotated[str, Field(max_length=32)] | None = None
    email: Annotated[str, Field(max_length=254)] | None = None
    name: Annotated[str, Field(max_length=100, description="words that start the first or last name")] | None = None
    card: CardNumber | None = None
    external_id: Annotated[str, Field(max_length=64)] | None = None
    group: Annotated[str, Field(max_length=32)] | None = None
    active: bool | None = None
    after_id: Annotated[int, Field(ge=0, description="the previous page's next")] = 0
    limit: Annotated[int, Field(ge=1, le=200)] = 50


class CustomerImportQuery(Model):
    partial: bool = Field(False, description="1: import the valid lines and report the others; 0: all or nothing")


_CONFLICTS = {409: "duplicate_customer (error.field names phone, email or external_id), card_already_bound, or "
                   "request_id reused for another request (idempotency_conflict)",
              422: "invalid_profile: error.problems lists field, code and message"}
_REGISTERED = {200: "the customer (a repeat of request_id: the first result, with header Idempotent-Replay)",
               **_CONFLICTS, 404: "no such card (card_number)"}


def _service(call: Call) -> CustomerService:
    return CustomerService(call.central.db, on_bound=call.central.loyalty.on_card_bound)


def _customer_id(call: Call) -> int:
    return int(call.request.match_info["customer_id"])


def _consents(body: Any) -> list[ConsentAnswer]:
    return [ConsentAnswer(c.channel, c.granted, c.at) for c in body.consents]


def _profile(body: Any, fields: set[str] | None = None) -> dict[str, Any]:
    return body.model_dump(include=(set(PROFILE_FIELDS) if fields is None else fields) & set(PROFILE_FIELDS))


def _error(exc: DomainError) -> web.Response | None:
    """The customer errors whose answer carries more than code and message; None: the middleware's."""
    if isinstance(exc, DuplicateCustomer):
        return error_response(409, exc.code, exc.message, field=exc.field)
    if isinstance(exc, CardAlreadyBound):
        return error_response(409, exc.code, exc.message, field="card_number")
    if isinstance(exc, InvalidProfile):
        return error_response(422, exc.code, exc.message, field=exc.field,
                              problems=[p.as_dict() for p in exc.problems])
    if isinstance(exc, CustomersRejected):
        return error_response(422, exc.code, exc.message, lines=exc.lines)
    return None


async def _answer(call: Call, work: Awaitable[Any], audit_action: str | None = None) -> Any:
    """Run the work; translate customer errors; audit a staff change that was refused."""
    try:
        return await work
    except DomainError as exc:
        if audit_action is not None and not isinstance(exc, CustomersRejected):  # the import audits its own
            path = call.request.path
            async with call.central.db.begin() as conn:
                await audit(conn, call.staff.username, audit_action, path,
                            {"outcome": exc.code, "method": call.request.method, "path": path}, call.remote)
        response = _error(exc)
        if response is None:
            raise
        return response


def _registered(result: tuple[dict[str, Any], bool] | web.Response) -> Any:
    if isinstance(result, web.Response):
        return result
    customer, replayed = result
    return web.json_response(customer, headers={"Idempotent-Replay": "true"} if replayed else None)


# -- staff ---------------------------------------------------------------------------------------

def _staff(call: Call) -> Origin:
    return Origin("admin", actor=call.staff.username)


@route("POST", "/api/v1/admin/customers", summary="Register a customer (consents with source staff)",
       tag="customers", auth="staff", roles=OPERATE, body=CardRegistrationBody, audit_action=False,
       responses=_REGISTERED)
async def customers_create(call: Call):
    b = call.body
    return _registered(await _answer(call, _service(call).create(
        b.request_id, _profile(b), _consents(b), _staff(call), card_number=b.card_number, remote=call.remote),
        "customer_create"))


@route("GET", "/api/v1/admin/customers",
       summary="Search customers by phone, e-mail, name, card, external id or group", tag="customers",
       auth="staff", roles=READ, query=CustomerSearch,
       responses={200: "customers (id order) and next: the after_id of the next page, or null"})
async def customers_search(call: Call):
    q = call.query
    return await _service(call).search(CustomerQuery(q.phone, q.email, q.name, q.card, q.external_id, q.group,
                                                     q.active, q.after_id, q.limit))


@route("GET", f"/api/v1/admin/customers/{_ID}", summary="A customer with current consents and cards",
       tag="customers", auth="staff", roles=READ)
async def customers_get(call: Call):
    return await _service(call).get(_customer_id(call))


@route("PATCH", f"/api/v1/admin/customers/{_ID}",
       summary="Change a customer's profile, consents or active state (audited with before and after)",
       tag="customers", auth="staff", roles=OPERATE, body=CustomerPatchBody, audit_action=False,
       responses=_CONFLICTS)
async def customers_update(call: Call):
    b = call.body
    return await _answer(call, _service(call).update(
        _customer_id(call), _profile(b, b.model_fields_set), _consents(b), _staff(call), active=b.active,
        remote=call.remote), "customer_update")


@route("GET", f"/api/v1/admin/customers/{_ID}/consents",
       summary="A customer's consent history (oldest first) and the current consent per channel",
       tag="customers", auth="staff", roles=READ)
async def customers_consents(call: Call):
    return await _service(call).consent_history(_customer_id(call))


@route("POST", f"/api/v1/admin/customers/{_ID}/cards", summary="Bind an anonymous card to a customer",
       tag="customers", auth="staff", roles=OPERATE, body=CardBindBody, audit_action=False,
       responses={409: "card_already_bound: the card belongs to another customer", 404: "no such customer or card"})
async def customers_card_bind(call: Call):
    return await _answer(call, _service(call).bind_card(_customer_id(call), call.body.card_number, _staff(call),
                                                        remote=call.remote), "customer_card_bind")


@route("POST", f"/api/v1/admin/customers/{_ID}/cards/{{number:\\d{{8,19}}}}/unbind",
       summary="Make a customer's card anonymous again (audited with the reason)", tag="customers", auth="staff",
       roles=OPERATE, body=CardUnbindBody, audit_action=False, responses={404: "the customer has no such card"})
async def customers_card_unbind(call: Call):
    return await _answer(call, _service(call).unbind_card(
        _customer_id(call), call.request.match_info["number"], call.body.reason, _staff(call), remote=call.remote),
        "customer_card_unbind")


@route("POST", "/api/v1/admin/customers/import",
       summary="Import customers from an earlier system's CSV (see docs/customers.md for the columns)",
       tag="customers", auth="staff", roles=OPERATE, query=CustomerImportQuery, consumes=CSV, audit_action=False,
       responses={200: "imported: counts and (partial) the refused lines",
                  422: "invalid_customer_file: nothing imported; error.lines lists line, field, code and message"})
async def customers_import(call: Call):
    text, source = await csv_upload(call.request)
    return await _answer(call, _service(call).import_csv(text, actor=call.staff.username, partial=call.query.partial,
                                                         source=source, remote=call.remote), "customer_import")


# -- websites and tills --------------------------------------------------------------------------

@route("POST", "/api/v1/web/customers", summary="Register a customer from a website or a paper form "
       "(consents with source web)", tag="web", auth="web", body=WebRegistrationBody, responses=_REGISTERED)
async def web_customer_register(call: Call):
    b = call.body
    origin = Origin("web", None, call.terminal.id)
    return _registered(await _answer(call, _service(call).create(b.request_id, _profile(b), _consents(b), origin,
                                                                 remote=call.remote)))


@route("POST", "/api/v1/till/customers", summary="Register a customer at the till, optionally binding the card "
       "handed over (consents with source till)", tag="till", auth="till", body=CardRegistrationBody,
       responses=_REGISTERED)
async def till_customer_register(call: Call):
    b = call.body
    t = call.terminal
    return _registered(await _answer(call, _service(call).create(
        b.request_id, _profile(b), _consents(b), Origin("till", t.store_id, t.id), card_number=b.card_number,
        remote=call.remote)))

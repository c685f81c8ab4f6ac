"""Loyalty customers at central on SQLite and PostgreSQL: registration by staff, websites and tills
(idempotent), uniqueness of phone and e-mail, consent history, cards bound to customers, the audit trail,
CSV imports (all or nothing, or the valid lines), the JSON errors and the migration."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from central.db import sync_url, upgrade
from central.db.migrate import alembic_config
from central.db.tables import metadata
from central.services.customers import CustomerService, CustomersRejected

from ..support import ADMIN_PASSWORD, World

ADMIN = "/api/v1/admin/customers"
WEB = "/api/v1/web/customers"
TILL = "/api/v1/till/customers"
ANNA = {"first_name": "Anna", "last_name": "Smith", "gender": "female", "birth_date": "1985-04-12",
        "address": {"lines": ["1 High Street", "Flat 2"], "postcode": "sw1a 1aa", "city": "London", "country": "gb"},
        "phone": "+44 7700-900 123", "email": "Anna.Smith@Example.COM", "social": {"Instagram": "@anna"},
        "groups": ["VIP", "STAFF"], "external_id": "OLD-1"}
BOB = {"first_name": "Bob", "last_name": "Jones", "phone": "+44 7700 900456", "email": "bob@example.com"}


async def post(w: World, path: str, body: dict, *, expect: int = 200, headers: dict | None = None):
    resp = await w.client.post(path, json=body, headers=w.staff if headers is None else headers)
    data = await resp.json()
    assert resp.status == expect, (resp.status, data)
    return data


async def register(w: World, profile: dict, *, expect: int = 200, path: str = ADMIN, headers: dict | None = None,
                   **extra) -> dict:
    return await post(w, path, {"request_id": str(uuid.uuid4()), **profile, **extra}, expect=expect, headers=headers)


async def patch(w: World, customer_id: int, body: dict, *, expect: int = 200) -> dict:
    return await w.admin("PATCH", f"{ADMIN}/{customer_id}", body, expect=expect)


async def search(w: World, **params) -> list[int]:
    return [c["id"] for c in (await w.admin("GET", ADMIN, **params))["customers"]]


async def audits(w: World, action: str) -> list[dict]:
    return await w.admin("GET", "/api/v1/admin/audit", action=action)


# -- profiles -----------------------------------------------------------------------------------


async def test_staff_register_read_and_search(world):
    anna = await register(world, ANNA)
    assert {k: anna[k] for k in ("first_name", "last_name", "gender", "birth_date", "address", "phone", "email",
                                 "social", "groups", "external_id", "active", "cards")} == {
        "first_name": "Anna", "last_name": "Smith", "gender": "female", "birth_date": "1985-04-12",
        "address": {"lines": ["1 High Street", "Flat 2"], "postcode": "SW1A 1AA", "city": "London", "country": "GB"},
        "phone": "+447700900123", "email": "Anna.Smith@example.com", "social": {"instagram": "@anna"},
        "groups": ["STAFF", "VIP"], "external_id": "OLD-1", "active": True, "cards": []}
    assert anna["consents"] == {"mail": None, "sms": None, "email": None}
    assert anna["registered"]["channel"] == "staff"
    assert await world.admin("GET", f"{ADMIN}/{anna['id']}") == anna
    bob = await register(world, BOB)

    assert await search(world, phone="0044 7700 900123") == [anna["id"]]
    assert await search(world, email="ANNA.SMITH@EXAMPLE.COM") == [anna["id"]]
    assert await search(world, name="smi") == [anna["id"]]
    assert await search(world, name="JONES bob") == [bob["id"]]
    assert await search(world, name="anna jones") == []
    assert await search(world, external_id="OLD-1") == [anna["id"]]
    assert await search(world, group="VIP") == [anna["id"]]
    first = await world.admin("GET", ADMIN, limit=1)
    assert [c["id"] for c in first["customers"]] == [anna["id"]] and first["next"] == anna["id"]
    assert await search(world, after_id=first["next"]) == [bob["id"]]
    assert (await world.admin("GET", ADMIN, phone="12", expect=422))["error"]["code"] == "invalid_input"
    assert (await world.admin("GET", f"{ADMIN}/999999", expect=404))["error"]["code"] == "not_found"


async def test_update_is_audited_with_the_changed_fields(world):
    anna = await register(world, ANNA)
    url = f"{ADMIN}/{anna['id']}"
    updated = await patch(world, anna["id"], {"last_name": "Brown", "phone": "+44 7700 900999", "email": None,
                                              "address": {"lines": ["9 Low Road"], "country": "IE"}})
    assert (updated["last_name"], updated["phone"], updated["email"]) == ("Brown", "+447700900999", None)
    assert updated["first_name"] == "Anna" and updated["groups"] == ["STAFF", "VIP"]  # fields not sent stay
    assert updated["address"] == {"lines": ["9 Low Road"], "postcode": None, "city": None, "country": "IE"}
    entries = await audits(world, "customer_update")
    assert len(entries) == 1 and entries[0]["actor"] == "root" and entries[0]["target"] == f"customer:{anna['id']}"
    assert entries[0]["details"]["changed"] == {
        "last_name": {"before": "Smith", "after": "Brown"},
        "phone": {"before": "+447700900123", "after": "+447700900999"},
        "email": {"before": "Anna.Smith@example.com", "after": None},
        "address": {"before": {"lines": ["1 High Street", "Flat 2"], "postcode": "SW1A 1AA", "city": "London",
                               "country": "GB"},
                    "after": {"lines": ["9 Low Road"], "postcode": None, "city": None, "country": "IE"}}}
    assert await search(world, name="brown") == [anna["id"]] and await search(world, name="smith") == []

    # The same values again change nothing and record nothing; a bad value changes nothing either.
    await patch(world, anna["id"], {"last_name": "Brown", "phone": "+447700900999"})
    refused = await patch(world, anna["id"], {"phone": "07700 900999", "gender": "male"}, expect=422)
    assert refused["error"]["code"] == "invalid_profile" and refused["error"]["field"] == "phone"
    assert await world.admin("GET", url) == updated
    entries = await audits(world, "customer_update")
    assert [e["details"]["outcome"] for e in entries] == ["invalid_profile", "ok"]
    assert entries[0]["target"] == url  # a refused change is audited with its error

    cleared = await patch(world, anna["id"], {"groups": [], "social": {}, "birth_date": None, "gender": "other"})
    assert (cleared["groups"], cleared["social"], cleared["birth_date"], cleared["gender"]) == ([], {}, None, "other")
    assert await world.count("customer_groups") == 0


async def test_phone_and_email_are_unique_among_active_customers(world):
    anna = await register(world, ANNA)
    for clash, field in (({"phone": "+447700900123"}, "phone"), ({"phone": "0044-7700-900-123"}, "phone"),
                         ({"email": "anna.smith@EXAMPLE.com"}, "email"), ({"email": "ANNA.SMITH@example.com"}, "email"),
                         ({"external_id": "OLD-1"}, "external_id")):
        error = (await register(world, {**BOB, **clash}, expect=409))["error"]
        assert (error["code"], error["field"]) == ("duplicate_customer", field), clash
    assert await world.count("customers") == 1
    bob = await register(world, BOB)
    assert (await patch(world, bob["id"], {"email": "anna.smith@example.com"}, expect=409))["error"]["field"] == "email"
    assert (await patch(world, bob["id"], {"phone": "+44 7700 900 123"}, expect=409))["error"]["field"] == "phone"

    # A deactivated customer frees their phone and e-mail (not their external id) ...
    await patch(world, anna["id"], {"active": False})
    carol = await register(world, {"first_name": "Carol", "phone": ANNA["phone"], "email": ANNA["email"]})
    assert carol["phone"] == "+447700900123"
    assert (await register(world, {"first_name": "Dan", "external_id": "OLD-1"}, expect=409))["error"]["field"] == \
        "external_id"
    # ... and cannot come back while another active customer has them.
    assert (await patch(world, anna["id"], {"active": True}, expect=409))["error"]["field"] == "phone"
    await patch(world, carol["id"], {"active": False})
    assert (await patch(world, anna["id"], {"active": True}))["active"] is True
    changed = (await audits(world, "customer_update"))[0]["details"]["changed"]
    assert changed == {"active": {"before": False, "after": True}}
    assert await search(world, phone=ANNA["phone"], active="true") == [anna["id"]]


async def test_the_unique_indexes_stand_behind_the_checks(world, monkeypatch):
    # Two registrations racing both pass the service's check; the indexes refuse the second.
    await register(world, ANNA)

    async def unchecked(*args, **kwargs) -> None:
        return None

    monkeypatch.setattr(CustomerService, "_check_unique", staticmethod(unchecked))
    for clash, field in (({"phone": "+447700900123"}, "phone"), ({"email": "ANNA.smith@example.com"}, "email"),
                         ({"external_id": "OLD-1"}, "external_id")):
        error = (await register(world, {**BOB, **clash}, expect=409))["error"]
        assert (error["code"], error["field"]) == ("duplicate_customer", field)
    bob = await register(world, BOB)
    assert (await patch(world, bob["id"], {"phone": ANNA["phone"]}, expect=409))["error"]["field"] == "phone"
    assert await world.count("customers") == 2


async def test_invalid_profiles_are_refused_with_every_problem(world):
    error = (await register(world, {"phone": "12345", "email": "anna@", "address": {"country": "XX"},
                                    "birth_date": "2999-01-01", "groups": ["no spaces"]}, expect=422))["error"]
    assert error["code"] == "invalid_profile"
    assert sorted((p["field"], p["code"]) for p in error["problems"]) == [
        ("address.country", "invalid_country"), ("birth_date", "birth_date_in_future"), ("email", "invalid_email"),
        ("groups", "invalid_group"), ("phone", "invalid_phone")]
    assert (await register(world, {"gender": "female"}, expect=422))["error"]["problems"][0]["code"] == \
        "profile_empty"
    malformed = (await register(world, {**BOB, "nickname": "b"}, expect=422))["error"]
    assert malformed["code"] == "invalid_request" and "nickname" in malformed["message"]
    assert (await register(world, {**BOB, "gender": "f"}, expect=422))["error"]["code"] == "invalid_request"
    resp = await world.client.post(ADMIN, data=b"{not json", headers={**world.staff,
                                                                       "Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json"
    assert await world.count("customers") == 0


# -- consents -----------------------------------------------------------------------------------


async def test_consent_history_and_current_state(world):
    t0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    anna = await register(world, ANNA, consents=[{"channel": "sms", "granted": True, "at": t0.isoformat()},
                                                 {"channel": "email", "granted": False}])
    assert anna["consents"]["sms"] == {"granted": True, "source": "staff", "at": t0.isoformat()}
    assert anna["consents"]["email"]["granted"] is False and anna["consents"]["mail"] is None
    cid = anna["id"]
    t1 = t0 + timedelta(days=30)
    after = await patch(world, cid, {"consents": [{"channel": "sms", "granted": False, "at": t1.isoformat()},
                                                  {"channel": "mail", "granted": True, "at": t1.isoformat()}]})
    assert (after["consents"]["sms"]["granted"], after["consents"]["mail"]["granted"]) == (False, True)
    # Repeating the current answer is no change: no row, no audit.
    await patch(world, cid, {"consents": [{"channel": "sms", "granted": False}]})
    # A consent given before the current one is refused rather than rewriting history.
    stale = await patch(world, cid, {"consents": [{"channel": "sms", "granted": True, "at": t0.isoformat()}]},
                        expect=422)
    assert (stale["error"]["field"], stale["error"]["problems"][0]["code"]) == ("consents.sms", "consent_outdated")
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    refused = await patch(world, cid, {"consents": [{"channel": "mail", "granted": False, "at": future}]}, expect=422)
    assert refused["error"]["problems"][0]["code"] == "consent_in_future"
    twice = await patch(world, cid, {"consents": [{"channel": "mail", "granted": False},
                                                  {"channel": "mail", "granted": True}]}, expect=422)
    assert twice["error"]["problems"][0]["code"] == "duplicate_channel"

    history = await world.admin("GET", f"{ADMIN}/{cid}/consents")
    assert [(h["channel"], h["granted"], h["source"], h["actor"]) for h in history["history"]] == [
        ("sms", True, "staff", "root"), ("email", False, "staff", "root"), ("sms", False, "staff", "root"),
        ("mail", True, "staff", "root")]
    assert {ch: c["granted"] for ch, c in history["current"].items()} == {"mail": True, "sms": False, "email": False}
    assert history["current"]["sms"]["at"] == t1.isoformat()
    assert await world.count("customer_consents") == 4
    entry = (await audits(world, "customer_update"))
    assert [e["details"]["outcome"] for e in entry] == ["invalid_profile"] * 3 + ["ok"]
    assert entry[-1]["details"]["changed"] == {} and len(entry[-1]["details"]["consents"]) == 2
    assert (await world.admin("GET", f"{ADMIN}/424242/consents", expect=404))["error"]["code"] == "not_found"


# -- cards --------------------------------------------------------------------------------------


async def test_an_anonymous_card_is_bound_once(world):
    anna, bob = await register(world, ANNA), await register(world, BOB)
    card = world.spare["GIFT"][0]
    bound = await post(world, f"{ADMIN}/{anna['id']}/cards", {"card_number": card})
    assert bound["cards"] == [card]
    assert await search(world, card=card) == [anna["id"]]
    again = await post(world, f"{ADMIN}/{anna['id']}/cards", {"card_number": card})  # hers already: no change
    assert again == bound
    refused = (await post(world, f"{ADMIN}/{bob['id']}/cards", {"card_number": card}, expect=409))["error"]
    assert (refused["code"], refused["field"]) == ("card_already_bound", "card_number")
    assert (await world.admin("GET", f"{ADMIN}/{bob['id']}"))["cards"] == []
    unknown = await post(world, f"{ADMIN}/{anna['id']}/cards", {"card_number": "6034999999999999"}, expect=404)
    assert unknown["error"]["code"] == "not_found"
    binds = await audits(world, "customer_card_bind")
    assert [(e["details"]["outcome"], e["actor"]) for e in binds] == [
        ("not_found", "root"), ("card_already_bound", "root"), ("ok", "root")]
    assert binds[-1]["details"]["card"] == card

    # Staff may make it anonymous again (audited with the reason); then it can go to someone else.
    unbind = f"{ADMIN}/{anna['id']}/cards/{card}/unbind"
    assert (await post(world, unbind, {"reason": "bound by mistake"}))["cards"] == []
    assert (await post(world, unbind, {"reason": "again"}, expect=404))["error"]["code"] == "not_found"
    entries = await audits(world, "customer_card_unbind")
    assert [(e["details"]["outcome"], e["details"].get("reason")) for e in entries] == [
        ("not_found", None), ("ok", "bound by mistake")]
    assert (await post(world, f"{ADMIN}/{bob['id']}/cards", {"card_number": card}))["cards"] == [card]
    # A customer gets their card at registration too; an inactive customer gets none.
    carol = await register(world, {"first_name": "Carol"}, card_number=world.spare["GIFT"][1])
    assert carol["cards"] == [world.spare["GIFT"][1]]
    await patch(world, carol["id"], {"active": False})
    inactive = await post(world, f"{ADMIN}/{carol['id']}/cards", {"card_number": world.spare["GIFT"][2]}, expect=409)
    assert inactive["error"]["code"] == "illegal_transition"


# -- websites and tills --------------------------------------------------------------------------


async def test_web_registration(world):
    anna = await register(world, ANNA, path=WEB, headers=world.web,
                          consents=[{"channel": "email", "granted": True}])
    assert anna["registered"] == {**anna["registered"], "channel": "web", "store_id": None}
    assert anna["consents"]["email"]["source"] == "web"
    history = await world.admin("GET", f"{ADMIN}/{anna['id']}/consents")
    assert history["history"][0]["actor"] == "web:site"
    created = await audits(world, "customer_create")
    assert (created[0]["actor"], created[0]["target"]) == ("web:site", f"customer:{anna['id']}")
    assert created[0]["details"]["profile"]["email"] == "Anna.Smith@example.com"
    # A website cannot bind cards, and clashes are reported like anywhere else.
    assert (await register(world, BOB, path=WEB, headers=world.web, card_number=world.spare["GIFT"][0],
                           expect=422))["error"]["code"] == "invalid_request"
    clash = await register(world, {**BOB, "email": "anna.smith@example.com"}, path=WEB, headers=world.web, expect=409)
    assert clash["error"]["field"] == "email"


async def test_till_registration_binds_the_card_in_the_same_transaction(world):
    card, taken = world.stock["GIFT"][0], world.stock["GIFT"][1]
    anna = await register(world, ANNA, path=TILL, headers=world.tills["S1"], card_number=card,
                          consents=[{"channel": "sms", "granted": True}])
    assert anna["cards"] == [card] and anna["consents"]["sms"]["source"] == "till"
    s1 = (await world.admin("GET", "/api/v1/admin/stores"))[0]
    assert anna["registered"] == {**anna["registered"], "channel": "till", "store_id": s1["id"]}
    assert (await audits(world, "customer_create"))[0]["actor"] == "till:S1/T1"

    await register(world, {"first_name": "Owner"}, card_number=taken)
    refused = await register(world, BOB, path=TILL, headers=world.tills["S2"], card_number=taken, expect=409)
    assert refused["error"]["code"] == "card_already_bound"
    missing = await register(world, BOB, path=TILL, headers=world.tills["S2"], card_number="6034000000000000",
                             expect=404)
    assert missing["error"]["code"] == "not_found"
    assert await search(world, phone=BOB["phone"]) == []  # nothing of a refused registration stays
    assert await world.count("customer_requests") == 2


async def test_who_may_call_what(world):
    for path, headers in ((ADMIN, world.web), (ADMIN, {}), (WEB, {}), (TILL, world.staff), (WEB, {
            "Authorization": "Bearer nope"})):
        error = (await register(world, BOB, path=path, headers=headers, expect=401))["error"]
        assert error["code"] == "unauthorized", path
    for path, headers in ((WEB, world.tills["S1"]), (TILL, world.web)):
        assert (await register(world, BOB, path=path, headers=headers, expect=403))["error"]["code"] == "forbidden"
    async with world.central.db.begin() as conn:
        await world.central.admin.create_user(conn, "eve", ADMIN_PASSWORD, "auditor")
    auditor = await world.login("eve", ADMIN_PASSWORD)
    assert (await register(world, BOB, headers=auditor, expect=403))["error"]["code"] == "forbidden"
    anna = await register(world, ANNA)
    assert (await world.admin("GET", f"{ADMIN}/{anna['id']}", headers=auditor))["id"] == anna["id"]  # may read
    for method, path in (("PATCH", f"{ADMIN}/{anna['id']}"), ("POST", f"{ADMIN}/{anna['id']}/cards")):
        resp = await world.client.request(method, path, json={}, headers=auditor)
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
    assert (await world.client.get(ADMIN)).status == 401
    assert await world.count("customers") == 1


# -- idempotency ----------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["admin", "web", "till"])
async def test_creation_is_idempotent_by_request_id(world, channel):
    path, headers = {"admin": (ADMIN, world.staff), "web": (WEB, world.web),
                     "till": (TILL, world.tills["S1"])}[channel]
    body = {"request_id": str(uuid.uuid4()), **BOB, "consents": [{"channel": "sms", "granted": True}]}
    first = await world.client.post(path, json=body, headers=headers)
    again = await world.client.post(path, json=body, headers=headers)
    assert first.status == again.status == 200
    assert "Idempotent-Replay" not in first.headers and again.headers["Idempotent-Replay"] == "true"
    assert await again.json() == await first.json()
    other = await post(world, path, {**body, "first_name": "Robert"}, headers=headers, expect=409)
    assert other["error"]["code"] == "idempotency_conflict"
    assert await world.count("customers") == 1 and await world.count("customer_consents") == 1
    assert len(await audits(world, "customer_create")) == (2 if channel == "admin" else 1)  # staff: refusal too


async def test_the_same_request_id_from_another_channel_is_another_request(world):
    body = {"request_id": str(uuid.uuid4()), **BOB}
    await post(world, WEB, body, headers=world.web)
    assert (await post(world, TILL, body, headers=world.tills["S1"], expect=409))["error"]["code"] == \
        "idempotency_conflict"


# -- CSV import ---------------------------------------------------------------------------------

IMPORT = f"{ADMIN}/import"
HEADER = ("external_id,first_name,last_name,gender,birth_date,phone,email,address_line1,postcode,city,country,"
          "groups,consent_mail,consent_mail_date,consent_sms,consent_sms_date,card_number\n")


async def upload(w: World, text: str, *, expect: int = 200, headers: dict | None = None, **params) -> dict:
    resp = await w.client.post(IMPORT, data=text.encode(), params={k: str(v) for k, v in params.items()},
                               headers={"Content-Type": "text/csv", **(w.staff if headers is None else headers)})
    body = await resp.json()
    assert resp.status == expect, (resp.status, body)
    return body


def import_file(w: World) -> str:
    spare = w.spare["GIFT"]
    return HEADER + (
        f"C-1,Anna,Smith,F,1985-04-12,+44 7700 900123,anna@example.com,1 High St,SW1A 1AA,London,GB,VIP;GOLD,"
        f"1,2019-05-01,0,2020-01-02,{spare[0]}\n"
        "C-2,Bob,Jones,m,,+447700900456,,,,,,,,,1,,\n"
        "C-3,Carl,Bad,x,31/12/1980,12345,,,,,XX,,2,,,,\n"           # line 4: several problems
        "C-4,Dora,Dup,,,+44 7700 900 123,,,,,,,,,,,\n"              # line 5: Anna's phone again
        "C-5,Eve,Known,,,,known@example.com,,,,,,,,,,\n"           # line 6: an existing customer's e-mail
        f"C-6,Finn,Card,,,,,,,,,,,,,,{spare[1]}\n"                 # line 7: a card bound already
        "C-7,Gus,NoCard,,,,,,,,,,,,,,6034000000000000\n"          # line 8: no such card
        "C-1,Hal,Again,,,,,,,,,,,,,,\n")                           # line 9: C-1 again


async def test_import_all_or_nothing_then_partial(world):
    await register(world, {"first_name": "Known", "email": "KNOWN@example.com"}, card_number=world.spare["GIFT"][1])
    text = import_file(world)
    refused = (await upload(world, text, expect=422))["error"]
    assert refused["code"] == "invalid_customer_file" and "6 lines of 8 refused" in refused["message"]
    assert [(e["line"], e["field"], e["code"]) for e in refused["lines"]] == [
        (4, "gender", "invalid_gender"), (4, "birth_date", "invalid_birth_date"), (4, "country", "invalid_country"),
        (4, "phone", "invalid_phone"), (4, "consent_mail", "invalid_consent"),
        (5, "phone", "duplicate_in_file"),
        (6, "email", "duplicate_customer"),
        (7, "card_number", "card_already_bound"),
        (8, "card_number", "unknown_card"),
        (9, "external_id", "duplicate_in_file")]
    assert await world.count("customers") == 1 and await world.count("customer_consents") == 0

    report = await upload(world, text, partial=1)
    assert {k: report[k] for k in ("rows", "imported", "invalid_lines", "cards_bound", "consents", "partial")} == {
        "rows": 8, "imported": 2, "invalid_lines": 6, "cards_bound": 1, "consents": 3, "partial": True}
    assert [e["line"] for e in report["lines"]] == [4, 4, 4, 4, 4, 5, 6, 7, 8, 9]
    anna = (await world.admin("GET", ADMIN, external_id="C-1"))["customers"][0]
    assert (anna["gender"], anna["phone"], anna["groups"], anna["cards"]) == (
        "female", "+447700900123", ["GOLD", "VIP"], [world.spare["GIFT"][0]])
    assert anna["registered"]["channel"] == "import"
    assert anna["consents"]["mail"] == {"granted": True, "source": "import", "at": "2019-05-01T00:00:00+00:00"}
    assert anna["consents"]["sms"]["granted"] is False and anna["consents"]["email"] is None
    bob = (await world.admin("GET", ADMIN, external_id="C-2"))["customers"][0]
    assert bob["consents"]["sms"]["granted"] is True and bob["gender"] == "male"

    # Importing the same file again: every line is known now (or was refused before).
    again = await upload(world, text, partial=1)
    assert again["imported"] == 0 and {e["line"] for e in again["lines"]} >= {2, 3}
    entries = await audits(world, "customer_import")
    assert [(e["details"]["outcome"], e["details"].get("imported")) for e in entries] == [
        ("ok", 0), ("ok", 2), ("invalid_customer_file", None)]
    assert entries[1]["target"] == "customers:upload.csv" and entries[1]["actor"] == "root"


async def test_unreadable_files_and_bad_uploads(world):
    for text in ("", "id,name\n1,x\n", 'external_id,first_name\n"C-1,Anna\n', "first_name,first_name\na,b\n"):
        error = (await upload(world, text, expect=422, partial=1))["error"]
        assert error["code"] == "invalid_customer_file" and error["lines"], text
    resp = await world.client.post(IMPORT, data=b"first_name\n\xff\n", headers={**world.staff,
                                                                                "Content-Type": "text/csv"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_csv"
    assert (await upload(world, "first_name\nA\n", partial="maybe", expect=422))["error"]["code"] == "invalid_request"
    async with world.central.db.begin() as conn:
        await world.central.admin.create_user(conn, "eve", ADMIN_PASSWORD, "auditor")
    auditor = await world.login("eve", ADMIN_PASSWORD)
    assert (await upload(world, "first_name\nA\n", expect=403, headers=auditor))["error"]["code"] == "forbidden"
    assert (await upload(world, "first_name\nA\n", expect=401, headers={}))["error"]["code"] == "unauthorized"
    assert (await upload(world, "first_name\nA\n"))["imported"] == 1


async def test_a_large_import_is_written_in_sets(world, caplog):
    n = 12_000
    lines = [f"X-{i},First{i},Last{i},,,+4470{i:08d},p{i}@example.com,,,,,,1,2020-01-01,,,\n" for i in range(n)]
    rows = "".join(lines)
    await register(world, {"first_name": "Before"})
    service = CustomerService(world.central.db, progress_every=5000)
    seen = []
    started = time.perf_counter()
    with caplog.at_level("INFO", logger="tessera.customers"):
        report = await service.import_csv(HEADER + rows, actor="cli", source="legacy.csv",
                                          progress=lambda done, total: seen.append((done, total)))
    elapsed = time.perf_counter() - started
    assert (report["imported"], report["consents"], report["invalid_lines"]) == (n, n, 0)
    assert seen == [(5000, n), (10000, n), (12000, n)]
    assert "customer import progress written=10000 of=12000" in caplog.text
    assert elapsed < 60, elapsed
    assert await world.count("customers") == n + 1 and await world.count("customer_consents") == n
    last = (await world.admin("GET", ADMIN, external_id=f"X-{n - 1}"))["customers"][0]
    assert (last["email"], last["consents"]["mail"]["granted"]) == (f"p{n - 1}@example.com", True)
    assert report["last_id"] - report["first_id"] == n - 1
    # New customers after an import get fresh ids.
    after = await register(world, {"first_name": "After"})
    assert after["id"] > report["last_id"]
    with pytest.raises(CustomersRejected) as refused:  # the CLI's entry point: every line known now
        await service.import_csv(HEADER + "".join(lines[:200]), actor="cli")
    assert len(refused.value.lines) == 200 * 3  # external id, phone and e-mail of each line


# -- the contract -------------------------------------------------------------------------------


async def test_the_routes_are_in_the_openapi_document(world):
    spec = await (await world.client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths[ADMIN]) == {"get", "post"} and set(paths[f"{ADMIN}/{{customer_id}}"]) == {"get", "patch"}
    for path, method, scheme in ((ADMIN, "post", "staff"), (WEB, "post", "web"), (TILL, "post", "till"),
                                 (IMPORT, "post", "staff"), (f"{ADMIN}/{{customer_id}}/consents", "get", "staff"),
                                 (f"{ADMIN}/{{customer_id}}/cards", "post", "staff"),
                                 (f"{ADMIN}/{{customer_id}}/cards/{{number}}/unbind", "post", "staff")):
        assert paths[path][method]["security"] == [{scheme: []}], path
    assert "text/csv" in paths[IMPORT]["post"]["requestBody"]["content"]
    assert "duplicate_customer" in paths[ADMIN]["post"]["responses"]["409"]["description"]
    schemas = spec["components"]["schemas"]
    assert "request_id" in schemas["CardRegistrationBody"]["required"]
    assert "card_number" not in schemas["WebRegistrationBody"]["properties"]
    assert {p["name"] for p in paths[ADMIN]["get"]["parameters"]} >= {"phone", "email", "name", "card"}


# -- the migration ------------------------------------------------------------------------------


def test_the_migration_goes_down_and_up_again(db_url):
    cfg = alembic_config(db_url)
    engine = sa.create_engine(sync_url(db_url))
    try:
        command.downgrade(cfg, "0004_card_pins")
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            assert "customers" not in inspector.get_table_names()
            assert "customer_id" not in {c["name"] for c in inspector.get_columns("cards")}
        upgrade(db_url)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), metadata) == []
            indexes = {i["name"]: i for i in sa.inspect(conn).get_indexes("customers")}
            assert indexes["uq_customers_phone_active"]["unique"]
    finally:
        engine.dispose()

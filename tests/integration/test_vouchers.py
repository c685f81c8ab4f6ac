"""E-vouchers at central on SQLite and PostgreSQL: issuing (one, a batch; idempotent, the code shown once and
stored only hashed), redemption at the till (value and percent, single and multi use, window, minimum basket,
binding to a card or a customer), replays and conflicting replays, reversal exactly once, revocation, the
expiry job, concurrent redemptions, the audit trail, the website check, the JSON errors, and the offline
rules the edge will use."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer

from central.app import create_app
from central.db.tables import audit_log, operations, vouchers
from central.services.vouchers import CODE_ALPHABET, new_codes, parse_code
from core.limits import OfflineLimits

from ..conftest import make_config
from ..support import World, txn

ADMIN = "/api/v1/admin/vouchers"
REDEEM = "vouchers/redeem"
REVERSE = "vouchers/redeem/reverse"


def iso(moment: datetime) -> str:
    return moment.isoformat()


def soon(**delta: float) -> str:
    return iso(datetime.now(UTC) + timedelta(**delta))


async def post(w: World, path: str, body: Any, *, expect: int = 200, headers: dict | None = None):
    resp = await w.client.post(path, json=body, headers=w.staff if headers is None else headers)
    data = await resp.json()
    assert resp.status == expect, (resp.status, data)
    return data, resp.headers


async def issue(w: World, *, expect: int = 200, **fields) -> dict:
    body = {"request_id": txn(), "kind": "value", "value": 500, "currency": "EUR", **fields}
    return (await post(w, ADMIN, body, expect=expect))[0]


async def redeem(w: World, code: str, basket: int = 2000, **extra) -> dict:
    return await w.till(REDEEM, code=code, basket_total=basket, currency=extra.pop("currency", "EUR"), **extra)


async def voucher(w: World, voucher_id: int) -> dict:
    return await w.admin("GET", f"{ADMIN}/{voucher_id}")


async def customer_with(w: World, *numbers: str) -> int:
    body = {"request_id": txn(), "first_name": "Vera", "last_name": "Voucher", "card_number": numbers[0]}
    created, _ = await post(w, "/api/v1/admin/customers", body)
    for number in numbers[1:]:
        await post(w, f"/api/v1/admin/customers/{created['id']}/cards", {"card_number": number})
    return created["id"]


async def rows(w: World, table: sa.Table, *where) -> list[Any]:
    async with w.central.db.connect() as conn:
        return (await conn.execute(sa.select(table).where(*where))).all()


# -- codes ----------------------------------------------------------------------------------------

def test_codes_are_typable_and_their_check_character_catches_every_single_typo():
    codes = new_codes(200)
    assert len(set(codes)) == 200
    for code in codes[:20]:
        assert len(code) == 16 and set(code) <= set(CODE_ALPHABET)
        assert parse_code(code) == code
        assert parse_code(f" {code[:4].lower()}-{code[4:8]} {code[8:12]}-{code[12:]} ") == code
        for i in range(16):
            assert all(parse_code(code[:i] + ch + code[i + 1:]) is None for ch in CODE_ALPHABET if ch != code[i])
    assert parse_code(codes[0][:15]) is None and parse_code(codes[0] + "2") is None
    assert parse_code("O" + codes[0][1:]) is None  # 0/O, 1/I are not in the alphabet


# -- issuing --------------------------------------------------------------------------------------

async def test_a_value_voucher_is_used_once_and_its_code_is_shown_once(world: World):
    request_id = txn()
    body = {"request_id": request_id, "kind": "value", "value": 500, "currency": "EUR"}
    first, headers = await post(world, ADMIN, body)
    assert "Idempotent-Replay" not in headers and first["code_already_given"] is False
    code = first["code"]
    assert len(code) == 19 and code.count("-") == 3 and parse_code(code)
    v = first["voucher"]
    assert (v["kind"], v["value"], v["max_uses"], v["uses"], v["state"], v["hint"]) == (
        "value", 500, 1, 0, "active", code.replace("-", "")[-4:])
    assert v["card_number"] is None and v["customer_id"] is None and v["issued_by"] == "root"

    again, headers = await post(world, ADMIN, body)
    assert headers["Idempotent-Replay"] == "true"
    assert again["voucher"]["id"] == v["id"] and again["voucher"]["hint"] == v["hint"]
    assert again["code"] is None and again["code_already_given"] is True
    conflict, _ = await post(world, ADMIN, {**body, "value": 600}, expect=409)
    assert conflict["error"]["code"] == "idempotency_conflict"
    assert await world.count("vouchers") == 1

    used = await redeem(world, code, 2000)
    assert used["approved"] and used["discount"] == used["amount"] == 500 and used["uses_left"] == 0
    assert used["voucher_id"] == v["id"] and used["currency"] == "EUR" and used["operation"] == "voucher_redeem"
    assert (await voucher(world, v["id"]))["state"] == "used"
    second = await redeem(world, code, 2000)
    assert not second["approved"] and second["decline_code"] == "voucher_used_up" and second["amount"] == 0
    ops = await rows(world, operations, operations.c.kind == "voucher_issue")
    assert [(o.id, o.channel, o.approved, o.amount, o.currency) for o in ops] == [
        (uuid.UUID(request_id), "admin", True, 500, "EUR")]


async def test_a_value_voucher_takes_at_most_the_basket(world: World):
    code = (await issue(world, value=800))["code"]
    used = await redeem(world, code, 300)
    assert used["approved"] and used["discount"] == 300 and used["uses_left"] == 0


async def test_a_percent_voucher_with_several_uses(world: World):
    issued = await issue(world, kind="percent", value=1500, max_uses=2)
    code = issued["code"]
    nothing = await redeem(world, code, 5)  # 15 % of 5 cents is nothing: no use is taken
    assert nothing["decline_code"] == "voucher_nothing_to_discount"
    first = await redeem(world, code, 1999)
    assert first["approved"] and first["discount"] == 299 and first["uses_left"] == 1  # floored
    second = await redeem(world, code, 10000)
    assert second["approved"] and second["discount"] == 1500 and second["uses_left"] == 0
    assert (await redeem(world, code, 10000))["decline_code"] == "voucher_used_up"
    shown = await voucher(world, issued["voucher"]["id"])
    assert (shown["uses"], shown["uses_left"], shown["state"]) == (2, 0, "used")


async def test_the_validity_window_and_the_expiry_job(world: World):
    later = await issue(world, valid_from=soon(days=1), valid_to=soon(days=30))
    declined = await redeem(world, later["code"])
    assert declined["decline_code"] == "voucher_not_yet_valid"

    ending = await issue(world, valid_to=soon(days=1))
    live = await issue(world, valid_to=soon(days=2))
    # Time passes: the first voucher's window ends.
    async with world.central.db.begin() as conn:
        await conn.execute(sa.update(vouchers).where(vouchers.c.id == ending["voucher"]["id"])
                           .values(valid_to=datetime.now(UTC) - timedelta(seconds=1)))
    shown = await voucher(world, ending["voucher"]["id"])
    assert (shown["state"], shown["effective_state"]) == ("active", "expired")  # refused before the job too
    assert (await redeem(world, ending["code"]))["decline_code"] == "voucher_expired"

    assert await world.central.vouchers.expire_due() == 1
    assert (await world.admin("POST", f"{ADMIN}/expire"))["expired"] == 0  # idempotent
    assert (await voucher(world, ending["voucher"]["id"]))["state"] == "expired"
    assert (await voucher(world, live["voucher"]["id"]))["state"] == "active"
    assert (await redeem(world, ending["code"]))["decline_code"] == "voucher_expired"
    assert (await redeem(world, live["code"]))["approved"]

    for bad in ({"valid_to": soon(seconds=-5)}, {"valid_from": soon(days=2), "valid_to": soon(days=1)}):
        error = await issue(world, expect=422, **bad)
        assert error["error"]["code"] == "invalid_input", error


async def test_the_scheduler_runs_the_expiry_job(db_url, tmp_path):
    config = make_config(db_url, tmp_path, scheduler=True, voucher_expiry_sweep_seconds=0.1)
    async with TestClient(TestServer(create_app(config, migrate=False))) as client:
        world = await World.create(client)
        issued = await issue(world, valid_to=soon(days=1))
        async with world.central.db.begin() as conn:
            await conn.execute(sa.update(vouchers).values(valid_to=datetime.now(UTC) - timedelta(seconds=1)))
        for _ in range(100):
            if (await voucher(world, issued["voucher"]["id"]))["state"] == "expired":
                break
            await asyncio.sleep(0.05)
        assert (await voucher(world, issued["voucher"]["id"]))["state"] == "expired"


async def test_minimum_basket_and_currency(world: World):
    code = (await issue(world, min_basket=1000, max_uses=5))["code"]
    assert (await redeem(world, code, 999))["decline_code"] == "voucher_below_min_basket"
    assert (await redeem(world, code, 1000, currency="USD"))["decline_code"] == "voucher_currency_mismatch"
    assert (await redeem(world, code, 1000))["approved"]


# -- binding --------------------------------------------------------------------------------------

async def test_a_voucher_bound_to_a_card(world: World):
    mine, other = await world.sell(), await world.sell()
    issued = await issue(world, card_number=mine, max_uses=3)
    code = issued["code"]
    assert issued["voucher"]["card_number"] == mine
    assert (await redeem(world, code))["decline_code"] == "voucher_card_required"
    assert (await redeem(world, code, card_number=other))["decline_code"] == "voucher_wrong_card"
    assert (await redeem(world, code, card_number="6034999999999999"))["decline_code"] == "unknown_card"
    used = await redeem(world, code, card_number=mine)
    assert used["approved"]
    (op,) = await rows(world, operations, operations.c.id == uuid.UUID(used["txn_id"]))
    card_id = (await rows(world, vouchers, vouchers.c.id == issued["voucher"]["id"]))[0].card_id
    assert op.card_id == card_id and op.store_id is not None and op.terminal_id is not None

    # A lost card's replacement takes its vouchers.
    replacement = world.spare["GIFT"][0]
    await world.admin("POST", f"/api/v1/admin/cards/{mine}/duplicate",
                      {"request_id": txn(), "new_card_number": replacement})
    assert (await redeem(world, code, card_number=replacement))["approved"]
    assert (await redeem(world, code, card_number=mine))["decline_code"] == "voucher_wrong_card"
    listed = await world.admin("GET", ADMIN, card_number=mine)
    assert [v["id"] for v in listed["vouchers"]] == [issued["voucher"]["id"]]
    assert (await world.admin("GET", ADMIN, card_number=other))["vouchers"] == []


async def test_a_voucher_bound_to_a_customer_goes_with_any_of_their_cards(world: World):
    first, second, stranger = await world.sell(), await world.sell(), await world.sell()
    customer = await customer_with(world, first, second)
    issued = await issue(world, customer_id=customer, max_uses=3)
    code = issued["code"]
    assert issued["voucher"]["customer_id"] == customer
    assert (await redeem(world, code))["decline_code"] == "voucher_card_required"
    assert (await redeem(world, code, card_number=stranger))["decline_code"] == "voucher_wrong_card"
    assert (await redeem(world, code, card_number=first))["approved"]
    assert (await redeem(world, code, card_number=second))["approved"]
    own = await issue(world, card_number=second)
    for query in ({"customer_id": customer}, {"card_number": second}):
        listed = await world.admin("GET", ADMIN, **query)
        assert [v["id"] for v in listed["vouchers"]] == [issued["voucher"]["id"], own["voucher"]["id"]]
    only_first = await world.admin("GET", ADMIN, card_number=first)
    assert [v["id"] for v in only_first["vouchers"]] == [issued["voucher"]["id"]]
    page = await world.admin("GET", ADMIN, customer_id=customer, limit=1)
    assert len(page["vouchers"]) == 1 and page["next"] == issued["voucher"]["id"]
    missing = await issue(world, customer_id=999999, expect=404)
    assert missing["error"]["code"] == "not_found"


# -- replays and reversals ------------------------------------------------------------------------

async def test_a_replayed_redemption_returns_the_first_answer_and_another_payload_is_refused(world: World):
    code = (await issue(world, max_uses=5))["code"]
    body = {"txn_id": txn(), "code": code, "basket_total": 2000, "currency": "EUR"}
    first = await world.till(REDEEM, **body)
    resp = await world.client.post(f"/api/v1/till/{REDEEM}", json=body, headers=world.tills["S1"])
    assert resp.status == 200 and resp.headers["Idempotent-Replay"] == "true"
    assert await resp.json() == first
    for changed in ({"basket_total": 2500}, {"code": (await issue(world))["code"]}):
        refused = await world.till(REDEEM, expect=409, **{**body, **changed})
        assert refused["error"]["code"] == "idempotency_conflict" and refused["error"]["message"]
    other_store = await world.till(REDEEM, store="S2", expect=409, **body)
    assert other_store["error"]["code"] == "idempotency_conflict"
    assert (await voucher(world, first["voucher_id"]))["uses"] == 1


async def test_a_reversal_gives_the_use_back_exactly_once(world: World):
    issued = await issue(world)
    code = issued["code"]
    used = await redeem(world, code)
    assert used["approved"]
    body = {"txn_id": txn(), "original_txn_id": used["txn_id"]}
    back = await world.till(REVERSE, **body)
    assert back["approved"] and back["amount"] == 500 and back["uses_left"] == 1
    assert back["voucher_id"] == issued["voucher"]["id"] and back["operation"] == "voucher_redeem_reversal"
    assert await world.till(REVERSE, **body) == back  # a replay
    again = await world.till(REVERSE, original_txn_id=used["txn_id"])
    assert not again["approved"] and again["decline_code"] == "already_cancelled"
    shown = await voucher(world, issued["voucher"]["id"])
    assert (shown["uses"], shown["state"]) == (0, "active")
    (op,) = await rows(world, operations, operations.c.id == uuid.UUID(back["txn_id"]))
    assert op.settles == uuid.UUID(used["txn_id"])

    reused = await redeem(world, code)
    assert reused["approved"]
    declined = await redeem(world, code)
    for original in (declined["txn_id"], txn()):  # a declined use, or none: nothing to reverse
        assert (await world.till(REVERSE, original_txn_id=original))["decline_code"] == "original_not_found"
    # Reversals racing each other: one wins.
    racing = await asyncio.gather(*(world.till(REVERSE, original_txn_id=reused["txn_id"]) for _ in range(6)))
    assert sorted(r["approved"] for r in racing) == [False] * 5 + [True]
    assert (await voucher(world, issued["voucher"]["id"]))["uses"] == 0
    await world.ledger_consistent()  # voucher operations move no account


async def test_concurrent_redemptions_never_exceed_max_uses(world: World):
    code = (await issue(world, max_uses=3))["code"]
    results = await asyncio.gather(*(redeem(world, code, 1000) for _ in range(24)))
    approved = [r for r in results if r["approved"]]
    assert len(approved) == 3
    assert {r["decline_code"] for r in results if not r["approved"]} == {"voucher_used_up"}
    (row,) = await rows(world, vouchers)
    assert (row.uses, row.state) == (3, "used")


# -- staff ----------------------------------------------------------------------------------------

async def test_revoked_vouchers_are_declined_and_revocations_audited(world: World):
    issued = await issue(world, max_uses=2)
    vid = issued["voucher"]["id"]
    revoked, headers = await post(world, f"{ADMIN}/{vid}/revoke", {"reason": "sent by mistake"})
    assert revoked["approved"] and revoked["voucher_id"] == vid and "Idempotent-Replay" not in headers
    again, headers = await post(world, f"{ADMIN}/{vid}/revoke", {"reason": "twice"})
    assert again == revoked and headers["Idempotent-Replay"] == "true"
    shown = await voucher(world, vid)
    assert shown["state"] == "cancelled" and shown["cancelled_at"]
    assert (await redeem(world, issued["code"]))["decline_code"] == "voucher_cancelled"

    spent = await issue(world)
    assert (await redeem(world, spent["code"]))["approved"]
    refused, _ = await post(world, f"{ADMIN}/{spent['voucher']['id']}/revoke", {"reason": "late"}, expect=409)
    assert refused["error"]["code"] == "illegal_transition"
    missing, _ = await post(world, f"{ADMIN}/999999/revoke", {"reason": "none"}, expect=404)
    assert missing["error"]["code"] == "not_found"

    log = await world.admin("GET", "/api/v1/admin/audit", action="voucher_revoke")
    assert sorted(e["details"]["outcome"] for e in log) == ["illegal_transition", "not_found", "ok"]
    ok = next(e for e in log if e["details"]["outcome"] == "ok")
    assert (ok["actor"], ok["target"], ok["details"]["reason"]) == ("root", f"voucher:{vid}", "sent by mistake")
    ops = await rows(world, operations, operations.c.kind == "voucher_revoke")
    assert len(ops) == 1 and ops[0].channel == "admin"


async def test_issuing_is_audited_and_the_code_is_never_stored_in_clear(world: World):
    number = await world.sell()
    issued = await issue(world, card_number=number)
    batch, _ = await post(world, f"{ADMIN}/batch", {"request_id": txn(), "kind": "percent", "value": 1000,
                                                    "currency": "EUR", "count": 2})
    codes = [issued["code"]] + [v["code"] for v in batch["vouchers"]]
    assert (await redeem(world, codes[0], card_number=number))["approved"]
    await world.admin("POST", f"{ADMIN}/lookup", {"code": codes[1]})
    await post(world, "/api/v1/web/vouchers/check", {"code": codes[2]}, headers=world.web)

    log = await world.admin("GET", "/api/v1/admin/audit", action="voucher_issue")
    assert len(log) == 2 and {e["target"] for e in log} == {
        f"voucher:{issued['voucher']['id']}",
        f"vouchers:{batch['vouchers'][0]['id']}-{batch['vouchers'][1]['id']}"}
    refused = await issue(world, card_number="6034999999999999", expect=404)
    assert refused["error"]["code"] == "not_found"
    log = await world.admin("GET", "/api/v1/admin/audit", action="voucher_issue")
    assert [e["details"]["outcome"] for e in log][0] == "not_found"

    # Nothing central keeps holds a code, in any spelling.
    async with world.central.db.connect() as conn:
        kept = [str(tuple(r)) for t in (vouchers, operations, audit_log) for r in await conn.execute(sa.select(t))]
    for code in codes:
        plain = code.replace("-", "")
        assert not any(code in text or plain in text or plain.lower() in text for text in kept)
    stored = await rows(world, vouchers)
    assert all(len(r.code_hash) == 64 and r.hint in {c[-4:] for c in codes} for r in stored)


async def test_a_batch_is_all_or_nothing_and_replays_without_codes(world: World):
    a, b, c = await world.sell(), await world.sell(), await world.sell()
    customer = await customer_with(world, c)
    body = {"request_id": txn(), "kind": "value", "value": 250, "currency": "EUR", "valid_to": soon(days=10),
            "card_numbers": [a, b], "customer_ids": [customer], "count": 2}
    first, _ = await post(world, f"{ADMIN}/batch", body)
    assert first["count"] == 5 and len({v["code"] for v in first["vouchers"]}) == 5
    assert [(v["card_number"], v["customer_id"]) for v in first["vouchers"]] == [
        (a, None), (b, None), (None, customer), (None, None), (None, None)]
    again, headers = await post(world, f"{ADMIN}/batch", body)
    assert headers["Idempotent-Replay"] == "true" and again["code_already_given"]
    assert [v["id"] for v in again["vouchers"]] == [v["id"] for v in first["vouchers"]]
    assert all(v["code"] is None for v in again["vouchers"])
    assert (await redeem(world, first["vouchers"][1]["code"], card_number=b))["approved"]
    assert (await redeem(world, first["vouchers"][2]["code"], card_number=c))["approved"]

    unknown, _ = await post(world, f"{ADMIN}/batch", {**body, "request_id": txn(),
                                                     "card_numbers": [a, "6034999999999999"]}, expect=404)
    assert "6034999999999999" in unknown["error"]["message"]
    doubled, _ = await post(world, f"{ADMIN}/batch", {**body, "request_id": txn(), "card_numbers": [a, a]},
                            expect=422)
    assert doubled["error"]["code"] == "invalid_input"
    empty, _ = await post(world, f"{ADMIN}/batch", {**body, "request_id": txn(), "card_numbers": [],
                                                   "customer_ids": [], "count": 0}, expect=422)
    assert empty["error"]["code"] == "invalid_input"
    assert await world.count("vouchers") == 5


async def test_staff_find_a_voucher_by_its_code(world: World):
    issued = await issue(world)
    found = await world.admin("POST", f"{ADMIN}/lookup", {"code": issued["code"].lower().replace("-", " ")})
    assert found["id"] == issued["voucher"]["id"]
    plain = issued["code"].replace("-", "")
    typo = plain[:3] + ("A" if plain[3] != "A" else "B") + plain[4:]
    mistyped = await world.admin("POST", f"{ADMIN}/lookup", {"code": typo}, expect=404)
    assert mistyped["error"]["code"] == "voucher_code_invalid"
    unknown = await world.admin("POST", f"{ADMIN}/lookup", {"code": new_codes(1)[0]}, expect=404)
    assert unknown["error"]["code"] == "voucher_unknown"
    assert (await world.admin("GET", f"{ADMIN}/999999", expect=404))["error"]["code"] == "not_found"


# -- websites, codes at the till, errors ----------------------------------------------------------

async def test_a_website_checks_a_voucher_without_using_it(world: World):
    number = await world.sell()
    issued = await issue(world, kind="percent", value=2000, card_number=number, min_basket=1000)
    check = "/api/v1/web/vouchers/check"
    seen, _ = await post(world, check, {"code": issued["code"]}, headers=world.web)
    assert seen["found"] and seen["voucher"]["personal"] and seen["voucher"]["uses_left"] == 1
    assert "card_number" not in seen["voucher"] and "id" not in seen["voucher"]
    priced, _ = await post(world, check, {"code": issued["code"], "basket_total": 5000, "card_number": number},
                           headers=world.web)
    assert priced["approved"] and priced["discount"] == 1000
    small, _ = await post(world, check, {"code": issued["code"], "basket_total": 500, "card_number": number},
                          headers=world.web)
    assert small["decline_code"] == "voucher_below_min_basket"
    unknown, _ = await post(world, check, {"code": new_codes(1)[0]}, headers=world.web)
    assert unknown == {"found": False, "decline_code": "voucher_unknown"}
    assert (await voucher(world, issued["voucher"]["id"]))["uses"] == 0
    forbidden, _ = await post(world, check, {"code": issued["code"]}, headers=world.tills["S1"], expect=403)
    assert forbidden["error"]["code"]


async def test_codes_at_the_till(world: World):
    code = (await issue(world, max_uses=3))["code"]
    plain = code.replace("-", "")
    typed = await redeem(world, f"{plain[:8].lower()} {plain[8:]}")
    assert typed["approved"]
    typo = plain[:-1] + ("A" if plain[-1] != "A" else "B")
    assert (await redeem(world, typo))["decline_code"] == "voucher_code_invalid"
    assert (await redeem(world, "HELLO"))["decline_code"] == "voucher_code_invalid"
    assert (await redeem(world, new_codes(1)[0]))["decline_code"] == "voucher_unknown"


async def test_bad_input_gets_a_json_error(world: World):
    cases = [
        (ADMIN, {"request_id": txn(), "kind": "gift", "value": 1, "currency": "EUR"}, world.staff, 422,
         "invalid_request"),
        (ADMIN, {"request_id": txn(), "kind": "percent", "value": 20000, "currency": "EUR"}, world.staff, 422,
         "invalid_input"),
        (ADMIN, {"request_id": txn(), "kind": "value", "value": 100, "currency": "EUR", "card_number": "60340000",
                 "customer_id": 1}, world.staff, 422, "invalid_request"),
        (ADMIN, {"request_id": "nope", "kind": "value", "value": 100, "currency": "EUR"}, world.staff, 422,
         "invalid_request"),
        (ADMIN, {"request_id": txn(), "kind": "value", "value": 100, "currency": "EUR"}, world.tills["S1"], 401,
         None),
        (f"/api/v1/till/{REDEEM}", {"txn_id": txn(), "code": "X", "basket_total": -1, "currency": "EUR"},
         world.tills["S1"], 422, "invalid_request"),
        (f"/api/v1/till/{REDEEM}", {"txn_id": txn(), "code": "X", "basket_total": 100}, world.tills["S1"], 422,
         "invalid_request"),
        (f"/api/v1/till/{REDEEM}", {"txn_id": txn(), "code": "X", "basket_total": 100, "currency": "EUR"},
         world.web, 403, "forbidden"),
        (f"/api/v1/till/{REVERSE}", {"txn_id": txn()}, world.tills["S1"], 422, "invalid_request"),
        (f"{ADMIN}/1/revoke", {}, world.staff, 422, "invalid_request"),
    ]
    for path, body, headers, status, code in cases:
        data, _ = await post(world, path, body, headers=headers, expect=status)
        assert data["error"]["message"], data
        if code is not None:
            assert data["error"]["code"] == code, (path, body, data)
    resp = await world.client.post(f"/api/v1/till/{REDEEM}", data=b"{not json", headers=world.tills["S1"])
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json"
    auditor = await world.admin("POST", "/api/v1/admin/users", {"username": "audrey", "password": "long password 1",
                                                                "role": "auditor"})
    assert auditor
    headers = await world.login("audrey", "long password 1")
    denied, _ = await post(world, ADMIN, {"request_id": txn(), "kind": "value", "value": 1, "currency": "EUR"},
                           headers=headers, expect=403)
    assert denied["error"]["code"] == "forbidden"
    assert await world.count("vouchers") == 0


# -- the edge -------------------------------------------------------------------------------------

async def test_offline_vouchers_and_offline_uses_synced_to_central(world: World):
    service = world.central.vouchers
    small = await issue(world, value=300)
    big = await issue(world, value=9000)
    percent = await issue(world, kind="percent", value=1000)
    multi = await issue(world, value=100, max_uses=2)
    dollars = await issue(world, value=100, currency="USD")
    limits = {"EUR": OfflineLimits(floor_limit=5000, card_amount=10000, card_count=3)}
    async with world.central.db.connect() as conn:
        offered = await service.offline_vouchers(conn, limits)
        assert [v["id"] for v in offered] == [small["voucher"]["id"]]
        assert offered[0]["code_hash"] and offered[0]["hint"] == small["voucher"]["hint"]
        assert "code" not in offered[0]
        assert await service.offline_vouchers(conn, limits, after_id=small["voucher"]["id"]) == []
    for unused in (big, percent, multi, dollars):
        assert unused["voucher"]["id"] not in {v["id"] for v in offered}

    stores = (await world.admin("GET", "/api/v1/admin/stores"))
    store_id = next(s["id"] for s in (stores["stores"] if isinstance(stores, dict) else stores) if s["code"] == "S1")
    first_use = uuid.uuid4()

    async def offline_use(txn_id: uuid.UUID, voucher_id: int, discount: int = 300, **extra) -> dict:
        async with world.central.db.begin() as conn:
            return await service.apply_offline_use(conn, txn_id=txn_id, voucher_id=voucher_id, store_id=store_id,
                                                   discount=discount, basket_total=2000, currency="EUR", **extra)

    applied = await offline_use(first_use, small["voucher"]["id"], limits=limits["EUR"])
    assert applied["status"] == "applied" and applied["flags"] == [] and applied["decision"] == "offline"
    assert (await offline_use(first_use, small["voucher"]["id"]))["status"] == "duplicate"
    async with world.central.db.connect() as conn:
        assert await service.offline_vouchers(conn, limits) == []  # used: no store takes it offline any more
    # The same voucher used offline at a second store: it posts (the goods left), flagged, as an overuse.
    overuse = await offline_use(uuid.uuid4(), small["voucher"]["id"], discount=400)
    assert overuse["status"] == "applied" and overuse["flags"] == ["voucher_used_up"]
    shown = await voucher(world, small["voucher"]["id"])
    assert (shown["uses"], shown["uses_left"], shown["state"]) == (2, 0, "used")
    assert (await redeem(world, small["code"]))["decline_code"] == "voucher_used_up"
    # A store fault (a percent voucher is never taken offline) and a discount beyond the voucher.
    fault = await offline_use(uuid.uuid4(), percent["voucher"]["id"], discount=500, limits=limits["EUR"])
    assert fault["flags"] == ["voucher_discount_exceeds", "voucher_offline_not_allowed"]
    assert (await offline_use(uuid.uuid4(), 999999))["flags"] == ["voucher_unknown"]

    # An offline use is reversed online like any other: the overuse first, then the use itself.
    back = await world.till(REVERSE, original_txn_id=overuse["txn_id"])
    assert back["approved"] and back["amount"] == 400
    assert (await voucher(world, small["voucher"]["id"]))["state"] == "used"
    assert (await world.till(REVERSE, original_txn_id=str(first_use)))["approved"]
    shown = await voucher(world, small["voucher"]["id"])
    assert (shown["uses"], shown["state"]) == (0, "active")
    ops = await rows(world, operations, operations.c.channel == "store")
    assert len(ops) == 4 and all(o.kind == "voucher_redeem" and o.approved for o in ops)
    await world.ledger_consistent()

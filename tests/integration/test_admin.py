"""Head-office administration: staff, roles, audit, issuing, packs, cards, search and reports."""

from __future__ import annotations

import csv
import io

from stdnum import luhn

from ..support import World, txn


async def test_login_roles_and_audit(world: World):
    bad = await world.client.post("/api/v1/auth/login", json={"username": "root", "password": "nope"})
    assert bad.status == 401 and (await bad.json())["error"]["code"] == "unauthorized"
    for username, role in (("ann", "auditor"), ("ola", "operator")):
        await world.admin("POST", "/api/v1/admin/users", {"username": username, "password": f"{role}-pass",
                                                          "role": role})
    auditor = await world.login("ann", "auditor-pass")
    operator = await world.login("ola", "operator-pass")
    number = await world.sell("GIFT", 5000)
    denied = await world.admin("POST", f"/api/v1/admin/cards/{number}/block", {"request_id": txn(), "reason": "x"},
                               headers=auditor, expect=403)
    assert denied["error"]["code"] == "forbidden"
    assert (await world.admin("GET", f"/api/v1/admin/cards/{number}", headers=auditor))["balance"] == 5000
    await world.admin("POST", "/api/v1/admin/stores", {"code": "S9", "name": "x"}, headers=operator, expect=403)
    await world.admin("POST", f"/api/v1/admin/cards/{number}/block", {"request_id": txn(), "reason": "stolen"},
                      headers=operator)
    log = await world.admin("GET", "/api/v1/admin/audit", headers=auditor)
    actions = [(e["actor"], e["action"], e["details"].get("outcome")) for e in log]
    assert ("ola", "card_block", "ok") in actions
    assert ("ann", "card_block", "forbidden") in actions
    assert ("root", "login_failed", None) in actions
    assert all("auditor-pass" not in str(e) for e in log)  # passwords never reach the audit log
    # Disabling a user ends their sessions at once.
    await world.admin("POST", "/api/v1/admin/users/ola/disable")
    gone = await world.admin("GET", "/api/v1/admin/cards", headers=operator, expect=401)
    assert gone["error"]["code"] == "unauthorized"
    no_token = await world.client.get("/api/v1/admin/cards")
    assert no_token.status == 401


async def test_till_token_cannot_reach_admin_or_web_and_disabled_till_is_refused(world: World):
    assert (await world.client.get("/api/v1/admin/cards", headers=world.tills["S1"])).status == 401
    web = await world.client.post("/api/v1/web/balance", json={"card_number": "6034000000000007", "ecode": "XXXX"},
                                  headers=world.tills["S1"])
    assert web.status == 403
    terminals = await world.admin("GET", "/api/v1/admin/terminals")
    assert all("token_hash" not in t and "token" not in t for t in terminals)
    s2 = next(t for t in terminals if t["kind"] == "till" and t["store_id"] == 2)
    await world.admin("POST", f"/api/v1/admin/terminals/{s2['id']}/disable")
    world.central.admin._terminals.clear()  # another worker would see it within the cache's 30 s
    assert (await world.client.post("/api/v1/till/balance", json={"card_number": "6034000000000007"},
                                    headers=world.tills["S2"])).status == 401


async def test_programme_validation(world: World):
    overlap = await world.admin("POST", "/api/v1/admin/programmes", {
        "code": "X", "name": "X", "currency": "EUR", "number_prefix": "60345", "number_length": 16}, expect=422)
    assert overlap["error"]["code"] == "number_space_overlap"
    dup = await world.admin("POST", "/api/v1/admin/programmes", {
        "code": "GIFT", "name": "X", "currency": "EUR", "number_prefix": "7", "number_length": 16}, expect=422)
    assert dup["error"]["code"] == "duplicate"
    bad = await world.admin("POST", "/api/v1/admin/programmes", {
        "code": "Y", "name": "Y", "currency": "eur", "number_prefix": "7", "number_length": 16}, expect=422)
    assert bad["error"]["code"] == "invalid_request"
    listed = await world.admin("GET", "/api/v1/admin/programmes")
    assert [p["code"] for p in listed] == ["GIFT", "FLEX"]


async def test_issue_through_api_with_progress_and_production_file(world: World):
    await world.admin("POST", "/api/v1/admin/programmes", {
        "code": "CLOSED", "name": "Closed Loop", "currency": "EUR", "number_prefix": "99", "number_length": 12,
        "luhn": False, "nominal_values": [1000]})
    started = await world.admin("POST", "/api/v1/admin/issues", {"programme": "CLOSED", "quantity": 25_000},
                                expect=202)
    assert started["status"] == "running" and started["quantity"] == 25_000
    issue = await world.wait_for_issue(started["id"])
    assert issue["status"] == "completed" and issue["generated"] == 25_000
    resp = await world.client.get(f"/api/v1/admin/issues/{started['id']}/production-file", headers=world.staff)
    assert resp.status == 200 and resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert len(rows) == 25_000 and len({r["card_number"] for r in rows}) == 25_000
    first = rows[0]
    assert first["card_number"] == issue["first_number"] and first["barcode"] == first["card_number"]
    assert first["track2"] == f";{first['card_number']}={first['expiry']}120?"
    assert first["track1"].startswith(f"%B{first['card_number']}^CLOSED LOOP^")
    assert len(first["ecode"]) == 10
    # eCodes are stored only as keyed hashes.
    assert await world.count("cards", f"ecode_hash = '{first['ecode']}'") == 0
    assert await world.count("cards", "state = 'generated' AND number LIKE '99%'") == 25_000
    # A second issue continues the serials: no number is made twice.
    more = await world.admin("POST", "/api/v1/admin/issues", {"programme": "CLOSED", "quantity": 10}, expect=202)
    assert more["first_number"] > issue["last_number"]
    audit = await world.admin("GET", "/api/v1/admin/audit", action="issue_production_file")
    assert audit and audit[0]["actor"] == "root"


async def test_numbers_run_out_cleanly(world: World):
    await world.admin("POST", "/api/v1/admin/programmes", {
        "code": "TINY", "name": "Tiny", "currency": "EUR", "number_prefix": "8888888", "number_length": 9})
    refused = await world.admin("POST", "/api/v1/admin/issues", {"programme": "TINY", "quantity": 11}, expect=422)
    assert refused["error"]["code"] == "numbers_exhausted"
    assert (await world.admin("POST", "/api/v1/admin/issues", {"programme": "TINY", "quantity": 10},
                              expect=202))["last_number"] == "888888899" if luhn.is_valid("888888899") else True


async def test_packs_by_range_and_errors(world: World):
    spare = world.spare["GIFT"]
    await world.admin("POST", "/api/v1/admin/counterparties", {"code": "ACME", "name": "Acme Corp"})
    pack = await world.admin("POST", "/api/v1/admin/packs", {
        "first_number": spare[0], "last_number": spare[4], "counterparty_code": "ACME"})
    assert pack["card_count"] == 5 and pack["counterparty"] == "ACME" and pack["status"] == "created"
    again = await world.admin("POST", "/api/v1/admin/packs", {"numbers": [spare[0]], "store_code": "S1"}, expect=422)
    assert again["error"]["code"] == "not_in_stock"
    unknown = await world.admin("POST", "/api/v1/admin/packs", {"numbers": ["6034999999999990"], "store_code": "S1"},
                                expect=422)
    assert unknown["error"]["code"] == "unknown_card"
    mixed = await world.admin("POST", "/api/v1/admin/packs", {
        "numbers": [spare[5], world.spare["FLEX"][0]], "store_code": "S1"}, expect=422)
    assert mixed["error"]["code"] == "mixed_programmes"
    both = await world.admin("POST", "/api/v1/admin/packs", {"numbers": [spare[5]], "store_code": "S1",
                                                             "counterparty_code": "ACME"}, expect=422)
    assert both["error"]["code"] == "invalid_request"
    # Nothing of the refused packs was written.
    assert await world.count("cards", f"number = '{spare[5]}' AND state = 'generated'") == 1
    # A corporate order: the whole pack is activated with one value.
    request_id = txn()
    activated = await world.admin("POST", f"/api/v1/admin/packs/{pack['id']}/activate",
                                  {"request_id": request_id, "amount": 10000})
    assert activated["approved"] and activated["activated"] == 5 and activated["amount"] == 50000
    replay = await world.admin("POST", f"/api/v1/admin/packs/{pack['id']}/activate",
                               {"request_id": request_id, "amount": 10000})
    assert replay == activated
    assert (await world.till("balance", card_number=spare[2]))["balance"] == 10000
    twice = await world.admin("POST", f"/api/v1/admin/packs/{pack['id']}/activate",
                              {"request_id": txn(), "amount": 10000}, expect=409)
    assert twice["error"]["code"] == "illegal_transition"
    await world.ledger_consistent()


async def test_duplicate_card_moves_balance_and_links_history(world: World):
    number = await world.sell("GIFT", 5000)
    await world.till("payment", card_number=number, amount=1200)
    replacement = world.spare["GIFT"][0]
    request_id = txn()
    result = await world.admin("POST", f"/api/v1/admin/cards/{number}/duplicate",
                               {"request_id": request_id, "new_card_number": replacement})
    assert result["approved"] and result["balance"] == 3800 and result["amount"] == 3800
    old = await world.admin("GET", f"/api/v1/admin/cards/{number}")
    new = await world.admin("GET", f"/api/v1/admin/cards/{replacement}")
    assert old["state"] == "replaced" and old["balance"] == 0 and old["replaced_by"] == replacement
    assert new["state"] == "active" and new["replaces"] == number and new["expires_on"] == old["expires_on"]
    assert (await world.till("payment", card_number=number, amount=1))["decline_code"] == "replaced"
    assert (await world.till("payment", card_number=replacement, amount=3800))["approved"]
    again = await world.admin("POST", f"/api/v1/admin/cards/{replacement}/duplicate",
                              {"request_id": txn(), "new_card_number": world.spare["FLEX"][0]})
    assert again["decline_code"] == "wrong_programme"
    await world.ledger_consistent()


async def test_illegal_transitions_are_refused(world: World):
    stock = world.spare["GIFT"][0]
    refused = await world.admin("POST", f"/api/v1/admin/cards/{stock}/block", {"request_id": txn(), "reason": "x"},
                                expect=409)
    assert refused["error"]["code"] == "illegal_transition"
    number = await world.sell("GIFT", 2500)
    await world.admin("POST", f"/api/v1/admin/cards/{number}/unblock", {"request_id": txn(), "reason": "x"},
                      expect=409)
    assert (await world.admin("GET", f"/api/v1/admin/cards/{number}"))["state"] == "active"
    await world.admin("GET", "/api/v1/admin/cards/6034999999999999", expect=404)


async def test_search_transactions_and_cards(world: World):
    a = await world.sell("GIFT", 5000)
    b = await world.sell("GIFT", 10000, store="S2")
    await world.till("payment", card_number=a, amount=700)
    await world.till("payment", card_number=b, amount=9000, store="S2")
    await world.till("payment", card_number=a, amount=99999)  # declined
    by_card = await world.admin("GET", "/api/v1/admin/transactions", card=a)
    assert [t["kind"] for t in by_card] == ["payment", "payment", "sale"]
    big = await world.admin("GET", "/api/v1/admin/transactions", kind="payment", min_amount="5000",
                            status="approved")
    assert [(t["card"], t["amount"], t["store"]) for t in big] == [(b, 9000, "S2")]
    declined = await world.admin("GET", "/api/v1/admin/transactions", status="declined", store="S1")
    assert [(t["decline_code"], t["amount"]) for t in declined] == [("insufficient_funds", 0)]
    several = await world.admin("GET", "/api/v1/admin/transactions", kind="sale,payment", prefix="6034", limit="2")
    assert len(several) == 2
    page2 = await world.admin("GET", "/api/v1/admin/transactions", kind="sale,payment", prefix="6034",
                              before=several[-1]["at"])
    assert len(page2) == 3 and not {t["txn_id"] for t in page2} & {t["txn_id"] for t in several}
    bad = await world.admin("GET", "/api/v1/admin/transactions", kind="nonsense", expect=422)
    assert bad["error"]["code"] == "invalid_input"
    cards = await world.admin("GET", "/api/v1/admin/cards", state="active")
    assert {c["number"] for c in cards} == {a, b}
    s2 = await world.admin("GET", "/api/v1/admin/cards", store="S2", programme="GIFT", prefix="6034")
    assert len(s2) == 10 and all(c["store"] == "S2" for c in s2)


async def test_reports(world: World):
    a = await world.sell("GIFT", 5000)
    await world.sell("GIFT", 2500)
    await world.till("payment", card_number=a, amount=1000)
    turnover = await world.admin("GET", "/api/v1/admin/reports/turnover.csv")
    rows = list(csv.DictReader(io.StringIO(turnover)))
    sales = next(r for r in rows if r["type"] == "sale")
    payments = next(r for r in rows if r["type"] == "payment")
    assert (sales["store"], sales["count"], sales["amount_minor"]) == ("S1", "2", "7500")
    assert (payments["count"], payments["amount_minor"]) == ("1", "1000")
    liability = list(csv.DictReader(io.StringIO(await world.admin("GET", "/api/v1/admin/reports/liability.csv"))))
    assert liability == [{"programme": "GIFT", "currency": "EUR", "card_state": "active", "cards": "2",
                          "balance_minor": "6500", "held_minor": "0"}]


async def test_staff_login_locks_after_repeated_failures(world: World):
    await world.admin("POST", "/api/v1/admin/users", {"username": "eve", "password": "right-password",
                                                      "role": "operator"})
    for _ in range(5):
        bad = await world.client.post("/api/v1/auth/login", json={"username": "eve", "password": "guess"})
        assert bad.status == 401
    locked = await world.client.post("/api/v1/auth/login", json={"username": "eve", "password": "right-password"})
    assert locked.status == 401  # the right password no longer opens the account for a while
    log = await world.admin("GET", "/api/v1/admin/audit", actor="eve")
    assert "login_locked" in {e["action"] for e in log}
    await world.admin("POST", "/api/v1/admin/users/eve/enable")
    assert (await world.login("eve", "right-password"))["Authorization"].startswith("Bearer ")

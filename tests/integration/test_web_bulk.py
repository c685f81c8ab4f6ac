"""The web service (card number + eCode) and bulk loads from CSV."""

from __future__ import annotations

import asyncio

from ..support import World, txn


async def web(world: World, path: str, body: dict, expect: int = 200):
    resp = await world.client.post(f"/api/v1/web/{path}", json=body, headers=world.web)
    data = await resp.json()
    assert resp.status == expect, (resp.status, data)
    return data


async def test_web_balance_history_and_payment(world: World):
    number = await world.sell("GIFT", 5000)
    ecode = world.ecodes[number]
    balance = await web(world, "balance", {"card_number": number, "ecode": ecode.lower()})
    assert balance["balance"] == 5000
    pay_body = {"card_number": number, "ecode": ecode, "txn_id": txn(), "amount": 1999}
    paid = await web(world, "payment", pay_body)
    assert paid["approved"] and paid["balance"] == 3001
    assert await web(world, "payment", pay_body) == paid  # idempotent
    history = await web(world, "history", {"card_number": number, "ecode": ecode})
    assert [e["kind"] for e in history["entries"]] == ["payment", "activation"]
    txns = await world.admin("GET", "/api/v1/admin/transactions", card=number, kind="payment")
    assert txns[0]["channel"] == "web"


async def test_wrong_ecodes_lock_the_card_for_the_web(world: World):
    number = await world.sell("GIFT", 5000)
    unknown = await web(world, "balance", {"card_number": "6034999999999999", "ecode": "AAAAAAAA"}, expect=403)
    wrong = await web(world, "balance", {"card_number": number, "ecode": "AAAAAAAA"}, expect=403)
    assert unknown["error"] == wrong["error"]  # an unknown card and a wrong code look alike
    for _ in range(4):
        await web(world, "balance", {"card_number": number, "ecode": "AAAAAAAA"}, expect=403)
    locked = await web(world, "balance", {"card_number": number, "ecode": world.ecodes[number]}, expect=423)
    assert locked["error"]["code"] == "ecode_locked"
    refused = await web(world, "payment", {"card_number": number, "ecode": world.ecodes[number], "txn_id": txn(),
                                           "amount": 100}, expect=423)
    assert refused["error"]["code"] == "ecode_locked"
    assert (await world.till("balance", card_number=number))["balance"] == 5000  # the till is unaffected


async def test_web_token_cannot_use_the_till_api(world: World):
    resp = await world.client.post("/api/v1/till/balance", json={"card_number": "6034000000000007"},
                                   headers=world.web)
    assert resp.status == 403


async def bulk(world: World, text: str, expect: int = 200):
    resp = await world.client.post("/api/v1/admin/bulk-loads", data=text.encode(),
                                   headers={**world.staff, "Content-Type": "text/csv", "X-Filename": "welfare.csv"})
    data = await resp.json()
    assert resp.status == expect, data
    return data


async def test_bulk_load_is_idempotent_per_line(world: World):
    a = await world.sell("FLEX", 1000)
    b = await world.sell("FLEX", 2000)
    stock = world.spare["FLEX"][0]
    text = ("reference,card_number,amount,currency\n"
            f"W-1,{a},5000,EUR\n"
            f"W-2,{b},2500,\n"
            f"W-3,{stock},100,EUR\n"
            f"W-4,{a},12.50,EUR\n"
            f"W-5,6035999999999999,100,EUR\n"
            f"W-6,{b},100,USD\n")
    first = await bulk(world, text)
    assert (first["lines"], first["credited"], first["duplicate"], first["failed"]) == (6, 2, 0, 4)
    result = await world.admin("GET", f"/api/v1/admin/bulk-loads/{first['id']}/result.csv")
    lines = [line.split(",") for line in result.strip().splitlines()[1:]]
    assert [(row[1], row[4], row[5]) for row in lines] == [
        ("W-1", "credited", ""), ("W-2", "credited", ""), ("W-3", "failed", "not_active"),
        ("W-4", "failed", "invalid_amount"), ("W-5", "failed", "unknown_card"), ("W-6", "failed", "currency_mismatch")]
    # Loading the file again credits nothing twice; a corrected line loads under its reference.
    fixed = text.replace(f"W-4,{a},12.50", f"W-4,{a},1250")
    second = await bulk(world, fixed)
    assert (second["credited"], second["duplicate"], second["failed"]) == (1, 2, 3)
    assert (await world.till("balance", card_number=a))["balance"] == 1000 + 5000 + 1250
    assert (await world.till("balance", card_number=b))["balance"] == 4500
    changed = await bulk(world, f"reference,card_number,amount\nW-1,{a},9999\n")
    assert changed["failed"] == 1  # same reference, other content: refused, not applied
    await world.ledger_consistent()


async def test_bulk_load_rejects_bad_files_whole(world: World):
    missing = await bulk(world, "card,amount\n1,2\n", expect=422)
    assert missing["error"]["code"] == "invalid_csv"
    resp = await world.client.post("/api/v1/admin/bulk-loads", data=b"\xff\xfe\x00bad",
                                   headers={**world.staff, "Content-Type": "text/csv"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_csv"
    assert await world.count("bulk_loads") == 0


async def test_parallel_wrong_ecodes_cannot_pass_the_limit(world: World):
    number = await world.sell("GIFT", 5000)
    statuses = await asyncio.gather(*(
        world.client.post("/api/v1/web/balance", json={"card_number": number, "ecode": "WRONG000"},
                          headers=world.web) for _ in range(20)))
    codes = sorted(r.status for r in statuses)
    assert codes.count(403) == 5 and codes.count(423) == 15

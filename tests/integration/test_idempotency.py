"""Idempotency and concurrency: replays, reused ids, racing requests."""

from __future__ import annotations

import asyncio

from ..support import World, txn


async def test_replay_returns_first_result_and_changes_nothing(world: World):
    number = await world.sell("GIFT", 5000)
    body = {"txn_id": txn(), "card_number": number, "amount": 1000}
    first = await world.client.post("/api/v1/till/payment", json=body, headers=world.tills["S1"])
    second = await world.client.post("/api/v1/till/payment", json=body, headers=world.tills["S1"])
    assert first.status == second.status == 200
    assert await first.json() == await second.json()
    assert "Idempotent-Replay" not in first.headers and second.headers["Idempotent-Replay"] == "true"
    assert (await world.till("balance", card_number=number))["balance"] == 4000
    assert await world.count("entries", "kind = 'payment'") == 1


async def test_declined_result_is_replayed_even_after_funds_arrive(world: World):
    number = await world.sell("FLEX", 1000)
    body = {"txn_id": txn(), "card_number": number, "amount": 3000}
    declined = await world.till("payment", **body)
    assert declined["decline_code"] == "insufficient_funds"
    await world.till("topup", card_number=number, amount=5000)
    assert await world.till("payment", **body) == declined


async def test_same_id_different_payload_is_refused_and_nothing_written(world: World):
    number = await world.sell("GIFT", 5000)
    txn_id = txn()
    await world.till("payment", txn_id=txn_id, card_number=number, amount=1000)
    operations = await world.count("operations")
    resp = await world.client.post("/api/v1/till/payment", json={"txn_id": txn_id, "card_number": number,
                                                                  "amount": 1001}, headers=world.tills["S1"])
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "idempotency_conflict"
    # The same id from another store's till is another request too.
    other = await world.client.post("/api/v1/till/payment", json={"txn_id": txn_id, "card_number": number,
                                                                   "amount": 1000}, headers=world.tills["S2"])
    assert other.status == 409
    assert await world.count("operations") == operations
    assert (await world.till("balance", card_number=number))["balance"] == 4000


async def test_racing_duplicates_post_once(world: World):
    number = await world.sell("GIFT", 10000)
    body = {"txn_id": txn(), "card_number": number, "amount": 700}
    results = await asyncio.gather(*(world.till("payment", **body) for _ in range(10)))
    assert all(r == results[0] for r in results) and results[0]["approved"]
    assert (await world.till("balance", card_number=number))["balance"] == 9300
    assert await world.count("entries", "kind = 'payment'") == 1


async def test_concurrent_payments_never_overdraw(world: World):
    number = await world.sell("GIFT", 10000)
    results = await asyncio.gather(*(world.till("payment", card_number=number, amount=300) for _ in range(50)))
    approved = [r for r in results if r["approved"]]
    assert len(approved) == 33  # 33 * 300 = 9900 <= 10000 < 34 * 300
    assert all(r["decline_code"] == "insufficient_funds" for r in results if not r["approved"])
    assert (await world.till("balance", card_number=number))["balance"] == 100
    await world.ledger_consistent()


async def test_concurrent_cancels_of_one_payment_credit_once(world: World):
    number = await world.sell("GIFT", 5000)
    pay = await world.till("payment", card_number=number, amount=2000)
    results = await asyncio.gather(*(world.till("payment/cancel", original_txn_id=pay["txn_id"]) for _ in range(8)))
    assert sum(r["approved"] for r in results) == 1
    assert (await world.till("balance", card_number=number))["balance"] == 5000
    await world.ledger_consistent()

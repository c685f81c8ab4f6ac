"""Group commit: concurrent till payments share transactions without changing any answer."""

from __future__ import annotations

import asyncio

from ..support import World, txn


async def test_concurrent_payments_are_grouped_and_answered_as_alone(world: World):
    cards = [await world.sell("FLEX", 10000) for _ in range(5)]
    group = world.central.group
    before = group.batches
    requests = [{"txn_id": txn(), "card_number": cards[i % 5], "amount": 700} for i in range(80)]
    results = await asyncio.gather(*(world.till("payment", **body) for body in requests))
    assert group.batches > before and group.grouped >= 40  # most requests went through shared commits
    # Each card: 14 payments of 7.00 fit in 100.00, the other 2 are declined.
    for number in cards:
        mine = [r for r, body in zip(results, requests) if body["card_number"] == number]
        assert sum(r["approved"] for r in mine) == 14
        assert sorted(r["balance"] for r in mine if r["approved"]) == list(range(200, 10000, 700))
        assert (await world.till("balance", card_number=number))["balance"] == 200
    # Replays answer what the batch answered.
    again = await asyncio.gather(*(world.till("payment", **body) for body in requests[:10]))
    assert again == results[:10]
    await world.ledger_consistent()


async def test_a_batch_with_repeats_unknown_and_unsold_cards(world: World):
    number = await world.sell("FLEX", 5000)
    done = await world.till("payment", card_number=number, amount=100)
    twin = {"txn_id": txn(), "card_number": number, "amount": 200}
    bodies = [
        {"txn_id": done["txn_id"], "card_number": number, "amount": 100},  # recorded before
        twin, twin,  # the same request twice in one batch
        {"txn_id": txn(), "card_number": "6035999999999999", "amount": 100},  # unknown card
        {"txn_id": txn(), "card_number": world.stock["FLEX"][0], "amount": 100},  # never sold
        {"txn_id": txn(), "card_number": number, "amount": 100, "currency": "USD"},
        {"txn_id": txn(), "card_number": number, "amount": 300},
    ]
    results = await asyncio.gather(*(world.till("payment", **b) for b in bodies))
    assert results[0] == done
    assert results[1] == results[2] and results[1]["approved"]
    assert [r["decline_code"] for r in results[3:6]] == ["unknown_card", "not_active", "currency_mismatch"]
    assert results[6]["approved"]
    assert (await world.till("balance", card_number=number))["balance"] == 5000 - 100 - 200 - 300
    assert await world.count("entries", "kind = 'payment'") == 3
    await world.ledger_consistent()


async def test_an_id_recorded_between_check_and_write_sends_the_batch_back_to_single_runs(world: World):
    number = await world.sell("FLEX", 5000)
    first = await world.till("payment", card_number=number, amount=100)
    ledger = world.central.ledger

    async def misses_everything(conn, op_ids):  # as if the first payment committed just after the check
        return {}

    ledger.lookup = misses_everything
    bodies = [{"txn_id": first["txn_id"], "card_number": number, "amount": 100}] + [
        {"txn_id": txn(), "card_number": number, "amount": 100} for _ in range(5)]
    results = await asyncio.gather(*(world.till("payment", **b) for b in bodies))
    assert results[0] == first
    assert all(r["approved"] for r in results[1:])
    assert (await world.till("balance", card_number=number))["balance"] == 5000 - 600
    await world.ledger_consistent()


async def test_payment_cancels_share_batches_and_close_each_payment_once(world: World):
    number = await world.sell("FLEX", 20000)
    payments = [await world.till("payment", card_number=number, amount=1000) for _ in range(6)]
    refunded = payments[5]
    await world.till("refund", card_number=number, amount=100, original_txn_id=refunded["txn_id"])
    before = world.central.group.grouped
    cancels = [{"txn_id": txn(), "original_txn_id": p["txn_id"]} for p in payments for _ in range(2)]
    results = await asyncio.gather(*(world.till("payment/cancel", **body) for body in cancels))
    assert world.central.group.grouped > before
    by_payment = {}
    for body, result in zip(cancels, results):
        by_payment.setdefault(body["original_txn_id"], []).append(result)
    for payment in payments[:5]:
        answers = by_payment[payment["txn_id"]]
        assert sorted(r["decline_code"] or "approved" for r in answers) == ["already_cancelled", "approved"]
    assert {r["decline_code"] for r in by_payment[refunded["txn_id"]]} == {"cancel_not_allowed"}
    assert (await world.till("balance", card_number=number))["balance"] == 20000 - 6000 + 100 + 5000
    await world.ledger_consistent()

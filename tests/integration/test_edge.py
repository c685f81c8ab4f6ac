"""The store edge node against a real central over real HTTP: online first, offline within limits,
idempotency at the store, and sync healing everything afterwards."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from edge.keys import DATABASE

from ..edge_support import Edge
from ..netproxy import Mode
from ..support import txn


@pytest.fixture
async def edge(world, tmp_path):
    node = await Edge.start(world, tmp_path)
    await node.sync()  # tills, programmes, limits, the store's pack cards and number blocks
    yield node
    await node.close()


async def central_balance(world, number: str) -> int:
    return (await world.till("balance", card_number=number))["balance"]


async def sold_online(edge: Edge, amount: int = 10000, programme: str = "GIFT") -> str:
    number = edge.world.stock[programme].pop(0)
    sale = await edge.till("sale", card_number=number, amount=amount)
    assert sale["approved"] and sale["decision"] == "online", sale
    return number


async def test_online_payment_is_forwarded_and_journalled(edge, world):
    number = await sold_online(edge)
    body = {"txn_id": txn(), "card_number": number, "amount": 1500}
    paid = await edge.till("payment", **body)
    assert paid["approved"] and paid["decision"] == "online" and paid["balance"] == 8500
    assert await central_balance(world, number) == 8500
    # The store caches central's word and keeps the online answer out of the outbox.
    card = await edge.card(number)
    assert (card.balance, card.state, card.offline_count) == (8500, "active", 0)
    assert await edge.rows("SELECT * FROM outbox") == []
    # A repeat at the store is answered from its journal; another payload under the id is refused.
    edge.cut()
    again = await edge.client.post("/api/v1/till/payment", json=body, headers=world.tills["S1"])
    assert again.status == 200 and again.headers["Idempotent-Replay"] == "true"
    assert await again.json() == paid
    conflict = await edge.till("payment", expect=409, **{**body, "amount": 1600})
    assert conflict["error"]["code"] == "idempotency_conflict"
    edge.heal()
    assert await central_balance(world, number) == 8500


async def test_central_4xx_passes_through(edge, world):
    number = await sold_online(edge)
    body = {"txn_id": txn(), "card_number": number, "amount": 100}
    await world.till("payment", **body)  # the same id used at central directly by another channel
    answer = await edge.till("payment", **{**body, "amount": 200}, expect=409)
    assert answer["error"]["code"] == "idempotency_conflict"


async def test_bad_till_token_is_refused(edge, world):
    answer = await edge.till("payment", expect=401, headers={"Authorization": "Bearer nope"},
                             card_number=world.stock["GIFT"][0], amount=100)
    assert answer["error"]["code"] == "unauthorized"
    other_store = await edge.till("payment", expect=401, headers=world.tills["S2"],
                                  card_number=world.stock["GIFT"][0], amount=100)
    assert other_store["error"]["code"] == "unauthorized"


async def test_offline_decisions_stay_within_limits(edge, world):
    # Limits shipped by central (defaults): floor 5000, 10000 and 3 debits per card, budget 100000.
    a = await sold_online(edge, 20000, "FLEX")
    b, c = [await sold_online(edge) for _ in range(2)]
    blocked = await sold_online(edge)
    await world.admin("POST", f"/api/v1/admin/cards/{blocked}/block", {"request_id": txn(), "reason": "lost"})
    await edge.sync()
    assert await edge.rows(f"SELECT number FROM deny_list WHERE number = '{blocked}'")
    edge.cut()

    async def pay(number: str, amount: int) -> dict:
        result = await edge.till("payment", card_number=number, amount=amount)
        assert result["decision"] == "offline", result
        return result

    first = await pay(a, 5000)
    assert first["approved"] and first["balance"] == 15000
    assert (await pay(a, 5000))["approved"]
    assert (await pay(a, 1))["decline_code"] == "offline_limit"  # per-card amount
    assert (await pay(c, 5001))["decline_code"] == "offline_limit"  # floor limit
    for _ in range(3):
        assert (await pay(b, 100))["approved"]
    assert (await pay(b, 100))["decline_code"] == "offline_limit"  # per-card count
    assert (await pay(blocked, 100))["decline_code"] == "deny_listed"
    unknown = await pay(world.spare["GIFT"][0], 100)
    assert unknown["decline_code"] == "card_unknown_offline"
    # What was approved is queued in sequence for central; declines are journalled only.
    rows = await edge.rows("SELECT seq, amount, debit FROM outbox ORDER BY seq")
    assert [(r.seq, r.amount, bool(r.debit)) for r in rows] == [
        (1, 5000, True), (2, 5000, True), (3, 100, True), (4, 100, True), (5, 100, True)]
    health = await (await edge.client.get("/health")).json()
    assert health["central"] == "down" and health["backlog"] == 5 and health["offline_exposure"] == 10300


async def test_store_budget_caps_offline_exposure(edge, world):
    await world.admin("POST", "/api/v1/admin/stores/S1/offline-budget", {"amount": 6000, "currency": "EUR"})
    numbers = [await sold_online(edge) for _ in range(2)]
    await edge.sync()
    edge.cut()
    assert (await edge.till("payment", card_number=numbers[0], amount=4000))["approved"]
    over = await edge.till("payment", card_number=numbers[1], amount=2500)
    assert over["decline_code"] == "offline_limit" and "budget" in over["message"]
    assert (await edge.till("payment", card_number=numbers[1], amount=2000))["approved"]


async def test_offline_replay_and_conflict(edge, world):
    number = await sold_online(edge)
    edge.cut()
    body = {"txn_id": txn(), "card_number": number, "amount": 700}
    first = await edge.till("payment", **body)
    assert first["approved"] and first["decision"] == "offline"
    assert await edge.till("payment", **body) == first
    assert (await edge.till("payment", **{**body, "amount": 701}, expect=409))["error"]["code"] == \
        "idempotency_conflict"
    # After healing, the repeat still gets the first answer, and central posts the payment once.
    edge.heal()
    await edge.sync()
    assert await edge.till("payment", **body) == first
    assert await central_balance(world, number) == 10000 - 700


async def test_card_with_unsynced_entries_is_decided_at_the_store(edge, world):
    number = await sold_online(edge)
    edge.cut()
    assert (await edge.till("payment", card_number=number, amount=1000))["decision"] == "offline"
    edge.heal()
    # Central is back but has not seen the offline payment: the next one stays local (in order).
    follow = await edge.till("payment", card_number=number, amount=1000)
    assert follow["decision"] == "offline" and follow["balance"] == 8000
    await edge.sync()
    after = await edge.till("payment", card_number=number, amount=1000)
    assert after["decision"] == "online" and after["balance"] == 7000
    assert await central_balance(world, number) == 7000


async def test_unreachable_central_is_not_retried_by_every_till(world, tmp_path):
    node = await Edge.start(world, tmp_path, online_timeout=0.3)
    try:
        await node.sync()
        number = await sold_online(node)
        node.proxy.set(Mode.BLACKHOLE)
        started = time.monotonic()
        first = await node.till("payment", card_number=number, amount=100)
        assert first["decision"] == "offline" and time.monotonic() - started >= 0.3
        started = time.monotonic()
        second = await node.till("payment", card_number=number, amount=100)
        assert second["decision"] == "offline" and time.monotonic() - started < 0.3
    finally:
        await node.close()


async def test_offline_sale_issue_and_authorization_then_sync_heals(edge, world):
    pack_card = world.stock["GIFT"][0]
    assert (await edge.card(pack_card)).state == "in_pack"  # shipped by the pull as a sellable stock card
    paid_online = await sold_online(edge, programme="FLEX", amount=20000)
    edge.cut()

    sale = await edge.till("sale", card_number=pack_card, amount=5000)
    assert sale["approved"] and sale["decision"] == "offline" and sale["card_state"] == "active"
    issued = await edge.till("issue", programme="FLEX", amount=3000)
    assert issued["approved"] and issued["decision"] == "offline"
    new_number = issued["card_number"]
    assert (await edge.till("payment", card_number=new_number, amount=1000))["approved"]
    assert (await edge.till("topup", card_number=paid_online, amount=1500))["approved"]
    payment = await edge.till("payment", card_number=paid_online, amount=2000)
    assert payment["approved"]
    cancel = await edge.till("payment/cancel", original_txn_id=payment["txn_id"])
    assert cancel["approved"] and cancel["balance"] == 21500
    auth = await edge.till("authorize", card_number=pack_card, amount=1200)
    assert auth["approved"] and auth["available"] == 3800
    confirm = await edge.till("confirm", original_txn_id=auth["txn_id"], amount=1000)
    assert confirm["approved"] and confirm["balance"] == 4000 and confirm["available"] == 4000
    void_auth = await edge.till("authorize", card_number=paid_online, amount=500)
    void = {"txn_id": txn(), "original_txn_id": void_auth["txn_id"]}
    assert (await edge.till("void", **void))["approved"]
    assert (await edge.till("void", **void))["approved"]  # a replay
    assert (await edge.till("void", original_txn_id=void_auth["txn_id"]))["decline_code"] == "hold_not_pending"

    edge.heal()
    report = await edge.sync()
    assert report.pushed == 7 and not report.quarantined
    assert await edge.rows("SELECT * FROM outbox") == []
    expected = {pack_card: 4000, new_number: 2000, paid_online: 21500}
    for number, balance in expected.items():
        assert await central_balance(world, number) == balance, number
        card = await edge.card(number)
        assert (card.balance, card.held) == (balance, 0), number
    await world.ledger_consistent()
    health = await (await edge.client.get("/health")).json()
    assert health["backlog"] == 0 and health["acked_seq"] == 7 and health["offline_exposure"] == 0

    # Quiet again: another round moves nothing and changes nothing on either side.
    before = await edge.rows("SELECT number, state, balance, held FROM cards ORDER BY number")
    again = await edge.sync()
    assert (again.pushed, again.pulled_cards, again.deny_changes, again.epoch_changed) == (0, 0, 0, False)
    assert await edge.rows("SELECT number, state, balance, held FROM cards ORDER BY number") == before
    for number, balance in expected.items():
        assert await central_balance(world, number) == balance
    # The issued card is a real card at central now, and the store pays with it online.
    online = await edge.till("payment", card_number=new_number, amount=500)
    assert online["decision"] == "online" and online["balance"] == 1500


async def test_offline_holds_expire_exactly_once(edge, world):
    number = await sold_online(edge)
    edge.cut()
    auth = await edge.till("authorize", card_number=number, amount=1000)
    assert auth["available"] == 9000
    async with edge.client.server.app[DATABASE].begin() as conn:
        await conn.execute(sa.text("UPDATE holds SET expires_at = '2000-01-01 00:00:00.000000'"))
    assert await edge.node.expire_holds() == 1
    assert await edge.node.expire_holds() == 0
    card = await edge.card(number)
    assert (card.balance, card.held) == (10000, 0)
    late = await edge.till("confirm", original_txn_id=auth["txn_id"])
    assert late["decline_code"] == "hold_not_pending"


async def test_openapi_and_health(edge):
    doc = await (await edge.client.get("/openapi.json")).json()
    assert "/api/v1/till/issue" in doc["paths"] and "/api/v1/till/payment" in doc["paths"]
    health = await (await edge.client.get("/health")).json()
    assert health["database"] == "ok" and health["central"] == "reachable" and health["quarantined"] is False


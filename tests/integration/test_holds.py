"""Holds the till never closed: expiry by programme policy, exactly once, and operator resolution."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from aiohttp.test_utils import TestClient, TestServer

from central.app import create_app

from ..conftest import make_config
from ..support import World


def later(seconds: int = 3600) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def test_expiry_releases_reverse_policy_holds_exactly_once(world: World):
    number = await world.sell("GIFT", 5000)  # GIFT: hold_expiry_policy = reverse
    auth = await world.till("authorize", card_number=number, amount=2000)
    assert auth["available"] == 3000
    assert await world.central.holds.expire_due(datetime.now(UTC)) == {"released": 0, "clarification": 0}
    # Several workers sweeping at once still release the hold once.
    runs = await asyncio.gather(*(world.central.holds.expire_due(later()) for _ in range(4)))
    assert sum(r["released"] for r in runs) == 1
    balance = await world.till("balance", card_number=number)
    assert (balance["balance"], balance["held"], balance["available"]) == (5000, 0, 5000)
    assert await world.count("entries", "kind = 'release'") == 1
    late = await world.till("confirm", original_txn_id=auth["txn_id"])
    assert late["decline_code"] == "hold_not_pending"
    assert await world.central.holds.expire_due(later(7200)) == {"released": 0, "clarification": 0}
    await world.ledger_consistent()


async def test_clarify_policy_keeps_funds_held_until_an_operator_decides(world: World):
    number = await world.sell("FLEX", 10000)  # FLEX: hold_expiry_policy = clarify
    confirm_me = await world.till("authorize", card_number=number, amount=3000)
    reverse_me = await world.till("authorize", card_number=number, amount=1000)
    done = await world.central.holds.expire_due(later())
    assert done == {"released": 0, "clarification": 2}
    assert (await world.till("balance", card_number=number))["available"] == 6000
    listed = await world.admin("GET", "/api/v1/admin/holds")
    assert {h["authorization"]: h["status"] for h in listed} == {
        confirm_me["txn_id"]: "clarification", reverse_me["txn_id"]: "clarification"}
    ok = await world.admin("POST", f"/api/v1/admin/holds/{confirm_me['txn_id']}/resolve", {"action": "confirm"})
    assert ok["approved"] and ok["balance"] == 7000
    back = await world.admin("POST", f"/api/v1/admin/holds/{reverse_me['txn_id']}/resolve", {"action": "reverse"})
    assert back["approved"] and back["available"] == 7000
    # Resolving again the other way is refused; the same way again replays.
    conflict = await world.admin("POST", f"/api/v1/admin/holds/{confirm_me['txn_id']}/resolve",
                                 {"action": "reverse"}, expect=409)
    assert conflict["error"]["code"] == "idempotency_conflict"
    assert (await world.admin("POST", f"/api/v1/admin/holds/{confirm_me['txn_id']}/resolve",
                              {"action": "confirm"}))["balance"] == 7000
    assert await world.admin("GET", "/api/v1/admin/holds") == []
    balance = await world.till("balance", card_number=number)
    assert (balance["balance"], balance["held"]) == (7000, 0)
    await world.ledger_consistent()


async def test_operator_can_resolve_a_pending_hold_before_expiry(world: World):
    number = await world.sell("GIFT", 5000)
    auth = await world.till("authorize", card_number=number, amount=500)
    done = await world.admin("POST", f"/api/v1/admin/holds/{auth['txn_id']}/resolve", {"action": "reverse"})
    assert done["approved"] and done["available"] == 5000
    assert (await world.central.holds.expire_due(later()))["released"] == 0
    missing = await world.admin("POST", "/api/v1/admin/holds/not-a-uuid/resolve", {"action": "reverse"}, expect=404)
    assert missing["error"]["code"] == "not_found"


async def test_the_scheduler_expires_holds_on_its_own(db_url, tmp_path):
    config = make_config(db_url, tmp_path, scheduler=True, hold_sweep_seconds=0.2)
    async with TestClient(TestServer(create_app(config, migrate=False))) as client:
        world = await World.create(client)
        await world.admin("POST", "/api/v1/admin/programmes", {
            "code": "QUICK", "name": "Quick", "currency": "EUR", "number_prefix": "7", "number_length": 12,
            "min_amount": 100, "max_amount": 10000, "hold_ttl_seconds": 1})
        central = world.central
        async with central.db.begin() as conn:
            issue_id = await central.issuing.start_issue(conn, "QUICK", 1, "tests")
        issue = await central.issuing.run_issue(issue_id)
        number = issue["first_number"]
        pack = await world.admin("POST", "/api/v1/admin/packs", {"numbers": [number], "store_code": "S1"})
        await world.admin("POST", f"/api/v1/admin/packs/{pack['id']}/authorize")
        await world.till("sale", card_number=number, amount=5000)
        await world.till("authorize", card_number=number, amount=1000)
        for _ in range(50):
            await asyncio.sleep(0.1)
            if (await world.till("balance", card_number=number))["held"] == 0:
                break
        assert (await world.till("balance", card_number=number))["available"] == 5000
        assert await world.count("operations", "kind = 'hold_expiry'") == 1

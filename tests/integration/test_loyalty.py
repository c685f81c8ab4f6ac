"""Loyalty at central, as scenarios: receipts in, points, bonuses, redemptions, returns and expiries out.

Both backends, over the real HTTP APIs; the ledger invariant (balances = sums of entries) is checked after
each scenario, points accounts included.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from central.db.tables import audit_log, entries, points_lots

from ..support import txn

STORE_TZ = timezone(timedelta(hours=1))


def scheme(code: str, version: int = 1, *, valid_from: datetime | None = None, points: int = 1, per: int = 100,
           **extra) -> dict:
    start = valid_from or datetime.now(UTC)
    return {"code": code, "version": version, "valid_from": start.isoformat(),
            "rule": {"type": "per_value", "points": points, "per": per, "currency": "EUR"}, **extra}


def plan(**extra) -> dict:
    return {"programme": "LOYAL", **extra}


TIERS = {"basis": "turnover", "period_days": 365, "anchor": "2026-01-01T00:00:00Z", "tiers": [
    {"code": "BRONZE", "rank": 1, "threshold": 0, "points_per_unit": 1, "unit_minor": 1, "max_redemption_bps": 2000},
    {"code": "GOLD", "rank": 2, "threshold": 10_000_000, "points_per_unit": 1, "unit_minor": 2,
     "max_redemption_bps": 5000}]}


def line(item: str, value: int, quantity: int = 1000, **extra) -> dict:
    return {"item": item, "quantity": quantity, "value": value, **extra}


@pytest.fixture
async def loyal(world) -> list[str]:
    """Twenty active loyalty cards of programme LOYAL at store S1."""
    return await world.loyalty_cards(20)


async def receipt(world, number: str, *lines: dict, at: datetime | None = None, expect: int = 200, **extra):
    at = at or datetime.now(STORE_TZ)
    return await world.till("receipts", expect=expect, card_number=number, at=at.isoformat(), currency="EUR",
                            lines=list(lines) or [line("A", 1000)], **extra)


async def test_a_receipt_earns_by_the_scheme_and_posts_one_entry_per_lot(world, loyal):
    await world.admin("POST", "/api/v1/admin/loyalty/schemes", scheme("BASE"))
    result = await receipt(world, loyal[0], line("A", 1250), line("B", 399, item_group="DAIRY"))
    assert result["approved"] and result["points_earned"] == 12 + 3
    assert result["points"] == {"balance": 15, "available": 15, "pending": 0, "debt": 0, "tier": None}
    assert [a["points"] for a in result["awards"]] == [12, 3]
    points = await world.till("points", card_number=loyal[0])
    assert (points["balance"], points["available"]) == (15, 15)
    await world.ledger_consistent()


async def test_a_repeated_receipt_earns_once_and_another_payload_is_refused(world, loyal):
    await world.admin("POST", "/api/v1/admin/loyalty/schemes", scheme("BASE"))
    at = datetime.now(STORE_TZ)
    body = {"txn_id": txn(), "card_number": loyal[0], "at": at.isoformat(), "currency": "EUR",
            "lines": [line("A", 5000)]}
    first = await world.till("receipts", **body)
    again = await world.till("receipts", **body)
    assert again == first and first["points_earned"] == 50
    conflict = await world.till("receipts", expect=409, **(body | {"lines": [line("A", 9000)]}))
    assert conflict["error"]["code"] == "idempotency_conflict"
    assert (await world.till("points", card_number=loyal[0]))["balance"] == 50


async def test_a_receipt_earns_by_the_version_in_force_at_its_own_time(world, loyal):
    now = datetime.now(UTC)
    await world.admin("POST", "/api/v1/admin/loyalty/schemes", scheme("BASE", 1, valid_from=now))
    await world.admin("POST", "/api/v1/admin/loyalty/schemes",
                      scheme("BASE", 2, valid_from=now + timedelta(hours=1), points=3))
    before = await receipt(world, loyal[0], line("A", 1000), at=now + timedelta(minutes=30))
    after = await receipt(world, loyal[0], line("A", 1000), at=now + timedelta(hours=2))
    assert (before["points_earned"], before["awards"][0]["version"]) == (10, 1)
    assert (after["points_earned"], after["awards"][0]["version"]) == (30, 2)
    history = await world.admin("GET", "/api/v1/admin/loyalty/schemes/BASE")
    assert [h["revision"] for h in history] == [1, 2]
    async with world.central.db.connect() as conn:
        actions = (await conn.execute(sa.select(audit_log.c.action).where(
            audit_log.c.action == "loyalty.scheme.publish"))).scalars().all()
    assert len(actions) == 2


@pytest.mark.parametrize("mode, expected", [("max", 30), ("sum", 40), ("priority", 10)])
async def test_competing_schemes_combine_by_the_plans_mode(world, loyal, mode, expected):
    await world.admin("POST", "/api/v1/admin/loyalty/plans", plan(combination=mode))
    await world.admin("POST", "/api/v1/admin/loyalty/schemes", scheme("BASE", priority=5))
    await world.admin("POST", "/api/v1/admin/loyalty/schemes", scheme("WINE", points=3, priority=1,
                                                                     criteria={"item_groups": ["WINE"]}))
    result = await receipt(world, loyal[0], line("W", 1000, item_group="WINE"))
    assert result["points_earned"] == expected


async def test_schemes_and_plans_refuse_bad_rules_with_the_field_named(world, loyal):
    bad = await world.admin("POST", "/api/v1/admin/loyalty/schemes",
                            scheme("BASE") | {"rule": {"type": "per_value", "points": 1, "per": 0,
                                                       "currency": "EUR"}}, expect=422)
    assert bad["error"]["code"] == "invalid_rule" and "per" in bad["error"]["message"]
    skipped = await world.admin("POST", "/api/v1/admin/loyalty/schemes", scheme("BASE", 2), expect=422)
    assert "version" in skipped["error"]["message"]
    past = await world.admin("POST", "/api/v1/admin/loyalty/schemes",
                             scheme("BASE", valid_from=datetime.now(UTC) - timedelta(days=1)), expect=422)
    assert "past" in past["error"]["message"]
    gift = await world.admin("POST", "/api/v1/admin/loyalty/plans", {"programme": "GIFT"}, expect=422)
    assert gift["error"]["code"] == "not_a_loyalty_programme"
    assert await world.count("loyalty_rules") == 0


async def test_a_gift_card_earns_nothing(world, loyal):
    number = await world.sell("GIFT")
    result = await receipt(world, number)
    assert not result["approved"] and result["decline_code"] == "not_a_loyalty_card"


async def test_redemption_is_capped_by_the_tiers_share_of_the_receipt(world, loyal):
    await world.admin("POST", "/api/v1/admin/loyalty/plans", plan(tiers=TIERS))
    await world.admin("POST", "/api/v1/admin/cards/{}/points/adjust".format(loyal[0]),
                      {"request_id": txn(), "points": 5000, "reason": "welcome"})
    result = await world.till("points/redeem", card_number=loyal[0], receipt_total=10000, currency="EUR")
    # Bronze: 1 point = 1 cent, at most 20 % of the receipt
    assert (result["approved"], result["discount"], result["points_redeemed"], result["limited_by"]) == \
        (True, 2000, 2000, "cap")
    asked = await world.till("points/redeem", card_number=loyal[0], receipt_total=10000, currency="EUR", points=500)
    assert (asked["discount"], asked["limited_by"]) == (500, "requested")
    too_many = await world.till("points/redeem", card_number=loyal[0], receipt_total=10000, currency="EUR",
                                points=999_999)
    assert too_many["decline_code"] == "insufficient_points"
    assert (await world.till("points", card_number=loyal[0]))["available"] == 2500
    await world.ledger_consistent()


async def test_a_reversed_redemption_gives_its_points_back_once(world, loyal):
    await world.admin("POST", "/api/v1/admin/loyalty/plans", plan(tiers=TIERS, lifetime_days=30))
    await world.admin("POST", f"/api/v1/admin/cards/{loyal[0]}/points/adjust",
                      {"request_id": txn(), "points": 1000, "reason": "goodwill"})
    spent = await world.till("points/redeem", card_number=loyal[0], receipt_total=100000, currency="EUR")
    assert spent["points_redeemed"] == 1000
    back = await world.till("points/redeem/reverse", original_txn_id=spent["txn_id"])
    assert back["approved"] and back["points_returned"] == 1000
    again = await world.till("points/redeem/reverse", original_txn_id=spent["txn_id"])
    assert not again["approved"] and again["decline_code"] == "already_cancelled"
    view = await world.admin("GET", f"/api/v1/admin/cards/{loyal[0]}/loyalty")
    assert view["available"] == 1000
    assert [lot["expires_at"] is not None for lot in view["lots"]] == [True]  # the lot kept its expiry
    await world.ledger_consistent()


async def test_a_return_takes_back_the_points_of_what_comes_back_and_spent_points_become_a_debt(world, loyal):
    await world.admin("POST", "/api/v1/admin/loyalty/plans", plan(tiers=TIERS))
    await world.admin("POST", "/api/v1/admin/loyalty/schemes", scheme("BASE"))
    sale = await receipt(world, loyal[0], line("A", 3000, quantity=3000), line("B", 1000))
    assert sale["points_earned"] == 40
    part = await world.till("receipts/return", card_number=loyal[0], original_txn_id=sale["txn_id"],
                            lines=[{"line": 0, "quantity": 1000}])
    assert (part["points_taken_back"], part["value_returned"]) == (10, 1000)
    spend = await world.till("points/redeem", card_number=loyal[0], receipt_total=100000, currency="EUR")
    assert spend["points_redeemed"] == 30
    rest = await world.till("receipts/return", card_number=loyal[0], original_txn_id=sale["txn_id"])
    assert rest["points_taken_back"] == 30 and rest["points"]["debt"] == 30 and rest["points"]["balance"] == -30
    more = await world.till("receipts/return", card_number=loyal[0], original_txn_id=sale["txn_id"])
    assert more["decline_code"] == "return_exceeds_receipt"
    # the next earnings pay the debt first
    paid = await receipt(world, loyal[0], line("C", 5000))
    assert paid["points"] == {"balance": 20, "available": 20, "pending": 0, "debt": 0, "tier": None} | {
        "tier": paid["points"]["tier"]}
    await world.ledger_consistent()


async def test_part_returns_take_back_what_one_whole_return_would(world, loyal):
    await world.admin("POST", "/api/v1/admin/loyalty/schemes", scheme("BASE"))
    sale = await receipt(world, loyal[0], line("A", 1000, quantity=3000))  # 10 points for 3 pieces
    taken = 0
    for _ in range(3):
        back = await world.till("receipts/return", card_number=loyal[0], original_txn_id=sale["txn_id"],
                                lines=[{"line": 0, "quantity": 1000}])
        taken += back["points_taken_back"]
    assert taken == 10
    assert (await world.till("points", card_number=loyal[0]))["balance"] == 0


async def test_points_pend_then_expire_lot_by_lot_first_in_first_out(world, loyal):
    await world.admin("POST", "/api/v1/admin/loyalty/schemes", scheme("BASE"))
    await world.admin("POST", "/api/v1/admin/loyalty/plans", plan(tiers=TIERS, pending_days=1, lifetime_days=30))
    first = await receipt(world, loyal[0], line("A", 1000))
    assert first["points"]["pending"] == 10 and first["points"]["available"] == 0
    pending = await world.till("points/redeem", card_number=loyal[0], receipt_total=10000, currency="EUR")
    assert pending["decline_code"] == "insufficient_points"
    await world.admin("POST", "/api/v1/admin/loyalty/plans", plan(tiers=TIERS, pending_days=1, lifetime_days=60))
    await receipt(world, loyal[0], line("A", 2000))
    central = world.central
    now = datetime.now(UTC)
    assert await central.loyalty.expire_points(now + timedelta(days=29)) == 0
    assert await central.loyalty.expire_points(now + timedelta(days=31)) == 10  # the first lot only
    assert await central.loyalty.expire_points(now + timedelta(days=31)) == 0  # a rerun changes nothing
    view = await central.loyalty.points_of(loyal[0], now + timedelta(days=31))
    assert (view["balance"], view["available"]) == (20, 20)
    assert await central.loyalty.expire_points(now + timedelta(days=61)) == 20
    async with central.db.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(points_lots))).scalar_one() == 0
        kinds = (await conn.execute(sa.select(entries.c.kind, sa.func.sum(entries.c.amount))
                                    .where(entries.c.currency == "PTS").group_by(entries.c.kind))).all()
    assert dict(kinds) == {"earn": 30, "expiry": -30}
    await world.ledger_consistent()


async def test_bonuses_for_registration_first_purchase_and_birthday_are_credited_once(world, loyal):
    await world.admin("POST", "/api/v1/admin/loyalty/plans",
                      plan(bonuses={"registration": 100, "first_purchase": 50, "birthday": 200}))
    today = datetime.now(UTC).date()
    born = today.replace(year=1990) if not (today.month == 2 and today.day == 29) else today.replace(year=1992)
    customer = await world.admin("POST", "/api/v1/admin/customers", {
        "request_id": txn(), "first_name": "Ada", "last_name": "Byron", "birth_date": born.isoformat(),
        "phone": "+441234567890", "card_number": loyal[0]})
    assert customer["id"]
    assert (await world.till("points", card_number=loyal[0]))["balance"] == 100
    first = await receipt(world, loyal[0])
    second = await receipt(world, loyal[0])
    assert (first["bonus"], second["bonus"]) == (50, 0)
    assert await world.central.loyalty.birthday_bonuses(today) == 1
    assert await world.central.loyalty.birthday_bonuses(today) == 0
    assert (await world.till("points", card_number=loyal[0]))["balance"] == 350
    await world.ledger_consistent()


async def test_staff_adjustments_need_a_reason_are_audited_and_cannot_overdraw(world, loyal):
    request = {"request_id": txn(), "points": 300, "reason": "complaint 4711"}
    credited = await world.admin("POST", f"/api/v1/admin/cards/{loyal[0]}/points/adjust", request)
    assert credited["points_adjusted"] == 300
    debit = await world.admin("POST", f"/api/v1/admin/cards/{loyal[0]}/points/adjust",
                              {"request_id": txn(), "points": -500, "reason": "mistake"})
    assert debit["decline_code"] == "insufficient_points"
    no_reason = await world.admin("POST", f"/api/v1/admin/cards/{loyal[0]}/points/adjust",
                                  {"request_id": txn(), "points": 5, "reason": ""}, expect=422)
    assert no_reason["error"]["code"] == "invalid_request"
    blank = await world.admin("POST", f"/api/v1/admin/cards/{loyal[0]}/points/adjust",
                              {"request_id": txn(), "points": 5, "reason": "   "}, expect=422)
    assert blank["error"]["code"] == "invalid_input"
    async with world.central.db.connect() as conn:
        details = (await conn.execute(sa.select(audit_log.c.details).where(
            audit_log.c.action == "points_adjust"))).scalars().all()
    assert [d["reason"] for d in details] == ["complaint 4711"]


async def test_rewards_spend_points_and_stock(world, loyal):
    await world.admin("PUT", "/api/v1/admin/loyalty/rewards/MUG", {"name": "Mug", "points": 400, "stock": 1})
    await world.admin("POST", f"/api/v1/admin/cards/{loyal[0]}/points/adjust",
                      {"request_id": txn(), "points": 1000, "reason": "test"})
    taken = await world.till("rewards/redeem", card_number=loyal[0], reward="MUG")
    assert taken["approved"] and taken["points"]["available"] == 600
    gone = await world.till("rewards/redeem", card_number=loyal[0], reward="MUG")
    assert gone["decline_code"] == "reward_out_of_stock"
    assert (await world.admin("GET", "/api/v1/admin/loyalty/rewards"))[0]["stock"] == 0


async def test_staff_add_a_receipt_later_at_a_named_store(world, loyal):
    await world.admin("POST", "/api/v1/admin/loyalty/schemes", scheme("BASE"))
    body = {"request_id": str(uuid.uuid4()), "store_code": "S2", "at": datetime.now(STORE_TZ).isoformat(),
            "currency": "EUR", "lines": [line("A", 2500)]}
    added = await world.admin("POST", f"/api/v1/admin/cards/{loyal[0]}/receipts", body)
    assert added["approved"] and added["points_earned"] == 25
    view = await world.admin("GET", f"/api/v1/admin/cards/{loyal[0]}/loyalty")
    assert [(r["channel"], r["total"]) for r in view["receipts"]] == [("admin", 2500)]
    unknown = await world.admin("POST", f"/api/v1/admin/cards/{loyal[0]}/receipts",
                                body | {"request_id": str(uuid.uuid4()), "store_code": "NOPE"}, expect=422)
    assert unknown["error"]["code"] == "unknown_store"


async def test_malformed_receipts_are_refused_with_a_json_error_and_change_nothing(world, loyal):
    for bad in ({"lines": []}, {"at": "2026-12-01T10:00:00"}, {"lines": [{"item": "A", "quantity": 0, "value": 1}]},
                {"currency": "euro"}):
        resp = await world.client.post("/api/v1/till/receipts", headers=world.tills["S1"], json={
            "txn_id": txn(), "card_number": loyal[0], "at": datetime.now(STORE_TZ).isoformat(), "currency": "EUR",
            "lines": [line("A", 100)], **bad})
        assert resp.status == 422
        assert (await resp.json())["error"]["code"]
    assert await world.count("receipts") == 0


async def test_a_replacement_card_keeps_the_points_their_dates_the_tier_and_the_customer(world, loyal):
    await world.admin("POST", "/api/v1/admin/loyalty/plans", plan(tiers=TIERS, lifetime_days=30))
    await world.admin("POST", "/api/v1/admin/loyalty/schemes", scheme("BASE"))
    customer = await world.admin("POST", "/api/v1/admin/customers", {
        "request_id": txn(), "first_name": "Lost", "last_name": "Card", "phone": "+441234500001",
        "card_number": loyal[0]})
    await receipt(world, loyal[0], line("A", 12_000))
    before = await world.admin("GET", f"/api/v1/admin/cards/{loyal[0]}/loyalty")
    [spare] = await world.loyalty_cards(1, sell=False)  # the replacement comes from the store's stock
    await world.admin("POST", f"/api/v1/admin/cards/{loyal[0]}/duplicate",
                      {"new_card_number": spare, "request_id": txn()})
    after = await world.admin("GET", f"/api/v1/admin/cards/{spare}/loyalty")
    assert (after["balance"], after["available"], after["tier"]) == (120, 120, before["tier"])
    assert [lot["expires_at"] for lot in after["lots"]] == [lot["expires_at"] for lot in before["lots"]]
    assert (await world.till("points", card_number=loyal[0]))["balance"] == 0
    bound = await world.admin("GET", f"/api/v1/admin/customers/{customer['id']}")
    assert spare in [c["number"] if isinstance(c, dict) else c for c in bound["cards"]]
    await world.ledger_consistent()


async def test_points_and_e_money_convert_at_the_plans_rates_never_in_the_customers_favour(world, loyal):
    await world.admin("POST", "/api/v1/admin/loyalty/plans", plan(
        emoney_to_points={"points": 1, "minor": 1}, points_to_emoney={"points": 3, "minor": 1}))
    await world.admin("POST", f"/api/v1/admin/cards/{loyal[0]}/points/adjust",
                      {"request_id": txn(), "points": 1000, "reason": "test"})
    cashed = await world.till("points/convert", card_number=loyal[0], direction="to_emoney", amount=1000)
    assert (cashed["points_converted"], cashed["emoney"]) == (999, 333)  # 1 point stays: it buys no cent
    assert cashed["balance"] == 100 + 333 and cashed["points"]["available"] == 1
    bought = await world.till("points/convert", card_number=loyal[0], direction="to_points", amount=50)
    assert (bought["points_converted"], bought["emoney"], bought["balance"]) == (50, 50, 383)
    broke = await world.till("points/convert", card_number=loyal[0], direction="to_points", amount=10_000)
    assert broke["decline_code"] == "insufficient_funds"
    await world.ledger_consistent()


async def test_a_balance_inquiry_on_a_loyalty_card_shows_points_and_tier(world, loyal):
    await world.admin("POST", "/api/v1/admin/loyalty/plans", plan(tiers=TIERS))
    await world.admin("POST", f"/api/v1/admin/cards/{loyal[0]}/points/adjust",
                      {"request_id": txn(), "points": 75, "reason": "test"})
    await receipt(world, loyal[0], line("A", 100))
    balance = await world.till("balance", card_number=loyal[0])
    assert (balance["balance"], balance["points"], balance["tier"]) == (100, 75, "BRONZE")


async def test_a_pool_spends_and_loads_the_master_cards_e_money(world, loyal):
    master, member, other = loyal[0], loyal[1], loyal[2]
    joined = await world.admin("POST", f"/api/v1/admin/cards/{member}/pool",
                               {"request_id": txn(), "master_card_number": master})
    assert joined["approved"] and joined["pool_balance"] == 200  # the member's 1.00 moved to the master
    paid = await world.till("payment", card_number=member, amount=150)
    assert paid["approved"] and paid["balance"] == 50
    assert (await world.till("balance", card_number=master))["balance"] == 50
    topped = await world.till("topup", card_number=master, amount=1000)
    assert topped["balance"] == 1050 and (await world.till("balance", card_number=member))["balance"] == 1050
    twice = await world.admin("POST", f"/api/v1/admin/cards/{member}/pool",
                              {"request_id": txn(), "master_card_number": other})
    assert not twice["approved"]
    chained = await world.admin("POST", f"/api/v1/admin/cards/{other}/pool",
                                {"request_id": txn(), "master_card_number": member})
    assert not chained["approved"]  # a member is no master
    [spare] = await world.loyalty_cards(1, sell=False)
    await world.admin("POST", f"/api/v1/admin/cards/{member}/duplicate", {"new_card_number": spare,
                                                                          "request_id": txn()})
    assert (await world.till("balance", card_number=spare))["balance"] == 1050  # the replacement stays pooled
    left = await world.admin("POST", f"/api/v1/admin/cards/{spare}/pool/leave", {"request_id": txn()})
    assert left["approved"] and (await world.till("balance", card_number=spare))["balance"] == 0
    assert (await world.till("balance", card_number=master))["balance"] == 1050
    await world.ledger_consistent()


async def test_reversing_a_redemption_of_a_receipt_lot_and_its_bonus_lot_restores_both(world, loyal):
    await world.admin("POST", "/api/v1/admin/loyalty/plans", plan(tiers=TIERS, bonuses={"first_purchase": 50}))
    await world.admin("POST", "/api/v1/admin/loyalty/schemes", scheme("BASE"))
    first = await receipt(world, loyal[0], line("A", 10_000))
    assert (first["points_earned"], first["bonus"], first["points"]["tier"]) == (100, 50, "BRONZE")
    spent = await world.till("points/redeem", card_number=loyal[0], receipt_total=100_000, currency="EUR")
    assert spent["points_redeemed"] == 150 and len(spent["lots"]) == 2
    back = await world.till("points/redeem/reverse", original_txn_id=spent["txn_id"])
    assert back["approved"] and back["points_returned"] == 150 and back["points"]["available"] == 150
    await world.ledger_consistent()


async def test_retiring_a_scheme_also_cancels_its_versions_to_come(world, loyal):
    now = datetime.now(UTC)
    await world.admin("POST", "/api/v1/admin/loyalty/schemes", scheme("BASE", 1, valid_from=now))
    await world.admin("POST", "/api/v1/admin/loyalty/schemes",
                      scheme("BASE", 2, valid_from=now + timedelta(hours=1), points=3))
    await world.admin("POST", "/api/v1/admin/loyalty/schemes/BASE/retire", {})
    for at in (now + timedelta(minutes=1), now + timedelta(hours=2)):
        assert (await receipt(world, loyal[0], line("A", 1000), at=at))["points_earned"] == 0


async def test_a_card_in_debt_spends_only_points_beyond_its_debt(world, loyal):
    await world.admin("POST", "/api/v1/admin/loyalty/plans", plan(tiers=TIERS))
    await world.admin("POST", "/api/v1/admin/loyalty/schemes", scheme("BASE"))
    sale = await receipt(world, loyal[0], line("A", 10_000))
    await world.till("points/redeem", card_number=loyal[0], receipt_total=100_000, currency="EUR")
    await world.till("receipts/return", card_number=loyal[0], original_txn_id=sale["txn_id"])  # 100 owed
    await world.admin("POST", f"/api/v1/admin/cards/{loyal[0]}/points/adjust",
                      {"request_id": txn(), "points": 30, "reason": "goodwill"})  # pays 30 of the debt
    await receipt(world, loyal[0], line("B", 15_000))  # 150: 70 pay the rest of the debt, 80 in a lot
    points = await world.till("points", card_number=loyal[0])
    assert (points["balance"], points["available"], points["debt"]) == (80, 80, 0)
    spent = await world.till("points/redeem", card_number=loyal[0], receipt_total=100_000, currency="EUR")
    assert spent["points_redeemed"] == 80
    await world.ledger_consistent()


async def test_a_scheme_for_a_store_group_earns_only_in_the_stores_of_the_group(world, loyal):
    await world.admin("PUT", "/api/v1/admin/stores/S1/groups", {"groups": ["CITY", "NORTH"]})
    await world.admin("POST", "/api/v1/admin/loyalty/schemes", scheme("CITY", criteria={"store_groups": ["CITY"]}))
    assert (await receipt(world, loyal[0], line("A", 1000)))["points_earned"] == 10
    body = {"card_number": loyal[0], "at": datetime.now(STORE_TZ).isoformat(), "currency": "EUR",
            "lines": [line("A", 1000)]}
    assert (await world.till("receipts", store="S2", **body))["points_earned"] == 0
    unknown = await world.admin("PUT", "/api/v1/admin/stores/NOPE/groups", {"groups": []}, expect=404)
    assert unknown["error"]["code"] == "not_found"

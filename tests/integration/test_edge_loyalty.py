"""Loyalty at the store: receipts earn offline and sync exactly once, redemptions stay within limits
offline, and the POS's questions (points, segments, discount level) are answered when central is cut off.

The edge is the real app on a SQLite file, talking to a real central over HTTP through a proxy the tests cut.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone

import sqlalchemy as sa

from central.db.tables import cards as central_cards
from central.db.tables import operations, receipts, segment_changes, sync_exceptions
from core import OperationKind
from sync import LoyaltyDetail, OutboxEntry, ReceiptLineData

from ..edge_support import Edge
from ..support import SyncPeer

STORE_TZ = timezone(timedelta(hours=1))
TIERS = {"basis": "turnover", "period_days": 365, "anchor": "2026-01-01T00:00:00Z", "tiers": [
    {"code": "BRONZE", "rank": 1, "threshold": 0, "points_per_unit": 1, "unit_minor": 1, "max_redemption_bps": 5000},
    {"code": "GOLD", "rank": 2, "threshold": 10_000_000, "max_redemption_bps": 10000}]}


async def _setup(world, tmp_path) -> tuple[Edge, list[str]]:
    numbers = await world.loyalty_cards(5)
    await world.admin("POST", "/api/v1/admin/loyalty/plans", {"programme": "LOYAL", "tiers": TIERS})
    await world.admin("POST", "/api/v1/admin/loyalty/schemes", {
        "code": "BASE", "version": 1, "valid_from": (datetime.now(UTC) - timedelta(seconds=30)).isoformat(),
        "rule": {"type": "per_value", "points": 1, "per": 100, "currency": "EUR"},
        "multipliers": [{"basis_points": 20000, "weekdays": [6, 7]}]})
    edge = await Edge.start(world, tmp_path)
    await edge.sync()
    return edge, numbers


def _receipt(number: str, value: int, at: datetime | None = None, **extra) -> dict:
    return {"card_number": number, "at": (at or datetime.now(STORE_TZ)).isoformat(), "currency": "EUR",
            "lines": [{"item": "A", "quantity": 1000, "value": value}], **extra}


async def _redeemed_offline(edge: Edge, number: str) -> dict:
    """3,000 points earned online, then central cut off and 2,000 of them redeemed at the store."""
    await edge.till("receipts", **_receipt(number, 300_000))
    edge.cut()
    offline = await edge.till("points/redeem", card_number=number, receipt_total=4000, currency="EUR")
    assert (offline["decision"], offline["approved"], offline["points_redeemed"]) == ("offline", True, 2000)
    return offline


async def test_offline_earning_is_synced_exactly_once(world, tmp_path):
    edge, numbers = await _setup(world, tmp_path)
    try:
        online = await edge.till("receipts", **_receipt(numbers[0], 1000))
        assert online["decision"] == "online" and online["points_earned"] == 10
        edge.cut()
        saturday = datetime(2026, 12, 5, 11, 0, tzinfo=STORE_TZ)  # double points at weekends, offline too
        body = {"txn_id": str(uuid.uuid4()), **_receipt(numbers[0], 2500, at=saturday)}
        offline = await edge.till("receipts", **body)
        assert (offline["decision"], offline["approved"], offline["points_earned"]) == ("offline", True, 50)
        assert await edge.till("receipts", **body) == offline  # a repeat answers the first answer
        assert (await world.till("points", card_number=numbers[0]))["balance"] == 10  # central has not seen it
        edge.heal()
        report = await edge.sync()
        assert report.pushed == 1
        assert (await world.till("points", card_number=numbers[0]))["balance"] == 60
        assert (await edge.sync()).pushed == 0  # syncing again changes nothing
        assert (await world.till("points", card_number=numbers[0]))["balance"] == 60
        async with world.central.db.connect() as conn:
            synced = (await conn.execute(sa.select(receipts.c.channel, receipts.c.points, receipts.c.local_date)
                                         .where(receipts.c.id == uuid.UUID(body["txn_id"])))).one()
            ops = (await conn.execute(sa.select(sa.func.count()).select_from(operations).where(
                operations.c.id == uuid.UUID(body["txn_id"])))).scalar_one()
        assert (synced.channel, synced.points, synced.local_date.isoformat(), ops) == \
            ("offline", 50, "2026-12-05", 1)
        await world.ledger_consistent()
    finally:
        await edge.close()


async def test_a_store_with_outdated_schemes_keeps_its_points_and_head_office_sees_the_difference(world, tmp_path):
    edge, numbers = await _setup(world, tmp_path)
    try:
        edge.cut()
        soon = datetime.now(UTC) + timedelta(seconds=2)
        await world.admin("POST", "/api/v1/admin/loyalty/schemes", {
            "code": "BASE", "version": 2, "valid_from": soon.isoformat(),
            "rule": {"type": "per_value", "points": 5, "per": 100, "currency": "EUR"}})
        later = datetime.now(STORE_TZ) + timedelta(minutes=5)
        offline = await edge.till("receipts", **_receipt(numbers[1], 1000, at=later))
        assert offline["points_earned"] == 10  # the store only knows version 1
        edge.heal()
        await edge.sync()
        assert (await world.till("points", card_number=numbers[1]))["balance"] == 10  # the slip's points stand
        async with world.central.db.connect() as conn:
            flagged = (await conn.execute(sa.select(sync_exceptions.c.details).where(
                sync_exceptions.c.kind == "loyalty"))).scalars().all()
        assert flagged and flagged[0]["flags"] == ["points_differ"] and flagged[0]["points_by_rules"] == 50
        # the next pull brings version 2: the store now earns by it
        await edge.sync()
        edge.cut()
        now_v2 = await edge.till("receipts", **_receipt(numbers[1], 1000, at=later))
        assert now_v2["points_earned"] == 50
    finally:
        await edge.close()


async def test_offline_redemption_stays_within_the_card_points_and_the_limits(world, tmp_path):
    edge, numbers = await _setup(world, tmp_path)
    try:
        number = numbers[2]
        earned = await edge.till("receipts", **_receipt(number, 2_000_000))  # 20,000 points, seen online
        assert earned["decision"] == "online"
        assert (await edge.card(number)).points == 20000
        edge.cut()
        first = await edge.till("points/redeem", card_number=number, receipt_total=4000, currency="EUR")
        assert (first["decision"], first["approved"], first["points_redeemed"], first["discount"]) == \
            ("offline", True, 2000, 2000)  # half the receipt, the tier's cap
        over_floor = await edge.till("points/redeem", card_number=number, receipt_total=20000, currency="EUR")
        assert over_floor["decline_code"] == "offline_limit"  # 100.00 discount > the 50.00 floor limit
        too_many = await edge.till("points/redeem", card_number=number, receipt_total=4000, currency="EUR",
                                   points=19000)
        assert too_many["decline_code"] == "insufficient_points"  # 18,000 left as far as the store knows
        assert (await edge.card(number)).points == 18000
        known_empty = await edge.till("points/redeem", card_number=numbers[3], receipt_total=4000, currency="EUR")
        assert known_empty["decline_code"] == "insufficient_points"  # a card of the store with no points
        [elsewhere] = await world.loyalty_cards(1, store="S2")
        unknown = await edge.till("points/redeem", card_number=elsewhere, receipt_total=4000, currency="EUR")
        assert unknown["decline_code"] == "card_unknown_offline"
        health = await (await edge.client.get("/health")).json()
        assert health["offline_exposure"] == 2000
        edge.heal()
        await edge.sync()
        assert (await world.till("points", card_number=number))["balance"] == 18000
        assert (await edge.card(number)).points == 18000
        await world.ledger_consistent()
    finally:
        await edge.close()


async def test_an_offline_redemption_of_points_spent_elsewhere_becomes_a_debt(world, tmp_path):
    edge, numbers = await _setup(world, tmp_path)
    try:
        number = numbers[2]
        await _redeemed_offline(edge, number)
        spent = await world.till("points/redeem", card_number=number, receipt_total=100_000, currency="EUR",
                                 store="S2")  # meanwhile, at another store, online
        assert spent["points_redeemed"] == 3000
        edge.heal()
        await edge.sync()
        points = await world.till("points", card_number=number)
        assert (points["balance"], points["debt"]) == (-2000, 2000)
        await world.ledger_consistent()
    finally:
        await edge.close()


async def test_returns_offline_are_settled_by_central(world, tmp_path):
    edge, numbers = await _setup(world, tmp_path)
    try:
        sale = await edge.till("receipts", **_receipt(numbers[0], 3000))
        edge.cut()
        back = await edge.till("receipts/return", card_number=numbers[0], original_txn_id=sale["txn_id"])
        assert (back["decision"], back["approved"], back["points_taken_back"]) == ("offline", True, None)
        edge.heal()
        await edge.sync()
        assert (await world.till("points", card_number=numbers[0]))["balance"] == 0
    finally:
        await edge.close()


async def test_points_segments_and_discount_level_are_answered_offline(world, tmp_path):
    edge, numbers = await _setup(world, tmp_path)
    try:
        async with world.central.db.begin() as conn:
            card_id = (await conn.execute(sa.select(central_cards.c.id).where(
                central_cards.c.number == numbers[0]))).scalar_one()
            at = datetime.now(UTC) - timedelta(minutes=1)
            await conn.execute(sa.insert(segment_changes), [
                {"segment": "WINE_LOVERS", "card_id": card_id, "number": numbers[0], "member": True, "at": at},
                {"segment": "LAPSED", "card_id": card_id, "number": numbers[0], "member": True, "at": at},
                {"segment": "LAPSED", "card_id": card_id, "number": numbers[0], "member": False, "at": at}])
        await edge.till("receipts", **_receipt(numbers[0], 1500))
        await edge.sync()
        edge.cut()
        segments = await edge.till("segments", card_number=numbers[0])
        assert (segments["decision"], segments["segments"]) == ("offline", ["WINE_LOVERS"])
        points = await edge.till("points", card_number=numbers[0])
        assert (points["decision"], points["available"]) == ("offline", 15)
        level = await edge.till("discount-level", card_number=numbers[0])
        assert (level["decision"], level["bps"]) == ("offline", 0)
        [elsewhere] = await world.loyalty_cards(1, store="S2")
        stranger = await edge.till("points", card_number=elsewhere)
        assert stranger["decline_code"] == "card_unknown_offline"
        edge.heal()
        online = await edge.till("points", card_number=numbers[0])
        assert (online["decision"], online["balance"]) == ("online", 15)
    finally:
        await edge.close()


async def _voucher(world, **fields) -> str:
    issued = await world.admin("POST", "/api/v1/admin/vouchers", {
        "request_id": str(uuid.uuid4()), "kind": "value", "value": 1000, "currency": "EUR", **fields})
    return issued["code"]


async def test_vouchers_central_ships_are_taken_offline_once_and_the_use_reaches_central(world, tmp_path):
    edge, numbers = await _setup(world, tmp_path)
    try:
        code = await _voucher(world)
        percent = await _voucher(world, kind="percent", value=1000)
        big = await _voucher(world, value=9000)  # above the 50.00 floor limit: central only
        await asyncio.sleep(0.05)
        await edge.sync()
        assert [r.value for r in await edge.rows("SELECT value FROM vouchers")] == [1000]
        edge.cut()
        taken = await edge.till("vouchers/redeem", code=code, basket_total=5000, currency="EUR",
                                card_number=numbers[0])
        assert (taken["decision"], taken["approved"], taken["discount"]) == ("offline", True, 1000)
        again = await edge.till("vouchers/redeem", code=code, basket_total=5000, currency="EUR",
                                card_number=numbers[0])
        assert again["decline_code"] == "voucher_used_up"
        for other in (percent, big):
            refused = await edge.till("vouchers/redeem", code=other, basket_total=50000, currency="EUR",
                                      card_number=numbers[0])
            assert refused["decline_code"] == "voucher_offline_not_allowed"
        anonymous = await edge.till("vouchers/redeem", code=code, basket_total=5000, currency="EUR")
        assert anonymous["decline_code"] == "voucher_offline_not_allowed"
        mistyped = await edge.till("vouchers/redeem", code=code[:-1] + ("2" if code[-1] != "2" else "3"),
                                   basket_total=5000, currency="EUR", card_number=numbers[0])
        assert mistyped["decline_code"] == "voucher_code_invalid"
        edge.heal()
        assert (await edge.sync()).pushed == 1
        online = await world.till("vouchers/redeem", code=code, basket_total=5000, currency="EUR")
        assert online["decline_code"] == "voucher_used_up"  # central has the store's use
        async with world.central.db.connect() as conn:
            recorded = (await conn.execute(sa.select(operations.c.kind, operations.c.amount, operations.c.approved)
                                           .where(operations.c.id == uuid.UUID(taken["txn_id"])))).one()
        assert tuple(recorded) == ("voucher_redeem", 1000, True)
        await edge.sync()
        assert await edge.rows("SELECT id FROM vouchers") == []  # used: no longer takeable offline
    finally:
        await edge.close()


async def test_a_voucher_used_online_elsewhere_and_offline_here_posts_and_is_flagged(world, tmp_path):
    edge, numbers = await _setup(world, tmp_path)
    try:
        code = await _voucher(world)
        await edge.sync()
        edge.cut()
        taken = await edge.till("vouchers/redeem", code=code, basket_total=5000, currency="EUR",
                                card_number=numbers[0])
        assert taken["approved"]
        elsewhere = await world.till("vouchers/redeem", store="S2", code=code, basket_total=5000, currency="EUR")
        assert elsewhere["approved"]
        edge.heal()
        await edge.sync()
        async with world.central.db.connect() as conn:
            flags = (await conn.execute(sa.select(sync_exceptions.c.details).where(
                sync_exceptions.c.kind == "voucher"))).scalars().all()
        assert flags and "voucher_used_up" in flags[0]["flags"]
    finally:
        await edge.close()


async def test_customers_register_at_the_till_through_the_edge_while_central_answers(world, tmp_path):
    edge, numbers = await _setup(world, tmp_path)
    try:
        body = {"request_id": str(uuid.uuid4()), "first_name": "Edna", "last_name": "Till", "phone": "+441234500777",
                "card_number": numbers[0], "consents": [{"channel": "sms", "granted": True}]}
        registered = await edge.till("customers", **body)
        assert registered["id"] and registered["phone"] == "+441234500777"
        edge.cut()
        resp = await edge.client.post("/api/v1/till/customers", json=body | {"request_id": str(uuid.uuid4())},
                                      headers=world.tills["S1"])
        assert resp.status == 503 and (await resp.json())["error"]["code"] == "central_unreachable"
    finally:
        await edge.close()


async def test_an_offline_redemption_is_taken_back_online_after_sync(world, tmp_path):
    edge, numbers = await _setup(world, tmp_path)
    try:
        number = numbers[2]
        offline = await _redeemed_offline(edge, number)
        edge.heal()
        await edge.sync()
        back = await edge.till("points/redeem/reverse", original_txn_id=offline["txn_id"])
        assert (back["decision"], back["approved"], back["points_returned"]) == ("online", True, 2000)
        assert (await world.till("points", card_number=number))["available"] == 3000
        await world.ledger_consistent()
    finally:
        await edge.close()


async def test_offline_receipts_earn_by_store_and_customer_groups_as_central_does(world, tmp_path):
    numbers = await world.loyalty_cards(2)
    await world.admin("PUT", "/api/v1/admin/stores/S1/groups", {"groups": ["CITY"]})
    await world.admin("POST", "/api/v1/admin/customers", {
        "request_id": str(uuid.uuid4()), "first_name": "Vi", "last_name": "Pee", "phone": "+441234500888",
        "groups": ["VIP"], "card_number": numbers[0]})
    start = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()
    for code, criteria, points in (("CITY", {"store_groups": ["CITY"]}, 1), ("VIP", {"customer_groups": ["VIP"]}, 2)):
        await world.admin("POST", "/api/v1/admin/loyalty/schemes", {
            "code": code, "version": 1, "valid_from": start, "criteria": criteria,
            "rule": {"type": "per_value", "points": points, "per": 100, "currency": "EUR"}})
    await world.admin("POST", "/api/v1/admin/loyalty/plans", {"programme": "LOYAL", "combination": "sum"})
    edge = await Edge.start(world, tmp_path)
    try:
        await edge.sync()
        edge.cut()
        vip = await edge.till("receipts", **_receipt(numbers[0], 1000))
        other = await edge.till("receipts", **_receipt(numbers[1], 1000))
        assert (vip["decision"], vip["points_earned"], other["points_earned"]) == ("offline", 30, 10)
        edge.heal()
        await edge.sync()
        async with world.central.db.connect() as conn:
            flagged = (await conn.execute(sa.select(sa.func.count()).select_from(sync_exceptions).where(
                sync_exceptions.c.kind == "loyalty"))).scalar_one()
        assert flagged == 0  # central's rules agree with the store's
        assert (await world.till("points", card_number=numbers[0]))["balance"] == 30
    finally:
        await edge.close()


async def test_a_tier_changed_by_head_office_reaches_the_store_without_a_movement_of_the_card(world, tmp_path):
    edge, numbers = await _setup(world, tmp_path)
    try:
        await edge.till("receipts", **_receipt(numbers[0], 2_000_000))  # 20,000 points
        await edge.sync()
        assert (await edge.card(numbers[0])).tier == "BRONZE"
        await world.admin("POST", f"/api/v1/admin/loyalty/cards/{numbers[0]}/tier",
                          {"tier": "GOLD", "reason": "a valued customer"})
        await edge.sync()  # no ledger movement: the loyalty card feed brings the change
        assert (await edge.card(numbers[0])).tier == "GOLD"
        edge.cut()
        gold = await edge.till("points/redeem", card_number=numbers[0], receipt_total=4000, currency="EUR")
        assert (gold["tier"], gold["discount"]) == ("GOLD", 4000)  # Gold's cap: the whole receipt
        assert (await edge.till("tier", card_number=numbers[0]))["tier"] == "GOLD"
    finally:
        await edge.close()


async def test_a_return_synced_before_its_receipt_waits_for_it(world):
    numbers = await world.loyalty_cards(1)
    await world.admin("POST", "/api/v1/admin/loyalty/schemes", {
        "code": "BASE", "version": 1, "valid_from": (datetime.now(UTC) - timedelta(seconds=30)).isoformat(),
        "rule": {"type": "per_value", "points": 1, "per": 100, "currency": "EUR"}})
    s1, s2 = await SyncPeer.enrol(world, "S1"), await SyncPeer.enrol(world, "S2")
    now = datetime.now(UTC)
    sale_id = uuid.uuid4()

    def outbox(seq, kind, amount, detail, **extra) -> OutboxEntry:
        return OutboxEntry(seq=seq, txn_id=extra.pop("txn_id", uuid.uuid4()), kind=kind, card_number=numbers[0],
                           amount=amount, currency="EUR", decided_at=now, loyalty=detail, **extra)

    back = await s1.push([outbox(1, OperationKind.RECEIPT_RETURN, 0, LoyaltyDetail(), original_txn_id=sale_id)])
    assert back.results[0].status == "held" and back.acked_seq == 1
    line = ReceiptLineData(item="A", quantity=1000, value=2000)
    sold = await s2.push([outbox(1, OperationKind.RECEIPT, 2000, LoyaltyDetail(at=now, lines=(line,), points=20),
                                 txn_id=sale_id)])
    assert sold.results[0].status == "applied"
    assert (await world.till("points", card_number=numbers[0]))["balance"] == 20
    later = await s1.push([outbox(2, OperationKind.RECEIPT, 2000, LoyaltyDetail(at=now, lines=(line,), points=20))])
    assert later.results[0].status == "applied"
    async with world.central.db.connect() as conn:
        status = (await conn.execute(sa.text(
            "SELECT status FROM store_entries WHERE seq = 1 AND store_id = (SELECT id FROM stores WHERE code = 'S1')"
        ))).scalar_one()
    assert status == "applied"
    assert (await world.till("points", card_number=numbers[0]))["balance"] == 20  # 20 + 20 - 20 taken back

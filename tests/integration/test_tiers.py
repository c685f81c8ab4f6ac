"""Tiers and discount levels at central, as scenarios: receipts in (written as rows, at chosen instants),
tier changes, histories and discount levels out. Both backends.

The plan's periods are 90 days from 2025-01-01 (boundaries 2025-04-01, 2025-06-30, 2025-09-28, ...);
Bronze from 0, Silver from 1,000.00, Gold from 5,000.00 of turnover.
"""

from __future__ import annotations

import csv
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from central.db.tables import audit_log, cards, loyalty_cards, receipts, tier_changes
from central.services.tiers import TierService
from core.loyalty.tiers import TierFact, TierStatus, discount_level
from core.loyalty.tiers import tier_changes as core_tier_changes
from sync.loyalty import plan_from

PROGRAMME = {"code": "TIERS", "name": "Tiered Loyalty", "kind": "loyalty", "currency": "EUR",
             "number_prefix": "7002", "number_length": 16, "min_amount": 1, "max_amount": 100000,
             "hold_ttl_seconds": 60, "hold_expiry_policy": "reverse"}
SILVER, GOLD = 100_000, 500_000
TIERS = [{"code": "BRONZE", "rank": 1, "threshold": 0},
         {"code": "SILVER", "rank": 2, "threshold": SILVER},
         {"code": "GOLD", "rank": 3, "threshold": GOLD}]
B1, B2, B3 = (datetime(2025, 4, 1, tzinfo=UTC), datetime(2025, 6, 30, tzinfo=UTC),
              datetime(2025, 9, 28, tzinfo=UTC))
SECOND = timedelta(seconds=1)


def day(month: int, d: int, hour: int = 12) -> datetime:
    return datetime(2025, month, d, hour, tzinfo=UTC)


def plan_body(**tiers) -> dict:
    return {"programme": "TIERS", "tiers": {"basis": "turnover", "period_days": 90,
                                            "anchor": "2025-01-01T00:00:00Z", "tiers": TIERS, **tiers}}


@pytest.fixture
async def numbers(world) -> list[str]:
    """Twelve active cards of loyalty programme TIERS, never used (no activation time, no receipts)."""
    await world.admin("POST", "/api/v1/admin/programmes", PROGRAMME)
    central = world.central
    async with central.db.begin() as conn:
        issue_id = await central.issuing.start_issue(conn, "TIERS", 12, "tests")
    await central.issuing.run_issue(issue_id)
    with open(central.issuing.production_path(issue_id), newline="") as f:
        found = [r["card_number"] for r in csv.DictReader(f)]
    async with central.db.begin() as conn:
        await conn.execute(sa.update(cards).where(cards.c.number.in_(found)).values(state="active"))
    return found


async def publish(world, **tiers) -> None:
    await world.central.rules.publish("plan", plan_body(**tiers), "tests")


async def card_id(world, number: str) -> int:
    async with world.central.db.connect() as conn:
        return (await conn.execute(sa.select(cards.c.id).where(cards.c.number == number))).scalar_one()


async def buy(world, number: str, at: datetime, total: int, points: int = 0) -> None:
    """A receipt row on the card (a return when total is negative)."""
    cid = await card_id(world, number)
    async with world.central.db.begin() as conn:
        await conn.execute(sa.insert(receipts).values(
            id=uuid.uuid4(), card_id=cid, kind="sale" if total >= 0 else "return", at=at, local_date=at.date(),
            utc_offset=0, currency="EUR", total=total, lines=[], items=[], item_groups=[], points=points,
            awards=[], channel="admin"))


async def review(world, number: str, at: datetime) -> list[dict]:
    central, cid = world.central, await card_id(world, number)
    async with central.db.begin() as conn:
        return await central.tiers.review_card(conn, cid, at, "receipt")


async def tier_of(world, number: str) -> tuple[str | None, datetime | None]:
    cid = await card_id(world, number)
    async with world.central.db.connect() as conn:
        row = (await conn.execute(sa.select(loyalty_cards.c.tier, loyalty_cards.c.tier_since)
                                  .where(loyalty_cards.c.card_id == cid))).first()
    return (row.tier, row.tier_since) if row else (None, None)


async def history(world, number: str, *, kept: bool = False) -> list[tuple]:
    cid = await card_id(world, number)
    async with world.central.db.connect() as conn:
        rows = (await conn.execute(sa.select(tier_changes).where(tier_changes.c.card_id == cid)
                                   .order_by(tier_changes.c.at, tier_changes.c.id))).all()
    return [(r.from_tier, r.to_tier, r.at, r.reason) for r in rows if kept or r.reason != "review_kept"]


async def snapshot(world) -> tuple:
    async with world.central.db.connect() as conn:
        changes = (await conn.execute(sa.select(tier_changes).order_by(tier_changes.c.id))).all()
        states = (await conn.execute(sa.select(loyalty_cards).order_by(loyalty_cards.c.card_id))).all()
    return [tuple(r) for r in changes], [tuple(r) for r in states]


# -- upgrades -------------------------------------------------------------------------------------

async def test_immediate_upgrade_when_the_rolling_total_crosses_a_threshold(world, numbers):
    await publish(world)
    card = numbers[0]
    await buy(world, card, day(2, 1), 60_000)
    entered = await review(world, card, day(2, 1))  # enters Bronze; 600.00 is not Silver yet
    assert [(c["from"], c["to"], c["reason"]) for c in entered] == [(None, "BRONZE", "entry")]
    assert await tier_of(world, card) == ("BRONZE", day(2, 1) - timedelta(microseconds=1))
    await buy(world, card, day(2, 15), 40_000)
    changes = await review(world, card, day(2, 15))
    assert [(c["from"], c["to"], c["reason"], c["qualifying"]) for c in changes] == [
        ("BRONZE", "SILVER", "threshold_reached", 100_000)]
    assert await tier_of(world, card) == ("SILVER", day(2, 15))
    # The first purchase alone can lift a new card: it enters Bronze the instant before.
    big = numbers[1]
    await buy(world, big, day(3, 1), GOLD)
    assert [c["to"] for c in await review(world, big, day(3, 1))] == ["BRONZE", "GOLD"]
    assert await history(world, big) == [(None, "BRONZE", day(3, 1) - timedelta(microseconds=1), "entry"),
                                         ("BRONZE", "GOLD", day(3, 1), "threshold_reached")]
    # A rerun of the same review changes nothing.
    assert await review(world, big, day(3, 1)) == []


async def test_period_end_upgrades_wait_for_the_review(world, numbers):
    await publish(world, upgrade="period_end")
    card = numbers[0]
    await buy(world, card, day(1, 20), 150_000)
    assert [c["reason"] for c in await review(world, card, B1 - SECOND)] == ["entry"]
    assert await tier_of(world, card) == ("BRONZE", day(1, 20) - timedelta(microseconds=1))
    assert [(c["to"], c["reason"], c["review"]) for c in await review(world, card, B1)] == [
        ("SILVER", "review_upgrade", B1.isoformat())]


async def test_points_basis_counts_points_not_turnover(world, numbers):
    tiers = [{"code": "BRONZE", "rank": 1, "threshold": 0}, {"code": "SILVER", "rank": 2, "threshold": 1000}]
    body = {"programme": "TIERS", "tiers": {"basis": "points", "period_days": 90, "anchor": "2025-01-01T00:00:00Z",
                                            "tiers": tiers}}
    await world.central.rules.publish("plan", body, "tests")
    rich, earner = numbers[0], numbers[1]
    await buy(world, rich, day(2, 1), 9_000_000, points=999)
    await buy(world, earner, day(2, 1), 10_000, points=600)
    await buy(world, earner, day(2, 2), 10_000, points=400)
    counts = await world.central.tiers.run(day(2, 3), source="batch")
    assert (counts["upgraded"], counts["entered"]) == (1, 2)
    assert (await tier_of(world, rich))[0] == "BRONZE"
    assert await tier_of(world, earner) == ("SILVER", day(2, 2))


# -- downgrades and grace -------------------------------------------------------------------------

async def gold_in_january(world, number: str) -> None:
    await buy(world, number, day(1, 15), GOLD)
    await world.central.tiers.run(day(1, 16))
    assert (await tier_of(world, number))[0] == "GOLD"


async def test_one_step_downgrade_exactly_at_the_period_boundary(world, numbers):
    await publish(world)
    card, active = numbers[0], numbers[1]
    await gold_in_january(world, card)
    await buy(world, active, day(1, 15), GOLD)
    await buy(world, active, day(5, 1), GOLD)
    tiers = world.central.tiers
    # 2025-04-01 judges (Jan 1, Apr 1]: the January purchase keeps Gold; the review is recorded as kept.
    await tiers.run(B1)
    assert (await tier_of(world, card))[0] == "GOLD"
    assert (await history(world, card, kept=True))[-1] == ("GOLD", "GOLD", B1, "review_kept")
    # (Apr 1, Jun 30] has nothing: one second before the boundary nothing happens, at it one step down.
    counts = await tiers.run(B2 - SECOND)
    assert (counts["downgraded"], (await tier_of(world, card))[0]) == (0, "GOLD")
    counts = await tiers.run(B2)
    assert counts["downgraded"] == 1
    assert await tier_of(world, card) == ("SILVER", B2)
    assert (await tier_of(world, active))[0] == "GOLD"  # bought again in the period: kept
    # Running the job twice changes nothing at all.
    before = await snapshot(world)
    again = await tiers.run(B2)
    assert (again["upgraded"], again["downgraded"], again["entered"]) == (0, 0, 0)
    assert await snapshot(world) == before
    # The next period empty too: Bronze at the next boundary.
    await tiers.run(B3)
    assert [h[1:] for h in await history(world, card)] == [
        ("BRONZE", day(1, 15) - timedelta(microseconds=1), "entry"), ("GOLD", day(1, 15), "threshold_reached"),
        ("SILVER", B2, "review_downgrade"), ("BRONZE", B3, "review_downgrade")]


async def test_to_earned_downgrade_goes_straight_to_the_tier_earned(world, numbers):
    await publish(world, downgrade="to_earned")
    card, silver = numbers[0], numbers[1]
    await gold_in_january(world, card)
    await buy(world, silver, day(1, 15), GOLD)
    await buy(world, silver, day(5, 1), SILVER)
    await world.central.tiers.run(B2)
    assert await tier_of(world, card) == ("BRONZE", B2)
    assert await tier_of(world, silver) == ("SILVER", B2)


async def test_grace_postpones_a_downgrade_and_a_purchase_in_it_keeps_the_tier(world, numbers):
    await publish(world, grace_days=30)
    lapsed, catches_up = numbers[0], numbers[1]
    for card in (lapsed, catches_up):
        await gold_in_january(world, card)
    tiers = world.central.tiers
    await tiers.run(B2)
    assert (await tier_of(world, lapsed))[0] == "GOLD"  # within the grace
    status = await tiers.status(lapsed, at=B2 + timedelta(days=1))
    assert status["grace_until"] == (B2 + timedelta(days=30)).isoformat()
    await buy(world, catches_up, day(7, 10), GOLD)
    grace_end = B2 + timedelta(days=30)
    await tiers.run(grace_end - SECOND)
    assert (await tier_of(world, lapsed))[0] == "GOLD"
    await tiers.run(grace_end)
    assert await tier_of(world, lapsed) == ("SILVER", grace_end)
    assert (await history(world, lapsed))[-1] == ("GOLD", "SILVER", grace_end, "grace_ended")
    assert (await tier_of(world, catches_up))[0] == "GOLD"
    assert (await history(world, catches_up, kept=True))[-1] == ("GOLD", "GOLD", B2, "review_kept")


async def test_the_job_in_small_chunks_agrees_with_core_on_the_whole_history(world, numbers):
    """Random receipts, the job run every week with chunks of 4 cards: each card's changes are exactly
    core's over its whole history (the kept reviews only shorten what later reviews read)."""
    await publish(world, grace_days=10)
    rng = random.Random(5)
    facts: dict[str, list[TierFact]] = {}
    for number in numbers:
        for _ in range(rng.randrange(0, 12)):
            at = day(1, 1) + timedelta(hours=rng.randrange(0, 24 * 300))
            total = rng.choice([20_000, 60_000, 150_000, 400_000, -30_000])
            await buy(world, number, at, total)
            facts.setdefault(number, []).append(TierFact(at, total, 0))
    job = TierService(world.central.db, world.central.rules, chunk=4)
    end = day(1, 1) + timedelta(days=330)
    at = day(1, 1)
    while at < end:
        at += timedelta(days=7)
        await job.run(at, source="job")
    plan = plan_from(plan_body(grace_days=10)).tiers
    for number in numbers:
        mine = facts.get(number, [])
        if not mine:
            assert await tier_of(world, number) == (None, None)
            continue
        since = min(f.at for f in mine) - timedelta(microseconds=1)
        expected = [(c.from_code, c.to_code, c.at, c.reason.value)
                    for c in core_tier_changes(plan, mine, at, TierStatus("BRONZE", since))]
        assert (await history(world, number))[1:] == expected, number


# -- history, status and staff --------------------------------------------------------------------

async def test_status_history_and_a_staff_override_over_http(world, numbers):
    await publish(world)
    card = numbers[0]
    await gold_in_january(world, card)
    path = f"/api/v1/admin/loyalty/cards/{card}/tier"
    shown = await world.admin("GET", path)
    # Nothing bought since January 2025: the changes due by now are applied to the answer (not written).
    assert shown["tier"] == "BRONZE" and shown["qualifying"] == 0
    assert shown["next_tier"] == {"tier": "SILVER", "threshold": SILVER, "missing": SILVER}
    assert [h["to"] for h in shown["history"]] == ["BRONZE", "GOLD"]
    assert (await tier_of(world, card))[0] == "GOLD"
    result = await world.admin("POST", path, {"tier": "GOLD", "reason": "complaint #42: keep Gold"})
    assert (result["from"], result["tier"], result["changed"]) == ("BRONZE", "GOLD", True)
    assert (await tier_of(world, card))[0] == "GOLD"
    shown = await world.admin("GET", path)
    assert shown["tier"] == "GOLD"
    assert [(h["to"], h["reason"], h["source"]) for h in shown["history"] if h["reason"] != "review_kept"][-3:] == [
        ("SILVER", "review_downgrade", "staff"), ("BRONZE", "review_downgrade", "staff"),
        ("GOLD", "staff_override", "staff")]
    async with world.central.db.connect() as conn:
        audits = (await conn.execute(sa.select(audit_log.c.action, audit_log.c.actor, audit_log.c.details)
                                     .where(audit_log.c.action.in_(["loyalty.tier.set", "card_tier_set"]))
                                     .order_by(audit_log.c.id))).all()
    assert [(a.action, a.actor) for a in audits] == [("loyalty.tier.set", "root"), ("card_tier_set", "root")]
    assert audits[0].details["reason"] == "complaint #42: keep Gold" and audits[0].details["from"] == "BRONZE"
    # Refusals: 4xx with a JSON error code.
    for body, status, code in (({"tier": "PLATINUM", "reason": "x"}, 422, "unknown_tier"),
                               ({"tier": "GOLD"}, 422, "invalid_request"),
                               ({"tier": "GOLD", "reason": "x", "extra": 1}, 422, "invalid_request")):
        answer = await world.admin("POST", path, body, expect=status)
        assert answer["error"]["code"] == code
    missing = await world.admin("GET", "/api/v1/admin/loyalty/cards/7002999999999999/tier", expect=404)
    assert missing["error"]["code"] == "not_found"
    gift = await world.admin("GET", f"/api/v1/admin/loyalty/cards/{world.stock['GIFT'][0]}/tier", expect=422)
    assert gift["error"]["code"] == "not_a_loyalty_card"


async def test_the_batch_route_runs_the_job_now_and_is_audited(world, numbers):
    await publish(world)
    await buy(world, numbers[0], datetime.now(UTC) - timedelta(days=1), GOLD)
    counts = await world.admin("POST", "/api/v1/admin/loyalty/tiers/run")
    assert (counts["entered"], counts["upgraded"]) == (1, 1)
    assert (await tier_of(world, numbers[0]))[0] == "GOLD"
    assert [h[3] for h in await history(world, numbers[0])] == ["entry", "threshold_reached"]
    assert (await world.admin("POST", "/api/v1/admin/loyalty/tiers/run"))["upgraded"] == 0
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    refused = await world.admin("POST", "/api/v1/admin/loyalty/tiers/run", expect=422, at=future)
    assert refused["error"]["code"] == "future_review"
    async with world.central.db.connect() as conn:
        sources = (await conn.execute(sa.select(tier_changes.c.source).distinct())).scalars().all()
        runs = (await conn.execute(sa.select(sa.func.count()).where(audit_log.c.action == "tiers_run"))).scalar()
    assert sources == ["batch"] and runs == 3


# -- discount levels ------------------------------------------------------------------------------

LEVELS = [{"threshold": 100_000, "bps": 300}, {"threshold": 500_000, "bps": 500}]


async def test_discount_levels_from_turnover_with_boundary_values(world, numbers):
    body = {"programme": "TIERS", "discount_levels": LEVELS, "discount_period_days": 30}
    await world.central.rules.publish("plan", body, "tests")
    at = day(6, 1)
    start = at - timedelta(days=30)
    spent = {numbers[0]: [99_999], numbers[1]: [100_000], numbers[2]: [499_999], numbers[3]: [300_000, 200_000],
             numbers[4]: [600_000, -100_001], numbers[5]: []}
    for number, totals in spent.items():
        for i, total in enumerate(totals):
            await buy(world, number, at - timedelta(days=1, hours=i), total)
    await buy(world, numbers[5], start, 900_000)  # exactly one period before: outside the window
    await buy(world, numbers[5], at + SECOND, 900_000)  # after the instant asked about
    await buy(world, numbers[6], at, 100_000)  # at the instant: inside
    tiers = world.central.tiers
    counts = await tiers.refresh_discounts(at)
    assert counts["changed"] == 5
    levels = plan_from(body).discount_levels
    expected = {numbers[0]: 0, numbers[1]: 300, numbers[2]: 300, numbers[3]: 500, numbers[4]: 300,
                numbers[5]: 0, numbers[6]: 300}
    async with world.central.db.connect() as conn:  # a card without receipts in the period may have no row
        stored = dict((await conn.execute(sa.select(cards.c.number, loyalty_cards.c.discount_bps)
                                          .join(cards, cards.c.id == loyalty_cards.c.card_id))).all())
    for number, bps in expected.items():
        turnover = sum(spent.get(number, [])) + (100_000 if number == numbers[6] else 0)
        assert discount_level(levels, turnover) == bps  # the SQL CASE agrees with core
        assert stored.get(number, 0) == bps, number
        live = await tiers.discount_of(number, at)
        assert (live["bps"], live["turnover"], live["period_days"]) == (bps, turnover, 30)
    assert (await tiers.refresh_discounts(at))["changed"] == 0
    # 29 days on, the window (at - 1 day, at + 29 days] keeps only the receipts at and after ``at``.
    later = await tiers.refresh_discounts(at + timedelta(days=29))
    assert later["changed"] == 5
    assert (await tiers.discount_of(numbers[5], at + timedelta(days=29)))["bps"] == 500
    async with world.central.db.connect() as conn:
        stored = dict((await conn.execute(sa.select(cards.c.number, loyalty_cards.c.discount_bps)
                                          .join(cards, cards.c.id == loyalty_cards.c.card_id))).all())
    assert [stored.get(n, 0) for n in numbers[:7]] == [0, 0, 0, 0, 0, 500, 300]


# -- the till ------------------------------------------------------------------------------------

async def pos(world, path: str, body: dict, *, expect: int = 200) -> dict:
    resp = await world.client.post(f"/api/v1/till/{path}", json=body, headers=world.tills["S1"])
    data = await resp.json()
    assert resp.status == expect, (resp.status, data)
    return data


async def test_till_asks_discount_level_and_tier(world, numbers):
    await world.central.rules.publish("plan", plan_body() | {"discount_levels": LEVELS}, "tests")
    card = numbers[0]
    await buy(world, card, datetime.now(UTC) - timedelta(days=2), 150_000)
    level = await pos(world, "discount-level", {"card_number": card})
    assert level == {"card": card[:6] + "******" + card[-4:], "bps": 300, "turnover": 150_000, "period_days": 365,
                     "decision": "online"}
    status = await pos(world, "tier", {"card_number": card})
    assert (status["tier"], status["qualifying"], status["decision"]) == ("SILVER", 150_000, "online")
    assert status["next_tier"] == {"tier": "GOLD", "threshold": GOLD, "missing": GOLD - 150_000}
    unused = await pos(world, "tier", {"card_number": numbers[1]})
    assert unused["tier"] is None
    for body, status_code, code in (({"card_number": "12ab"}, 422, "invalid_request"),
                                    ({}, 422, "invalid_request"),
                                    ({"card_number": "7002999999999999"}, 404, "not_found"),
                                    ({"card_number": world.stock["GIFT"][0]}, 422, "not_a_loyalty_card")):
        answer = await pos(world, "discount-level", body, expect=status_code)
        assert answer["error"]["code"] == code
    resp = await world.client.post("/api/v1/till/tier", data=b"{not json", headers=world.tills["S1"])
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json"
    resp = await world.client.post("/api/v1/till/tier", json={"card_number": card}, headers=world.web)
    assert resp.status == 403


async def test_the_routes_are_in_the_openapi_document(world):
    document = await world.admin("GET", "/openapi.json")
    for path in ("/api/v1/till/discount-level", "/api/v1/till/tier", "/api/v1/admin/loyalty/tiers/run",
                 "/api/v1/admin/loyalty/discounts/refresh"):
        assert path in document["paths"], path

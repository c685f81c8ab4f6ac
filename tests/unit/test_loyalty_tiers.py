"""Tiers: purchases in → tier changes out; redemption caps and rates; e-money conversion; discount levels."""

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InvalidInput
from core.loyalty.tiers import (
    DiscountLevel,
    DowngradeRule,
    EMoneyRates,
    ExchangeRate,
    RedemptionLimit,
    RedemptionMethod,
    Tier,
    TierBasis,
    TierChangeReason,
    TierFact,
    TierPlan,
    TierStatus,
    UpgradeRule,
    discount_for,
    discount_level,
    emoney_to_points,
    evaluate_tier,
    points_to_emoney,
    redemption,
    rolling_total,
    tier_changes,
)

SECOND = timedelta(seconds=1)
# Bronze does not redeem; Silver: 100 points = 1.00 EUR, at most 20% of a receipt; Gold: 80 points = 1.00 EUR, 50%.
BRONZE = Tier("BRONZE", rank=0, threshold=0)
SILVER = Tier("SILVER", rank=1, threshold=50_000, points_per_unit=100, unit_minor=100, max_redemption_bps=2_000)
GOLD = Tier("GOLD", rank=2, threshold=150_000, points_per_unit=80, unit_minor=100, max_redemption_bps=5_000)
ANCHOR = datetime(2025, 1, 1, tzinfo=UTC)  # 90-day periods: boundaries 2025-04-01, 2025-06-30, 2025-09-28...
Q1_END, Q2_END, Q3_END = (ANCHOR + timedelta(days=90 * k) for k in (1, 2, 3))


def plan(**kw) -> TierPlan:
    return TierPlan(**{"basis": TierBasis.TURNOVER, "period_days": 90, "tiers": (BRONZE, SILVER, GOLD),
                       "anchor": ANCHOR, **kw})


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def purchases(*rows: tuple[str, int]) -> list[TierFact]:
    """Purchases as (time, turnover in minor units); each earns 1 point per 1.00 EUR."""
    return [TierFact(t(when), minor, minor // 100) for when, minor in rows]


# --- upgrades ----------------------------------------------------------------------------------------


def test_immediate_upgrade_when_the_threshold_is_reached_and_not_a_cent_before():
    history = purchases(("2025-01-10 10:00", 30_000), ("2025-02-01 12:00", 20_000))
    change = evaluate_tier(plan(), history, t("2025-02-15"), TierStatus("BRONZE", ANCHOR))
    assert (change.from_code, change.to_code, change.at) == ("BRONZE", "SILVER", t("2025-02-01 12:00"))
    assert change.reason is TierChangeReason.THRESHOLD_REACHED and change.is_upgrade
    assert change.qualifying == 50_000 and change.review is None

    short = purchases(("2025-01-10 10:00", 30_000), ("2025-02-01 12:00", 19_999))
    assert evaluate_tier(plan(), short, t("2025-03-31"), TierStatus("BRONZE", ANCHOR)) is None
    # Not before the purchase that crosses it.
    assert evaluate_tier(plan(), history, t("2025-02-01 12:00") - SECOND, TierStatus("BRONZE", ANCHOR)) is None


def test_one_big_purchase_goes_straight_to_the_highest_tier_reached():
    change = evaluate_tier(plan(), purchases(("2025-01-20", 200_000)), t("2025-01-21"), TierStatus("BRONZE", ANCHOR))
    assert change.to_code == "GOLD" and change.at == t("2025-01-20")


def test_rolling_window_drops_old_purchases_before_the_threshold_is_reached():
    # 300 EUR in January and 200 EUR in mid-April: 95 days apart, never 500 EUR within 90 days.
    history = purchases(("2025-01-10", 30_000), ("2025-04-15", 20_000))
    assert tier_changes(plan(), history, t("2025-04-20"), TierStatus("BRONZE", ANCHOR)) == ()


def test_upgrade_at_period_end_waits_for_the_boundary():
    history = purchases(("2025-01-10", 30_000), ("2025-02-01", 20_000))
    period_end = plan(upgrade=UpgradeRule.PERIOD_END)
    assert evaluate_tier(period_end, history, Q1_END - SECOND, TierStatus("BRONZE", ANCHOR)) is None
    change = evaluate_tier(period_end, history, Q1_END, TierStatus("BRONZE", ANCHOR))
    assert (change.to_code, change.at, change.review) == ("SILVER", Q1_END, Q1_END)
    assert change.reason is TierChangeReason.REVIEW_UPGRADE


# --- downgrades --------------------------------------------------------------------------------------

# Gold since mid-January, but only 600 EUR (Silver level) in the first period.
GOLD_SINCE_JAN = TierStatus("GOLD", t("2025-01-15"))
SILVER_LEVEL_Q1 = purchases(("2025-02-10", 60_000))


def test_downgrade_exactly_at_the_period_boundary_and_not_one_second_before():
    assert evaluate_tier(plan(), SILVER_LEVEL_Q1, Q1_END - SECOND, GOLD_SINCE_JAN) is None
    change = evaluate_tier(plan(), SILVER_LEVEL_Q1, Q1_END, GOLD_SINCE_JAN)
    assert (change.from_code, change.to_code, change.at) == ("GOLD", "SILVER", Q1_END)
    assert change.reason is TierChangeReason.REVIEW_DOWNGRADE and not change.is_upgrade
    assert change.qualifying == 60_000


def test_a_purchase_at_the_boundary_instant_counts_for_the_period_it_ends():
    # Windows are (boundary - period, boundary]: 1,000 EUR more exactly at the boundary keeps Gold.
    history = SILVER_LEVEL_Q1 + purchases((Q1_END.isoformat()[:19], 100_000))
    assert evaluate_tier(plan(), history, Q1_END, GOLD_SINCE_JAN) is None
    assert rolling_total(history, Q1_END, 90) == 160_000
    assert rolling_total(history, Q1_END - SECOND, 90) == 60_000


def test_card_that_requalifies_keeps_its_tier():
    history = purchases(("2025-02-10", 100_000), ("2025-03-10", 60_000))
    assert tier_changes(plan(), history, Q1_END + timedelta(days=30), GOLD_SINCE_JAN) == ()


@pytest.mark.parametrize("rule, expected", [
    # No purchases at all: one step per period, or straight to what was earned.
    (DowngradeRule.ONE_STEP, [("GOLD", "SILVER", Q1_END), ("SILVER", "BRONZE", Q2_END)]),
    (DowngradeRule.TO_EARNED, [("GOLD", "BRONZE", Q1_END)]),
])
def test_downgrade_rule_one_step_per_period_or_straight_to_earned(rule, expected):
    changes = tier_changes(plan(downgrade=rule), [], Q3_END, GOLD_SINCE_JAN)
    assert [(c.from_code, c.to_code, c.at) for c in changes] == expected


def test_one_step_never_drops_below_what_was_earned_and_stops_when_requalified():
    # Gold with nothing in Q1 (down to Silver), then 500 EUR in Q2: Silver is kept at the Q2 review.
    history = purchases(("2025-05-01", 50_000))
    changes = tier_changes(plan(), history, Q2_END + timedelta(days=1), GOLD_SINCE_JAN)
    assert [(c.to_code, c.at) for c in changes] == [("SILVER", Q1_END)]


def test_a_late_evaluation_gives_the_same_history_as_a_daily_one():
    daily, status, day = [], GOLD_SINCE_JAN, GOLD_SINCE_JAN.since
    while day <= Q3_END:
        for change in tier_changes(plan(), [], day, status):
            daily.append(change)
            status = change.status
        day += timedelta(days=1)
    assert tuple(daily) == tier_changes(plan(), [], Q3_END, GOLD_SINCE_JAN) and len(daily) == 2


# --- grace -------------------------------------------------------------------------------------------


def test_grace_postpones_the_downgrade_to_its_end():
    graced = plan(grace_days=14)
    grace_end = Q1_END + timedelta(days=14)
    assert evaluate_tier(graced, SILVER_LEVEL_Q1, Q1_END, GOLD_SINCE_JAN) is None
    assert evaluate_tier(graced, SILVER_LEVEL_Q1, grace_end - SECOND, GOLD_SINCE_JAN) is None
    change = evaluate_tier(graced, SILVER_LEVEL_Q1, grace_end, GOLD_SINCE_JAN)
    assert (change.to_code, change.at, change.review) == ("SILVER", grace_end, Q1_END)
    assert change.reason is TierChangeReason.GRACE_ENDED


def test_purchases_during_grace_count_for_the_reviewed_period():
    graced = plan(grace_days=14)
    caught_up = SILVER_LEVEL_Q1 + purchases(("2025-04-10", 90_000))  # 600 + 900 EUR = the Gold threshold
    assert tier_changes(graced, caught_up, Q1_END + timedelta(days=60), GOLD_SINCE_JAN) == ()
    # The day after the grace ended: down to Silver, then straight back up on the rolling 90 days.
    too_late = SILVER_LEVEL_Q1 + purchases(("2025-04-16", 90_000))
    changes = tier_changes(graced, too_late, Q1_END + timedelta(days=60), GOLD_SINCE_JAN)
    assert [(c.to_code, c.at, c.reason) for c in changes] == [
        ("SILVER", t("2025-04-15"), TierChangeReason.GRACE_ENDED),
        ("GOLD", t("2025-04-16"), TierChangeReason.THRESHOLD_REACHED)]


def test_points_basis_counts_points_not_turnover():
    points_plan = plan(basis=TierBasis.POINTS, tiers=(BRONZE, Tier("SILVER", 1, 500), Tier("GOLD", 2, 1_500)))
    history = [TierFact(t("2025-01-10"), 1_000, 499), TierFact(t("2025-01-11"), 1_000, 1)]
    change = evaluate_tier(points_plan, history, t("2025-02-01"), TierStatus("BRONZE", ANCHOR))
    assert (change.to_code, change.at, change.qualifying) == ("SILVER", t("2025-01-11"), 500)


def test_returns_lower_the_qualifying_total():
    history = purchases(("2025-01-10", 50_000)) + [TierFact(t("2025-01-09"), -1, 0)]
    assert evaluate_tier(plan(), history, t("2025-02-01"), TierStatus("BRONZE", ANCHOR)) is None


@pytest.mark.parametrize("kw, message", [
    ({"tiers": (SILVER, GOLD)}, "entry tier"),
    ({"tiers": (BRONZE, Tier("SILVER", 1, 200_000), GOLD)}, "rise strictly"),
    ({"tiers": (BRONZE, Tier("BRONZE", 1, 10))}, "unique"),
    ({"tiers": ()}, "at least one"),
    ({"grace_days": 90}, "grace days"),
    ({"anchor": datetime(2025, 1, 1)}, "aware"),
    ({"basis": "visits"}, "visits"),
])
def test_plan_validation(kw, message):
    with pytest.raises(InvalidInput, match=message):
        plan(**kw)


def test_unknown_current_tier_and_naive_times_are_refused():
    with pytest.raises(InvalidInput, match="no tier"):
        evaluate_tier(plan(), [], Q1_END, TierStatus("PLATINUM", ANCHOR))
    with pytest.raises(InvalidInput, match="aware"):
        evaluate_tier(plan(), [(datetime(2025, 1, 2), 1, 1)], Q1_END, TierStatus("BRONZE", ANCHOR))


facts = st.lists(st.builds(
    TierFact, st.integers(0, 400 * 24).map(lambda h: ANCHOR + timedelta(hours=h)),
    st.integers(-5_000, 120_000), st.integers(0, 10)), max_size=12)


@settings(max_examples=60, deadline=None)
@given(facts, st.lists(st.integers(1, 400), min_size=1, max_size=6), st.sampled_from(list(DowngradeRule)),
       st.sampled_from(list(UpgradeRule)), st.integers(0, 30), st.sampled_from(["BRONZE", "SILVER", "GOLD"]))
def test_history_does_not_depend_on_when_the_card_is_evaluated(history, days, downgrade, upgrade, grace, start):
    the_plan = plan(downgrade=downgrade, upgrade=upgrade, grace_days=grace)
    status, stepped = TierStatus(start, ANCHOR), []
    for day in sorted(days):
        for change in tier_changes(the_plan, history, ANCHOR + timedelta(days=day), status):
            stepped.append(change)
            status = change.status
    assert tuple(stepped) == tier_changes(the_plan, history, ANCHOR + timedelta(days=max(days)),
                                          TierStatus(start, ANCHOR))
    assert all(a.at < b.at for a, b in zip(stepped, stepped[1:]))
    assert all(c.is_upgrade or c.at >= c.review for c in stepped)  # downgrades only at (or after) a boundary


# --- redemption --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tier, total, available, points, discount, limited_by", [
    (SILVER, 10_000, 5_000, 2_000, 2_000, RedemptionLimit.CAP),  # 20% of 100.00 EUR
    (SILVER, 10_000, 700, 700, 700, RedemptionLimit.BALANCE),
    (GOLD, 10_000, 100_000, 4_000, 5_000, RedemptionLimit.CAP),  # 50% at 80 points per 1.00 EUR
    (GOLD, 10_000, 1_000, 1_000, 1_250, RedemptionLimit.BALANCE),
    (GOLD, 10_000, 999, 999, 1_248, RedemptionLimit.BALANCE),  # 12.4875 EUR floored to 12.48 EUR
    (GOLD, 1, 100, 1, 0, RedemptionLimit.CAP),  # half a cent rounds to nothing
    (GOLD, 0, 100, 0, 0, RedemptionLimit.CAP),
])
def test_redemption_within_the_tier_cap_at_the_tier_rate(tier, total, available, points, discount, limited_by):
    result = redemption(tier, total, available)
    assert (result.points, result.discount_minor, result.tier_code, result.limited_by) == (
        0 if discount == 0 else points, discount, tier.code, limited_by)


def test_full_cap_tier_is_bounded_by_the_receipt_total():
    everything = Tier("STAFF", 3, 10**9, points_per_unit=1, unit_minor=1, max_redemption_bps=10_000)
    result = redemption(everything, 4_321, 10**6)
    assert (result.discount_minor, result.points) == (4_321, 4_321)


def test_customer_may_spend_fewer_points_than_available():
    result = redemption(SILVER, 10_000, 5_000, points_wanted=300)
    assert (result.points, result.discount_minor, result.limited_by) == (300, 300, RedemptionLimit.REQUESTED)


def test_current_tier_method_redeems_nothing_in_a_tier_without_redemption():
    result = redemption(BRONZE, 10_000, 5_000, RedemptionMethod.CURRENT_TIER)
    assert (result.points, result.discount_minor, result.tier_code, result.limited_by) == (
        0, 0, None, RedemptionLimit.NOT_ALLOWED)


def test_fallback_method_uses_the_fallback_tier_rate_and_cap_only_when_needed():
    fallback = redemption(BRONZE, 10_000, 5_000, RedemptionMethod.FALLBACK, SILVER)
    assert (fallback.points, fallback.discount_minor, fallback.tier_code) == (2_000, 2_000, "SILVER")
    own = redemption(GOLD, 10_000, 5_000, RedemptionMethod.FALLBACK, SILVER)
    assert (own.points, own.discount_minor, own.tier_code) == (4_000, 5_000, "GOLD")
    with pytest.raises(InvalidInput, match="fallback tier"):
        redemption(BRONZE, 10_000, 5_000, RedemptionMethod.FALLBACK)
    with pytest.raises(InvalidInput):
        redemption(SILVER, -1, 5_000)


tiers = st.builds(Tier, st.just("T"), st.just(1), st.just(0), st.integers(1, 1_000), st.integers(1, 1_000),
                  st.integers(0, 10_000))


@given(tiers, st.integers(0, 10**9), st.integers(0, 10**9), st.none() | st.integers(0, 10**9))
def test_redemption_never_exceeds_cap_balance_or_total_and_never_favours_the_customer(tier, total, available, wanted):
    result = redemption(tier, total, available, points_wanted=wanted)
    assert 0 <= result.discount_minor <= min(total, total * tier.max_redemption_bps // 10_000)
    assert 0 <= result.points <= min(available, available if wanted is None else wanted)
    value = Fraction(result.points * tier.unit_minor, tier.points_per_unit)
    assert value >= result.discount_minor  # the points taken pay for the discount...
    assert result.points == 0 or value - Fraction(tier.unit_minor, tier.points_per_unit) < result.discount_minor
    # ...and one more minor unit would break a bound: the discount is the largest allowed.
    more = result.discount_minor + 1
    spendable = available if wanted is None else min(available, wanted)
    assert (not tier.redeems or more > total * tier.max_redemption_bps // 10_000 or more > total
            or tier.points_for(more) > spendable)


# --- e-money -----------------------------------------------------------------------------------------

# E-money buys 90 points per 1.00 EUR; 100 points cash in as 1.00 EUR.
RATES = EMoneyRates(to_points=ExchangeRate(points=90, minor=100), to_emoney=ExchangeRate(points=100, minor=100))


@pytest.mark.parametrize("minor, points, used", [(1_000, 900, 1_000), (1_005, 904, 1_005), (1, 0, 0), (2, 1, 2)])
def test_emoney_buys_points_floored_and_pays_only_what_they_cost(minor, points, used):
    conversion = emoney_to_points(minor, RATES)
    assert (conversion.points, conversion.minor) == (points, used)


def test_points_cash_in_as_emoney():
    odd = EMoneyRates(ExchangeRate(1, 3), ExchangeRate(3, 1))  # 3 points per cent both ways
    assert (points_to_emoney(250, RATES).points, points_to_emoney(250, RATES).minor) == (250, 250)
    conversion = points_to_emoney(10, odd)  # 3⅓ cents: 3 cents for 9 points, 1 point stays
    assert (conversion.points, conversion.minor) == (9, 3)


def test_rates_that_would_let_money_grow_by_converting_are_refused():
    with pytest.raises(InvalidInput, match="more points"):
        EMoneyRates(to_points=ExchangeRate(110, 100), to_emoney=ExchangeRate(100, 100))


rates = st.builds(ExchangeRate, st.integers(1, 500), st.integers(1, 500))


@given(rates, rates, st.integers(0, 10**9))
def test_converting_there_and_back_never_gains(buy, sell, minor):
    if buy.points * sell.minor > sell.points * buy.minor:
        return
    the_rates = EMoneyRates(buy, sell)
    bought = emoney_to_points(minor, the_rates)
    assert bought.minor <= minor and Fraction(bought.points * buy.minor, buy.points) <= bought.minor
    cashed = points_to_emoney(bought.points, the_rates)
    assert cashed.points <= bought.points and cashed.minor <= bought.minor
    assert Fraction(cashed.minor * sell.points, sell.minor) <= cashed.points


# --- discount level ----------------------------------------------------------------------------------

LEVELS = [DiscountLevel(500_000, 500), DiscountLevel(100_000, 300), DiscountLevel(1_000_000, 1_000)]


@pytest.mark.parametrize("turnover, bps", [
    (0, 0), (99_999, 0), (100_000, 300), (499_999, 300), (500_000, 500), (10**9, 1_000), (-500, 0),
])
def test_discount_level_by_turnover(turnover, bps):
    assert discount_level(LEVELS, turnover) == bps


def test_discount_level_from_a_year_of_turnover():
    history = purchases(("2024-02-01", 80_000), ("2024-09-01", 30_000), ("2025-02-01", 10_000))
    year = rolling_total(history, t("2025-02-15"), 365)  # February 2024 has left the window
    assert year == 40_000 and discount_level(LEVELS, year) == 0
    assert discount_level(LEVELS, rolling_total(history, t("2025-02-15"), 366 + 365)) == 300


def test_discount_levels_are_validated_and_applied_floored():
    with pytest.raises(InvalidInput, match="unique"):
        discount_level([DiscountLevel(1, 100), DiscountLevel(1, 200)], 5)
    with pytest.raises(InvalidInput):
        DiscountLevel(0, 10_001)
    assert discount_for(12_345, 300) == 370  # 370.35 floored

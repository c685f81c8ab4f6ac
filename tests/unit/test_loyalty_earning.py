"""Earning: receipts in, points out, line by line, under versioned and competing schemes."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import InvalidInput
from core.loyalty import (
    Combination,
    Criteria,
    EarningScheme,
    Exclusions,
    FixedPerLine,
    FixedPerReceipt,
    Multiplier,
    Percent,
    PerQuantity,
    PerValue,
    Receipt,
    ReceiptLine,
    SchemeSet,
    evaluate,
    evaluate_naive,
)

PRAGUE = timezone(timedelta(hours=1))  # the store's local offset (winter time)
MONDAY = datetime(2025, 3, 3, tzinfo=PRAGUE)
START = datetime(2025, 1, 1, tzinfo=PRAGUE)
EUR_1PT = PerValue(1, 100, "EUR")  # 1 point per 1.00 EUR


def line(item: str, value: int, group: str | None = None, *, qty: int = 1000, discount: int = 0,
         promo: bool = False) -> ReceiptLine:
    return ReceiptLine(item, qty, value, group, discount, promo)


def receipt(*lines: ReceiptLine, at: datetime = MONDAY + timedelta(hours=12), **kw) -> Receipt:
    fields = {"id": "R1", "card": "C1", "store": "S01", "at": at, "currency": "EUR", "lines": lines,
              "store_groups": {"NORTH"}, "customer_groups": set(), "tier": "SILVER", "card_type": "LOYALTY", **kw}
    return Receipt(**fields)


def scheme(code: str, rule, *, version: int = 1, valid_from: datetime = START, valid_to: datetime | None = None,
           **kw) -> EarningScheme:
    return EarningScheme(code, version, valid_from, rule, valid_to=valid_to, **kw)


def earned(r: Receipt, schemes: list[EarningScheme], mode: Combination = Combination.MAX) -> list[tuple]:
    """(line, scheme@version, points) of every award; the naive reading must agree with the index."""
    result = evaluate(r, SchemeSet.compile(schemes, mode))
    assert result == evaluate_naive(r, schemes, mode)
    return [(a.line, a.ref, a.points) for a in result.awards]


def total(r: Receipt, schemes: list[EarningScheme], mode: Combination = Combination.MAX) -> int:
    return sum(points for _, _, points in earned(r, schemes, mode))


# --- versions -------------------------------------------------------------------------------------------------------

SPRING = datetime(2025, 3, 1, tzinfo=PRAGUE)
BASE_V1 = scheme("BASE", PerValue(2, 100, "EUR"), version=1, valid_to=SPRING)
BASE_V2 = scheme("BASE", EUR_1PT, version=2, valid_from=SPRING)  # the rate is lowered in spring


@pytest.mark.parametrize(("at", "expected"), [
    (START - timedelta(microseconds=1), []),  # before the first version: nothing in force
    (START, [(0, "BASE@1", 20)]),
    (SPRING - timedelta(microseconds=1), [(0, "BASE@1", 20)]),
    (SPRING, [(0, "BASE@2", 10)]),  # valid_to is exclusive, valid_from inclusive
    (datetime(2030, 1, 1, tzinfo=PRAGUE), [(0, "BASE@2", 10)]),
])
def test_a_receipt_earns_by_the_version_in_force_at_its_time(at, expected):
    assert earned(receipt(line("BREAD", 1000), at=at), [BASE_V1, BASE_V2]) == expected


def test_a_receipt_added_later_still_earns_by_its_own_time():
    # Registered in March (v2 in force by then) for a February purchase: v1's rate.
    february = receipt(line("BREAD", 1000), at=datetime(2025, 2, 14, 18, tzinfo=PRAGUE))
    assert earned(february, [BASE_V1, BASE_V2]) == [(0, "BASE@1", 20)]


def test_version_boundaries_compare_instants_not_wall_clocks():
    # 00:30 in Prague on 1 March is still 28 February in UTC, but the same instant as SPRING + 30 min.
    at = datetime(2025, 2, 28, 23, 30, tzinfo=timezone.utc)
    assert earned(receipt(line("BREAD", 1000), at=at), [BASE_V1, BASE_V2]) == [(0, "BASE@2", 10)]


def test_version_in_force():
    schemes = SchemeSet.compile([BASE_V1, BASE_V2])
    assert schemes.version_in_force("BASE", START - timedelta(days=1)) is None
    assert schemes.version_in_force("BASE", START) is BASE_V1
    assert schemes.version_in_force("BASE", SPRING) is BASE_V2
    assert schemes.version_in_force("OTHER", SPRING) is None
    closed = SchemeSet.compile([scheme("GONE", EUR_1PT, valid_to=SPRING)])
    assert closed.version_in_force("GONE", SPRING) is None


@pytest.mark.parametrize("versions", [
    [scheme("BASE", EUR_1PT, version=1), scheme("BASE", EUR_1PT, version=2, valid_from=SPRING)],  # v1 never closed
    [scheme("BASE", EUR_1PT, version=1, valid_to=SPRING + timedelta(seconds=1)),
     scheme("BASE", EUR_1PT, version=2, valid_from=SPRING)],  # one second of overlap
    [scheme("BASE", EUR_1PT, version=1, valid_to=SPRING),
     scheme("BASE", EUR_1PT, version=1, valid_from=SPRING)],  # the same version number twice
])
def test_versions_of_a_code_must_not_overlap(versions):
    with pytest.raises(InvalidInput):
        SchemeSet.compile(versions)


# --- competing schemes ----------------------------------------------------------------------------------------------

COMPETING = [
    scheme("BASE", EUR_1PT, priority=0),
    scheme("DAIRY", Percent(500, "EUR"), criteria=Criteria(item_groups={"DAIRY"}), priority=10),
    scheme("MILK", FixedPerLine(30), criteria=Criteria(items={"MILK"}), priority=20),
]
BASKET = receipt(line("MILK", 1999, "DAIRY"), line("CHEESE", 400, "DAIRY"), line("BREAD", 350, "BAKERY"))
# Each scheme on each line: BASE 19 / 4 / 3, DAIRY 99 (99.95 floored) / 20 / -, MILK 30 / - / -.


@pytest.mark.parametrize(("mode", "expected"), [
    (Combination.MAX, [(0, "DAIRY@1", 99), (1, "DAIRY@1", 20), (2, "BASE@1", 3)]),
    (Combination.SUM, [(0, "MILK@1", 30), (0, "DAIRY@1", 99), (0, "BASE@1", 19),
                       (1, "DAIRY@1", 20), (1, "BASE@1", 4), (2, "BASE@1", 3)]),
    (Combination.PRIORITY, [(0, "MILK@1", 30), (1, "DAIRY@1", 20), (2, "BASE@1", 3)]),
])
def test_competing_schemes_in_each_combination_mode(mode, expected):
    assert earned(BASKET, COMPETING, mode) == expected


def test_in_priority_mode_a_zero_points_scheme_keeps_a_line_from_earning():
    schemes = [scheme("BASE", EUR_1PT), scheme("NO-TOBACCO", FixedPerLine(0), priority=100,
                                                  criteria=Criteria(item_groups={"TOBACCO"}))]
    r = receipt(line("CIGARS", 5000, "TOBACCO"), line("BREAD", 350))
    assert earned(r, schemes, Combination.PRIORITY) == [(1, "BASE@1", 3)]
    assert earned(r, schemes, Combination.MAX) == [(0, "BASE@1", 50), (1, "BASE@1", 3)]


@pytest.mark.parametrize(("mode", "winner"), [(Combination.MAX, "HIGH@1"), (Combination.PRIORITY, "HIGH@1")])
def test_ties_go_to_the_higher_priority(mode, winner):
    schemes = [scheme("LOW", EUR_1PT, priority=1), scheme("HIGH", FixedPerLine(10), priority=2)]
    assert earned(receipt(line("BREAD", 1000)), schemes, mode) == [(0, winner, 10)]


def test_ties_of_equal_priority_go_to_the_smaller_code():
    schemes = [scheme("ZULU", FixedPerLine(10)), scheme("ALPHA", EUR_1PT)]
    assert earned(receipt(line("BREAD", 1000)), schemes) == [(0, "ALPHA@1", 10)]
    assert earned(receipt(line("BREAD", 1000)), schemes, Combination.PRIORITY) == [(0, "ALPHA@1", 10)]


@pytest.mark.parametrize(("mode", "expected"), [
    (Combination.MAX, [(0, "BASE@1", 30), (None, "BIG@1", 50)]),
    (Combination.SUM, [(0, "BASE@1", 30), (None, "VISIT@1", 10), (None, "BIG@1", 50)]),  # in scheme order
    (Combination.PRIORITY, [(0, "BASE@1", 30), (None, "VISIT@1", 10)]),
])
def test_receipt_bonuses_compete_among_themselves_and_add_to_line_points(mode, expected):
    schemes = [scheme("BASE", EUR_1PT), scheme("VISIT", FixedPerReceipt(10), priority=5),
               scheme("BIG", FixedPerReceipt(50, min_value=2000, currency="EUR"))]
    assert earned(receipt(line("COAT", 3000)), schemes, mode) == expected


# --- exclusions -----------------------------------------------------------------------------------------------------

EXCLUSION_BASKET = receipt(
    line("BREAD", 1000, "BAKERY"),
    line("CAKE", 1000, "BAKERY", discount=200),  # already discounted
    line("WINE", 1000, "DRINKS", promo=True),  # sold under a promotion
    line("BEER", 1000, "DRINKS"),
    line("CIGARS", 1000, "TOBACCO"),
)


@pytest.mark.parametrize(("exclusions", "earning_lines"), [
    (Exclusions(), [0, 1, 2, 3, 4]),
    (Exclusions(discounted=True), [0, 2, 3, 4]),
    (Exclusions(promotional=True), [0, 1, 3, 4]),
    (Exclusions(items={"BEER"}), [0, 1, 2, 4]),
    (Exclusions(item_groups={"TOBACCO", "DRINKS"}), [0, 1]),
    (Exclusions(discounted=True, promotional=True, item_groups={"TOBACCO"}), [0, 3]),
])
def test_exclusions_remove_lines(exclusions, earning_lines):
    schemes = [scheme("BASE", EUR_1PT, exclusions=exclusions)]
    assert [i for i, _, _ in earned(EXCLUSION_BASKET, schemes)] == earning_lines


@pytest.mark.parametrize("exclusions", [
    Exclusions(discounted=True), Exclusions(promotional=True), Exclusions(items={"CAKE"}),
    Exclusions(item_groups={"SWEETS"}),
])
def test_an_excluded_line_falls_to_the_next_scheme(exclusions):
    schemes = [scheme("RICH", PerValue(5, 100, "EUR"), exclusions=exclusions), scheme("BASE", EUR_1PT)]
    r = receipt(line("BREAD", 1000, "BAKERY"), line("CAKE", 1000, "SWEETS", discount=200, promo=True))
    assert earned(r, schemes) == [(0, "RICH@1", 50), (1, "BASE@1", 10)]


def test_excluded_lines_do_not_count_towards_a_receipt_minimum():
    schemes = [scheme("BIG", FixedPerReceipt(50, min_value=2000, currency="EUR"),
                      exclusions=Exclusions(promotional=True))]
    assert total(receipt(line("COAT", 1500), line("HAT", 500, promo=True)), schemes) == 0
    assert total(receipt(line("COAT", 1500), line("HAT", 500)), schemes) == 50


# --- multipliers ----------------------------------------------------------------------------------------------------

MORNING = Multiplier(20000, time_from=time(7), time_to=time(10))  # double points 07:00-10:00
WEEKEND = Multiplier(15000, weekdays=frozenset({6, 7}))  # x1.5 on Saturday and Sunday
MULTIPLIED = [scheme("BASE", EUR_1PT, multipliers=(MORNING, WEEKEND))]
SATURDAY = MONDAY + timedelta(days=5)


@pytest.mark.parametrize(("at", "points"), [
    (MONDAY + timedelta(hours=6, minutes=59, seconds=59), 1),  # 1.50 EUR at 1 point per 1.00: 1.5 -> 1
    (MONDAY + timedelta(hours=7), 3),  # x2: 3
    (MONDAY + timedelta(hours=9, minutes=59, seconds=59), 3),
    (MONDAY + timedelta(hours=10), 1),  # the window's end is exclusive
    (SATURDAY + timedelta(hours=12), 2),  # x1.5: 2.25 -> 2
    (SATURDAY + timedelta(hours=8), 4),  # both: x3, 4.5 -> 4 (floored once, after the multipliers: not 1*2*1.5 = 3)
])
def test_multipliers_in_a_morning_window_and_at_the_weekend(at, points):
    assert total(receipt(line("BREAD", 150), at=at), MULTIPLIED) == points


def test_windows_read_the_store_wall_clock():
    # 08:30 in the store is 07:30 UTC: the store's morning, whatever UTC says.
    r = receipt(line("BREAD", 150), at=datetime(2025, 3, 3, 8, 30, tzinfo=PRAGUE))
    assert total(r, MULTIPLIED) == 3


def test_a_multiplier_can_make_one_scheme_win_over_another_under_max():
    schemes = [scheme("BASE", EUR_1PT, multipliers=(MORNING,)), scheme("FLAT", FixedPerLine(15))]
    coat = line("COAT", 1000)
    assert earned(receipt(coat, at=MONDAY + timedelta(hours=11)), schemes) == [(0, "FLAT@1", 15)]  # 10 < 15
    assert earned(receipt(coat, at=MONDAY + timedelta(hours=8)), schemes) == [(0, "BASE@1", 20)]  # 10 x 2 > 15


# --- criteria -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("criteria", "changes", "earns"), [
    (Criteria(customer_groups={"STUDENTS"}), {}, False),
    (Criteria(customer_groups={"STUDENTS"}), {"customer_groups": {"SENIORS", "STUDENTS"}}, True),
    (Criteria(tiers={"GOLD"}), {}, False),
    (Criteria(tiers={"GOLD", "SILVER"}), {}, True),
    (Criteria(tiers={"GOLD"}), {"tier": None}, False),
    (Criteria(card_types={"STAFF"}), {}, False),
    (Criteria(card_types={"STAFF"}), {"card_type": "STAFF"}, True),
    (Criteria(stores={"S02"}), {}, False),
    (Criteria(stores={"S01", "S02"}), {}, True),
    (Criteria(store_groups={"SOUTH"}), {}, False),
    (Criteria(stores={"S99"}, store_groups={"NORTH"}), {}, True),  # the store or one of its groups
    (Criteria(date_from=date(2025, 3, 3), date_to=date(2025, 3, 3)), {}, True),  # both ends inclusive
    (Criteria(date_from=date(2025, 3, 1), date_to=date(2025, 3, 3)), {}, True),
    (Criteria(date_from=date(2025, 3, 3), date_to=date(2025, 3, 9)), {}, True),
    (Criteria(date_from=date(2025, 3, 4)), {}, False),
    (Criteria(date_to=date(2025, 3, 2)), {}, False),
    (Criteria(weekdays={1}), {}, True),  # MONDAY is a Monday
    (Criteria(weekdays={6, 7}), {}, False),
    (Criteria(time_from=time(22), time_to=time(2)), {"at": MONDAY + timedelta(hours=23)}, True),  # wraps midnight
    (Criteria(time_from=time(22), time_to=time(2)), {"at": MONDAY + timedelta(hours=1, minutes=59)}, True),
    (Criteria(time_from=time(22), time_to=time(2)), {"at": MONDAY + timedelta(hours=2)}, False),
    (Criteria(time_from=time(22), time_to=time(2)), {"at": MONDAY + timedelta(hours=21, minutes=59)}, False),
    (Criteria(items={"BREAD"}), {}, True),
    (Criteria(items={"CAKE"}), {}, False),
    (Criteria(items={"CAKE"}, item_groups={"BAKERY"}), {}, True),  # the item or its group
    (Criteria(item_groups={"DAIRY"}), {}, False),
    (Criteria(), {"currency": "CZK"}, False),  # a rate in EUR does not apply to a receipt in CZK
])
def test_criteria_filters(criteria, changes, earns):
    r = receipt(line("BREAD", 1000, "BAKERY"), **changes)
    assert total(r, [scheme("S", EUR_1PT, criteria=criteria)]) == (10 if earns else 0)


# --- rounding and rules ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("rule", "lines", "points"), [
    (EUR_1PT, [line("A", 99), line("B", 99), line("C", 99)], 0),  # floored per line, not on the total 2.97
    (EUR_1PT, [line("A", 199)], 1),
    (PerValue(3, 200, "EUR"), [line("A", 199)], 2),  # 2.985 -> 2
    (Percent(500, "EUR"), [line("A", 1999)], 99),  # 5 % of 19.99 = 99.95 minor units -> 99 points
    (Percent(500, "EUR", minor_per_point=10), [line("A", 1999)], 9),  # points worth 0.10 EUR
    (PerQuantity(2), [line("A", 100, qty=3000)], 6),  # 2 points a piece, 3 pieces
    (PerQuantity(1, 100), [line("HAM", 100, qty=250)], 2),  # 1 point per 100 g of 250 g
    (PerQuantity(1, 100), [line("HAM", 100, qty=99)], 0),
    (FixedPerLine(7), [line("A", 1), line("B", 0)], 14),  # a line worth nothing still is a line
    (FixedPerReceipt(25), [line("A", 1), line("B", 5)], 25),
    (FixedPerReceipt(25, min_value=2000, currency="EUR"), [line("A", 1999)], 0),
    (FixedPerReceipt(25, min_value=2000, currency="EUR"), [line("A", 1000), line("B", 1000)], 25),
])
def test_rules_and_rounding(rule, lines, points):
    assert total(receipt(*lines), [scheme("S", rule)]) == points


def test_points_of_returned_lines():
    result = evaluate(BASKET, SchemeSet.compile(COMPETING, Combination.SUM))
    assert result.total == 175
    assert result.points_of_lines([0]) == 148 and result.points_of_lines([1, 2]) == 27


def test_nothing_in_force_earns_nothing():
    result = evaluate(BASKET, SchemeSet.compile([]))
    assert result.awards == () and result.total == 0 and result.receipt == "R1"


# --- validation -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: receipt(line("A", 100), at=datetime(2025, 3, 3, 12)),  # no offset: which store time?
    lambda: receipt(),  # no lines
    lambda: receipt(line("A", 100), currency="eur"),
    lambda: receipt(line("A", 100), store=""),
    lambda: receipt(line("A", 100), customer_groups="STUDENTS"),  # one string, not a set
    lambda: line("A", -1),
    lambda: line("A", 1.5),
    lambda: line("A", 100, qty=0),
    lambda: line("A", 100, discount=-5),
    lambda: line(" A", 100),
])
def test_receipts_are_validated_when_built(make):
    with pytest.raises(InvalidInput):
        make()


@pytest.mark.parametrize("make", [
    lambda: PerValue(1, 0, "EUR"),
    lambda: PerValue(-1, 100, "EUR"),
    lambda: Percent(500, "euro"),
    lambda: FixedPerReceipt(10, min_value=100),  # a minimum value needs a currency
    lambda: Criteria(time_from=time(8), time_to=time(8)),
    lambda: Criteria(time_from=time(8)),
    lambda: Criteria(date_from=date(2025, 3, 2), date_to=date(2025, 3, 1)),
    lambda: Criteria(weekdays={0}),
    lambda: Criteria(items="BREAD"),
    lambda: Multiplier(0),
    lambda: scheme("S", EUR_1PT, valid_to=START),
    lambda: scheme("S", EUR_1PT, valid_from=datetime(2025, 1, 1)),
    lambda: scheme("S", EUR_1PT, version=0),
    lambda: scheme("S", "1 point per euro"),
])
def test_schemes_are_validated_when_built(make):
    with pytest.raises(InvalidInput):
        make()


# --- properties -----------------------------------------------------------------------------------------------------

T0 = datetime(2025, 1, 6, tzinfo=PRAGUE)  # a Monday; everything happens in the two weeks after it
ITEMS, GROUPS, STORES, CODES = ["I1", "I2", "I3", "I4"], ["G1", "G2", "G3"], ["S1", "S2", "S3"], "ABCDEF"


def subset(values):
    return st.frozensets(st.sampled_from(values), max_size=2)


# Strategies built once: building them inside composites on every draw costs most of the run.
ITEM_SETS, GROUP_SETS, STORE_SETS = subset(ITEMS), subset(GROUPS), subset(STORES)
CUSTOMER_GROUP_SETS, STORE_GROUP_SETS = subset(["CG1", "CG2"]), subset(["NORTH", "SOUTH"])
TIER_SETS, CARD_TYPE_SETS = subset(["GOLD", "SILVER"]), subset(["LOYALTY", "STAFF"])
WEEKDAY_SETS = st.frozensets(st.integers(1, 7), min_size=1, max_size=4)
FACTORS, PRIORITIES = st.sampled_from([5000, 15000, 20000, 30000]), st.integers(0, 3)
CUTS = st.lists(st.integers(1, 14 * 24 * 60), max_size=3, unique=True)  # minutes after T0 where a version ends
times = st.builds(time, st.integers(0, 23), st.sampled_from([0, 30]))
days = st.integers(0, 13).map(lambda d: (T0 + timedelta(days=d)).date())
VALUES = st.one_of(st.sampled_from([0, 1, 99, 100, 500, 1000, 2000]), st.integers(0, 5000))  # round sums hit minimums
rules = st.one_of(
    st.builds(PerValue, st.integers(0, 5), st.sampled_from([1, 50, 100, 300]), st.sampled_from(["EUR", "CZK"])),
    st.builds(PerQuantity, st.integers(0, 5), st.sampled_from([1, 100, 1000])),
    st.builds(Percent, st.integers(0, 2000), st.just("EUR"), st.sampled_from([1, 10])),
    st.builds(FixedPerLine, st.integers(0, 3)),  # few values: ties between schemes
    st.builds(FixedPerReceipt, st.integers(0, 50), st.sampled_from([0, 100, 1000, 2000]), st.just("EUR")),
)


SOMETIMES = st.integers(0, 2).map(lambda n: n == 0)  # one time in three


@st.composite
def windows(draw):
    """Keyword arguments of a date, weekday and time-of-day window (each part present one time in three)."""
    kw = {}
    if draw(SOMETIMES):
        a, b = sorted([draw(days), draw(days)])
        kw["date_from"], kw["date_to"] = [(a, b), (a, None), (None, b)][draw(st.integers(0, 2))]
    if draw(SOMETIMES):
        kw["weekdays"] = draw(WEEKDAY_SETS)
    if draw(SOMETIMES):
        start, end = draw(times), draw(times)
        if start != end:
            kw["time_from"], kw["time_to"] = start, end
    return kw


CRITERION_VALUES = {"customer_groups": CUSTOMER_GROUP_SETS, "tiers": TIER_SETS, "card_types": CARD_TYPE_SETS,
                    "stores": STORE_SETS, "store_groups": STORE_GROUP_SETS, "items": ITEM_SETS,
                    "item_groups": GROUP_SETS}
CRITERION_NAMES = st.sets(st.sampled_from(sorted(CRITERION_VALUES)), max_size=2)


@st.composite
def criteria(draw):
    """A few criteria at most, so that schemes still match some receipts."""
    chosen = {name: draw(CRITERION_VALUES[name]) for name in sorted(draw(CRITERION_NAMES))}
    return Criteria(**chosen, **draw(windows()))


WINDOWS, CRITERIA = windows(), criteria()
CODE_LISTS = st.lists(st.sampled_from(CODES), unique=True, min_size=2, max_size=6)


@st.composite
def scheme_sets(draw):
    """Schemes of a few codes, each with one to three versions one after another (gaps allowed)."""
    out = []
    for code in draw(CODE_LISTS):
        cuts = sorted(draw(CUTS))
        bounds = [T0 - timedelta(days=1)] + [T0 + timedelta(minutes=c) for c in cuts] + [None]
        for version, (start, end) in enumerate(zip(bounds, bounds[1:]), start=1):
            if end is not None and draw(SOMETIMES):  # leave a gap before the next version
                end = start + (end - start) / 2
            exclusions = Exclusions(discounted=draw(SOMETIMES), promotional=draw(SOMETIMES),
                                    items=draw(ITEM_SETS) if draw(SOMETIMES) else (),
                                    item_groups=draw(GROUP_SETS) if draw(SOMETIMES) else ())
            multipliers = tuple(Multiplier(draw(FACTORS), **draw(WINDOWS)) for _ in range(draw(st.integers(0, 2))))
            out.append(EarningScheme(code, version, start, draw(rules), valid_to=end, criteria=draw(CRITERIA),
                                     exclusions=exclusions, multipliers=multipliers, priority=draw(PRIORITIES)))
    return out


receipt_lines = st.builds(ReceiptLine, st.sampled_from(ITEMS + ["I9"]), st.integers(1, 5000), VALUES,
                          st.sampled_from(GROUPS + [None]), st.sampled_from([0, 0, 50]), SOMETIMES)
receipts = st.builds(
    Receipt, st.just("R"), st.just("C"), st.sampled_from(STORES),
    st.integers(0, 14 * 24 * 60 * 60).map(lambda s: T0 + timedelta(seconds=s)),
    st.sampled_from(["EUR", "EUR", "EUR", "CZK"]),
    st.lists(receipt_lines, min_size=1, max_size=8).map(tuple), STORE_GROUP_SETS, CUSTOMER_GROUP_SETS,
    st.sampled_from(["GOLD", "SILVER", None]), st.sampled_from(["LOYALTY", "STAFF", None]))


@settings(max_examples=200, deadline=None)
@given(scheme_sets(), st.lists(receipts, min_size=1, max_size=4))
def test_the_index_agrees_with_the_plain_reading_and_never_goes_negative(schemes, rs):
    compiled = {mode: SchemeSet.compile(schemes, mode) for mode in Combination}
    for r in rs:
        results = {mode: evaluate(r, compiled[mode]) for mode in Combination}
        for mode, result in results.items():
            assert result == evaluate_naive(r, schemes, mode)
            assert all(a.points > 0 for a in result.awards)
        # Every line (and the receipt) keeps at least what priority picks under max, and everything under sum.
        assert results[Combination.SUM].total >= results[Combination.MAX].total >= results[Combination.PRIORITY].total

"""Segments: one card's facts in → membership out; the JSON form there and back; consents for mailings."""

import json
import string
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import InvalidInput
from core.loyalty.customers import Channel, consent, current_consents
from core.loyalty.receipts import Receipt, ReceiptLine
from core.loyalty.segments import (
    And,
    BirthdayThisMonth,
    BirthdayWithin,
    BoughtGroup,
    BoughtItem,
    CardFacts,
    CustomerGroupIn,
    HasConsent,
    InvalidSegmentRule,
    Not,
    Or,
    PurchaseFact,
    SpentBetween,
    SpentOver,
    StoreIn,
    TierIn,
    VisitsAtLeast,
    consented_channels,
    evaluate,
    exportable,
    from_data,
    from_json,
    segments_of,
    to_data,
    to_json,
)

TODAY = date(2025, 6, 15)


def ago(days: int) -> date:
    return TODAY - timedelta(days=days)


def bought(days_ago: int, total: int, *, items=(), groups=(), store="S1") -> PurchaseFact:
    return PurchaseFact(ago(days_ago), total, store, frozenset(items), frozenset(groups))


def card(*purchases: PurchaseFact, **kw) -> CardFacts:
    return CardFacts(**{"today": TODAY, "purchases": purchases, **kw})


# A card with 60.00 EUR 89 days ago (the oldest day of a 90-day window), 40.00 EUR today,
# and a purchase 90 days ago that a 90-day window no longer sees.
REGULAR = card(bought(90, 100_000, items={"OLD"}, groups={"TOYS"}),
               bought(89, 6_000, items={"MERLOT"}, groups={"WINE"}),
               bought(0, 4_000, items={"BREAD"}, groups={"BAKERY"}), bought(0, 500, items={"MILK"}, groups={"DAIRY"}),
               tier="SILVER", consents={Channel.EMAIL}, customer_groups={"STAFF", "VIP"}, home_store="S1")

CONDITIONS = [
    # rule, facts, expected
    (SpentOver(9_999, 90), REGULAR, True),
    (SpentOver(10_500, 90), REGULAR, False),  # exactly 105.00 EUR is not over it
    (SpentOver(10_499, 90), REGULAR, True),
    (SpentOver(4_500, 1), REGULAR, False),  # today only: 45.00 EUR
    (SpentOver(0, 30), card(bought(0, 1_000), bought(1, -1_000)), False),  # a return cancels the purchase
    (SpentOver(0, 30), card(bought(-1, 1_000)), False),  # dated tomorrow: not yet
    (SpentBetween(10_500, 20_000, 90), REGULAR, True),  # both ends included
    (SpentBetween(5_000, 10_500, 90), REGULAR, True),
    (SpentBetween(5_000, 10_499, 90), REGULAR, False),
    (BoughtGroup("WINE", 90), REGULAR, True),
    (BoughtGroup("WINE", 89), REGULAR, False),
    (BoughtGroup("TOYS", 90), REGULAR, False),
    (BoughtGroup("TOYS", 91), REGULAR, True),
    (BoughtItem("MERLOT", 90), REGULAR, True),
    (BoughtItem("MERLOT", 89), REGULAR, False),
    (BoughtItem("WINE", 90), REGULAR, False),  # a group is not an item
    (VisitsAtLeast(2, 90), REGULAR, True),
    (VisitsAtLeast(3, 90), REGULAR, False),  # two purchases today are one visit
    (VisitsAtLeast(3, 91), REGULAR, True),
    (TierIn(frozenset({"SILVER", "GOLD"})), REGULAR, True),
    (TierIn(frozenset({"GOLD"})), REGULAR, False),
    (TierIn(frozenset({"GOLD"})), card(), False),  # no tier known
    (HasConsent(Channel.EMAIL), REGULAR, True),
    (HasConsent(Channel.SMS), REGULAR, False),
    (CustomerGroupIn(frozenset({"VIP", "PRESS"})), REGULAR, True),
    (CustomerGroupIn(frozenset({"PRESS"})), REGULAR, False),
    (StoreIn(frozenset({"S1", "S2"})), REGULAR, True),
    (StoreIn(frozenset({"S2"})), REGULAR, False),
    (StoreIn(frozenset({"S1"})), card(bought(0, 100, store="S1")), False),  # the home store, not where they shop
]


@pytest.mark.parametrize("rule, facts, expected", CONDITIONS)
def test_each_condition(rule, facts, expected):
    assert evaluate(rule, facts) is expected


BIRTHDAYS = [
    # born, today, rule, expected
    (date(1990, 6, 1), date(2025, 6, 30), BirthdayThisMonth(), True),
    (date(1990, 1, 31), date(2025, 2, 1), BirthdayThisMonth(), False),
    (date(1990, 1, 31), date(2025, 1, 31), BirthdayThisMonth(), True),
    (date(1992, 2, 29), date(2025, 2, 1), BirthdayThisMonth(), True),  # celebrated on 28 Feb in common years
    (date(1992, 2, 29), date(2025, 3, 1), BirthdayThisMonth(), False),
    (date(1992, 2, 29), date(2025, 2, 27), BirthdayWithin(1), True),
    (date(1992, 2, 29), date(2025, 2, 27), BirthdayWithin(0), False),
    (date(1992, 2, 29), date(2025, 2, 28), BirthdayWithin(0), True),
    (date(1992, 2, 29), date(2024, 2, 28), BirthdayWithin(0), False),  # leap year: the 29th itself
    (date(1992, 2, 29), date(2024, 2, 28), BirthdayWithin(1), True),
    (date(1992, 2, 29), date(2025, 3, 1), BirthdayWithin(300), False),  # next one is 28 Feb 2026, 364 days on
    (date(1992, 2, 29), date(2025, 3, 1), BirthdayWithin(364), True),
    (date(1990, 1, 2), date(2025, 12, 30), BirthdayWithin(3), True),  # across the new year
    (date(1990, 1, 2), date(2025, 12, 30), BirthdayWithin(2), False),
    (date(1990, 6, 14), date(2025, 6, 15), BirthdayWithin(7), False),  # yesterday: next year's is far
    (date(1990, 6, 14), date(2025, 6, 15), BirthdayThisMonth(), True),
]


@pytest.mark.parametrize("born, today, rule, expected", BIRTHDAYS)
def test_birthdays(born, today, rule, expected):
    assert evaluate(rule, CardFacts(today, birth_date=born)) is expected


@pytest.mark.parametrize("rule", [BirthdayThisMonth(), BirthdayWithin(366)])
def test_no_birth_date_is_no_birthday(rule):
    assert evaluate(rule, card()) is False


# Wine buyers who spent over 100 EUR in 90 days and may be e-mailed, unless staff.
WINE_OFFER = And((SpentOver(10_000, 90), BoughtGroup("WINE", 90), HasConsent(Channel.EMAIL),
                  Not(CustomerGroupIn(frozenset({"STAFF"})))))


def test_combinations():
    assert evaluate(WINE_OFFER, REGULAR) is False  # staff
    customer = card(*REGULAR.purchases, consents={Channel.EMAIL}, customer_groups={"VIP"})
    assert evaluate(WINE_OFFER, customer) is True
    assert evaluate(WINE_OFFER, card(*REGULAR.purchases, customer_groups={"VIP"})) is False  # no consent
    either = Or((BirthdayThisMonth(), TierIn(frozenset({"GOLD"}))))
    assert evaluate(either, card(birth_date=date(1980, 6, 20))) is True
    assert evaluate(either, card(tier="GOLD")) is True
    assert evaluate(either, card(tier="SILVER", birth_date=date(1980, 7, 20))) is False
    assert evaluate(Not(Not(SpentOver(0, 1))), card(bought(0, 1))) is True


def test_segments_the_till_asks_about():
    segments = {"WINE_OFFER": WINE_OFFER, "BIG": SpentOver(10_000, 90), "GOLD": TierIn(frozenset({"GOLD"}))}
    assert segments_of(segments, REGULAR) == {"BIG"}


def test_purchase_facts_from_a_receipt_use_the_store_local_date():
    at = datetime(2025, 6, 15, 23, 30, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))  # 01:30 on the 16th
    receipt = Receipt("R1", "CARD1", "S9", at, "EUR",
                      (ReceiptLine("MERLOT", 1000, 1_200, "WINE"), ReceiptLine("BAG", 1000, 10)))
    fact = PurchaseFact.of(receipt)
    assert (fact.on, fact.total_minor, fact.store) == (date(2025, 6, 16), 1_210, "S9")
    assert fact.items == {"MERLOT", "BAG"} and fact.groups == {"WINE"}


# --- JSON form ---------------------------------------------------------------------------------------


def test_json_round_trip_and_canonical_text():
    data = to_data(WINE_OFFER)
    assert data == {"op": "and", "rules": [
        {"op": "spent_over", "amount": 10_000, "days": 90},
        {"op": "bought_group", "group": "WINE", "days": 90},
        {"op": "has_consent", "channel": "email"},
        {"op": "not", "rule": {"op": "customer_group_in", "groups": ["STAFF"]}},
    ]}
    assert from_data(data) == WINE_OFFER
    assert from_json(to_json(WINE_OFFER)) == WINE_OFFER
    assert to_json(TierIn(frozenset({"B", "A"}))) == '{"op":"tier_in","tiers":["A","B"]}'
    assert from_json(json.dumps({"op": "birthday_this_month"})) == BirthdayThisMonth()


def _nested(depth: int) -> dict:
    rule: dict = {"op": "birthday_this_month"}
    for _ in range(depth):
        rule = {"op": "not", "rule": rule}
    return rule


BAD = [
    # data, path of the bad node, its op, words of the reason
    ({"op": "and", "rules": [{"op": "birthday_this_month"}, {"op": "spent_above", "amount": 1, "days": 1}]},
     "$.rules[1]", "spent_above", "unknown op"),
    ({"op": "or", "rules": [{"op": "not", "rule": {"op": "spent_over", "amount": 1, "days": 0}}]},
     "$.rules[0].rule", "spent_over", "days"),
    ({"op": "spent_over", "amount": 100}, "$", "spent_over", "missing ['days']"),
    ({"op": "bought_item", "item": "X", "days": 3, "store": "S1"}, "$", "bought_item", "unexpected ['store']"),
    ({"op": "visits_at_least", "n": True, "days": 3}, "$", "visits_at_least", "whole number"),
    ({"op": "spent_over", "amount": 1.5, "days": 3}, "$", "spent_over", "whole number"),
    ({"op": "spent_between", "low": 10, "high": 5, "days": 3}, "$", "spent_between", "high"),
    ({"op": "has_consent", "channel": "fax"}, "$", "has_consent", "channel"),
    ({"op": "and", "rules": []}, "$", "and", "at least one"),
    ({"op": "and", "rules": {"op": "birthday_this_month"}}, "$", "and", "list of rules"),
    ({"op": "not", "rule": [1]}, "$.rule", None, "JSON object"),
    ({"op": "tier_in", "tiers": "GOLD"}, "$", "tier_in", "list of codes"),
    ({"op": "tier_in", "tiers": ["GOLD", "GOLD"]}, "$", "tier_in", "twice"),
    ({"op": "store_in", "stores": []}, "$", "store_in", "1 to"),
    ({"op": "bought_group", "group": "", "days": 3}, "$", "bought_group", "group"),
    ({"days": 3}, "$", None, "unknown op"),
    ([], "$", None, "JSON object"),
    (_nested(40), "$" + ".rule" * 32, "not", "nest"),
]


@pytest.mark.parametrize("data, path, op, reason", BAD)
def test_bad_rules_name_the_bad_node(data, path, op, reason):
    for load in (lambda: from_data(data), lambda: from_json(json.dumps(data))):
        with pytest.raises(InvalidSegmentRule) as caught:
            load()
        error = caught.value
        assert isinstance(error, InvalidInput) and error.code == "invalid_segment_rule"
        assert (error.path, error.op) == (path, op) and reason in error.reason and path in str(error)


@pytest.mark.parametrize("text", ["{", "", "[" * 100_000, b"\xff"])
def test_text_that_is_not_json(text):
    with pytest.raises(InvalidSegmentRule, match=r"^\$ \(\?\): not JSON"):
        from_json(text)


def test_too_many_nodes():
    wide = {"op": "or", "rules": [{"op": "birthday_this_month"}] * 1000}
    with pytest.raises(InvalidSegmentRule, match="at most 1000 nodes") as caught:
        from_data(wide)
    assert caught.value.path == "$.rules[999]"  # the 1,001st node
    assert len(from_data({"op": "or", "rules": wide["rules"][:999]}).rules) == 999


def test_nodes_are_validated_when_built_directly():
    with pytest.raises(InvalidInput):
        SpentOver(-1, 30)
    with pytest.raises(InvalidInput):
        And((SpentOver(1, 30), "birthday"))
    with pytest.raises(InvalidInput):
        TierIn("GOLD")  # one string would be read letter by letter
    with pytest.raises(InvalidInput):
        BirthdayWithin(367)


codes = st.text(string.ascii_uppercase + string.digits + "_-.", min_size=1, max_size=8)
code_sets = st.frozensets(codes, min_size=1, max_size=4)
days = st.integers(1, 3660)
amounts = st.integers(0, 10**12)
leaves = st.one_of(
    st.builds(SpentOver, amounts, days),
    st.tuples(amounts, amounts, days).map(lambda a: SpentBetween(min(a[:2]), max(a[:2]), a[2])),
    st.builds(BoughtGroup, codes, days), st.builds(BoughtItem, codes, days),
    st.builds(VisitsAtLeast, st.integers(1, 3660), days), st.just(BirthdayThisMonth()),
    st.builds(BirthdayWithin, st.integers(0, 366)), st.builds(TierIn, code_sets),
    st.builds(HasConsent, st.sampled_from(list(Channel))), st.builds(CustomerGroupIn, code_sets),
    st.builds(StoreIn, code_sets),
)
rules = st.recursive(leaves, lambda children: st.one_of(
    st.lists(children, min_size=1, max_size=4).map(lambda rs: And(tuple(rs))),
    st.lists(children, min_size=1, max_size=4).map(lambda rs: Or(tuple(rs))),
    children.map(Not)), max_leaves=20)


@given(rules)
def test_json_round_trip_of_random_rules(rule):
    assert from_data(to_data(rule)) == rule
    text = to_json(rule)
    assert from_json(text) == rule and to_json(from_json(text)) == text


purchase_facts = st.builds(PurchaseFact, st.integers(-3, 120).map(ago), st.integers(-10_000, 50_000),
                           st.sampled_from(["S1", "S2"]), st.frozensets(st.sampled_from(["A", "B"])),
                           st.frozensets(st.sampled_from(["G", "H"])))
card_facts = st.builds(CardFacts, st.just(TODAY), st.lists(purchase_facts, max_size=6).map(tuple),
                       st.none() | st.dates(date(1930, 1, 1), date(2010, 12, 31)),
                       st.none() | st.sampled_from(["A", "B"]), st.frozensets(st.sampled_from(list(Channel))))


@given(rules, card_facts)
def test_logic_holds_for_random_rules(rule, facts):
    assert evaluate(Not(rule), facts) is not evaluate(rule, facts)
    assert evaluate(And((rule, Not(rule))), facts) is False and evaluate(Or((rule, Not(rule))), facts) is True
    assert evaluate(from_json(to_json(rule)), facts) is evaluate(rule, facts)


# --- consents ----------------------------------------------------------------------------------------


def given_on(channel, granted, day, source="web"):
    return consent(channel, granted, source, datetime(2025, 1, day, tzinfo=UTC))


@pytest.mark.parametrize("history, channel, expected", [
    ([], Channel.EMAIL, False),  # never asked: no consent
    ([given_on("email", True, 1)], Channel.EMAIL, True),
    ([given_on("email", True, 1)], Channel.SMS, False),  # each channel on its own
    ([given_on("email", True, 1), given_on("email", False, 5)], Channel.EMAIL, False),
    ([given_on("email", False, 5), given_on("email", True, 1)], Channel.EMAIL, False),  # the latest given counts
    ([given_on("email", True, 1), given_on("email", False, 5), given_on("email", True, 9, "till")], "email", True),
    ([given_on("sms", True, 3), given_on("sms", False, 3, "staff")], Channel.SMS, False),  # same time: recorded last
    ([given_on("mail", True, 2), given_on("sms", False, 4)], Channel.MAIL, True),
])
def test_exports_honour_the_latest_consent(history, channel, expected):
    assert exportable(history, channel) is expected
    assert exportable(current_consents(history), channel) is expected  # or the current state, as stored
    assert (Channel(channel) in consented_channels(history)) is expected


def test_an_unknown_channel_is_refused():
    with pytest.raises(InvalidInput, match="channel"):
        exportable([], "fax")

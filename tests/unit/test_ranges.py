"""Card-number blocks: a store draws numbers in order, oldest block first, and never the same one twice."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import InvalidInput, NumberTemplate
from core.ranges import BlocksExhausted, NumberBlock, needs_block, next_number, remaining

TEMPLATE = NumberTemplate("6001", 16, luhn=True)


def draw(blocks: list[NumberBlock], programme: str = "GIFT", template: NumberTemplate = TEMPLATE):
    """Draw one number and put the drawn block back where it was, as a store would."""
    drawn, number = next_number(blocks, programme, template)
    return [drawn if b.id == drawn.id else b for b in blocks], number


def test_draws_serials_in_order_within_a_block():
    blocks = [NumberBlock(1, "GIFT", 100, 3)]
    numbers = []
    for _ in range(3):
        blocks, number = draw(blocks)
        numbers.append(number)
    assert numbers == [TEMPLATE.number(100), TEMPLATE.number(101), TEMPLATE.number(102)]
    assert blocks == [NumberBlock(1, "GIFT", 100, 3, used=3)]


def test_continues_after_the_used_part_of_a_block():
    drawn, number = next_number([NumberBlock(7, "GIFT", 500, 10, used=4)], "GIFT", TEMPLATE)
    assert number == TEMPLATE.number(504)
    assert drawn == NumberBlock(7, "GIFT", 500, 10, used=5)


def test_oldest_block_first_then_the_next():
    # Listed newest first: the order of the list must not matter, the block id does.
    blocks = [NumberBlock(9, "GIFT", 900, 2), NumberBlock(3, "GIFT", 300, 2)]
    numbers = []
    for _ in range(4):
        blocks, number = draw(blocks)
        numbers.append(TEMPLATE.serial(number))
    assert numbers == [300, 301, 900, 901]


def test_used_up_block_is_skipped():
    blocks = [NumberBlock(1, "GIFT", 0, 5, used=5), NumberBlock(2, "GIFT", 50, 5)]
    drawn, number = next_number(blocks, "GIFT", TEMPLATE)
    assert drawn.id == 2 and TEMPLATE.serial(number) == 50


def test_only_blocks_of_the_programme_are_drawn_from():
    blocks = [NumberBlock(1, "FLEX", 0, 5), NumberBlock(2, "GIFT", 70, 5)]
    drawn, number = next_number(blocks, "GIFT", TEMPLATE)
    assert drawn.id == 2 and TEMPLATE.serial(number) == 70
    with pytest.raises(BlocksExhausted):
        next_number(blocks, "OTHER", TEMPLATE)


def test_drawing_does_not_change_the_given_blocks():
    blocks = [NumberBlock(1, "GIFT", 0, 5)]
    next_number(blocks, "GIFT", TEMPLATE)
    assert blocks == [NumberBlock(1, "GIFT", 0, 5)]


def test_exhausted_when_no_blocks_or_all_used():
    with pytest.raises(BlocksExhausted) as empty:
        next_number([], "GIFT", TEMPLATE)
    assert empty.value.code == "no_numbers_left"
    with pytest.raises(BlocksExhausted):
        next_number([NumberBlock(1, "GIFT", 0, 2, used=2), NumberBlock(2, "GIFT", 10, 1, used=1)], "GIFT", TEMPLATE)


def test_exhausted_is_an_invalid_input():
    assert issubclass(BlocksExhausted, InvalidInput)


def test_remaining_counts_only_the_programme():
    blocks = [NumberBlock(1, "GIFT", 0, 10, used=4), NumberBlock(2, "GIFT", 10, 5), NumberBlock(3, "FLEX", 0, 100)]
    assert remaining(blocks, "GIFT") == 11
    assert remaining(blocks, "FLEX") == 100
    assert remaining(blocks, "NONE") == 0


def test_needs_block_at_the_low_water_mark():
    blocks = [NumberBlock(1, "GIFT", 0, 10, used=4), NumberBlock(2, "FLEX", 0, 1)]  # 6 GIFT left
    assert not needs_block(blocks, "GIFT", 5)
    assert needs_block(blocks, "GIFT", 6)
    assert needs_block(blocks, "GIFT", 7)
    assert needs_block([], "GIFT", 0)


@pytest.mark.parametrize(
    ("first_serial", "count", "used"),
    [(0, 0, 0), (0, -1, 0), (-1, 5, 0), (0, 5, -1), (0, 5, 6)],
)
def test_invalid_blocks_are_refused(first_serial, count, used):
    with pytest.raises(InvalidInput):
        NumberBlock(1, "GIFT", first_serial, count, used)


def test_block_bounds():
    block = NumberBlock(1, "GIFT", 100, 10, used=10)
    assert block.left == 0
    assert block.contains(100) and block.contains(109)
    assert not block.contains(99) and not block.contains(110)


@st.composite
def disjoint_blocks(draw_):
    """Several blocks with distinct ids over disjoint serial ranges, some partly used, in any order."""
    counts = draw_(st.lists(st.integers(min_value=1, max_value=20), min_size=1, max_size=6))
    gaps = draw_(st.lists(st.integers(min_value=0, max_value=1000), min_size=len(counts), max_size=len(counts)))
    ids = draw_(st.permutations(range(1, len(counts) + 1)))
    blocks, start = [], 0
    for block_id, count, gap in zip(ids, counts, gaps, strict=True):
        start += gap
        used = draw_(st.integers(min_value=0, max_value=count))
        blocks.append(NumberBlock(block_id, "GIFT", start, count, used))
        start += count
    return blocks


@given(blocks=disjoint_blocks(), luhn=st.booleans())
def test_drawing_everything_yields_distinct_valid_numbers(blocks, luhn):
    template = NumberTemplate("77", 12, luhn=luhn)
    expected = sum(b.left for b in blocks)
    expected_serials = {s for b in blocks for s in range(b.first_serial + b.used, b.first_serial + b.count)}
    numbers = []
    for _ in range(expected):
        blocks, number = draw(blocks, template=template)
        numbers.append(number)
    assert len(numbers) == expected
    assert len(set(numbers)) == len(numbers)
    assert all(template.matches(n) for n in numbers)
    assert {template.serial(n) for n in numbers} == expected_serials
    assert remaining(blocks, "GIFT") == 0
    with pytest.raises(BlocksExhausted):
        next_number(blocks, "GIFT", template)

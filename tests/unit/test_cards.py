"""The card lifecycle state machine."""

import itertools

import pytest

from core import CardEvent, CardState, DeclineCode, DomainError, IllegalTransition, next_state, usable_decline
from core.cards import TRANSITIONS

S, E = CardState, CardEvent

# The lifecycle as the product defines it, written out independently of core.cards.
ALLOWED = [
    (S.GENERATED, E.PACK, S.IN_PACK),
    (S.IN_PACK, E.UNPACK, S.GENERATED),
    (S.IN_PACK, E.ACTIVATE, S.ACTIVE),
    (S.ACTIVE, E.CANCEL_SALE, S.IN_PACK),
    (S.ACTIVE, E.BLOCK, S.BLOCKED),
    (S.BLOCKED, E.UNBLOCK, S.ACTIVE),
    (S.ACTIVE, E.CLOSE, S.CLOSED),
    (S.BLOCKED, E.CLOSE, S.CLOSED),
    (S.ACTIVE, E.EXPIRE, S.EXPIRED),
    (S.BLOCKED, E.EXPIRE, S.EXPIRED),
    (S.ACTIVE, E.REPLACE, S.REPLACED),
    (S.BLOCKED, E.REPLACE, S.REPLACED),
    (S.GENERATED, E.ACTIVATE_REPLACEMENT, S.ACTIVE),
    (S.IN_PACK, E.ACTIVATE_REPLACEMENT, S.ACTIVE),
]
ALLOWED_PAIRS = {(state, event) for state, event, _ in ALLOWED}
ILLEGAL = [pair for pair in itertools.product(CardState, CardEvent) if pair not in ALLOWED_PAIRS]


def test_table_holds_exactly_the_expected_transitions():
    assert TRANSITIONS == {(state, event): target for state, event, target in ALLOWED}


@pytest.mark.parametrize(("state", "event", "target"), ALLOWED)
def test_allowed_transition(state, event, target):
    assert next_state(state, event) is target


@pytest.mark.parametrize(("state", "event"), ILLEGAL)
def test_every_other_transition_is_illegal(state, event):
    with pytest.raises(IllegalTransition):
        next_state(state, event)


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (S.ACTIVE, E.ACTIVATE),  # selling a card twice
        (S.GENERATED, E.ACTIVATE),  # selling a card that never left the warehouse
        (S.BLOCKED, E.CANCEL_SALE),
        (S.CLOSED, E.UNBLOCK),
        (S.EXPIRED, E.ACTIVATE),
        (S.REPLACED, E.UNBLOCK),
        (S.ACTIVE, E.UNBLOCK),
        (S.ACTIVE, E.ACTIVATE_REPLACEMENT),  # a live card cannot become someone's duplicate
    ],
)
def test_notable_illegal_transitions(state, event):
    with pytest.raises(IllegalTransition):
        next_state(state, event)


@pytest.mark.parametrize("terminal", [S.CLOSED, S.EXPIRED, S.REPLACED])
def test_terminal_states_have_no_way_out(terminal):
    for event in CardEvent:
        with pytest.raises(IllegalTransition):
            next_state(terminal, event)


def test_illegal_transition_is_a_typed_error_with_a_readable_message():
    with pytest.raises(DomainError) as info:
        next_state(S.CLOSED, E.CANCEL_SALE)
    assert isinstance(info.value, IllegalTransition)
    assert info.value.code == "illegal_transition"
    assert str(info.value) == "a card that is closed cannot cancel sale"


def test_next_state_accepts_a_stored_state_string():
    assert next_state("in_pack", E.ACTIVATE) is S.ACTIVE
    with pytest.raises(IllegalTransition):
        next_state("closed", E.BLOCK)


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (S.GENERATED, DeclineCode.NOT_ACTIVE),
        (S.IN_PACK, DeclineCode.NOT_ACTIVE),
        (S.BLOCKED, DeclineCode.BLOCKED),
        (S.CLOSED, DeclineCode.CLOSED),
        (S.EXPIRED, DeclineCode.EXPIRED),
        (S.REPLACED, DeclineCode.REPLACED),
    ],
)
def test_usable_decline_names_why_a_card_cannot_be_used(state, code):
    assert usable_decline(state) is code
    assert usable_decline(str(state)) is code


def test_only_an_active_card_is_usable():
    assert usable_decline(S.ACTIVE) is None
    assert usable_decline("active") is None
    assert [s for s in CardState if usable_decline(s) is None] == [S.ACTIVE]

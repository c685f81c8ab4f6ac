"""The card lifecycle as an explicit state machine."""

from __future__ import annotations

from enum import StrEnum

from .errors import DeclineCode, IllegalTransition

__all__ = ["CardState", "CardEvent", "TRANSITIONS", "next_state", "usable_decline"]


class CardState(StrEnum):
    GENERATED = "generated"  # made in an issue, not yet handed to anyone
    IN_PACK = "in_pack"  # in a pack on its way to (or at) a store or counterparty
    ACTIVE = "active"
    BLOCKED = "blocked"
    CLOSED = "closed"
    EXPIRED = "expired"
    REPLACED = "replaced"


class CardEvent(StrEnum):
    PACK = "pack"
    UNPACK = "unpack"
    ACTIVATE = "activate"
    CANCEL_SALE = "cancel_sale"
    BLOCK = "block"
    UNBLOCK = "unblock"
    CLOSE = "close"
    EXPIRE = "expire"
    REPLACE = "replace"
    ACTIVATE_REPLACEMENT = "activate_replacement"  # a stock card becomes another card's duplicate


S, E = CardState, CardEvent
TRANSITIONS: dict[tuple[CardState, CardEvent], CardState] = {
    (S.GENERATED, E.PACK): S.IN_PACK,
    (S.IN_PACK, E.UNPACK): S.GENERATED,
    (S.IN_PACK, E.ACTIVATE): S.ACTIVE,
    (S.ACTIVE, E.CANCEL_SALE): S.IN_PACK,
    (S.ACTIVE, E.BLOCK): S.BLOCKED,
    (S.BLOCKED, E.UNBLOCK): S.ACTIVE,
    (S.ACTIVE, E.CLOSE): S.CLOSED,
    (S.BLOCKED, E.CLOSE): S.CLOSED,
    (S.ACTIVE, E.EXPIRE): S.EXPIRED,
    (S.BLOCKED, E.EXPIRE): S.EXPIRED,
    (S.ACTIVE, E.REPLACE): S.REPLACED,
    (S.BLOCKED, E.REPLACE): S.REPLACED,
    (S.GENERATED, E.ACTIVATE_REPLACEMENT): S.ACTIVE,
    (S.IN_PACK, E.ACTIVATE_REPLACEMENT): S.ACTIVE,
}
del S, E


def next_state(state: CardState | str, event: CardEvent) -> CardState:
    """The state after ``event``; IllegalTransition when the lifecycle does not allow it."""
    try:
        state = CardState(state)
        return TRANSITIONS[(state, event)]
    except (KeyError, ValueError):
        raise IllegalTransition(f"a card that is {state} cannot {event.replace('_', ' ')}") from None


_UNUSABLE = {
    CardState.GENERATED: DeclineCode.NOT_ACTIVE,
    CardState.IN_PACK: DeclineCode.NOT_ACTIVE,
    CardState.BLOCKED: DeclineCode.BLOCKED,
    CardState.CLOSED: DeclineCode.CLOSED,
    CardState.EXPIRED: DeclineCode.EXPIRED,
    CardState.REPLACED: DeclineCode.REPLACED,
}


def usable_decline(state: CardState | str) -> DeclineCode | None:
    """Why a card in ``state`` cannot be paid with or credited, or None if it can."""
    return _UNUSABLE.get(CardState(state))

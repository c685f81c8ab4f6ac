"""Card-number blocks: serials central preallocates to a store so it can issue cards offline.

Central hands out disjoint serial ranges of a programme (from the same counter that card issues
use), so no number is ever made twice chain-wide; a store draws numbers from its blocks in order and
asks for another block when what is left falls to the low-water mark.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InvalidInput
from .programmes import NumberTemplate

__all__ = ["NumberBlock", "BlocksExhausted", "next_number", "remaining", "needs_block"]


class BlocksExhausted(InvalidInput):
    """The store has no number left for that programme."""

    code = "no_numbers_left"


@dataclass(frozen=True, slots=True)
class NumberBlock:
    """Serials ``first_serial .. first_serial + count - 1`` of a programme; ``used`` of them drawn."""

    id: int
    programme: str
    first_serial: int
    count: int
    used: int = 0

    def __post_init__(self) -> None:
        if self.count <= 0 or self.first_serial < 0 or not 0 <= self.used <= self.count:
            raise InvalidInput("a number block has a positive count and 0 <= used <= count")

    @property
    def left(self) -> int:
        return self.count - self.used

    def contains(self, serial: int) -> bool:
        return self.first_serial <= serial < self.first_serial + self.count


def remaining(blocks: list[NumberBlock], programme: str) -> int:
    return sum(b.left for b in blocks if b.programme == programme)


def next_number(blocks: list[NumberBlock], programme: str, template: NumberTemplate) -> tuple[NumberBlock, str]:
    """The next unused number of ``programme`` (oldest block first) and the block with it drawn."""
    for block in sorted((b for b in blocks if b.programme == programme), key=lambda b: b.id):
        if block.left:
            drawn = NumberBlock(block.id, block.programme, block.first_serial, block.count, block.used + 1)
            return drawn, template.number(block.first_serial + block.used)
    raise BlocksExhausted(f"no card numbers left for programme {programme}")


def needs_block(blocks: list[NumberBlock], programme: str, low_water: int) -> bool:
    """Whether the store should ask central for another block of ``programme``."""
    return remaining(blocks, programme) <= low_water

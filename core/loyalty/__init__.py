"""Loyalty's pure domain: receipts, earning schemes and the lifetime of points here; tiers, segments,
e-vouchers and customers in their own modules.

Nothing here does I/O; central and the edge store and move what these modules decide.
"""

from .points import (
    MAX_POINTS,
    InsufficientPoints,
    Lot,
    MovementKind,
    PointsBalances,
    PointsBook,
    PointsChange,
    PointsMovement,
    PointsPolicy,
)
from .receipts import MAX_LINES, QUANTITY_SCALE, Receipt, ReceiptLine
from .schemes import (
    BASIS_POINTS,
    Award,
    Combination,
    Criteria,
    Earning,
    EarningScheme,
    Exclusions,
    FixedPerLine,
    FixedPerReceipt,
    Multiplier,
    Percent,
    PerQuantity,
    PerValue,
    Rule,
    SchemeSet,
    evaluate,
    evaluate_naive,
)

__all__ = [
    # receipts
    "MAX_LINES", "QUANTITY_SCALE", "Receipt", "ReceiptLine",
    # schemes
    "BASIS_POINTS", "Award", "Combination", "Criteria", "Earning", "EarningScheme", "Exclusions", "FixedPerLine",
    "FixedPerReceipt", "Multiplier", "PerQuantity", "PerValue", "Percent", "Rule", "SchemeSet", "evaluate",
    "evaluate_naive",
    # points
    "MAX_POINTS", "InsufficientPoints", "Lot", "MovementKind", "PointsBalances", "PointsBook", "PointsChange",
    "PointsMovement", "PointsPolicy",
]

"""Loyalty's pure domain: receipts here; tiers, segments, e-vouchers and customers in their own modules.

Nothing here does I/O; central and the edge store and move what these modules decide.
"""

from .receipts import MAX_LINES, QUANTITY_SCALE, Receipt, ReceiptLine

__all__ = [
    # receipts
    "MAX_LINES", "QUANTITY_SCALE", "Receipt", "ReceiptLine",
]

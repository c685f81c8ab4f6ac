"""A push batch stops at a weight of receipt lines, so one push never holds the edge's event loop for long."""

from types import SimpleNamespace

from edge.sync_client import MAX_BATCH_LINES, MAX_BATCH_LOYALTY, _within_weight


def _row(lines: int) -> SimpleNamespace:
    loyalty = {"lines": [{"item": "A"}] * lines} if lines else None
    return SimpleNamespace(entry={"kind": "receipt" if lines else "payment", "loyalty": loyalty})


def test_payments_alone_are_never_cut():
    rows = [_row(0) for _ in range(5000)]
    assert len(_within_weight(rows)) == 5000


def test_loyalty_entries_stop_the_batch_at_their_count():
    rows = [_row(1) for _ in range(1000)]
    assert len(_within_weight(rows)) == MAX_BATCH_LOYALTY


def test_receipts_stop_the_batch_at_the_line_weight():
    rows = [_row(1999) for _ in range(100)]  # 2,000 each with the entry itself
    kept = _within_weight(rows)
    assert len(kept) == MAX_BATCH_LINES // 2000
    assert sum(1 + len(r.entry["loyalty"]["lines"]) for r in kept) <= MAX_BATCH_LINES


def test_one_heavy_receipt_still_goes_alone():
    rows = [_row(MAX_BATCH_LINES * 2), _row(1)]
    assert len(_within_weight(rows)) == 1

"""Every till operation against a real central server, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from central.db.tables import cards

from ..support import World, txn


async def test_sale_activates_card_with_nominal_value(world: World):
    number = world.stock["GIFT"][0]
    result = await world.till("sale", card_number=number, amount=5000)
    assert result["approved"] and result["balance"] == 5000 and result["card_state"] == "active"
    assert result["card"].endswith(number[-4:]) and number not in str(result)  # masked
    balance = await world.till("balance", card_number=number)
    assert balance["balance"] == 5000 and balance["state"] == "active"
    await world.ledger_consistent()


@pytest.mark.parametrize(("amount", "code"), [(1234, "not_a_nominal_value"), (None, "not_a_nominal_value")])
async def test_sale_with_wrong_nominal_is_declined(world: World, amount, code):
    body = {"card_number": world.stock["GIFT"][0]} | ({"amount": amount} if amount else {})
    result = await world.till("sale", **body)
    assert not result["approved"] and result["decline_code"] == code
    assert (await world.till("balance", card_number=world.stock["GIFT"][0]))["state"] == "in_pack"


async def test_open_value_sale_range(world: World):
    low = await world.till("sale", card_number=world.stock["FLEX"][0], amount=999)
    assert low["decline_code"] == "amount_out_of_range"
    ok = await world.till("sale", card_number=world.stock["FLEX"][0], amount=1000)
    assert ok["approved"] and ok["balance"] == 1000


async def test_sale_refused_for_stock_not_released_or_elsewhere(world: World):
    spare = await world.till("sale", card_number=world.spare["GIFT"][0], amount=5000)
    assert spare["decline_code"] == "not_active"  # never packed: not in any store's stock
    other_store = await world.till("sale", card_number=world.stock_s2["GIFT"][0], amount=5000)
    assert other_store["decline_code"] == "wrong_store"
    unknown = await world.till("sale", card_number="6034999999999999", amount=5000)
    assert unknown["decline_code"] == "unknown_card"


async def test_sale_twice_and_cancel_sale(world: World):
    number = world.stock["GIFT"][0]
    sale = await world.till("sale", card_number=number, amount=2500)
    again = await world.till("sale", card_number=number, amount=2500)
    assert again["decline_code"] == "already_active"
    cancel = await world.till("sale/cancel", original_txn_id=sale["txn_id"])
    assert cancel["approved"] and cancel["balance"] == 0 and cancel["card_state"] == "in_pack"
    twice = await world.till("sale/cancel", original_txn_id=sale["txn_id"])
    assert twice["decline_code"] in ("already_cancelled", "card_used")
    # The card can be sold again afterwards.
    assert (await world.till("sale", card_number=number, amount=10000))["balance"] == 10000
    await world.ledger_consistent()


async def test_cancel_sale_refused_once_card_was_used(world: World):
    number = world.stock["GIFT"][0]
    sale = await world.till("sale", card_number=number, amount=5000)
    await world.till("payment", card_number=number, amount=100)
    refused = await world.till("sale/cancel", original_txn_id=sale["txn_id"])
    assert not refused["approved"] and refused["decline_code"] in ("card_used", "insufficient_funds")


async def test_partial_and_repeated_payments(world: World):
    number = await world.sell("GIFT", 5000)
    first = await world.till("payment", card_number=number, amount=1200)
    second = await world.till("payment", card_number=number, amount=800)
    assert (first["balance"], second["balance"]) == (3800, 3000)
    too_much = await world.till("payment", card_number=number, amount=3001)
    assert too_much["decline_code"] == "insufficient_funds" and too_much["balance"] == 3000
    partial = await world.till("payment", card_number=number, amount=4000, allow_partial=True)
    assert partial["approved"] and partial["amount"] == 3000 and partial["balance"] == 0
    empty = await world.till("payment", card_number=number, amount=1, allow_partial=True)
    assert empty["decline_code"] == "insufficient_funds"
    await world.ledger_consistent()


async def test_cancel_payment_credits_back_once(world: World):
    number = await world.sell("GIFT", 5000)
    pay = await world.till("payment", card_number=number, amount=2000)
    cancel = await world.till("payment/cancel", original_txn_id=pay["txn_id"], card_number=number)
    assert cancel["approved"] and cancel["balance"] == 5000
    again = await world.till("payment/cancel", original_txn_id=pay["txn_id"])
    assert again["decline_code"] == "already_cancelled" and again["balance"] == 5000
    wrong_card = await world.sell("GIFT", 2500)
    pay2 = await world.till("payment", card_number=number, amount=100)
    mismatch = await world.till("payment/cancel", original_txn_id=pay2["txn_id"], card_number=wrong_card)
    assert mismatch["decline_code"] == "original_mismatch"
    missing = await world.till("payment/cancel", original_txn_id=txn())
    assert missing["decline_code"] == "original_not_found"
    await world.ledger_consistent()


async def test_topup_rules(world: World):
    gift = await world.sell("GIFT", 2500)
    refused = await world.till("topup", card_number=gift, amount=1000)
    assert refused["decline_code"] == "topup_not_allowed"
    flex = await world.sell("FLEX", 20000)
    topup = await world.till("topup", card_number=flex, amount=30000)
    assert topup["approved"] and topup["balance"] == 50000
    over = await world.till("topup", card_number=flex, amount=50001)
    assert over["decline_code"] == "amount_out_of_range"
    await world.till("topup", card_number=flex, amount=50000)
    capped = await world.till("topup", card_number=flex, amount=1000)
    assert capped["decline_code"] == "max_balance_exceeded" and capped["balance"] == 100000
    cancel = await world.till("topup/cancel", original_txn_id=topup["txn_id"])
    assert cancel["approved"] and cancel["balance"] == 70000
    await world.ledger_consistent()


async def test_cancel_topup_refused_when_value_spent(world: World):
    flex = await world.sell("FLEX", 1000)
    topup = await world.till("topup", card_number=flex, amount=5000)
    await world.till("payment", card_number=flex, amount=5500)
    refused = await world.till("topup/cancel", original_txn_id=topup["txn_id"])
    assert refused["decline_code"] == "insufficient_funds" and refused["balance"] == 500


async def test_refund_onto_same_card_capped_by_payment(world: World):
    number = await world.sell("GIFT", 5000)
    pay = await world.till("payment", card_number=number, amount=3000)
    part = await world.till("refund", card_number=number, amount=1000, original_txn_id=pay["txn_id"])
    assert part["approved"] and part["balance"] == 3000
    over = await world.till("refund", card_number=number, amount=2001, original_txn_id=pay["txn_id"])
    assert over["decline_code"] == "refund_exceeds_payment"
    rest = await world.till("refund", card_number=number, amount=2000, original_txn_id=pay["txn_id"])
    assert rest["approved"] and rest["balance"] == 5000
    cancel = await world.till("refund/cancel", original_txn_id=rest["txn_id"])
    assert cancel["approved"] and cancel["balance"] == 3000
    # A cancelled refund frees its part of the cap again.
    again = await world.till("refund", card_number=number, amount=2000, original_txn_id=pay["txn_id"])
    assert again["approved"]
    refused = await world.till("payment/cancel", original_txn_id=pay["txn_id"])
    assert refused["decline_code"] == "cancel_not_allowed"
    await world.ledger_consistent()


async def test_refund_onto_new_card_activates_it(world: World):
    paid_with = await world.sell("GIFT", 5000)
    pay = await world.till("payment", card_number=paid_with, amount=4000)
    new = world.stock["GIFT"][-1]
    refund = await world.till("refund", card_number=new, amount=1700, original_txn_id=pay["txn_id"])
    assert refund["approved"] and refund["card_state"] == "active" and refund["balance"] == 1700
    foreign = await world.till("refund", card_number=world.stock_s2["GIFT"][0], amount=100)
    assert foreign["decline_code"] == "wrong_store"
    await world.ledger_consistent()


async def test_currency_mismatch_is_declined(world: World):
    number = await world.sell("GIFT", 5000)
    result = await world.till("payment", card_number=number, amount=100, currency="USD")
    assert result["decline_code"] == "currency_mismatch" and result["balance"] == 5000


async def test_authorize_confirm_void(world: World):
    number = await world.sell("FLEX", 10000)
    auth = await world.till("authorize", card_number=number, amount=6000)
    assert auth["approved"] and auth["balance"] == 10000 and auth["available"] == 4000
    blocked_by_hold = await world.till("payment", card_number=number, amount=5000)
    assert blocked_by_hold["decline_code"] == "insufficient_funds"
    over = await world.till("confirm", original_txn_id=auth["txn_id"], amount=6001)
    assert over["decline_code"] == "amount_exceeds_hold"
    confirm = await world.till("confirm", original_txn_id=auth["txn_id"], amount=5500)
    assert confirm["approved"] and confirm["balance"] == 4500 and confirm["available"] == 4500
    void_late = await world.till("void", original_txn_id=auth["txn_id"])
    assert void_late["decline_code"] == "hold_not_pending"
    auth2 = await world.till("authorize", card_number=number, amount=1000)
    void = await world.till("void", original_txn_id=auth2["txn_id"])
    assert void["approved"] and void["available"] == 4500
    confirm_late = await world.till("confirm", original_txn_id=auth2["txn_id"])
    assert confirm_late["decline_code"] == "hold_not_pending"
    await world.ledger_consistent()


async def test_blocked_card_is_declined_then_unblocked(world: World):
    number = await world.sell("GIFT", 5000)
    await world.admin("POST", f"/api/v1/admin/cards/{number}/block", {"request_id": txn(), "reason": "lost"})
    declined = await world.till("payment", card_number=number, amount=100)
    assert declined["decline_code"] == "blocked"
    await world.admin("POST", f"/api/v1/admin/cards/{number}/unblock", {"request_id": txn(), "reason": "found"})
    assert (await world.till("payment", card_number=number, amount=100))["approved"]


async def test_expired_card_is_declined(world: World):
    number = await world.sell("GIFT", 5000)
    async with world.central.db.begin() as conn:
        await conn.execute(sa.update(cards).where(cards.c.number == number).values(
            expires_on=sa.func.date("2020-01-01") if world.central.db.sqlite else sa.text("DATE '2020-01-01'")))
    result = await world.till("payment", card_number=number, amount=100)
    assert result["decline_code"] == "expired"
    moved = await world.central.cards.expire_cards()
    assert moved == 1
    assert (await world.till("balance", card_number=number))["state"] == "expired"


async def test_refund_naming_a_payment_goes_to_its_card_or_a_new_card_of_its_programme(world: World):
    paid_with = await world.sell("GIFT", 5000)
    other = await world.sell("GIFT", 2500)
    pay = await world.till("payment", card_number=paid_with, amount=4000)
    elsewhere = await world.till("refund", card_number=other, amount=100, original_txn_id=pay["txn_id"])
    assert elsewhere["decline_code"] == "original_mismatch"
    flex = await world.till("refund", card_number=world.stock["FLEX"][0], amount=100, original_txn_id=pay["txn_id"])
    assert flex["decline_code"] == "wrong_programme"
    huge = await world.till("refund", card_number=world.stock["FLEX"][1], amount=200000)
    assert huge["decline_code"] == "max_balance_exceeded"
    assert (await world.till("balance", card_number=world.stock["FLEX"][1]))["state"] == "in_pack"
    await world.ledger_consistent()

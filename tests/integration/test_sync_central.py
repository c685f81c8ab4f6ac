"""Central's side of store sync, through the signed msgpack routes, on both backends."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import msgpack
import pytest

from core import NumberTemplate, OperationKind
from sync import Cursor, OutboxEntry, PushRequest, encode, signed_headers

from ..support import SyncPeer, World

K = OperationKind


def entry(seq: int, kind: OperationKind, card: str, amount: int, **extra) -> OutboxEntry:
    return OutboxEntry(seq=seq, txn_id=extra.pop("txn_id", uuid.uuid4()), kind=kind, card_number=card,
                       amount=amount, currency="EUR", till="T1", decided_at=extra.pop("decided_at", datetime.now(UTC)),
                       **extra)


async def balance(world: World, number: str) -> int:
    return (await world.till("balance", card_number=number))["balance"]


def statuses(response) -> list[str]:
    return [r.status.value for r in response.results]


async def exceptions(world: World, **params) -> list[dict]:
    return await world.admin("GET", "/api/v1/admin/sync/exceptions", **params)


async def test_push_applies_acks_and_a_resend_changes_nothing(world):
    peer = await SyncPeer.enrol(world)
    card = await world.sell("FLEX", 5000)
    batch = [entry(1, K.PAYMENT, card, 1200), entry(2, K.TOPUP, card, 300), entry(3, K.PAYMENT, card, 100)]
    first = await peer.push(batch, exposure=1300)
    assert (first.acked_seq, first.epoch, first.quarantined) == (3, 0, False)
    assert statuses(first) == ["applied"] * 3
    assert await balance(world, card) == 5000 - 1200 + 300 - 100
    again = await peer.push(batch)
    assert again.acked_seq == 3 and statuses(again) == ["duplicate"] * 3
    assert await balance(world, card) == 4000
    assert await world.count("operations", "channel = 'offline'") == 3
    assert await world.count("store_entries") == 3
    txns = await world.admin("GET", "/api/v1/admin/transactions", card=card)
    assert {t["channel"] for t in txns if t["kind"] == "payment"} == {"offline"}
    status = {s["store"]: s for s in await world.admin("GET", "/api/v1/admin/sync/stores")}
    assert status["S1"]["acked_seq"] == 3 and status["S1"]["last_contact_at"] and not status["S1"]["quarantined"]
    await world.ledger_consistent()


async def test_ack_stops_at_a_gap_until_it_is_filled(world):
    peer = await SyncPeer.enrol(world)
    card = await world.sell("FLEX", 5000)
    one, two, three = (entry(i, K.PAYMENT, card, 100) for i in (1, 2, 3))
    # The store reports what waits at it before the push; head office sees what waits after it.
    assert (await peer.push([one, three], backlog=3, exposure=300)).acked_seq == 1
    status = {s["store"]: s for s in await world.admin("GET", "/api/v1/admin/sync/stores")}
    assert (status["S1"]["backlog"], status["S1"]["offline_exposure"]) == (2, 200)
    assert (await peer.push([two, three], backlog=2, exposure=200)).acked_seq == 3
    status = {s["store"]: s for s in await world.admin("GET", "/api/v1/admin/sync/stores")}
    assert (status["S1"]["backlog"], status["S1"]["offline_exposure"]) == (0, 0)
    assert await balance(world, card) == 4700
    await world.ledger_consistent()


async def test_a_cancel_before_its_original_is_held_then_applied(world):
    s1, s2 = await SyncPeer.enrol(world, "S1"), await SyncPeer.enrol(world, "S2")
    card = await world.sell("FLEX", 5000)
    payment = entry(1, K.PAYMENT, card, 700)
    cancel = entry(1, K.PAYMENT_CANCEL, card, 700, original_txn_id=payment.txn_id)
    held = await s2.push([cancel])
    assert statuses(held) == ["held"] and held.acked_seq == 1  # central keeps it: the store may prune
    assert await balance(world, card) == 5000
    assert statuses(await s1.push([payment])) == ["applied"]
    assert await balance(world, card) == 4300  # the cancel waits for the store's next push
    later = await s2.push([entry(2, K.TOPUP, card, 100)])
    assert statuses(later) == ["applied"] and later.acked_seq == 2
    assert await balance(world, card) == 5100
    assert await world.count("store_entries", "status = 'held'") == 0
    # A second cancel of the same payment has no effect.
    again = await s1.push([entry(2, K.PAYMENT_CANCEL, card, 700, original_txn_id=payment.txn_id)])
    assert statuses(again) == ["duplicate"] and "already_cancelled" in again.results[0].flags
    assert await balance(world, card) == 5100
    await world.ledger_consistent()


async def test_overdraft_posts_lists_the_card_and_opens_a_case_until_repaid(world):
    peer = await SyncPeer.enrol(world)
    card = await world.sell("FLEX", 1000)
    response = await peer.push([entry(1, K.PAYMENT, card, 1500)])
    assert statuses(response) == ["applied"]
    assert await balance(world, card) == -500
    pulled = await peer.pull()
    listed = [d for d in pulled.deny if d.number == card]
    assert listed and listed[-1].listed and listed[-1].reason == "overdraft"
    cases = await exceptions(world, kind="overdraft", status="open")
    assert [c["card"] for c in cases] == [card]
    # Online, the card pays nothing; a top-up repays the debt and takes it off the deny list.
    paid = await world.till("payment", card_number=card, amount=100)
    assert not paid["approved"]
    assert (await world.till("topup", card_number=card, amount=2000))["approved"]
    pulled = await peer.pull(cursor=pulled.cursor)
    assert [(d.number, d.listed) for d in pulled.deny][-1] == (card, False)
    await world.admin("POST", f"/api/v1/admin/sync/exceptions/{cases[0]['id']}/close", {"note": "repaid"})
    assert await exceptions(world, kind="overdraft", status="open") == []
    await world.ledger_consistent()


async def test_blocked_before_the_store_knew_versus_store_fault(world):
    peer = await SyncPeer.enrol(world)
    card = await world.sell("FLEX", 5000)
    await world.admin("POST", f"/api/v1/admin/cards/{card}/block", {"request_id": str(uuid.uuid4()), "reason": "lost"})
    version = max(d.version for d in (await peer.pull()).deny if d.number == card)
    unknown = entry(1, K.PAYMENT, card, 100, deny_version=version - 1)
    fault = entry(2, K.PAYMENT, card, 200, deny_version=version)
    response = await peer.push([unknown, fault])
    assert statuses(response) == ["applied", "applied"]  # the goods left the store either way
    assert "blocked_unknown" in response.results[0].flags and "store_fault" in response.results[1].flags
    assert await balance(world, card) == 4700
    kinds = {c["kind"] for c in await exceptions(world)}
    assert {"blocked_unknown", "store_fault"} <= kinds
    # Unblocking takes the card off the deny list, in the same transaction.
    await world.admin("POST", f"/api/v1/admin/cards/{card}/unblock",
                      {"request_id": str(uuid.uuid4()), "reason": "found"})
    changes = [d for d in (await peer.pull(cursor=Cursor(deny_version=version))).deny if d.number == card]
    assert changes[-1].listed is False and changes[-1].version > version
    await world.ledger_consistent()


async def test_a_reused_sequence_quarantines_the_store_until_released(world):
    peer = await SyncPeer.enrol(world)
    card = await world.sell("FLEX", 5000)
    assert (await peer.push([entry(1, K.PAYMENT, card, 100)])).acked_seq == 1
    clone = [entry(1, K.PAYMENT, card, 999), entry(2, K.PAYMENT, card, 50)]  # a restored database
    response = await peer.push(clone)
    assert response.quarantined and response.acked_seq == 1 and response.results == ()
    assert await balance(world, card) == 4900
    # While quarantined, further pushes are kept aside too and nothing is applied.
    later = await peer.push([entry(2, K.PAYMENT, card, 70)])
    assert later.quarantined and await balance(world, card) == 4900
    batches = await world.admin("GET", "/api/v1/admin/sync/quarantine", store="S1")
    assert len(batches) == 2 and all(b["bytes"] > 0 and b["released_at"] is None for b in batches)
    resp = await world.client.get(f"/api/v1/admin/sync/quarantine/{batches[0]['id']}/body", headers=world.staff)
    kept = msgpack.unpackb(await resp.read())
    assert [e["amount"] for e in kept["entries"]] == [999, 50]
    assert (await exceptions(world, kind="quarantine"))[0]["details"]["reason"].startswith("sequence 1")
    assert (await peer.pull()).store.quarantined
    released = await world.admin("POST", "/api/v1/admin/stores/S1/sync/release")
    assert released == {"store": "S1", "epoch": 1, "acked_seq": 1}
    # The old epoch is told to pull first; the new one continues after the acknowledged sequence.
    stale = await peer.push([entry(2, K.PAYMENT, card, 50)])
    assert stale.epoch == 1 and stale.message == "epoch changed: pull first" and stale.results == ()
    settings = (await peer.pull()).store
    assert (settings.epoch, settings.acked_seq, settings.quarantined) == (1, 1, False)
    renumbered = await peer.push([entry(2, K.PAYMENT, card, 50)], epoch=1)
    assert renumbered.acked_seq == 2 and statuses(renumbered) == ["applied"]
    assert await balance(world, card) == 4850
    await world.ledger_consistent()


async def test_after_release_entries_central_had_dedupe_by_id(world):
    peer = await SyncPeer.enrol(world)
    card = await world.sell("FLEX", 5000)
    one, three = entry(1, K.PAYMENT, card, 100), entry(3, K.PAYMENT, card, 300)
    assert (await peer.push([one, three])).acked_seq == 1
    assert (await peer.push([entry(1, K.PAYMENT, card, 5)])).quarantined
    await world.admin("POST", "/api/v1/admin/stores/S1/sync/release")
    # The store renumbers its unacknowledged entries from 2: the one central holds is a duplicate.
    renumbered = await peer.push([entry(2, K.PAYMENT, card, 300, txn_id=three.txn_id)], epoch=1)
    assert statuses(renumbered) == ["duplicate"] and renumbered.acked_seq == 2
    assert await balance(world, card) == 4600
    await world.ledger_consistent()


@pytest.mark.parametrize("problem", ["garbage", "tampered", "wrong_secret", "unknown_store", "stale", "replayed",
                                     "other_store", "unsigned"])
async def test_bad_requests_are_refused_with_json_errors_and_change_nothing(world, problem):
    peer = await SyncPeer.enrol(world)
    card = await world.sell("FLEX", 5000)
    request = PushRequest(store="S1", epoch=0, entries=(entry(1, K.PAYMENT, card, 100),), backlog=1,
                          offline_exposure=100, sent_at=datetime.now(UTC))
    body = encode(request)
    path = "/api/v1/sync/push"
    expected = {"garbage": (400, "bad_sync_message"), "tampered": (401, "bad_signature"),
                "wrong_secret": (401, "bad_signature"), "unknown_store": (401, "unknown_store"),
                "stale": (401, "stale_request"), "replayed": (401, "replayed_request"),
                "other_store": (403, "forbidden"), "unsigned": (401, "unsigned")}[problem]
    if problem == "garbage":
        resp = await peer.send(path, b"\xc1not msgpack")
    elif problem == "tampered":
        resp = await peer.send(path, body, signed_body=body.replace(b"S1", b"S2"))
    elif problem == "wrong_secret":
        resp = await peer.send(path, body, secret=b"x" * 32)
    elif problem == "unknown_store":
        resp = await SyncPeer(world, "S2", peer.secret).send(path, body)  # S2 has no secret yet
    elif problem == "stale":
        resp = await peer.send(path, body, now=time.time() - 3600)
    elif problem == "replayed":
        headers = signed_headers("S1", peer.secret, "POST", path, body, time.time())
        assert (await world.client.post(path, data=body, headers=headers)).status == 200
        resp = await world.client.post(path, data=body, headers=headers)
    elif problem == "other_store":
        s2 = await SyncPeer.enrol(world, "S2")
        resp = await s2.send(path, body)
    else:
        resp = await world.client.post(path, data=body, headers={"Content-Type": "application/msgpack"})
    assert resp.status == expected[0], await resp.text()
    assert resp.content_type == "application/json" and "X-Tessera-Time" in resp.headers
    assert (await resp.json())["error"]["code"] == expected[1]
    applied = 1 if problem == "replayed" else 0
    assert await world.count("operations", "channel = 'offline'") == applied
    assert await balance(world, card) == 5000 - 100 * applied
    await world.ledger_consistent()


async def test_pull_ships_limits_tills_snapshots_and_disjoint_blocks(world):
    s1, s2 = await SyncPeer.enrol(world, "S1"), await SyncPeer.enrol(world, "S2")
    await world.admin("POST", "/api/v1/admin/programmes/FLEX/offline-limits",
                      {"floor_limit": 2000, "card_offline_amount": 4000, "card_offline_count": 2})
    await world.admin("POST", "/api/v1/admin/stores/S1/offline-budget", {"amount": 25000, "currency": "EUR"})
    sold = await world.sell("FLEX", 5000)
    first = await s1.pull(want_blocks=("GIFT",))
    flex = {p.code: p for p in first.programmes}["FLEX"]
    assert (flex.floor_limit, flex.card_offline_amount, flex.card_offline_count) == (2000, 4000, 2)
    listed = {p["code"]: p for p in await world.admin("GET", "/api/v1/admin/programmes")}
    assert listed["FLEX"]["offline_limits"] == {"floor_limit": 2000, "card_offline_amount": 4000,
                                                "card_offline_count": 2}
    assert [t.code for t in first.tills] == ["T1"] and len(first.tills[0].token_hash) == 64
    assert (first.store.exposure_budget, first.store.epoch) == (25000, 0)
    snapshots = {c.number: c for c in first.cards}
    assert snapshots[sold].balance == 5000 and snapshots[sold].state == "active"
    assert snapshots[world.stock["GIFT"][0]].pack_sellable  # the store's stock, for offline sales
    assert world.stock_s2["GIFT"][0] not in snapshots  # another store's stock is not watched
    # Nothing moved: no configuration again; a till change moves it.
    second = await s1.pull(cursor=first.cursor)
    assert second.programmes == () and second.tills == ()
    await world.admin("POST", "/api/v1/admin/terminals", {"kind": "till", "code": "T2", "store_code": "S1"})
    third = await s1.pull(cursor=second.cursor)
    assert sorted(t.code for t in third.tills) == ["T1", "T2"]
    # A card the store saw online joins its watch list; its later movements come in the card feed.
    other = world.stock_s2["FLEX"][0]
    await world.sell("FLEX", 3000, store="S2")
    fourth = await s1.pull(cursor=third.cursor, watch=(other,))
    assert {c.number: c.balance for c in fourth.cards}[other] == 3000
    s2_pull = await s2.pull(want_blocks=("GIFT",))
    again = await s1.pull(cursor=fourth.cursor, want_blocks=("GIFT",))
    template = NumberTemplate("6034", 16, True)
    blocks = [(b.first_serial, b.count) for b in again.blocks] + [(b.first_serial, b.count) for b in s2_pull.blocks]
    assert len(again.blocks) == 2 and len(s2_pull.blocks) == 1
    serials = [s for first_serial, count in blocks for s in range(first_serial, first_serial + count)]
    assert len(serials) == len(set(serials)) == 3000
    issued = {template.serial(n) for n in world.stock["GIFT"] + world.stock_s2["GIFT"] + world.spare["GIFT"]}
    assert not issued & set(serials)
    # Issuing after a block never reuses its serials either.
    async with world.central.db.begin() as conn:
        issue_id = await world.central.issuing.start_issue(conn, "GIFT", 5, "tests")
    issue = await world.central.issuing.get_issue(issue_id)
    assert template.serial(issue["first_number"]) >= max(serials) + 1


async def test_store_issue_inside_the_store_block_only(world):
    peer = await SyncPeer.enrol(world)
    block = await world.admin("POST", "/api/v1/admin/stores/S1/number-blocks", {"programme": "FLEX", "count": 10})
    template = NumberTemplate("6035", 16, True)
    inside = template.number(block["first_serial"] + 3)
    outside = template.number(block["first_serial"] + 10)
    other = await world.admin("POST", "/api/v1/admin/stores/S2/number-blocks", {"programme": "FLEX", "count": 5})
    response = await peer.push([
        entry(1, K.STORE_ISSUE, inside, 2000, programme="FLEX"),
        entry(2, K.STORE_ISSUE, outside, 2000, programme="FLEX"),
        entry(3, K.STORE_ISSUE, template.number(other["first_serial"]), 2000, programme="FLEX"),
        entry(4, K.STORE_ISSUE, inside, 1000, programme="FLEX"),  # the same number twice
        entry(5, K.PAYMENT, inside, 500),
    ])
    assert statuses(response) == ["applied", "rejected", "rejected", "rejected", "applied"]
    assert response.acked_seq == 5
    assert await balance(world, inside) == 1500
    assert (await world.till("balance", card_number=outside))["found"] is False
    assert len([c for c in await exceptions(world) if c["kind"] == "conflict"]) == 3
    await world.ledger_consistent()


async def test_offline_sale_of_the_store_stock_and_clock_skew(world):
    peer = await SyncPeer.enrol(world)
    mine, theirs = world.stock["GIFT"][0], world.stock_s2["GIFT"][0]
    future = datetime.now(UTC) + timedelta(hours=1)
    response = await peer.push([entry(1, K.SALE, mine, 2500), entry(2, K.SALE, theirs, 2500),
                                entry(3, K.PAYMENT, mine, 500, decided_at=future)])
    assert statuses(response) == ["applied", "rejected", "applied"]
    assert "clock_skew" in response.results[2].flags
    assert await balance(world, mine) == 2000
    assert (await world.till("balance", card_number=theirs))["state"] == "in_pack"
    assert [c["kind"] for c in await exceptions(world, kind="clock_skew")] == ["clock_skew"]
    await world.ledger_consistent()


async def test_an_id_used_online_for_the_same_payment_is_a_duplicate_and_otherwise_a_conflict(world):
    peer = await SyncPeer.enrol(world)
    card = await world.sell("FLEX", 5000)
    online = await world.till("payment", card_number=card, amount=400)
    same = entry(1, K.PAYMENT, card, 400, txn_id=uuid.UUID(online["txn_id"]))
    different = entry(2, K.PAYMENT, card, 900, txn_id=uuid.UUID(online["txn_id"]))
    response = await peer.push([same])
    assert statuses(response) == ["duplicate"]
    response = await peer.push([different])
    assert statuses(response) == ["rejected"] and "id_conflict" in response.results[0].flags
    assert response.acked_seq == 2
    assert await balance(world, card) == 4600
    await world.ledger_consistent()

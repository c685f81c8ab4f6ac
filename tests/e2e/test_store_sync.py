"""Store edge nodes and sync with real processes: central and two edges, each edge behind a TCP proxy
the test cuts, black-holes or makes lose answers; tills are HTTP requests. After every fault heals,
the invariants of DESIGN §6 are checked on central's database and the edges' SQLite files."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from sync import MSGPACK, OutboxEntry, PushRequest, PushResponse, decode, encode, signed_headers

from ..netproxy import Mode
from .support import LIMITS, Chain, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template) -> str:
    """Central on a SQLite file (a copy of the session's migrated template)."""
    path = tmp_path / "central.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


def offline_ok(result: dict) -> bool:
    return result["approved"] and result["decision"] == "offline"


async def test_network_cut_and_heal(tmp_path, db_url):
    async with Chain.running(tmp_path, db_url) as chain:
        s1_stock, s2_stock = chain.stock["S1"], chain.stock["S2"]
        a1, shared, pack_card = s1_stock[0], s1_stock[1], s1_stock[2]
        b1 = s2_stock[0]

        # Online: central answers every till through the edges.
        online = [
            await chain.till("S1", "sale", card_number=a1, amount=20000),
            await chain.till("S1", "sale", card_number=shared, amount=10000),
            await chain.till("S1", "payment", card_number=a1, amount=1000),
            await chain.till("S2", "payment", card_number=shared, amount=500),  # S2 now knows the card
            await chain.till("S2", "sale", card_number=b1, amount=20000),
            await chain.till("S2", "payment", card_number=b1, amount=1000),
            await chain.till("S2", "topup", card_number=b1, amount=1000),
        ]
        assert all(r["approved"] and r["decision"] == "online" for r in online), online
        assert online[3]["balance"] == 9500

        # The network fails: S1's link is refused, S2's swallows everything (timeouts).
        chain.edges["S1"].cut(Mode.REFUSE)
        chain.edges["S2"].cut(Mode.BLACKHOLE)
        started = time.monotonic()
        assert offline_ok(await chain.till("S1", "payment", card_number=a1, amount=3000))
        over_floor = await chain.till("S1", "payment", card_number=a1, amount=LIMITS["floor_limit"] + 1)
        assert not over_floor["approved"] and over_floor["decline_code"] == "offline_limit"
        assert offline_ok(await chain.till("S1", "topup", card_number=a1, amount=2000))
        # The same card, spent offline at both stores up to each store's per-card limit: together
        # they overdraw it (9500 - 16000).
        for store in ("S1", "S2"):
            for _ in range(2):
                assert offline_ok(await chain.till(store, "payment", card_number=shared, amount=4000))
            beyond = await chain.till(store, "payment", card_number=shared, amount=100)
            assert not beyond["approved"] and beyond["decline_code"] == "offline_limit", beyond
        for _ in range(LIMITS["card_offline_count"]):
            assert offline_ok(await chain.till("S2", "payment", card_number=b1, amount=100))
        fourth = await chain.till("S2", "payment", card_number=b1, amount=100)
        assert not fourth["approved"] and fourth["decline_code"] == "offline_limit"
        assert offline_ok(await chain.till("S2", "topup", card_number=b1, amount=1000))
        sale = await chain.till("S1", "sale", card_number=pack_card, amount=5000)
        assert offline_ok(sale) and sale["card_state"] == "active"
        issued = await chain.till("S1", "issue", programme="FLEX", amount=3000)
        assert offline_ok(issued)
        new_card = issued["card_number"]
        assert offline_ok(await chain.till("S1", "payment", card_number=new_card, amount=1000))
        # A till whose clock jumped an hour back: approved, posted later, flagged at central.
        skewed = await chain.till("S1", "payment", card_number=pack_card, amount=700,
                                  device_time=(datetime.now(UTC) - timedelta(hours=1)).isoformat())
        assert offline_ok(skewed)
        assert time.monotonic() - started < 15, "tills waited on the dead link"
        for store in ("S1", "S2"):
            health = await chain.edge_health(store)
            assert health["backlog"] > 0 and health["offline_exposure"] > 0, health

        # Heal: every edge pushes all it decided alone.
        chain.edges["S1"].heal()
        chain.edges["S2"].heal()
        await chain.wait_synced("S1", "S2", seconds=40)

        await chain.assert_ledger_consistent()
        await chain.assert_approved_exactly_once()
        synced = await chain.assert_sequences_gap_free()
        assert synced == {"S1": 8, "S2": 6}, synced
        negative = await chain.assert_overdrafts_bounded()
        assert negative == {shared: 9500 - 16000}
        balances = await chain.balances()
        assert balances[a1] == (20000 - 1000 - 3000 + 2000, 0)
        assert balances[b1] == (20000 - 1000 + 1000 - 300 + 1000, 0)
        assert balances[pack_card] == (5000 - 700, 0) and balances[new_card] == (2000, 0)
        flags = {str(uuid.UUID(str(t))): f for t, f in await chain.query("SELECT txn_id, flags FROM store_entries")}
        assert "clock_skew" in _flags(flags[skewed["txn_id"]])
        skew_cases = await chain.call("GET", "/api/v1/admin/sync/exceptions?kind=clock_skew")
        assert [c["txn_id"] for c in skew_cases] == [skewed["txn_id"]]

        # Quiet: every edge agrees with central; syncing again changes nothing.
        await chain.assert_edges_agree()
        before, balances_before = await chain.counts(), await chain.balances()
        out = await chain.sync_by_cli("S1")
        report = json.loads(next(line for line in out.splitlines() if line.startswith('{"ok"')))
        assert report["ok"] and report["pushed"] == 0, report
        await chain.wait_rounds("S1", "S2")  # and scheduled rounds of both edges
        assert await chain.counts() == before
        assert await chain.balances() == balances_before
        assert await chain.edges_disagree() == []
        chain.assert_positions_never_went_back()

        # Head office sees each store: contact, acknowledged position, nothing outstanding.
        stores = {s["store"]: s for s in await chain.call("GET", "/api/v1/admin/sync/stores")}
        for store, n in synced.items():
            status = stores[store]
            assert status["last_contact_at"] and status["acked_seq"] == n and not status["quarantined"], status
            # Everything the store decided alone is at central: nothing is outstanding or exposed.
            assert (status["backlog"], status["offline_exposure"]) == (0, 0), status


def _flags(raw) -> list[str]:
    return json.loads(raw) if isinstance(raw, str) else list(raw)


async def test_edge_killed_between_writing_and_syncing(tmp_path, db_url):
    async with Chain.running(tmp_path, db_url, stores=("S1",)) as chain:
        first, second = chain.stock["S1"][:2]
        for number in (first, second):
            assert (await chain.till("S1", "sale", card_number=number, amount=10000))["decision"] == "online"
        edge = chain.edges["S1"]
        edge.cut(Mode.REFUSE)
        payments = [await chain.till("S1", "payment", card_number=number, amount=amount)
                    for number, amount in ((first, 1000), (first, 2000), (second, 3000))]
        assert all(offline_ok(p) for p in payments)
        assert len(edge.rows("SELECT seq FROM outbox")) == 3

        edge.process.kill()  # answered the tills, never synced
        await chain.start_edge("S1")
        health = await chain.edge_health("S1")
        assert (health["backlog"], health["acked_seq"], health["next_seq"]) == (3, 0, 4), health
        replay = await chain.till("S1", "payment", card_number=first, amount=1000, txn_id=payments[0]["txn_id"])
        assert replay == payments[0]  # the journal survived: the same answer, no new entry
        assert offline_ok(await chain.till("S1", "payment", card_number=second, amount=500))

        # The link comes back but central itself is down now: still offline, then central restarts.
        edge.heal()
        chain.central.stop()
        assert offline_ok(await chain.till("S1", "payment", card_number=first, amount=400))
        await chain.central.start()
        await chain.wait_synced("S1")
        await chain.assert_ledger_consistent()
        await chain.assert_approved_exactly_once()
        assert await chain.assert_sequences_gap_free() == {"S1": 5}
        balances = await chain.balances()
        assert balances[first] == (6600, 0) and balances[second] == (6500, 0)
        await chain.assert_edges_agree()
        chain.assert_positions_never_went_back()


async def test_sync_answer_lost(tmp_path, db_url):
    async with Chain.running(tmp_path, db_url, stores=("S1",)) as chain:
        card = chain.stock["S1"][0]
        assert (await chain.till("S1", "sale", card_number=card, amount=10000))["decision"] == "online"
        edge = chain.edges["S1"]
        edge.cut(Mode.REFUSE)
        paid = [await chain.till("S1", "payment", card_number=card, amount=a) for a in (1000, 2000, 3000)]
        assert all(offline_ok(p) for p in paid)
        ids = {uuid.UUID(p["txn_id"]) for p in paid}

        # Central gets the push and applies it; the answer never reaches the edge.
        edge.cut(Mode.LOSE_ANSWERS)

        async def applied() -> bool:
            return ids <= set(await chain.operations())

        await wait_until(applied, "central to apply the pushed batch")
        # The edge sends the same batch again (and again) and loses those answers too.
        (seen,) = (await chain.query("SELECT count(*) FROM sync_nonces"))[0]

        async def resent() -> bool:
            return (await chain.query("SELECT count(*) FROM sync_nonces"))[0][0] >= seen + 2

        await wait_until(resent, "the edge to push again")
        health = await chain.edge_health("S1")
        assert (health["backlog"], health["acked_seq"]) == (3, 0), health  # it has not heard: it keeps them
        before = await chain.counts()
        assert (await chain.balances())[card] == (4000, 0)

        edge.heal()
        await chain.wait_synced("S1")
        assert await chain.counts() == before
        assert (await chain.balances())[card] == (4000, 0)
        assert edge.rows("SELECT count(*) FROM outbox") == [(0,)]  # pruned once central's answer arrived
        statuses = await chain.query("SELECT status FROM store_entries")
        assert sorted(s for (s,) in statuses) == ["applied"] * 3
        await chain.assert_ledger_consistent()
        await chain.assert_approved_exactly_once()
        assert await chain.assert_sequences_gap_free() == {"S1": 3}
        await chain.assert_edges_agree()
        chain.assert_positions_never_went_back()


async def test_replayed_batch_changes_nothing(tmp_path, sqlite_url):
    async with Chain.running(tmp_path, sqlite_url, stores=("S1",)) as chain:
        card = chain.stock["S1"][0]
        assert (await chain.till("S1", "sale", card_number=card, amount=10000))["decision"] == "online"
        edge = chain.edges["S1"]
        edge.cut(Mode.REFUSE)
        for amount in (1000, 2000):
            assert offline_ok(await chain.till("S1", "payment", card_number=card, amount=amount))
        # The batch as the edge pushes it, sent again after it was synced (signed anew with the
        # store's secret, as an edge restored from a copy or a confused relay would).
        entries = tuple(OutboxEntry.model_validate({**json.loads(e), "seq": s})
                        for s, e in edge.rows("SELECT seq, entry FROM outbox ORDER BY seq"))
        edge.heal()
        await chain.wait_synced("S1")
        before, balances = await chain.counts(), await chain.balances()

        request = PushRequest(store="S1", epoch=0, entries=entries, backlog=2, offline_exposure=3000,
                              sent_at=datetime.now(UTC))
        body = encode(request)
        path = "/api/v1/sync/push"
        headers = {**signed_headers("S1", bytes.fromhex(edge.secret), "POST", path, body, time.time()),
                   "Content-Type": MSGPACK}
        async with chain.session.post(chain.central.base + path, data=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            answer = decode(await resp.read(), PushResponse)
        assert [r.status.value for r in answer.results] == ["duplicate", "duplicate"] and answer.acked_seq == 2
        async with chain.session.post(chain.central.base + path, data=body, headers=headers) as resp:
            assert resp.status == 401 and (await resp.json())["error"]["code"] == "replayed_request"
        assert await chain.counts() == before
        assert await chain.balances() == balances
        await chain.assert_ledger_consistent()
        await chain.assert_approved_exactly_once()

"""Edge sync beyond the happy path: a restored store database (quarantine, release, renumbering), a
wrong store clock, the scheduled sync loop, and the edge CLI."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from edge import load_edge_config
from edge.keys import SYNC
from tessera.cli import main

from ..edge_support import Edge
from ..netproxy import Mode


async def _sold(edge: Edge, amount: int = 10000) -> str:
    number = edge.world.stock["GIFT"].pop(0)
    assert (await edge.till("sale", card_number=number, amount=amount))["decision"] == "online"
    return number


async def test_restored_store_database_is_quarantined_then_renumbered(world, tmp_path):
    edge = await Edge.start(world, tmp_path)
    await edge.sync()
    first, second = await _sold(edge), await _sold(edge)
    path = edge.config.database_path
    snapshot = tmp_path / "backup.db"
    with sqlite3.connect(path) as src, sqlite3.connect(snapshot) as dst:
        src.backup(dst)  # the store's database as an old backup has it: nothing queued yet
    edge.cut()
    assert (await edge.till("payment", card_number=first, amount=1000))["decision"] == "offline"
    edge.heal()
    assert (await edge.sync()).acked_seq == 1
    await edge.close()

    # The store is restored from the backup and reuses sequence 1 for another payment.
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    with sqlite3.connect(snapshot) as src, sqlite3.connect(path) as dst:
        src.backup(dst)
    edge = await Edge.start(world, tmp_path, store_secret=edge.config.store_secret)
    try:
        edge.cut()
        assert (await edge.till("payment", card_number=second, amount=2000))["decision"] == "offline"
        edge.heal()
        report = await edge.sync()
        assert report.quarantined and report.pushed == 0
        assert (await edge.rows("SELECT quarantined FROM sync_state"))[0].quarantined
        assert (await edge.till("balance", card_number=second))["balance"] == 8000  # kept, not lost
        assert (await world.till("balance", card_number=second))["balance"] == 10000
        assert (await edge.sync()).pushed == 0  # no pushing while quarantined

        released = await world.admin("POST", "/api/v1/admin/stores/S1/sync/release")
        report = await edge.sync()
        assert report.epoch_changed and report.pushed == 1
        state = (await edge.rows("SELECT epoch, acked_seq, next_seq, quarantined FROM sync_state"))[0]
        assert (state.epoch, state.acked_seq, state.next_seq, bool(state.quarantined)) == (
            released["epoch"], 2, 3, False)
        assert (await world.till("balance", card_number=first))["balance"] == 9000
        assert (await world.till("balance", card_number=second))["balance"] == 8000
        await world.ledger_consistent()
    finally:
        await edge.close()


async def test_wrong_store_clock_is_corrected_from_central(world, tmp_path):
    edge = await Edge.start(world, tmp_path)
    try:
        edge.node.clock_offset = -3600.0  # the store's clock is an hour behind: its first request is stale
        await edge.sync()
        assert abs(edge.node.clock_offset) < 5
        assert (await edge.rows("SELECT last_error FROM sync_state"))[0].last_error is None
    finally:
        await edge.close()


async def test_scheduled_sync_pushes_what_was_decided_offline(world, tmp_path):
    edge = await Edge.start(world, tmp_path, scheduler=True, sync_interval=0.2, backoff_base=0.1, backoff_cap=0.2)
    try:
        for _ in range(100):
            if await edge.rows("SELECT code FROM tills"):
                break
            await asyncio.sleep(0.05)
        number = await _sold(edge)
        edge.cut()
        paid = await edge.till("payment", card_number=number, amount=1500)
        assert paid["decision"] == "offline"
        await asyncio.sleep(0.5)  # rounds fail while central is cut off; the backlog stays
        health = await (await edge.client.get("/health")).json()
        assert health["backlog"] == 1 and health["last_error"]
        edge.proxy.set(type(edge.proxy.mode).PASS)
        for _ in range(300):  # up to 15 s: a loaded CI machine may take a few rounds to push it
            health = await (await edge.client.get("/health")).json()
            if health["backlog"] == 0 and health["last_error"] is None:
                break
            await asyncio.sleep(0.05)
        assert health["backlog"] == 0 and health["last_error"] is None and health["central"] == "reachable"
        assert (await world.till("balance", card_number=number))["balance"] == 8500
    finally:
        await edge.close()


async def test_a_till_finding_central_back_ends_the_sync_backoff(world, tmp_path):
    edge = await Edge.start(world, tmp_path, backoff_base=600, backoff_cap=600, central_retry_seconds=0)
    try:
        await edge.sync()
        number, other = await _sold(edge), await _sold(edge)
        sync = edge.client.server.app[SYNC]
        edge.cut()
        assert (await edge.till("payment", card_number=number, amount=1500))["decision"] == "offline"
        await sync.tick()  # fails: the next round would wait ten minutes
        assert sync.failures == 1
        edge.proxy.set(Mode.PASS)
        await sync.tick()
        assert len(await edge.rows("SELECT seq FROM outbox")) == 1  # still backing off
        # A till request answered online shows central is back: the backlog goes at the next tick.
        assert (await edge.till("payment", card_number=other, amount=100))["decision"] == "online"
        await sync.tick()
        assert await edge.rows("SELECT seq FROM outbox") == [] and sync.failures == 0
        assert (await world.till("balance", card_number=number))["balance"] == 8500
    finally:
        await edge.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_cli_sync_and_status(world, tmp_path, capsys):
    edge = await Edge.start(world, tmp_path)
    await edge.close()  # the CLI works on the same database file while the server is stopped
    args = ["edge", "sync", "--store", "S1", "--secret", edge.config.store_secret, "--central-url",
            f"http://127.0.0.1:{world.client.server.port}", "--database", str(edge.config.database_path)]
    assert await asyncio.to_thread(main, args) == 0
    moved = json.loads(capsys.readouterr().out)
    assert moved["ok"] and moved["config"]
    assert await asyncio.to_thread(main, ["edge", "status", "--store", "S1", "--database",
                                          str(edge.config.database_path)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["config_version"] >= 1 and status["backlog"] == 0 and status["quarantined"] is False
    bad = args[:]
    bad[bad.index("--central-url") + 1] = "http://127.0.0.1:9"
    assert await asyncio.to_thread(main, bad) == 1
    assert "unreachable" in json.loads(capsys.readouterr().out)["error"]


def test_edge_config_from_file_env_and_overrides(tmp_path):
    path = tmp_path / "edge.toml"
    path.write_text('[edge]\nstore = "S7"\nonline_timeout = 0.5\nport = 9000\n')
    config = load_edge_config(path, env={"TESSERA_EDGE_PORT": "9100", "TESSERA_EDGE_SCHEDULER": "false"},
                              central_url="http://central:8080")
    assert (config.store, config.online_timeout, config.port, config.scheduler) == ("S7", 0.5, 9100, False)
    assert config.central_url == "http://central:8080" and str(config.database_path) == "var/edge-S7.db"
    with pytest.raises(ValueError, match="64 hex digits"):
        config.secret()
    path.write_text('[edge]\nstores = "S7"\n')
    with pytest.raises(ValueError, match="unknown edge configuration keys: stores"):
        load_edge_config(path, env={})

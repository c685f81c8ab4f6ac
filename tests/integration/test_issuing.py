"""Issues that fail part-way resume without losing or repeating a card."""

from __future__ import annotations

import csv

import pytest
import sqlalchemy as sa

from core.secrets import hash_ecode

from ..support import World


class Boom(Exception):
    pass


async def failed_issue(world: World, quantity: int, chunk: int, fail_at: int) -> int:
    """An issue whose run stopped with an error once ``fail_at`` cards were committed."""
    issuing = world.central.issuing
    issuing.chunk = chunk
    async with world.central.db.begin() as conn:
        issue_id = await issuing.start_issue(conn, "GIFT", quantity, "tests")

    def fail(done, total):
        if done == fail_at:
            raise Boom

    with pytest.raises(Boom):
        await issuing.run_issue(issue_id, fail)
    return issue_id


async def test_failed_issue_resumes_and_production_file_matches_the_cards(world: World):
    issuing = world.central.issuing
    issue_id = await failed_issue(world, 450, chunk=100, fail_at=200)
    assert (await issuing.get_issue(issue_id))["status"] == "failed"
    path = issuing.production_path(issue_id)
    with open(path, "a") as f:  # as if a chunk reached the file but its commit was lost
        f.write("6034999999999990,x,x,x,STALE,2912\n")
    await world.admin("POST", f"/api/v1/admin/issues/{issue_id}/resume", expect=202)
    issue = await world.wait_for_issue(issue_id)
    assert issue["status"] == "completed" and issue["generated"] == 450
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    numbers = [r["card_number"] for r in rows]
    assert len(numbers) == 450 == len(set(numbers)) and "STALE" not in {r["ecode"] for r in rows}
    async with world.central.db.connect() as conn:
        stored = dict((await conn.execute(sa.text(
            f"SELECT number, ecode_hash FROM cards WHERE issue_id = {issue_id}"))).all())
    assert set(stored) == set(numbers)
    pepper = world.central.config.ecode_pepper()
    assert all(stored[r["card_number"]] == hash_ecode(pepper, r["card_number"], r["ecode"]) for r in rows)
    again = await world.admin("POST", f"/api/v1/admin/issues/{issue_id}/resume", expect=409)
    assert again["error"]["code"] == "illegal_transition"


async def test_a_running_issue_cannot_be_resumed_twice(world: World):
    async with world.central.db.begin() as conn:
        issue_id = await world.central.issuing.start_issue(conn, "GIFT", 10, "tests")
    refused = await world.admin("POST", f"/api/v1/admin/issues/{issue_id}/resume", expect=409)
    assert refused["error"]["code"] == "illegal_transition"


async def test_an_issue_that_lost_its_production_file_is_not_resumed(world: World):
    issue_id = await failed_issue(world, 30, chunk=10, fail_at=10)
    world.central.issuing.production_path(issue_id).unlink()
    refused = await world.admin("POST", f"/api/v1/admin/issues/{issue_id}/resume", expect=409)
    assert "production file" in refused["error"]["message"]

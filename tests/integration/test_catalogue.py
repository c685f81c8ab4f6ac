"""The product catalogue end to end on both backends: CSV imports over HTTP and the CLI (all or
nothing, partial, replace), versions, audit and roles, and a store's edge node pulling it in pages for
its price checkers."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from stdnum import ean

from central.context import Central
from central.db.tables import audit_log, products
from central.services.catalogue import CatalogueService
from core.barcodes import product_key
from core.catalogue import Product, catalogue_csv
from edge import local
from edge.db import upgrade as upgrade_edge
from edge.db.tables import metadata as edge_metadata
from edge.keys import DATABASE
from sync import Cursor
from tessera import cli

from ..conftest import make_config
from ..edge_support import Edge
from ..support import ADMIN_PASSWORD, SyncPeer, World

IMPORT = "/api/v1/admin/catalogue/import"
PEN, UPC = "4006381333931", "036000291452"
GOOD = ("code,name,price,member_price,currency,unit,group,active\n"
        f"{PEN},Ballpoint pen,1.99,1.49,EUR,each,STATIONERY,1\n"
        f"{UPC},Apples,3.49,,EUR,kg,FRUIT,1\n"
        "SHOP-7,Gift wrap,0.50,,EUR,,,\n")


@pytest.fixture
async def staff(client) -> World:
    """Just an admin (the catalogue needs no cards)."""
    w = World(client)
    async with w.central.db.begin() as conn:
        await w.central.admin.create_user(conn, "root", ADMIN_PASSWORD, "admin")
    w.staff = await w.login("root", ADMIN_PASSWORD)
    return w


async def upload(w: World, text: str | bytes, *, expect: int = 200, headers: dict[str, str] | None = None,
                 **params) -> dict:
    resp = await w.client.post(IMPORT, data=text.encode() if isinstance(text, str) else text,
                               params={k: str(v) for k, v in params.items()},
                               headers={"Content-Type": "text/csv", **(w.staff if headers is None else headers)})
    body = await resp.json()
    assert resp.status == expect, (resp.status, body)
    return body


async def product(w: World, code: str, expect: int = 200) -> dict:
    return await w.admin("GET", f"/api/v1/admin/catalogue/products/{code}", expect=expect)


def gtin(i: int) -> str:
    digits = f"2{i:011d}"
    return digits + ean.calc_check_digit(digits)


def many(n: int, *, start: int = 0, price: int = 100) -> str:
    return catalogue_csv(Product(key=gtin(i).zfill(14), code=gtin(i), name=f"Item {i}", currency="EUR",
                                 price=price + i, member_price=price + i - 1 if i % 2 else None)
                         for i in range(start, start + n))


# -- imports ------------------------------------------------------------------------------------


async def test_import_then_look_up_and_list(staff):
    report = await upload(staff, GOOD)
    assert {k: report[k] for k in ("mode", "rows", "valid", "inserted", "updated", "unchanged", "deactivated",
                                   "invalid_lines", "version", "lines")} == {
        "mode": "upsert", "rows": 3, "valid": 3, "inserted": 3, "updated": 0, "unchanged": 0, "deactivated": 0,
        "invalid_lines": 0, "version": 3, "lines": []}
    pen = await product(staff, PEN)
    assert {k: pen[k] for k in ("key", "code", "name", "currency", "price", "member_price", "unit", "group",
                                "active")} == {
        "key": "0" + PEN, "code": PEN, "name": "Ballpoint pen", "currency": "EUR", "price": 199, "member_price": 149,
        "unit": "each", "group": "STATIONERY", "active": True}
    assert (await product(staff, "0" + UPC))["name"] == "Apples"  # the UPC-A read as an EAN-13 finds it
    assert (await product(staff, "shop-7"))["price"] == 50
    missing = await product(staff, "NOPE", expect=404)
    assert missing["error"]["code"] == "not_found"
    assert (await product(staff, "4006381333932", expect=422))["error"]["code"] == "invalid_input"

    page = await staff.admin("GET", "/api/v1/admin/catalogue", limit=2)
    assert [p["key"] for p in page["products"]] == ["00" + UPC, "0" + PEN] and page["version"] == 3
    rest = await staff.admin("GET", "/api/v1/admin/catalogue", after=page["next"], limit=2)
    assert [p["key"] for p in rest["products"]] == ["SHOP-7"] and rest["next"] is None


async def test_any_invalid_line_refuses_the_whole_file_unless_partial(staff):
    text = GOOD + "BAD-1,Broken,1.999,,EUR,,,\n,No code,1,,EUR,,,\nDEF,Fine,2,3,EUR,,,\n"
    refused = await upload(staff, text, expect=422)
    error = refused["error"]
    assert error["code"] == "invalid_catalogue" and "3 lines of 6 invalid" in error["message"]
    assert [(e["line"], e["column"], e["code"]) for e in error["lines"]] == [
        (5, "price", "invalid_price"), (6, "code", "missing_code"), (7, "member_price", "member_price_above_price")]
    assert await staff.count("products") == 0

    report = await upload(staff, text, partial=1)
    assert (report["inserted"], report["invalid_lines"], report["partial"]) == (3, 3, True)
    assert [e["line"] for e in report["lines"]] == [5, 6, 7]
    assert await staff.count("products") == 3
    await product(staff, "BAD-1", expect=404)


async def test_an_unreadable_file_is_refused_even_in_part(staff):
    for text in ("sku,title,price\nA,b,1\n", 'code,name,price,currency\nA,"b,1,EUR\n', ""):
        error = (await upload(staff, text, expect=422, partial=1))["error"]
        assert error["code"] == "invalid_catalogue" and error["lines"]
    refused = await upload(staff, "code,name,price\nA,b,1\n", expect=422, mode="replace")  # no currency
    assert refused["error"]["lines"][0]["code"] == "missing_currency"
    empty = await upload(staff, "code,name,price\n", expect=422, mode="replace")
    assert "would withdraw every product" in empty["error"]["message"]
    assert await staff.count("products") == 0


async def test_bad_requests(staff):
    assert (await upload(staff, b"code,name,price\n\xff,x,1\n", expect=400))["error"]["code"] == "invalid_csv"
    assert (await upload(staff, GOOD, expect=422, mode="merge"))["error"]["code"] == "invalid_request"
    assert (await upload(staff, GOOD, expect=422, currency="euro"))["error"]["code"] == "invalid_request"
    defaulted = await upload(staff, "code,name,price\nA,b,15\n", currency="JPY")
    assert defaulted["inserted"] == 1 and (await product(staff, "A"))["price"] == 15


async def test_versions_move_only_for_changed_rows(staff):
    await upload(staff, GOOD)
    before = {p["key"]: p for p in (await staff.admin("GET", "/api/v1/admin/catalogue"))["products"]}
    again = await upload(staff, GOOD)
    assert (again["unchanged"], again["updated"], again["version"]) == (3, 0, 3)
    after = {p["key"]: p for p in (await staff.admin("GET", "/api/v1/admin/catalogue"))["products"]}
    assert after == before

    changed = await upload(staff, GOOD.replace("Apples,3.49", "Apples,2.99"))
    assert (changed["updated"], changed["unchanged"], changed["version"]) == (1, 2, 4)
    after = {p["key"]: p for p in (await staff.admin("GET", "/api/v1/admin/catalogue"))["products"]}
    assert after["00" + UPC]["version"] == 4 and after["00" + UPC]["price"] == 299
    assert {k: v for k, v in after.items() if k != "00" + UPC} == {k: v for k, v in before.items() if k != "00" + UPC}


async def test_replace_withdraws_what_the_file_leaves_out(staff):
    await upload(staff, GOOD + "OLD-1,Old,1,,EUR,,,\nOLD-2,Old too,1,,EUR,,,\n")
    text = ("code,name,price,currency\n"
            f"{PEN},Ballpoint pen,1.99,EUR\n"  # member price gone: a change
            "OLD-2,Old too,1.0x,EUR\n"  # refused: a refused line withdraws nothing
            "NEW-1,New,5,EUR\n")
    assert (await upload(staff, text, expect=422, mode="replace"))["error"]["lines"][0]["line"] == 3
    report = await upload(staff, text, mode="replace", partial="true")
    assert {k: report[k] for k in ("inserted", "updated", "unchanged", "deactivated", "invalid_lines")} == {
        "inserted": 1, "updated": 1, "unchanged": 0, "deactivated": 3, "invalid_lines": 1}
    listed = {p["key"]: p for p in (await staff.admin("GET", "/api/v1/admin/catalogue"))["products"]}
    assert {k for k, p in listed.items() if p["active"]} == {"0" + PEN, "NEW-1", "OLD-2"}
    assert listed["0" + PEN]["member_price"] is None
    assert not listed["OLD-1"]["active"] and listed["OLD-1"]["price"] == 100  # kept as it was, withdrawn
    versions = sorted(p["version"] for p in listed.values())
    assert len(set(versions)) == len(versions) and versions[-1] == report["version"] == 5 + 5

    # Upserting a withdrawn product brings it back.
    back = await upload(staff, "code,name,price,currency\nOLD-1,Old,1,EUR\n")
    assert back["updated"] == 1 and (await product(staff, "OLD-1"))["active"]


async def test_imports_are_audited_and_need_staff(staff):
    await upload(staff, GOOD, headers={**staff.staff, "X-Filename": "spring.csv"})
    await upload(staff, "code,name,price\nA,b,x\n", expect=422, currency="EUR")
    entries = await staff.admin("GET", "/api/v1/admin/audit", action="catalogue_import")
    assert [(e["actor"], e["target"], e["details"]["outcome"]) for e in entries] == [
        ("root", "catalogue:upload.csv", "invalid_catalogue"), ("root", "catalogue:spring.csv", "ok")]
    assert entries[1]["details"]["inserted"] == 3 and entries[0]["details"]["invalid_lines"] == 1
    assert await staff.count(audit_log.name, "action = 'catalogue_import'") == 2
    # The route's own audit record (every staff write has one) is apart from the import's.
    assert await staff.count(audit_log.name, "action = 'import_catalogue'") == 2

    assert (await upload(staff, GOOD, expect=401, headers={}))["error"]["code"] == "unauthorized"
    assert (await upload(staff, GOOD, expect=401, headers={"Authorization": "Bearer nope"}))["error"]
    async with staff.central.db.begin() as conn:
        await staff.central.admin.create_user(conn, "eve", ADMIN_PASSWORD, "auditor")
    auditor = await staff.login("eve", ADMIN_PASSWORD)
    assert (await upload(staff, GOOD, expect=403, headers=auditor))["error"]["code"] == "forbidden"
    denied = await staff.admin("GET", "/api/v1/admin/audit", action="import_catalogue", limit=1)
    assert (denied[0]["actor"], denied[0]["details"]["outcome"]) == ("eve", "forbidden")
    assert (await staff.admin("GET", "/api/v1/admin/catalogue", headers=auditor))["version"] == 3  # may read
    for path in ("/api/v1/admin/catalogue", f"/api/v1/admin/catalogue/products/{PEN}"):
        assert (await staff.client.get(path)).status == 401
    assert await staff.count("products") == 3


async def test_the_routes_are_in_the_openapi_document(staff):
    spec = await (await staff.client.get("/openapi.json")).json()
    imported = spec["paths"][IMPORT]["post"]
    assert imported["security"] == [{"staff": []}] and "text/csv" in imported["requestBody"]["content"]
    assert {p["name"] for p in imported["parameters"]} == {"mode", "partial", "currency"}
    assert "invalid_catalogue" in imported["responses"]["422"]["description"]
    assert "get" in spec["paths"]["/api/v1/admin/catalogue/products/{code}"]
    assert {p["name"] for p in spec["paths"]["/api/v1/admin/catalogue"]["get"]["parameters"]} == {"after", "limit"}


async def test_cli_import(staff, db_url, tmp_path, monkeypatch, capsys):
    path = tmp_path / "catalogue.csv"
    path.write_text(GOOD + "BAD,x,1.001,,EUR,,,\n")
    config = make_config(db_url, tmp_path)
    with pytest.raises(cli.CatalogueRejected) as refused:
        await cli.catalogue_import(config, path)
    assert refused.value.lines[0]["line"] == 5
    report = await cli.catalogue_import(config, path, partial=True)
    assert (report["inserted"], report["invalid_lines"]) == (3, 1)

    monkeypatch.setattr(cli, "setup_logging", lambda level: None)  # keep pytest's log capture
    args = ["central", "catalogue", "import", str(path), "--database-url", db_url, "--data-dir", str(tmp_path)]
    assert await asyncio.to_thread(cli.main, args) == 2
    out = capsys.readouterr().out
    assert "catalogue not imported" in out and "line 5 price: invalid_price" in out
    path.write_text("code,name,price\nNEW,New,1\n")
    assert await asyncio.to_thread(cli.main, args + ["--mode", "replace", "--currency", "EUR"]) == 0
    out = capsys.readouterr().out
    assert "1 new, 0 changed, 0 unchanged, 3 withdrawn" in out
    entries = await staff.admin("GET", "/api/v1/admin/audit", action="catalogue_import")
    assert {e["actor"] for e in entries} == {"cli"}


async def test_a_large_import(staff):
    report = await upload(staff, many(3000))
    assert (report["inserted"], report["version"]) == (3000, 3000)
    report = await upload(staff, many(3000, price=200), mode="replace")
    assert (report["updated"], report["deactivated"], report["version"]) == (3000, 0, 6000)
    assert (await product(staff, gtin(2999)))["price"] == 200 + 2999


async def test_concurrent_imports_take_versions_one_after_the_other(pg_only_url, tmp_path):
    async with Central.session(make_config(pg_only_url, tmp_path)) as central:
        service = CatalogueService(central.db)
        reports = await asyncio.gather(*(service.import_csv(many(500, start=300 * i, price=100 * i), actor="t")
                                         for i in range(4)))
        async with central.db.connect() as conn:
            versions = (await conn.execute(sa.select(products.c.version))).scalars().all()
    changed = sum(r["inserted"] + r["updated"] for r in reports)
    assert sorted(versions)[-1] == max(r["version"] for r in reports) <= changed
    assert len(set(versions)) == len(versions) == 300 * 3 + 500
    # Each import's versions directly follow the previous import's: one block each, never interleaved.
    previous = 0
    for report in sorted(reports, key=lambda r: r["version"]):
        assert report["version"] - report["inserted"] - report["updated"] == previous
        previous = report["version"]
    assert previous == changed


# -- stores -------------------------------------------------------------------------------------


async def edge_product(edge: Edge, code: str) -> dict | None:
    async with edge.client.server.app[DATABASE].begin() as conn:
        return await local.product(conn, product_key(code))


async def test_a_store_pulls_the_catalogue_for_its_price_checkers(world, tmp_path):
    await upload(world, GOOD)
    edge = await Edge.start(world, tmp_path)
    try:
        report = await edge.sync()
        assert report.products == 3
        pen = await edge_product(edge, PEN)
        assert pen == {"key": "0" + PEN, "code": PEN, "name": "Ballpoint pen", "currency": "EUR", "price": 199,
                       "member_price": 149, "unit": "each", "group": "STATIONERY", "active": True, "version": 1}
        assert (await edge_product(edge, "00" + UPC))["unit"] == "kg"
        assert await edge_product(edge, "UNKNOWN") is None
        assert (await edge.sync()).products == 0  # nothing new

        await upload(world, "code,name,price,member_price,currency\n"
                            f"{PEN},Ballpoint pen,2.19,1.89,EUR\nSHOP-8,Ribbon,1,,EUR\n", mode="replace")
        assert (await edge.sync()).products == 4  # the pen, the ribbon, two withdrawn
        assert (await edge_product(edge, PEN))["price"] == 219
        assert await edge_product(edge, UPC) is None and await edge_product(edge, "SHOP-7") is None
        rows = await edge.rows("SELECT key, active FROM products ORDER BY version")
        assert len(rows) == 4 and sum(1 for r in rows if not r.active) == 2  # withdrawn, kept inactive
        assert (await edge_product(edge, "shop-8"))["name"] == "Ribbon"
    finally:
        await edge.close()


async def test_a_catalogue_larger_than_a_page_arrives_whole(world, tmp_path):
    world.central.sync.page = 40
    await upload(world, many(100))
    await upload(world, many(30, start=20, price=500))  # 30 rows change again, after the first 100
    edge = await Edge.start(world, tmp_path)
    try:
        report = await edge.sync()
        assert report.products == 100  # three pulls (40 + 40 + 20): each product at its latest version
        assert (await edge.rows("SELECT count(*) AS n FROM products"))[0].n == 100
        assert (await edge_product(edge, gtin(25)))["price"] == 525
        assert (await edge_product(edge, gtin(99)))["member_price"] == 100 + 98
        assert (await edge.rows("SELECT max(version) AS v FROM products"))[0].v == 130
    finally:
        await edge.close()


async def test_pull_pages_by_version(world):
    world.central.sync.page = 7
    await upload(world, many(20))
    peer = await SyncPeer.enrol(world)
    seen: list[str] = []
    pages: list[int] = []
    cursor = Cursor()
    while True:  # ``more`` also waits for the other feeds (the store's watched cards, paged by 7 too)
        response = await peer.pull(cursor=cursor)
        pages.append(len(response.products))
        seen += [p.key for p in response.products]
        versions = [p.version for p in response.products]
        assert versions == sorted(versions) and all(v > cursor.catalogue_version for v in versions)
        assert response.cursor.catalogue_version == (versions[-1] if versions else cursor.catalogue_version)
        cursor = response.cursor
        if not response.more:
            break
    assert pages[:3] == [7, 7, 6] and not any(pages[3:]) and len(seen) == len(set(seen)) == 20
    assert (await peer.pull(cursor=cursor)).products == ()
    # A store from before the catalogue (no catalogue cursor) gets it from the start.
    assert len((await peer.pull(cursor=Cursor(config_version=cursor.config_version))).products) == 7


def test_edge_migrations_build_the_declared_edge_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'edge.db'}"
    upgrade_edge(url)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), edge_metadata) == []
    finally:
        engine.dispose()

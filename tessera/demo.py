"""The demo: central on embedded SQLite with a seeded programme, store, staff and stock of cards."""

from __future__ import annotations

import asyncio
import csv
import json
import uuid
from pathlib import Path

import sqlalchemy as sa

from central.config import CentralConfig
from central.context import Central
from central.db import upgrade
from central.services import create_programme

__all__ = ["run_demo", "seed_demo", "DEMO_PASSWORD"]

DEMO_PASSWORD = "tessera-demo"


async def seed_demo(config: CentralConfig) -> dict:
    """Create the demo's programmes, store, users, terminals, cards and packs; return what to try."""
    async with Central.session(config) as central:
        async with central.db.begin() as conn:
            if (await conn.execute(sa.text("SELECT count(*) FROM programmes"))).scalar():
                raise SystemExit(f"demo data exists already in {config.data_dir}: remove it to start fresh")
            await create_programme(conn, {
                "code": "GIFT", "name": "Gift Card", "kind": "gift", "currency": "EUR", "number_prefix": "6034",
                "number_length": 16, "nominal_values": [2500, 5000, 10000], "topup_allowed": False})
            await create_programme(conn, {
                "code": "FLEX", "name": "Flex Gift Card", "kind": "gift", "currency": "EUR",
                "number_prefix": "6035", "number_length": 16, "min_amount": 1000, "max_amount": 50000,
                "topup_allowed": True, "max_balance": 100000, "hold_expiry_policy": "clarify"})
            await central.admin.create_store(conn, "S001", "Demo Store Downtown")
            await central.admin.create_user(conn, "admin", DEMO_PASSWORD, "admin")
            till = await central.admin.create_terminal(conn, "till", "till-1", "S001")
            website = await central.admin.create_terminal(conn, "web", "website", None)
            gift_issue = await central.issuing.start_issue(conn, "GIFT", 100, "demo")
            flex_issue = await central.issuing.start_issue(conn, "FLEX", 50, "demo")
        packs = []
        for issue_id in (gift_issue, flex_issue):
            await central.issuing.run_issue(issue_id)
            with open(central.issuing.production_path(issue_id), newline="") as f:
                stock = [row for _, row in zip(range(20), csv.DictReader(f))]
            async with central.db.begin() as conn:
                pack = await central.issuing.create_pack(conn, actor="demo", store_code="S001",
                                                         numbers=[row["card_number"] for row in stock])
                packs.append(await central.issuing.authorize_pack(conn, pack["id"]))
            if issue_id == gift_issue:
                first = stock[0]
        return {"till_token": till["token"], "web_token": website["token"], "card": first["card_number"],
                "ecode": first["ecode"], "packs": packs}


def run_demo(data_dir: Path, port: int) -> int:
    from tessera.cli import serve

    config = CentralConfig(database_url=f"sqlite:///{data_dir}/central.db", data_dir=data_dir, port=port)
    upgrade(config.database_url)
    seeded = asyncio.run(seed_demo(config))
    base = f"http://127.0.0.1:{port}"
    sale = json.dumps({"txn_id": str(uuid.uuid4()), "card_number": seeded["card"], "amount": 5000})
    pay = json.dumps({"txn_id": str(uuid.uuid4()), "card_number": seeded["card"], "amount": 1250})
    web = json.dumps({"card_number": seeded["card"], "ecode": seeded["ecode"]})
    till = f'-H "Authorization: Bearer {seeded["till_token"]}" -H "Content-Type: application/json"'
    print(f"""
Tessera demo — central server on embedded SQLite ({data_dir}/central.db)

  URL:          {base}        health: {base}/health     API: {base}/openapi.json
  Staff login:  admin / {DEMO_PASSWORD}
  Store S001 has packs of GIFT (25/50/100 EUR) and FLEX (open value) cards authorized for sale.

Try it (a cashier sells card {seeded["card"]} for 50.00 EUR, then the customer pays 12.50):

  curl -s -X POST {base}/api/v1/till/sale {till} -d '{sale}'
  curl -s -X POST {base}/api/v1/till/payment {till} -d '{pay}'
  curl -s -X POST {base}/api/v1/till/balance {till} -d '{{"card_number": "{seeded["card"]}"}}'

The same card on a website (card number + scratch-off eCode):

  curl -s -X POST {base}/api/v1/web/balance -H "Authorization: Bearer {seeded["web_token"]}" \\
       -H "Content-Type: application/json" -d '{web}'

Head office (log in, then search the card's transactions):

  curl -s -X POST {base}/api/v1/auth/login -H "Content-Type: application/json" \\
       -d '{{"username": "admin", "password": "{DEMO_PASSWORD}"}}'

Press Ctrl+C to stop.
""", flush=True)
    serve(config)
    return 0

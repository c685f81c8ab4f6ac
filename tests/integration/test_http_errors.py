"""Bad input anywhere gets a typed 4xx JSON error, and nothing is written."""

from __future__ import annotations

import pytest

from central.http import ROUTES
from central.http.system import openapi_path

from ..support import World, txn


@pytest.mark.parametrize(("body", "field"), [
    ({"card_number": "6034000000000007", "amount": 12.5}, "amount"),
    ({"card_number": "6034000000000007", "amount": "100"}, "amount"),
    ({"card_number": "6034000000000007", "amount": -5}, "amount"),
    ({"card_number": "6034000000000007", "amount": 0}, "amount"),
    ({"card_number": "6034000000000007", "amount": True}, "amount"),
    ({"card_number": "60340000", "amount": 10**13}, "amount"),
    ({"card_number": "6034-0000", "amount": 100}, "card_number"),
    ({"card_number": "6034000000000007", "amount": 100, "currency": "euro"}, "currency"),
    ({"card_number": "6034000000000007", "amount": 100, "surprise": 1}, "surprise"),
    ({"card_number": "6034000000000007", "amount": 100, "device_time": "2026-01-01T10:00:00"}, "device_time"),
])
async def test_invalid_till_requests(world: World, body, field):
    before = await world.count("operations")
    resp = await world.client.post("/api/v1/till/payment", json={"txn_id": txn(), **body}, headers=world.tills["S1"])
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_request" and field in error["message"]
    assert await world.count("operations") == before


async def test_malformed_bodies_and_unknown_routes(world: World):
    headers = {**world.tills["S1"], "Content-Type": "application/json"}
    not_json = await world.client.post("/api/v1/till/payment", data=b"{nope", headers=headers)
    assert not_json.status == 400 and (await not_json.json())["error"]["code"] == "invalid_json"
    empty = await world.client.post("/api/v1/till/payment", headers=headers)
    assert empty.status == 400
    array = await world.client.post("/api/v1/till/payment", json=[1, 2], headers=headers)
    assert array.status == 422
    missing = await world.client.get("/api/v1/nowhere")
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "not_found"
    wrong_method = await world.client.get("/api/v1/till/payment")
    assert wrong_method.status == 405 and (await wrong_method.json())["error"]["code"] == "method_not_allowed"
    bad_token = await world.client.post("/api/v1/till/balance", json={"card_number": "6034000000000007"},
                                        headers={"Authorization": "Bearer nope"})
    assert bad_token.status == 401 and bad_token.headers["WWW-Authenticate"] == "Bearer"
    assert await world.count("operations") == 0


async def test_health_and_openapi(world: World):
    health = await (await world.client.get("/health")).json()
    assert health["status"] == "ok" and health["database"] == "ok"
    spec = await (await world.client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    payment = spec["paths"]["/api/v1/till/payment"]["post"]
    assert payment["security"] == [{"till": []}]
    schema = spec["components"]["schemas"]["PaymentBody"]
    assert {"txn_id", "card_number", "amount"} <= set(schema["required"])
    assert "/api/v1/admin/cards/{number}/duplicate" in spec["paths"]
    declared = {(openapi_path(r.path), r.method.lower()) for r in ROUTES}
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert declared == documented  # every route of the app is in the document, and nothing else

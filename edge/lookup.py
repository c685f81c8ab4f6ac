"""What a price checker or the kiosk shows for a scanned code: a card's balance or a product's prices."""

from __future__ import annotations

from typing import Any

from central.http.schemas import BalanceBody
from core import InvalidInput
from core.barcodes import product_key
from drivers import barcode
from drivers.events import BarcodeScanned

from . import local
from .node import EdgeNode

__all__ = ["CodeLookup"]


class CodeLookup:
    """Classifies a scanned code by the programmes' number templates, then asks the node (cards, online
    first when a kiosk till token is configured) or the synced catalogue (products)."""

    def __init__(self, node: EdgeNode, kiosk_till_token: str = "") -> None:
        self.node = node
        self._authorization = f"Bearer {kiosk_till_token}" if kiosk_till_token else ""

    async def __call__(self, code: str) -> dict[str, Any]:
        # The programmes as last loaded (at start and after every sync), as the card readers see them.
        kind = barcode.classify(BarcodeScanned(code.strip()), self.node.configuration.templates)
        if isinstance(kind, barcode.CardCode):
            return await self.card(kind.number)
        if isinstance(kind, barcode.ProductCode):
            return await self.product(kind.key)
        try:  # not a card or GTIN: an internal code may still be in the catalogue
            key = product_key(code)
        except InvalidInput:
            return {"kind": "unknown", "reason": kind.reason}
        found = await self.product(key)
        return found if found["kind"] == "product" else {"kind": "unknown", "reason": kind.reason}

    async def card(self, number: str) -> dict[str, Any]:
        if self._authorization:
            body = BalanceBody(card_number=number)
            status, data = await self.node.balance(body, body.model_dump_json().encode(), self._authorization)
            if status != 200:
                data = await self.node.local_balance(number)
        else:
            data = await self.node.local_balance(number)
        if not data.get("found"):
            return {"kind": "unknown", "reason": "card not known here"}
        return {"kind": "card", "number": number, "balance": data.get("available", data.get("balance")),
                "currency": data.get("currency"), "state": data.get("state"), "decision": data.get("decision"),
                "points": data.get("points"), "tier": data.get("tier")}

    async def product(self, key: str) -> dict[str, Any]:
        async with self.node.db.begin() as conn:
            row = await local.product(conn, key)
        if row is None:
            return {"kind": "unknown", "reason": "product not in the catalogue"}
        return {"kind": "product", **row}


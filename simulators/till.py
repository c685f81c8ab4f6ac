"""A till (POS) talking to the store's edge node: it reads its devices' events, rings up baskets, sells
gift cards and takes card payments, asking for a PIN on the pad where the card's programme wants one.

``TillClient`` is the POS side of the edge's till API; ``Cashier`` is someone using it, with the
simulated devices at hand; ``run_load`` keeps a steady stream of checkouts going and measures them.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

__all__ = ["TillClient", "TillError", "Cashier", "Basket", "LoadReport", "run_load", "random_basket"]


class TillError(Exception):
    """The edge answered with an error (4xx/5xx JSON)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class TillClient:
    """The POS side of one till's API at the edge."""

    def __init__(self, session: aiohttp.ClientSession, edge_url: str, token: str) -> None:
        self.session = session
        self.base = edge_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.last_event = 0

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None,
                   params: dict[str, Any] | None = None, timeout: float = 130.0) -> dict[str, Any]:
        async with self.session.request(method, f"{self.base}{path}", json=body, params=params, headers=self.headers,
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 400:
                error = (data or {}).get("error", {}) if isinstance(data, dict) else {}
                raise TillError(resp.status, error.get("code", "http_error"), error.get("message", ""))
            return data

    async def till(self, operation: str, **body: Any) -> dict[str, Any]:
        """A till operation (sale, payment, topup...) with a fresh txn_id unless one is given."""
        body.setdefault("txn_id", str(uuid.uuid4()))
        return await self.call("POST", f"/api/v1/till/{operation}", {k: v for k, v in body.items() if v is not None})

    async def balance(self, card: str) -> dict[str, Any]:
        return await self.call("POST", "/api/v1/till/balance", {"card_number": card})

    async def events(self, wait: float = 10.0) -> list[dict[str, Any]]:
        """Device events since the last call (long poll up to ``wait`` seconds)."""
        data = await self.call("GET", "/api/v1/till/events", params={"after": self.last_event, "wait": wait},
                               timeout=wait + 10)
        self.last_event = data["last"]
        return data["events"]

    async def next_event(self, accept: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        """The next event ``accept`` takes, skipping others."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            for event in await self.events(wait=min(left, 10.0)):
                if accept(event):
                    return event
        raise TimeoutError("no such device event in time")

    async def skip_events(self) -> None:
        """Forget events so far (a new customer)."""
        await self.events(wait=0)

    async def devices(self) -> list[dict[str, Any]]:
        return (await self.call("GET", "/api/v1/till/devices"))["devices"]

    async def pad_show(self, lines: Sequence[str] = (), amount: int | None = None, currency: str | None = None) -> None:
        await self.call("POST", "/api/v1/till/pinpad/display", {"lines": list(lines), "amount": amount,
                                                               "currency": currency})

    async def pad_pin(self, card: str, amount: int | None = None, currency: str | None = None) -> str:
        data = await self.call("POST", "/api/v1/till/pinpad/pin", {"card_number": card, "amount": amount,
                                                                   "currency": currency})
        return data["pin_token"]


@dataclass(frozen=True)
class Basket:
    lines: tuple[tuple[str, int], ...]  # (product code, price in minor units)

    @property
    def total(self) -> int:
        return sum(price for _, price in self.lines)


def random_basket(products: Sequence[tuple[str, int]], rng: random.Random, *, most: int = 12) -> Basket:
    """A basket as shoppers fill them: mostly a few items, now and then a big shop."""
    size = min(most, max(1, int(rng.expovariate(1 / 4)) + 1))
    return Basket(tuple(rng.choice(products) for _ in range(size)))


Swipe = Callable[[str], Awaitable[None]]
Scan = Callable[[str], Awaitable[None]]
PinPolicy = Callable[[str], bool]


class Cashier:
    """Someone at the till: scans with the scanner, has the customer swipe at the reader, asks the pad
    for a PIN when ``needs_pin(card)`` says so, and drives the edge's till API with what the devices read."""

    def __init__(self, till: TillClient, *, scan: Scan | None = None, swipe: Swipe | None = None,
                 needs_pin: PinPolicy = lambda card: False, currency: str = "EUR") -> None:
        self.till = till
        self._scan = scan
        self._swipe = swipe
        self.needs_pin = needs_pin
        self.currency = currency

    async def scan_card(self, card: str) -> str:
        """Scan a card's barcode; the number as the till's events report it."""
        assert self._scan is not None, "this cashier has no scanner"
        await self._scan(card)
        event = await self.till.next_event(lambda e: e["type"] in ("barcode", "read_failed"))
        if event.get("kind") != "card":
            raise TillError(422, "not_a_card", f"scanned code is {event.get('kind') or event.get('reason')}")
        return event["card"]

    async def swipe_card(self, card: str) -> str:
        """The customer swipes; the number the reader reported."""
        assert self._swipe is not None, "this cashier has no card reader"
        await self._swipe(card)
        event = await self.till.next_event(lambda e: e["type"] in ("card_read", "read_failed"))
        if event["type"] != "card_read":
            raise TillError(422, "read_failed", event.get("reason", "card read failed"))
        return event["card"]

    async def ring_up(self, basket: Basket) -> int:
        """Scan every item; the total."""
        if self._scan is not None:
            for code, _ in basket.lines:
                await self._scan(code)
                await self.till.next_event(lambda e: e["type"] == "barcode")
        return basket.total

    async def sell(self, card: str, amount: int | None, *, scanned: bool = True) -> dict[str, Any]:
        number = await self.scan_card(card) if scanned and self._scan else card
        return await self.till.till("sale", card_number=number, amount=amount)

    async def pay(self, card: str, amount: int, *, swiped: bool = True, allow_partial: bool = True) -> dict[str, Any]:
        number = await self.swipe_card(card) if swiped and self._swipe else card
        pin_token = None
        if self.needs_pin(number):
            pin_token = await self.till.pad_pin(number, amount, self.currency)
        return await self.till.till("payment", card_number=number, amount=amount, allow_partial=allow_partial,
                                    pin_token=pin_token)


@dataclass
class LoadReport:
    checkouts: int = 0
    approved: int = 0
    declined: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # swipe to the payment's answer, seconds

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def summary(self) -> str:
        med = statistics.median(self.latencies) * 1000 if self.latencies else float("nan")
        return (f"{self.checkouts} checkouts in {self.seconds:.1f} s: {self.approved} approved, {self.declined} "
                f"declined, {self.errors} errors; swipe to answer p50 {med:.1f} ms, "
                f"p99 {self.percentile(99) * 1000:.1f} ms")


async def run_load(cashier: Cashier, cards: Sequence[str], products: Sequence[tuple[str, int]], *,
                   rate: float, duration: float, seed: int = 1) -> LoadReport:
    """Checkouts at ``rate`` a second for ``duration`` seconds, one at a time (one till): ring up a
    basket, swipe a card, pay (partially, when the card has less). Latency is swipe → answer."""
    rng = random.Random(seed)
    report = LoadReport()
    start = time.monotonic()
    next_at = start
    while time.monotonic() - start < duration:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        next_at += rng.expovariate(rate)
        basket = random_basket(products, rng)
        report.checkouts += 1
        try:
            total = await cashier.ring_up(basket)
            began = time.monotonic()
            answer = await cashier.pay(rng.choice(cards), total)
            report.latencies.append(time.monotonic() - began)
            if answer.get("approved"):
                report.approved += 1
            else:
                report.declined += 1
        except (TillError, TimeoutError, aiohttp.ClientError):
            report.errors += 1
    report.seconds = time.monotonic() - start
    return report

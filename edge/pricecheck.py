"""The store's price checks: fixed devices over TCP and the kiosk web page, one lookup behind both.

A scanned code goes to the injected ``lookup`` (card, product or unknown) and comes back as a
``Screen``: the masked card number, balance, points and tier, or a product's price and member
price. A failing or slow lookup shows "Please ask staff"; it never drops a device's connection.
Logs carry masked card numbers only (product codes are not secret).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web

from central.http.routing import error_response
from core import Money
from drivers.events import BarcodeScanned, ProtocolViolation, mask_number
from drivers.pricechecker import (
    DISPLAY_HEIGHT,
    LINE_WIDTH,
    MAX_CODE,
    DeviceIdentified,
    Line,
    PriceCheckerHost,
    PriceCheckerOptions,
    Screen,
    display_text,
)

__all__ = ["PRICE_CHECK", "Lookup", "PriceCheckService", "card_screen", "product_screen", "unknown_screen",
           "kiosk_lookup", "kiosk_page"]

log = logging.getLogger("tessera.edge.pricecheck")

Lookup = Callable[[str], Awaitable[Mapping[str, Any]]]

KIOSK_PAGE = Path(__file__).with_name("static") / "kiosk.html"

_STATE_TEXT = {"generated": "Not activated", "in_pack": "Not activated", "blocked": "Card blocked",
               "closed": "Card closed", "expired": "Card expired", "replaced": "Card replaced"}
_PER_PIECE = {"", "piece", "pieces", "pc", "pcs", "each", "ea", "unit", "item"}
_UNKNOWN_TITLE = {"invalid": "Invalid code", "invalid_code": "Invalid code", "invalid_input": "Invalid code",
                  "unavailable": "Sorry", "error": "Sorry", "timeout": "Sorry", "offline": "Sorry"}


# -- what the screens say -----------------------------------------------------------------------


def _fit(lines: list[Line], **screen: Any) -> Screen:
    """A screen of ``lines``, dropping the last (least important) ones that do not fit the display."""
    while sum(line.height for line in lines) > DISPLAY_HEIGHT:
        lines.pop()
    return Screen(tuple(lines), **screen)


def _amount(text: str) -> Line:
    # An amount is never clipped: large when it fits, else small.
    return Line.fit(text, "large" if len(text) <= LINE_WIDTH["large"] else "small", "center")


def _wrap(text: str, width: int, max_lines: int) -> list[str]:
    """Words of ``text`` in at most ``max_lines`` lines of ``width``; the last one clipped."""
    lines: list[str] = []
    words = display_text(text).split()
    while words and len(lines) < max_lines:
        line = words.pop(0)
        while words and len(line) + 1 + len(words[0]) <= width:
            line += " " + words.pop(0)
        lines.append(line)
    if words:
        lines[-1] = " ".join([lines[-1], *words])
    return lines


def card_screen(info: Mapping[str, Any], *, timeout_s: float = 5.0) -> Screen:
    """Masked number, balance; the card's state when it is not active; points and tier when the
    programme has them; a note when the balance is the store's offline copy."""
    lines = [Line.fit(mask_number(str(info["number"])), "small", "center"),
             _amount(str(Money(str(info["currency"]), info["balance"])))]
    state = info.get("state")
    if state and state != "active":
        text = _STATE_TEXT.get(str(state), str(state).replace("_", " ").capitalize())
        lines.append(Line.fit(text, "small", "center"))
    points = info.get("points")
    if points is not None:
        lines.append(Line.fit(f"{int(points)} point{'' if int(points) in (1, -1) else 's'}", "small", "center"))
    if info.get("tier"):
        lines.append(Line.fit(f"Tier: {info['tier']}", "small", "center"))
    if info.get("decision") == "offline":
        lines.append(Line.fit("Balance may be late", "small", "center"))
    return _fit(lines, timeout_s=timeout_s)


def product_screen(info: Mapping[str, Any], *, timeout_s: float = 5.0) -> Screen:
    """Name (up to two lines), price per unit, and the member price when there is one."""
    currency = str(info["currency"])
    name = _wrap(str(info.get("name") or ""), LINE_WIDTH["small"], 2)
    lines = [Line.fit(text, "small", "center") for text in name]
    price = str(Money(currency, info["price"]))
    unit = display_text(str(info.get("unit") or ""))
    if unit.lower() not in _PER_PIECE:
        price = f"{price}/{unit}"
    lines.append(_amount(price))
    if info.get("member_price") is not None:
        lines.append(Line.fit(f"Members: {Money(currency, info['member_price'])}", "small", "center"))
    return _fit(lines, timeout_s=timeout_s)


def unknown_screen(reason: str | None = None, *, timeout_s: float = 5.0) -> Screen:
    """Nothing to show for this code: why, in a shopper's words, and "Please ask staff"."""
    title = _UNKNOWN_TITLE.get(str(reason or ""), "Not found")
    return Screen((Line(title, "large", "center"), Line("Please ask staff", "small", "center")), timeout_s=timeout_s)


# -- the service --------------------------------------------------------------------------------


class _RateLimit:
    """At most ``limit`` hits per ``window`` seconds for each key, remembering at most ``keys`` keys."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float], keys: int = 4096) -> None:
        self.limit, self.window, self.clock, self.keys = limit, window, clock, keys
        self._hits: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        now = self.clock()
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self.keys:
                self._forget(now)
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(now)
        return True

    def _forget(self, now: float) -> None:
        for key in [k for k, hits in self._hits.items() if not hits or hits[-1] <= now - self.window]:
            del self._hits[key]
        while len(self._hits) >= self.keys:  # all recent: the oldest client makes room
            del self._hits[next(iter(self._hits))]


def _masked(code: str, kind: str) -> str:
    return code if kind == "product" else mask_number(code)


class PriceCheckService:
    """Answers price checks: a TCP server for fixed devices (``start``/``close``) and the kiosk's
    lookups (``kiosk_lookup``), both through the injected ``lookup(code) -> dict``."""

    def __init__(self, lookup: Lookup, *, options: PriceCheckerOptions | None = None, max_connections: int = 32,
                 lookup_timeout: float = 3.0, write_timeout: float = 5.0, display_seconds: float = 5.0,
                 kiosk_rate: int = 30, kiosk_window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.lookup = lookup
        self.options = options or PriceCheckerOptions()
        self.max_connections = max_connections
        self.lookup_timeout = lookup_timeout
        self.write_timeout = write_timeout
        self.display_seconds = display_seconds  # how long a result stays before the idle screen
        self.kiosk_limit = _RateLimit(kiosk_rate, kiosk_window, clock)
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task] = set()

    @property
    def port(self) -> int | None:
        """The TCP port the device server listens on (after ``start``)."""
        if self._server is None or not self._server.sockets:
            return None
        return self._server.sockets[0].getsockname()[1]

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start(self, host: str, port: int) -> int:
        """Listen for price checkers on ``host:port`` (0: any free port); the port bound."""
        if self._server is not None:
            raise RuntimeError("the price check server is already started")
        self._server = await asyncio.start_server(self._serve, host, port)
        log.info("price check server listening host=%s port=%s", host, self.port)
        return self.port or port

    async def close(self) -> None:
        """Stop listening and end every device connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def screen_for(self, code: str) -> tuple[str, Screen, str | None]:
        """``(kind, screen, reason)`` for a code. Never raises: a lookup that fails, is slow or gives
        something unusable becomes ``("unknown", "Please ask staff" screen, "unavailable")``."""
        try:
            async with asyncio.timeout(self.lookup_timeout):
                info = await self.lookup(code)
            kind = info.get("kind") if isinstance(info, Mapping) else None
            seconds = self.display_seconds
            if kind == "card":
                return "card", card_screen(info, timeout_s=seconds), None
            if kind == "product":
                return "product", product_screen(info, timeout_s=seconds), None
            if kind == "unknown":
                reason = str(info.get("reason") or "not_found")
                return "unknown", unknown_screen(reason, timeout_s=seconds), reason
            raise TypeError("the lookup gave no kind of card, product or unknown")
        except TimeoutError:
            log.warning("price check lookup timed out code=%s seconds=%s", mask_number(code), self.lookup_timeout)
        except Exception as exc:  # a shopper sees "ask staff"; the log says what failed
            # The message may quote the code: only the error's type is logged.
            log.warning("price check lookup failed code=%s error=%s", mask_number(code), type(exc).__name__)
        return "unknown", unknown_screen("unavailable", timeout_s=self.display_seconds), "unavailable"

    # -- one device connection --------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if len(self._connections) >= self.max_connections:
            log.warning("price checker refused peer=%s reason=too_many_connections limit=%s", peer,
                        self.max_connections)
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:  # a device that vanished (power cut) is noticed, and its slot freed
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        host = PriceCheckerHost(self.options)
        scans, reason, started = 0, "closed by device", time.monotonic()
        log.info("price checker connected peer=%s connections=%s", peer, len(self._connections))
        try:
            await self._flush(host, writer)
            while True:
                deadline = host.next_deadline()
                try:
                    wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                    data = await asyncio.wait_for(reader.read(4096), wait)
                except TimeoutError:  # the result's time is up: back to the idle screen
                    host.handle_timeout(max(time.monotonic(), deadline or 0.0))
                    await self._flush(host, writer)
                    continue
                events = host.receive_data(data) if data else host.connection_lost()
                for event in events:
                    if isinstance(event, BarcodeScanned):
                        scans += 1
                        await self._answer(host, event.value, peer)
                    elif isinstance(event, DeviceIdentified):
                        log.info("price checker identified peer=%s unit=%s firmware=%s", peer, event.unit_id,
                                 event.firmware)
                    elif isinstance(event, ProtocolViolation):
                        log.warning("price checker protocol violation peer=%s reason=%r", peer, event.reason)
                if not data:
                    break
                await self._flush(host, writer)
        except asyncio.CancelledError:
            reason = "server closing"
            raise
        except TimeoutError:
            reason = "write timeout"
        except (ConnectionError, OSError) as exc:
            reason = f"connection error {type(exc).__name__}"
        finally:
            self._connections.discard(task)
            host.connection_lost()
            writer.close()
            log.info("price checker disconnected peer=%s scans=%s seconds=%.1f reason=%s", peer, scans,
                     time.monotonic() - started, reason)

    async def _answer(self, host: PriceCheckerHost, code: str, peer: str) -> None:
        started = time.monotonic()
        kind, screen, reason = await self.screen_for(code)
        host.send(screen)
        log.info("price check peer=%s unit=%s code=%s kind=%s reason=%r ms=%.0f", peer, host.unit_id,
                 _masked(code, kind), kind, reason, (time.monotonic() - started) * 1000)

    async def _flush(self, host: PriceCheckerHost, writer: asyncio.StreamWriter) -> None:
        data = host.data_to_send()
        if data:
            writer.write(data)
            async with asyncio.timeout(self.write_timeout):
                await writer.drain()


# -- the kiosk page -----------------------------------------------------------------------------

PRICE_CHECK = web.AppKey("price_check", PriceCheckService)


def _kiosk_error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    response = error_response(status, code, message)
    response.headers["Cache-Control"] = "no-store"
    response.headers.update(headers or {})
    return response


async def kiosk_lookup(request: web.Request) -> web.Response:
    """GET /api/v1/kiosk/lookup?code=...: ``{"kind", "lines": [{"text", "font", "align"}], "timeout_s"}``
    (and ``"reason"`` for an unknown code). 400 for a missing, overlong or non-ASCII code; 429 past
    the per-client rate limit, since card balances are shown."""
    service = request.app[PRICE_CHECK]
    client = request.remote or "unknown"
    if not service.kiosk_limit.allow(client):
        log.warning("kiosk lookup refused client=%s reason=rate_limited", client)
        return _kiosk_error(429, "rate_limited", "too many lookups from this device, try again in a minute",
                            {"Retry-After": str(int(service.kiosk_limit.window))})
    code = request.query.get("code", "").strip()
    if not code:
        return _kiosk_error(400, "invalid_input", "code is required")
    if len(code) > MAX_CODE:
        return _kiosk_error(400, "invalid_input", f"code is at most {MAX_CODE} characters")
    if not all(" " <= ch <= "~" for ch in code):
        return _kiosk_error(400, "invalid_input", "code has characters no barcode has")
    kind, screen, reason = await service.screen_for(code)
    log.info("kiosk lookup client=%s code=%s kind=%s reason=%r", client, _masked(code, kind), kind, reason)
    body: dict[str, Any] = {"kind": kind, "timeout_s": screen.timeout_s,
                            "lines": [{"text": line.text, "font": line.font, "align": line.align}
                                      for line in screen.lines]}
    if reason is not None:
        body["reason"] = reason
    return web.json_response(body, headers={"Cache-Control": "no-store"})


@cache
def _kiosk_html() -> tuple[bytes, str]:
    """The page and its Content-Security-Policy, which allows exactly its inline script and style."""
    html = KIOSK_PAGE.read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies)

    policy = (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
              "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return html.encode("utf-8"), policy


async def kiosk_page(request: web.Request) -> web.Response:
    """The customer-facing kiosk page (self-contained HTML)."""
    body, policy = _kiosk_html()
    return web.Response(body=body, content_type="text/html", charset="utf-8", headers={
        "Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache"})

"""A TCP proxy for tests that cut, black-hole or half-break the network between two real processes."""

from __future__ import annotations

import asyncio
import contextlib
from enum import StrEnum


class Mode(StrEnum):
    PASS = "pass"  # forward both ways
    REFUSE = "refuse"  # close every new connection at once (the far end is down)
    BLACKHOLE = "blackhole"  # accept and never answer (a cable pulled mid-route)
    LOSE_ANSWERS = "lose_answers"  # forward requests, drop what comes back, then close


class Proxy:
    """Listens on 127.0.0.1 and forwards to ``target_port``; the mode applies to new connections and,
    for REFUSE and BLACKHOLE, also stops traffic on open ones."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = Mode.PASS
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def set(self, mode: Mode) -> None:
        self.mode = mode
        if mode in (Mode.REFUSE, Mode.BLACKHOLE, Mode.LOSE_ANSWERS):
            for w in list(self._writers):
                w.close()

    async def close(self) -> None:
        if self._server:
            self._server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            if self.mode == Mode.REFUSE:
                writer.close()
                return
            if self.mode == Mode.BLACKHOLE:
                with contextlib.suppress(ConnectionError):
                    while await reader.read(65536):
                        pass
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
            self._writers.update((writer, up_writer))
            lose = self.mode == Mode.LOSE_ANSWERS
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer, drop=lose),
                                 return_exceptions=True)
        except OSError:
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, drop: bool = False) -> None:
        try:
            while data := await reader.read(65536):
                if drop:  # the answer arrived and is lost on the way back: cut the connection
                    break
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            self._writers.discard(writer)

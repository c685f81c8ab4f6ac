"""Where a simulated device plugs in: a pseudo-terminal (as a serial device) or a TCP port (as a
serial device server). The simulator holds the device's end; the driver opens ``url``.

A pty port publishes its slave under a stable symlink, so ``unplug()`` then ``plug()`` behaves like
pulling a USB-serial cable and putting it back: the old terminal dies, a new one appears under the
same name, and the driver must find it again by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from collections.abc import Callable
from pathlib import Path

__all__ = ["SimulatedPort", "PtyPort", "SocketPort"]

log = logging.getLogger("tessera.simulators")

DataSink = Callable[[bytes], None]


class SimulatedPort:
    """The device end of a link: ``write`` bytes to the host, ``on_data`` receives the host's bytes."""

    url: str

    def __init__(self) -> None:
        self.on_data: DataSink = lambda data: None
        self.connected = asyncio.Event()

    async def plug(self) -> None:
        raise NotImplementedError

    async def unplug(self) -> None:
        raise NotImplementedError

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout)


class PtyPort(SimulatedPort):
    """A pseudo-terminal whose slave is published as ``link`` (a symlink); the driver opens ``link``."""

    def __init__(self, link: str | os.PathLike, query: str = "") -> None:
        super().__init__()
        self.link = Path(link).absolute()
        self.url = str(self.link) + (f"?{query}" if query else "")
        self._master: int | None = None
        self._slave: int | None = None

    async def plug(self) -> None:
        if self._master is not None:
            return
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: bytes pass as the hardware would send them
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.link.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.link.with_name(self.link.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.link)
        asyncio.get_running_loop().add_reader(master, self._readable)
        # The terminal is there; whether a driver has it open cannot be seen from this side.
        self.connected.set()
        log.info("pty plugged link=%s tty=%s", self.link, os.ttyname(slave))

    def _readable(self) -> None:
        try:
            data = os.read(self._master, 4096) if self._master is not None else b""
        except BlockingIOError:
            return
        except OSError:  # EIO: nobody holds the slave open any more
            return
        if data:
            self.on_data(data)

    async def write(self, data: bytes) -> None:
        if self._master is None:
            raise ConnectionError("the simulated device is unplugged")
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._master, view)
            except BlockingIOError:
                await asyncio.sleep(0.001)
                continue
            view = view[written:]

    async def unplug(self) -> None:
        if self._master is None:
            return
        asyncio.get_running_loop().remove_reader(self._master)
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._master = self._slave = None
        self.connected.clear()
        log.info("pty unplugged link=%s", self.link)


class SocketPort(SimulatedPort):
    """A TCP listener, as a serial device server (or a network device) would offer; one host at a time."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, query: str = "") -> None:
        super().__init__()
        self.host, self.port, self._query = host, port, query
        self._server: asyncio.AbstractServer | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def url(self) -> str:  # type: ignore[override]
        return f"socket://{self.host}:{self.port}" + (f"?{self._query}" if self._query else "")

    async def plug(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("socket device listening url=%s", self.url)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:  # the device talks to one host; a second one is turned away
            writer.close()
            return
        self._writer = writer
        self.connected.set()
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            while data := await reader.read(4096):
                self.on_data(data)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            if self._writer is writer:
                self._writer = None
                self.connected.clear()
            writer.close()

    async def write(self, data: bytes) -> None:
        if self._writer is None:
            raise ConnectionError("no host is connected to the simulated device")
        self._writer.write(data)
        await self._writer.drain()

    async def unplug(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if server is not None:
            await server.wait_closed()
        self.connected.clear()

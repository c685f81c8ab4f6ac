"""The shape every sans-IO device protocol has, so one transport drives them all.

Bytes in → events out; commands in → bytes out. Timers (retransmission, entry timeouts) are data:
the protocol says when it next needs ``handle_timeout`` and the transport calls it then.
"""

from __future__ import annotations

from typing import Any, Protocol

from .events import DeviceEvent, LocalProtocolError

__all__ = ["DeviceProtocol", "InputOnly"]


class DeviceProtocol(Protocol):
    def receive_data(self, data: bytes) -> list[DeviceEvent]:
        """Feed bytes read from the device; the events completed by them, in order. Never raises on bad
        bytes: they become ``ProtocolViolation``/``ReadFailed`` events and the parser resynchronises."""

    def send(self, command: Any) -> None:
        """Queue a command for the device (``LocalProtocolError`` if it cannot be sent now)."""

    def data_to_send(self) -> bytes:
        """Bytes to write to the device now (drains the queue)."""

    def next_deadline(self) -> float | None:
        """``time.monotonic()`` at which ``handle_timeout`` must run, or None."""

    def handle_timeout(self, now: float) -> list[DeviceEvent]:
        """Run due timers (retransmit, give up); the events that results in."""

    def connection_lost(self) -> list[DeviceEvent]:
        """The link dropped: forget partial input and pending exchanges; events for what was abandoned."""


class InputOnly:
    """The command side of a device that only reports (a scanner, a stripe reader): it takes no
    commands and runs no timers."""

    takes_no_commands = "this device takes no commands"

    def send(self, command: Any) -> None:
        raise LocalProtocolError(self.takes_no_commands)

    def data_to_send(self) -> bytes:
        return b""

    def next_deadline(self) -> float | None:
        return None

    def handle_timeout(self, now: float) -> list[DeviceEvent]:
        return []

"""Structured, greppable logs: one ``key=value`` line per event."""

from __future__ import annotations

import logging
import re
import sys
import time

from aiohttp.abc import AbstractAccessLogger

__all__ = ["setup_logging", "AccessLogger", "quoted"]


def quoted(value: object) -> str:
    """A logfmt value: quoted, with backslashes, quotes and line breaks escaped."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{text}"'


_CARD_NUMBER = re.compile(r"\d{12,19}")


def _masked(text: str) -> str:
    return _CARD_NUMBER.sub(lambda m: m.group()[:6] + "*" * (len(m.group()) - 10) + m.group()[-4:], text)


class AccessLogger(AbstractAccessLogger):
    """One key=value line per request; client-controlled values are escaped, card numbers masked."""

    def log(self, request, response, time: float) -> None:
        line = _masked(f"{request.method} {request.path_qs} HTTP/{request.version.major}.{request.version.minor}")
        self.logger.info("remote=%s request=%s status=%s bytes=%s seconds=%.6f agent=%s", request.remote,
                         quoted(line), response.status, response.body_length, time,
                         quoted(request.headers.get("User-Agent", "-")))


class LogfmtFormatter(logging.Formatter):
    converter = time.gmtime
    _second = (-1, "")  # the formatted second, reused: a busy server logs many lines per second

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second[0]:
            self._second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        head = (f"ts={self._second[1]}.{int(record.msecs):03d}Z "
                f"level={record.levelname.lower()} logger={record.name}")
        if record.name == "aiohttp.access":  # already key=value pairs (AccessLogger)
            return f"{head} {record.getMessage()}"
        line = f"{head} msg={quoted(record.getMessage())}"
        if record.exc_info:
            line += f" exc={quoted(self.formatException(record.exc_info))}"
        return line


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("apscheduler").setLevel(logging.WARNING)

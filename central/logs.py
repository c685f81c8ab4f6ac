"""Structured, greppable logs: one ``key=value`` line per event."""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["setup_logging", "ACCESS_LOG_FORMAT"]

ACCESS_LOG_FORMAT = 'remote=%a request="%r" status=%s bytes=%b seconds=%Tf agent="%{User-Agent}i"'


class LogfmtFormatter(logging.Formatter):
    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        head = (f'ts={self.formatTime(record, "%Y-%m-%dT%H:%M:%S")}.{int(record.msecs):03d}Z '
                f'level={record.levelname.lower()} logger={record.name}')
        if record.name == "aiohttp.access":  # already key=value pairs (ACCESS_LOG_FORMAT)
            return f"{head} {record.getMessage()}"
        message = record.getMessage().replace("\n", " | ").replace('"', "'")
        line = f'{head} msg="{message}"'
        if record.exc_info:
            line += ' exc="' + self.formatException(record.exc_info).replace("\n", " | ").replace('"', "'") + '"'
        return line


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("apscheduler").setLevel(logging.WARNING)

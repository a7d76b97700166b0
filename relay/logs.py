"""Logging set-up: the original system's text lines, or one JSON object per line.

Call sites pass structured fields through `extra=` (event_id, tenant, attempt, status,
duration_ms); the JSON formatter emits them as keys, the text formatter keeps the message only,
because the seed's text lines already spell those values out.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import msgspec

FIELDS = ("event_id", "tenant", "attempt", "status", "duration_ms", "file", "error_count")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_LEVEL_NAMES = {logging.WARNING: "WARN", logging.CRITICAL: "ERROR"}


def _ts(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = _LEVEL_NAMES.get(record.levelno, record.levelname)
        line = f"{_ts(record)} {level:<5} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    _enc = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": _ts(record),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "logger": record.name,
        }
        for key in FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                obj[key] = value
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return self._enc.encode(obj).decode()


class ClientErrorFilter(logging.Filter):
    """aiohttp logs a malformed request (too many headers, a bad request line) as an ERROR with a
    traceback: that is the client's mistake, not ours, so it becomes one WARNING line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and (exc.code or 400) < 500:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args, record.exc_info = "Rejected a malformed request: %s", (exc.message,), None
        return True


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    # aiohttp's access log is one line per request: too chatty for a sidecar at info.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrorFilter) for f in server_log.filters):
        server_log.addFilter(ClientErrorFilter())
    # watchfiles logs every idle poll at debug: noise, not per-attempt detail.
    logging.getLogger("watchfiles").setLevel(max(logging.INFO, LEVELS[level]))

"""Logging set-up: the original system's text lines, or one JSON object per line.

Call sites pass structured fields through `extra=` (event_id, tenant, attempt, status,
duration_ms); the JSON formatter emits them as keys, the text formatter keeps the message only,
because the seed's text lines already spell those values out.
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import queue
import sys
import time
from typing import Any

import msgspec

FIELDS = ("event_id", "tenant", "attempt", "status", "duration_ms", "file", "error_count")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# The documented level names are debug/info/warning/error: WARNING stays WARNING (not the seed's
# WARN), so a grep for the name the README gives finds the line; CRITICAL is never used by us and
# is shown as ERROR so the set of names stays those four.
_LEVEL_NAMES = {logging.CRITICAL: "ERROR"}


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


class _Enqueue(logging.handlers.QueueHandler):
    """Hands records to the writer thread as they are: formatting and the write to stderr both
    happen off the event loop (a log line per delivery must never block it on a slow pipe)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


_listener: logging.handlers.QueueListener | None = None


def stop_logging() -> None:
    """Write out every queued line and stop the writer thread (at exit; safe to call twice)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    global _listener
    stop_logging()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(q, handler)
    _listener.start()
    atexit.register(stop_logging)
    root = logging.getLogger()
    root.handlers[:] = [_Enqueue(q)]
    root.setLevel(LEVELS[level])
    # aiohttp's access log is one line per request: too chatty for a sidecar at info.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientErrorFilter) for f in server_log.filters):
        server_log.addFilter(ClientErrorFilter())
    # watchfiles logs every idle poll at debug: noise, not per-attempt detail.
    logging.getLogger("watchfiles").setLevel(max(logging.INFO, LEVELS[level]))

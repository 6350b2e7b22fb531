"""Logging set-up (called only by the CLI): text or JSON lines on stderr."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

_CONTROL_ESCAPES = {
    **{c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]},
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    **{c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))},
}


def escape_controls(text: str) -> str:
    """``text`` with control characters, Unicode line separators and bidirectional overrides
    written as escapes, so a value from a request (``/v1/apps/x%0a2026-...``) cannot start a
    forged log line or reorder what a reader sees."""
    return text.translate(_CONTROL_ESCAPES)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``; the message's control characters are escaped (a
    traceback, which is ours, keeps its lines)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The line, with :func:`escape_controls` applied to the message."""
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``{"time", "level", "logger", "message"[, "exc"]}``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (time in UTC, ISO 8601 with milliseconds)."""
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": escape_controls(record.getMessage()),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


SENSITIVE_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "sqlalchemy.pool", "asyncpg")
"""Database drivers whose DEBUG lines print SQL parameters: access_tokens. Never below WARNING."""


def quiet_sensitive_loggers() -> None:
    """Keep the database drivers' parameter logging off, whatever the configured level."""
    for name in SENSITIVE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once; aiohttp's access log goes through it too."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # tokensvc.store.migrate says it
    quiet_sensitive_loggers()


class PathAccessLogger(AbstractAccessLogger):
    """aiohttp access lines ``METHOD /path STATUS 1.2ms``: the query string is left out (it can
    carry secrets, e.g. WeChat's ``/cgi-bin/token?secret=``), and so is every header. Control
    characters in the path are escaped by the formatters above. Used as is by the simulator;
    the service's :class:`tokensvc.web.access_log.AccessLogger` adds the client's name."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Write the line; ``time`` is the request's duration in seconds."""
        self.logger.info(
            "%s %s %s %.1fms", request.method, request.path, response.status, time * 1000
        )

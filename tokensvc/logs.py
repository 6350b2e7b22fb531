"""Logging set-up (called only by the CLI): text or JSON lines on stderr."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``{"time", "level", "logger", "message"[, "exc"]}``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (time in UTC, ISO 8601 with milliseconds)."""
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
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
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    quiet_sensitive_loggers()

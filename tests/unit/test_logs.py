"""Log formats: JSON lines for machines."""

from __future__ import annotations

import json
import logging

from tokensvc.logs import JsonFormatter


def test_json_formatter_writes_one_object_per_line() -> None:
    record = logging.LogRecord(
        "tokensvc.x", logging.WARNING, __file__, 1, "refresh app=%s", ("wx1",), None
    )
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "tokensvc.x"
    assert entry["message"] == "refresh app=wx1" and entry["time"].endswith("+00:00")
    assert "\n" not in line

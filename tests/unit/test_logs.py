"""Log formats: JSON lines for machines; the access log's summary of token reads."""

from __future__ import annotations

import json
import logging

import pytest

from tokensvc.logs import JsonFormatter
from tokensvc.web.access_log import PAIRS_PER_LINE, AccessSummary


def test_json_formatter_writes_one_object_per_line() -> None:
    record = logging.LogRecord(
        "tokensvc.x", logging.WARNING, __file__, 1, "refresh app=%s", ("wx1",), None
    )
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "tokensvc.x"
    assert entry["message"] == "refresh app=wx1" and entry["time"].endswith("+00:00")
    assert "\n" not in line


def test_the_read_summary_splits_long_lines_and_starts_again_after_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    summary = AccessSummary()
    for i in range(PAIRS_PER_LINE * 2 + 5):
        summary.tally("orders", f"wx{i:016x}").add(0.002)
    summary.tally("orders", "wx0000000000000000").add(0.004)
    lines = summary.flush()
    assert [r.getMessage() for r in caplog.records] == lines
    assert len(lines) == 3 and all(", part " in line for line in lines)
    assert sum(line.count("client=orders") for line in lines) == PAIRS_PER_LINE * 2 + 5
    assert "client=orders app=wx0000000000000000 2 (slowest 4.0ms)" in lines[0]
    assert summary.flush() == []  # counts start again: nothing read, nothing written
    summary.tally("orders", "wx0000000000000000").add(0.001)
    assert "app=wx0000000000000000 1 (slowest 1.0ms)" in summary.flush()[0]

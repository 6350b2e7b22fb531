"""The benchmark scripts run: each in its ``--smoke`` mode (a few seconds), with the real
processes (simulator, ``tokensvc serve``, the bare references, the load generator).

Only that they work and print what the README quotes is checked: no figure is asserted, since
timings on a shared machine prove nothing (the README gives the measured ones and how).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.postgres import find_bindir

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def run_script(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_status_benchmark_times_both_views_of_a_day_of_events() -> None:
    out = run_script("bench_status.py", "--smoke")
    assert "20 apps ready in " in out and "events stored" in out
    for view in ("GET /v1/status", "GET /status (page 1)", "GET /status?q=bench app 99"):
        assert f"{view}: 5 requests, median " in out


def test_token_benchmark_compares_with_the_bare_handler() -> None:
    out = run_script("bench_token.py", "--smoke")
    assert "== GET /token: tokensvc vs bare-token, 1 repeat(s)" in out
    assert re.search(r"load generator: (wrk -t1|python asyncio\.Protocol)", out)
    assert "throughput tokensvc/bare-token: " in out and "p99 tokensvc/bare-token: " in out
    assert set(re.findall(r"errors (\d+)", out)) == {"0"}  # every answer was a 200
    assert "tokensvc: event loop: " in out


def test_scale_benchmark_reports_start_up_memory_throughput_and_status() -> None:
    out = run_script("bench_token.py", "--smoke", "--apps", "20")
    assert "== 20 apps (sqlite), 1 start(s) each: start-up to ready " in out
    assert "peak RSS at ready" in out
    assert "throughput 20-apps/one-app: " in out
    assert "== /v1/status at 20 apps: median " in out


def test_scale_benchmark_runs_on_postgresql() -> None:
    if find_bindir() is None:
        if os.environ.get("TOKENSVC_REQUIRE_POSTGRES"):
            pytest.fail(
                "PostgreSQL server binaries not found, but TOKENSVC_REQUIRE_POSTGRES is set"
            )
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    out = run_script("bench_token.py", "--smoke", "--apps", "5", "--database", "postgres")
    assert "== 5 apps (postgres), 1 start(s) each: start-up to ready " in out
    assert "== /v1/status at 5 apps: median " in out


def test_proxy_benchmark_compares_with_the_bare_forwarder() -> None:
    out = run_script("bench_proxy.py", "--smoke")
    assert "== send proxy: tokensvc vs bare-proxy, 1 repeat(s)" in out
    assert "throughput tokensvc/bare-proxy: " in out
    assert set(re.findall(r"errors (\d+)", out)) == {"0"}


def test_push_benchmark_measures_latency_and_throughput() -> None:
    out = run_script("bench_push.py", "--smoke")
    assert "== push-to-forward latency, 20 pushes " in out and " p99 " in out
    assert re.search(r"== throughput, 4 pushers for 1 s: \d+ pushes/s accepted", out)
    assert "NOT DRAINED" not in out
    assert "duplicates 0, bad signatures 0" in out

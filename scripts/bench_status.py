"""How fast /v1/status (and /status) answer for 1,000 apps with a day of refresh events.

Runs the WeChat simulator and ``tokensvc serve`` (SQLite, shipped defaults) in their own
processes through scripts/benchlib.py, fills the events table with 24 h of events (every app
refreshed every 2 h, 20 apps with a flood of 500 errors each), restarts tokensvc and times
sequential requests from this process.

    .venv/bin/python scripts/bench_status.py [--apps 1000] [--requests 50]
    .venv/bin/python scripts/bench_status.py --smoke     # 20 apps, 5 requests: does it work

Loopback only; sequential requests, bounded by ``--requests``.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import time
from pathlib import Path

import benchlib


def fill_events(database: Path, apps: list[str], now: float) -> int:
    """Store a day of events: every app refreshed every 2 hours, every 50th app with 500
    errors in the last hour (a flood the page must group). Returns how many."""
    rows = []
    for i, appid in enumerate(apps):
        for k in range(12):  # a refresh every 2 hours
            rows.append(
                (
                    appid,
                    now - 86400 + k * 7200 + i % 600,
                    "scheduled",
                    "success",
                    0,
                    None,
                    None,
                    f"{i:04x}{k:04x}",
                    0.05,
                )
            )
        if i % 50 == 0:  # 20 apps failing: 500 errors each in the last hour
            for k in range(500):
                rows.append(
                    (
                        appid,
                        now - 3600 + k * 7,
                        "scheduled",
                        "error",
                        -1,
                        f"system error rid: {k:08x}",
                        f"{k:08x}",
                        None,
                        0.01,
                    )
                )
    with sqlite3.connect(database) as db:
        db.executemany(
            'INSERT INTO refresh_events (appid, at, "trigger", outcome, errcode, errmsg, rid,'
            " fingerprint, latency) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    return len(rows)


def timed(url: str, n: int) -> tuple[list[float], int]:
    """Milliseconds of ``n`` sequential GETs (after 5 warm-ups), and the answer's size."""
    for _ in range(5):
        status, body = benchlib.http(url, benchlib.ADMIN_AUTH)
        assert status == 200, (status, body[:300])
    times = []
    for _ in range(n):
        started = time.perf_counter()
        status, body = benchlib.http(url, benchlib.ADMIN_AUTH)
        times.append((time.perf_counter() - started) * 1000)
        assert status == 200
    return times, len(body)


def report(name: str, times: list[float], size: int) -> None:
    """Print median, p95 and max of ``times`` (ms)."""
    times = sorted(times)
    p95 = times[int(0.95 * (len(times) - 1))]
    print(
        f"{name}: {len(times)} requests, median {statistics.median(times):.1f} ms, "
        f"p95 {p95:.1f} ms, max {times[-1]:.1f} ms, {size / 1024:.0f} KiB"
    )


def main() -> None:
    """Parse the options and run the benchmark (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=1000, help="configured apps (default 1000)")
    parser.add_argument(
        "--requests", type=int, default=50, help="timed requests per URL (default 50)"
    )
    parser.add_argument("--smoke", action="store_true", help="20 apps, 5 requests")
    args = parser.parse_args()
    if args.smoke:
        args.apps, args.requests = 20, 5
    apps = benchlib.appids(args.apps)
    with benchlib.Bench() as bench:
        sim = bench.simulator(apps)
        proc = bench.tokensvc("status", apps, api_base=sim.url)
        print(f"{args.apps} apps ready in {proc.ready_seconds:.1f} s")
        proc.stop()
        n = fill_events(bench.workdir / "status.db", apps, time.time())
        print(f"{n} events stored")
        proc = bench.start_tokensvc(
            "status-again", bench.workdir / "status.toml", int(proc.url.rsplit(":", 1)[1])
        )
        report("GET /v1/status", *timed(proc.url + "/v1/status", args.requests))
        report("GET /status (page 1)", *timed(proc.url + "/status", args.requests))
        report(
            "GET /status?q=bench app 99", *timed(proc.url + "/status?q=bench+app+99", args.requests)
        )


if __name__ == "__main__":
    main()

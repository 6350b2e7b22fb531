"""Shared helpers of the benchmark scripts: start ``tokensvc demo``, run a bounded load."""

from __future__ import annotations

import asyncio
import re
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass
class Demo:
    """A running ``tokensvc demo`` subprocess and what it printed."""

    process: asyncio.subprocess.Process
    url: str
    simulator_url: str
    client_key: str
    admin_key: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_demo(ttl: float = 7200) -> Demo:
    """Start ``tokensvc demo`` on a free loopback port and wait for its banner."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokensvc",
        "demo",
        "--port",
        str(port),
        "--ttl",
        str(ttl),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    found: dict[str, str] = {}
    patterns = {
        "simulator": r"WeChat simulator:\s+(\S+)",
        "client": r"demo client key:\s+(\S+)",
        "admin": r"admin key:\s+(\S+)",
    }
    deadline = time.monotonic() + 30
    while len(found) < len(patterns) and time.monotonic() < deadline:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        for name, pattern in patterns.items():
            match = re.search(pattern, line)
            if match:
                found[name] = match.group(1)
    if len(found) < len(patterns):
        process.terminate()
        raise RuntimeError("tokensvc demo did not start")
    return Demo(
        process, f"http://127.0.0.1:{port}", found["simulator"], found["client"], found["admin"]
    )


@dataclass
class LoadResult:
    """What one bounded load run measured: counts and per-request latencies (seconds)."""

    requests: int
    seconds: float
    errors: int
    latencies: list[float]

    def report(self, label: str) -> str:
        """One line: rate, errors, median and 99th percentile latency."""
        ordered = sorted(self.latencies)
        p50 = statistics.median(ordered) * 1000
        p99 = ordered[int(len(ordered) * 0.99)] * 1000
        return (
            f"{label}: {self.requests} requests in {self.seconds:.2f}s = "
            f"{self.requests / self.seconds:.0f}/s, errors {self.errors}, "
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        )

    @property
    def p50(self) -> float:
        """Median latency, seconds."""
        return statistics.median(self.latencies)


async def run_load(
    request: Callable[[], Awaitable[bool]], total: int, concurrency: int
) -> LoadResult:
    """Send ``total`` requests from ``concurrency`` workers; ``request()`` returns success."""
    remaining = total
    errors = 0
    latencies: list[float] = []

    async def worker() -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            if not await request():
                errors += 1
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), 300)
    return LoadResult(total, time.perf_counter() - started, errors, latencies)

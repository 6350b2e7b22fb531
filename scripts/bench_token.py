"""Benchmark ``GET /v1/apps/{appid}/token``: requests per second and latency, on loopback only.

Starts ``tokensvc demo`` (simulator + service) as a subprocess, then sends a bounded number of
requests from ``--concurrency`` keep-alive connections in this process and prints the figures.

    .venv/bin/python scripts/bench_token.py [--requests 30000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import statistics
import sys
import time

import aiohttp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_demo(port: int) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokensvc",
        "demo",
        "--port",
        str(port),
        "--ttl",
        "7200",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        match = re.search(r"demo client key:\s+(\S+)", line)
        if match:
            return process, match.group(1)
    raise RuntimeError("demo did not start")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=30000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    port = free_port()
    process, key = await start_demo(port)
    url = f"http://127.0.0.1:{port}/v1/apps/wxdemoofficial0001/token"
    latencies: list[float] = []
    errors = 0
    remaining = args.requests
    try:
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(
            connector=connector, headers={"Authorization": f"Bearer {key}"}
        ) as session:
            for _ in range(50):  # wait for the first token
                async with session.get(url) as response:
                    if response.status == 200:
                        break
                await asyncio.sleep(0.1)

            async def worker() -> None:
                nonlocal remaining, errors
                while remaining > 0:
                    remaining -= 1
                    started = time.perf_counter()
                    async with session.get(url) as response:
                        await response.read()
                        if response.status != 200:
                            errors += 1
                    latencies.append(time.perf_counter() - started)

            started = time.perf_counter()
            await asyncio.wait_for(
                asyncio.gather(*(worker() for _ in range(args.concurrency))), 300
            )
            elapsed = time.perf_counter() - started
    finally:
        process.terminate()
        await process.wait()
    latencies.sort()
    print(f"GET /token: {len(latencies)} requests, {args.concurrency} connections, {elapsed:.2f}s")
    print(f"  {len(latencies) / elapsed:.0f} requests/s, errors {errors}")
    print(
        f"  latency p50 {statistics.median(latencies) * 1000:.2f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.2f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())

"""Benchmark ``GET /v1/apps/{appid}/token``: requests per second and latency, loopback only.

Starts ``tokensvc demo`` as a subprocess and sends a bounded number of requests from
``--concurrency`` keep-alive connections in this process.

    .venv/bin/python scripts/bench_token.py [--requests 30000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from benchlib import run_load, start_demo


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=30000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    demo = await start_demo()
    url = f"{demo.url}/v1/apps/wxdemoofficial0001/token"
    try:
        headers = {"Authorization": f"Bearer {demo.client_key}"}
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

            async def get_token() -> bool:
                async with session.get(url) as response:
                    await response.read()
                    return response.status == 200

            for _ in range(50):  # the first token
                if await get_token():
                    break
                await asyncio.sleep(0.1)
            result = await run_load(get_token, args.requests, args.concurrency)
    finally:
        demo.process.terminate()
        await demo.process.wait()
    print(result.report(f"GET /token ({args.concurrency} connections)"))


if __name__ == "__main__":
    asyncio.run(main())

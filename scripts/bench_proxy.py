"""Benchmark the send proxy: sends per second and the latency tokensvc adds, loopback only.

Starts ``tokensvc demo``; sends ``--requests`` customer-service messages straight to the
simulator (with a token from tokensvc), then the same number through
``POST /v1/apps/{appid}/messages/custom``, and prints both and the difference in median latency.

    .venv/bin/python scripts/bench_proxy.py [--requests 5000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from benchlib import run_load, start_demo

APPID = "wxdemoofficial0001"
MESSAGE = {"touser": "openid-bench", "msgtype": "text", "text": {"content": "hello"}}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    demo = await start_demo()
    try:
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            headers = {"Authorization": f"Bearer {demo.client_key}"}
            token = ""
            for _ in range(50):
                async with session.get(
                    f"{demo.url}/v1/apps/{APPID}/token", headers=headers
                ) as response:
                    if response.status == 200:
                        token = (await response.json())["access_token"]
                        break
                await asyncio.sleep(0.1)

            async def direct() -> bool:
                async with session.post(
                    f"{demo.simulator_url}/cgi-bin/message/custom/send",
                    params={"access_token": token},
                    json=MESSAGE,
                ) as response:
                    return (await response.json()).get("errcode") == 0

            async def proxied() -> bool:
                async with session.post(
                    f"{demo.url}/v1/apps/{APPID}/messages/custom", headers=headers, json=MESSAGE
                ) as response:
                    return response.status == 200 and (await response.json()).get("errcode") == 0

            baseline = await run_load(direct, args.requests, args.concurrency)
            through = await run_load(proxied, args.requests, args.concurrency)
    finally:
        demo.process.terminate()
        await demo.process.wait()
    print(baseline.report("direct to the simulator"))
    print(through.report("through tokensvc      "))
    print(f"added median latency: {(through.p50 - baseline.p50) * 1000:.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())

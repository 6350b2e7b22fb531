"""Benchmark: WeChat message push through tokensvc, from WeChat's POST to the business server.

Starts the WeChat simulator and one ``tokensvc serve`` (SQLite, shipped defaults) whose first
app has ``[apps.push]`` (safe mode by default: every push signed and AES-encrypted, as WeChat
recommends) forwarding to a business server that runs in this process. The simulator's pusher
(``tokensvc.simulator.push.WechatPusher``) posts user text messages to
``/wechat/push/{appid}``; the business server notes when each one arrives (matched by
``MsgId``) and checks its HMAC signature.

1. Latency: ``--count`` pushes one after another, ``--gap`` seconds apart: from the start of
   WeChat's POST to the delivery's arrival (receipt, signature check, decryption, the outbox
   commit, the worker's claim, the signed POST). p50, p99, max.
2. Throughput: ``--connections`` pushers as fast as tokensvc answers for ``--duration``
   seconds: pushes/s answered ``success`` (each one committed to the outbox), then how long
   the deliveries take to drain and the delivered/s over the whole run. Also tokensvc's CPU.

Loopback only, bounded in count and time. ``--smoke`` runs a few seconds in all.

    .venv/bin/python scripts/bench_push.py [--count 500] [--duration 10] [--mode safe] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from benchlib import CLIENT_KEY, Bench, cpu_seconds, free_port, key_sha256, machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tokensvc.push.signing import verify
from tokensvc.simulator.push import WechatPusher, make_encoding_aes_key

APPID = "wx0be9c4e91ca00001"
PUSH_TOKEN = "benchpushtoken0123"
FORWARD_KEY = "bench-forward-key-0123456789"
OPENID = "o7esq5OI1Uej6Xixw1lA2H7XDVbc"


class Receiver:
    """The business server: arrival time per ``MsgId``, signature checked."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/events"
        self.arrived: dict[str, float] = {}
        self.duplicates = 0
        self.bad_signatures = 0
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        """Note one delivery's arrival and check its signature."""
        raw = await request.read()
        at = time.perf_counter()
        ok = verify(
            FORWARD_KEY,
            raw,
            request.headers.get("X-Tokensvc-Timestamp"),
            request.headers.get("X-Tokensvc-Signature"),
            time.time(),
        )
        if not ok:
            self.bad_signatures += 1
        msg_id = str(json.loads(raw).get("MsgId"))
        if msg_id in self.arrived:
            self.duplicates += 1
        else:
            self.arrived[msg_id] = at
        self.changed.set()
        return web.Response(text="ok")

    async def wait_for(self, count: int, within: float) -> bool:
        """True once ``count`` distinct pushes arrived; False after ``within`` seconds."""
        deadline = time.perf_counter() + within
        while len(self.arrived) < count:
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            self.changed.clear()
            try:
                async with asyncio.timeout(left):
                    await self.changed.wait()
            except TimeoutError:
                return False
        return True


def config_text(port: int, api_base: str, database: str, receiver_url: str, mode: str) -> str:
    """One official account with ``[apps.push]``; everything else the shipped defaults."""
    aes = 'encoding_aes_key_env = "BENCH_AES_KEY"\n' if mode != "plaintext" else ""
    return (
        f'[server]\nport = {port}\n[database]\nurl = "{database}"\n'
        f'[wechat]\napi_base = "{api_base}"\n'
        f'[[apps]]\nappid = "{APPID}"\nname = "bench"\nkind = "official_account"\n'
        'secret_env = "BENCH_SECRET"\n'
        f'[apps.push]\ntoken_env = "BENCH_PUSH_TOKEN"\n{aes}mode = "{mode}"\n'
        f'[[apps.push.forward]]\nurl = "{receiver_url}"\nsecret_env = "BENCH_FORWARD_KEY"\n'
        '[[clients]]\nname = "bench"\n'
        f'key_sha256 = "{key_sha256(CLIENT_KEY)}"\n'
        'apps = ["*"]\n'
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency(pusher: WechatPusher, receiver: Receiver, count: int, gap: float) -> None:
    delays: list[float] = []
    answered: list[float] = []
    for i in range(count):
        message = pusher.text(OPENID, f"latency {i}")
        started = time.perf_counter()
        answers = await pusher.push(message)
        answered.append((time.perf_counter() - started) * 1000)
        assert answers[0].status == 200 and answers[0].text == "success", answers
        if not await receiver.wait_for(len(receiver.arrived) + 1, 30):
            raise RuntimeError(f"push {i} was not delivered within 30 s")
        delays.append(receiver.arrived[str(message["MsgId"])] - started)
        await asyncio.sleep(gap)
    ms = [d * 1000 for d in delays]
    print(
        f"== push-to-forward latency, {count} pushes {gap * 1000:.0f} ms apart: "
        f"p50 {statistics.median(ms):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, "
        f"max {max(ms):.1f} ms",
        flush=True,
    )
    print(
        f"   WeChat's POST answered success (stored in the outbox): p50 "
        f"{statistics.median(answered):.1f} ms, p99 {percentile(answered, 0.99):.1f} ms",
        flush=True,
    )


async def throughput(
    pusher: WechatPusher, receiver: Receiver, connections: int, duration: float, pid: int
) -> None:
    before = len(receiver.arrived)
    accepted = 0
    refused = 0
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    stop_at = started + duration

    async def one_pusher(n: int) -> None:
        nonlocal accepted, refused
        while time.perf_counter() < stop_at:
            answers = await pusher.push(pusher.text(OPENID, f"load {n}"))
            if answers[0].status == 200:
                accepted += 1
            else:
                refused += 1

    await asyncio.gather(*(one_pusher(n) for n in range(connections)))
    pushed_for = time.perf_counter() - started
    cpu_pushing = cpu_seconds(pid) - cpu_before
    drained = await receiver.wait_for(before + accepted, 120)
    total = time.perf_counter() - started
    delivered = len(receiver.arrived) - before
    print(
        f"== throughput, {connections} pushers for {duration:g} s: "
        f"{accepted / pushed_for:.0f} pushes/s accepted ({accepted} pushes, {refused} refused); "
        f"tokensvc CPU {cpu_pushing / pushed_for:.2f} cores while pushing",
        flush=True,
    )
    print(
        f"   deliveries: {delivered} of {accepted} in {total:.1f} s "
        f"({delivered / total:.0f}/s over the whole run; drained {total - pushed_for:.1f} s "
        f"after the last push){'' if drained else ' NOT DRAINED'}",
        flush=True,
    )


async def main(args: argparse.Namespace) -> None:
    count = 20 if args.smoke else args.count
    duration = 1.0 if args.smoke else args.duration
    connections = 4 if args.smoke else args.connections
    print(f"machine: {machine()}", flush=True)
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/events", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
    aes_key = make_encoding_aes_key()
    os.environ.update(
        {"BENCH_PUSH_TOKEN": PUSH_TOKEN, "BENCH_FORWARD_KEY": FORWARD_KEY, "BENCH_AES_KEY": aes_key}
    )
    try:
        with Bench(keep=args.keep) as bench:
            simulator = bench.simulator([APPID])
            port = free_port()
            config = bench.workdir / "tokensvc.toml"
            database = f"sqlite+aiosqlite:///{bench.workdir / 'tokensvc.db'}"
            config.write_text(config_text(port, simulator.url, database, receiver.url, args.mode))
            service = bench.start_tokensvc("tokensvc", config, port)
            print(f"tokensvc: SQLite, {args.mode} mode, shipped delivery defaults", flush=True)
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                pusher = WechatPusher(
                    session,
                    f"{service.url}/wechat/push/{APPID}",
                    appid=APPID,
                    token=PUSH_TOKEN,
                    encoding_aes_key=aes_key if args.mode != "plaintext" else None,
                    mode=args.mode,
                )
                await latency(pusher, receiver, count, args.gap)
                await throughput(pusher, receiver, connections, duration, service.pid)
            print(
                f"   duplicates {receiver.duplicates}, bad signatures {receiver.bad_signatures}",
                flush=True,
            )
    finally:
        await runner.cleanup()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500, help="latency pushes (default 500)")
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between them")
    parser.add_argument("--duration", type=float, default=10.0, help="throughput seconds")
    parser.add_argument("--connections", type=int, default=32, help="concurrent pushers")
    parser.add_argument("--mode", choices=("plaintext", "compatible", "safe"), default="safe")
    parser.add_argument("--smoke", action="store_true", help="a few seconds in all")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))

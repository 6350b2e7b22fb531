"""``tokensvc demo --push``: WeChat's message push, end to end, on loopback.

Both demo apps get an ``[apps.push]``: the official account receives plaintext XML pushes, the
mini program safe-mode (encrypted) JSON ones, and both forward to a built-in forward target
that checks each delivery's HMAC and prints it. The simulator's pusher (the WeChat side) then
pushes a short script (a subscribe event WeChat retries three times, a text message, a menu
click, a subscribe pop-up answer) and a new text message every :data:`PUSH_EVERY` seconds,
printing each try's answer; the target prints what business servers receive: each event once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from tokensvc.push import signing
from tokensvc.simulator.push import WechatPusher, make_encoding_aes_key

PUSH_EVERY = 20.0
"""Seconds between the demo's recurring text messages."""


class DemoPush:
    """The demo's push secrets (fresh each run), its settings and its two moving parts."""

    def __init__(self) -> None:
        self.tokens = ["demoOA" + secrets.token_hex(8), "demoMP" + secrets.token_hex(8)]
        self.aes_key = make_encoding_aes_key()
        self.hook_key = secrets.token_hex(32)
        self.target_url = ""

    def env(self) -> dict[str, str]:
        """The environment the push settings read their secrets from."""
        return {
            "DEMO_PUSH_TOKEN_0": self.tokens[0],
            "DEMO_PUSH_TOKEN_1": self.tokens[1],
            "DEMO_PUSH_AES_1": self.aes_key,
            "DEMO_HOOK_KEY": self.hook_key,
        }

    def tables(self) -> list[dict[str, Any]]:
        """The ``[apps.push]`` tables of the two demo apps (official account, mini program)."""
        forward = [{"url": self.target_url, "secret_env": "DEMO_HOOK_KEY"}]
        return [
            {"token_env": "DEMO_PUSH_TOKEN_0", "forward": forward},
            {
                "token_env": "DEMO_PUSH_TOKEN_1",
                "encoding_aes_key_env": "DEMO_PUSH_AES_1",
                "format": "json",
                "forward": forward,
            },
        ]

    @contextlib.asynccontextmanager
    async def target(self) -> AsyncIterator[str]:
        """Run the demo forward target on 127.0.0.1; yields (and remembers) its URL."""

        async def receive(request: web.Request) -> web.Response:
            body = await request.read()
            verified = signing.verify(
                self.hook_key,
                body,
                request.headers.get(signing.TIMESTAMP_HEADER),
                request.headers.get(signing.SIGNATURE_HEADER),
                time.time(),
            )
            if not verified:
                print("forward target: refused a delivery whose HMAC did not verify", flush=True)
                return web.Response(status=401)
            event = json.loads(body)
            what = event.get("Event") or event.get("Content") or ""
            print(
                f"forward target <- {event.get('appid')} event_id={event.get('event_id')} "
                f"{event.get('MsgType')} {str(what)[:40]!r} (HMAC verified)",
                flush=True,
            )
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/wechat-events", receive)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        self.target_url = f"http://127.0.0.1:{port}/wechat-events"
        try:
            yield self.target_url
        finally:
            await runner.cleanup()

    async def run_pushes(self, base: str, appids: tuple[str, str]) -> None:
        """Push the demo script to tokensvc at ``base``, then a text message every
        :data:`PUSH_EVERY` seconds, until cancelled."""
        async with aiohttp.ClientSession() as session:
            oa = WechatPusher(
                session, f"{base}/wechat/push/{appids[0]}", appid=appids[0], token=self.tokens[0]
            )
            mp = WechatPusher(
                session,
                f"{base}/wechat/push/{appids[1]}",
                appid=appids[1],
                token=self.tokens[1],
                encoding_aes_key=self.aes_key,
                mode="safe",
                format="json",
            )
            check = await oa.verify_url()
            print(f"simulator -> URL check of {appids[0]}: {check.status}", flush=True)
            script = [
                (oa, oa.event("openid-demo-1", "subscribe"), 3),
                (oa, oa.text("openid-demo-1", "hello"), 1),
                (oa, oa.event("openid-demo-1", "CLICK", EventKey="MENU_ORDERS"), 1),
                (mp, mp.popup("openid-demo-2", [("demo-template-1", "accept")]), 2),
            ]
            for pusher, message, tries in script:
                await self._push(pusher, message, tries)
            n = 0
            while True:
                await asyncio.sleep(PUSH_EVERY)
                n += 1
                await self._push(mp, mp.text("openid-demo-2", f"message {n}"), 1)

    @staticmethod
    async def _push(pusher: WechatPusher, message: dict[str, Any], tries: int) -> None:
        what = message.get("Event") or message.get("MsgType")
        try:
            answers = await pusher.push(message, tries=tries)
        except (aiohttp.ClientError, TimeoutError) as exc:
            print(f"simulator -> push {what} to {pusher.appid} failed: {exc!r}", flush=True)
            return
        shown = ", ".join(f"{a.status} {a.text[:40]}" for a in answers)
        retried = f" ({tries} tries: WeChat's retries)" if tries > 1 else ""
        print(
            f"simulator -> push {what} to {pusher.appid} [{pusher.mode}]{retried}: {shown}",
            flush=True,
        )

"""``tokensvc demo``: the simulator and tokensvc together on loopback, no credentials needed.

Two demo apps (an official account on the classic token API, a mini program on the stable one),
short token lifetimes so refreshes show within minutes, a SQLite database in a temporary
directory, and a demo client key printed with a ready ``curl`` command.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from tokensvc.config import Settings, parse_settings
from tokensvc.demo_push import DemoPush
from tokensvc.secret import key_sha256
from tokensvc.simulator import FakeWechat, serve_fake
from tokensvc.web.access_log import AccessLogger
from tokensvc.web.app import create_app
from tokensvc.web.keys import MANAGERS
from tokensvc.web.server import TokensvcRunner, bind_listeners

OFFICIAL_APPID = "wxde00000000000001"
MINIPROGRAM_APPID = "wxde00000000000002"


def demo_settings(
    *,
    api_base: str,
    port: int,
    database_url: str,
    client_key: str,
    admin_key: str,
    secrets_by_appid: dict[str, str],
    rotation_window: float,
    push: DemoPush | None = None,
) -> Settings:
    """The demo's configuration, validated by the same code as a real config file; with
    ``push``, both apps receive pushes (:mod:`tokensvc.demo_push`)."""
    env = {f"DEMO_SECRET_{i}": s for i, s in enumerate(secrets_by_appid.values())}
    raw = {
        "server": {"host": "127.0.0.1", "port": port},
        "database": {"url": database_url},
        "wechat": {"api_base": api_base, "timeout": 5, "rotation_window": rotation_window},
        "refresh": {
            "retry_base": 1,
            "retry_max": 10,
            "config_error_retry": 30,
        },
        "admin": {"key_sha256": key_sha256(admin_key)},
        "apps": [
            {
                "appid": OFFICIAL_APPID,
                "name": "Demo official account",
                "kind": "official_account",
                "token_api": "classic",
                "secret_env": "DEMO_SECRET_0",
            },
            {
                "appid": MINIPROGRAM_APPID,
                "name": "Demo mini program",
                "kind": "miniprogram",
                "token_api": "stable",
                "secret_env": "DEMO_SECRET_1",
            },
        ],
        "clients": [{"name": "demo-client", "key_sha256": key_sha256(client_key), "apps": ["*"]}],
    }
    if push is not None:
        env |= push.env()
        for app, table in zip(cast(list[dict[str, Any]], raw["apps"]), push.tables(), strict=True):
            app["push"] = table
    return parse_settings(raw, env=env)


async def run_demo(
    *,
    port: int,
    ttl: float,
    wait: Callable[[], Awaitable[object]],
    wrong_secret: bool = False,
    push: bool = False,
) -> None:
    """Start the simulator and tokensvc, print how to use them, run until ``wait()`` returns.

    ``wrong_secret``: configure the mini program with an AppSecret the simulator rejects, to see
    what operators see then (state misconfigured, errcode 40125). ``push``: the simulator
    pushes events to both apps, which forward them to a demo target that prints them
    (:mod:`tokensvc.demo_push`). Raises
    :class:`~tokensvc.errors.ConfigError` (naming ``--port``) when the port is taken.
    """
    sockets = bind_listeners("127.0.0.1", port, port_key="--port", host_key="--host")
    rotation_window = max(2.0, ttl / 4)
    fake = FakeWechat(ttl=ttl, rotation_window=rotation_window)
    app_secrets = {OFFICIAL_APPID: secrets.token_hex(16), MINIPROGRAM_APPID: secrets.token_hex(16)}
    for appid, secret in app_secrets.items():
        fake.add_app(appid, secret)
    if wrong_secret:
        app_secrets[MINIPROGRAM_APPID] = "wrong-" + secrets.token_hex(8)
    client_key = "demo-" + secrets.token_urlsafe(24)
    admin_key = "admin-" + secrets.token_urlsafe(24)
    with contextlib.ExitStack() as stack:
        for sock in sockets:
            stack.callback(sock.close)
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="tokensvc-demo-"))
        pushes = DemoPush() if push else None
        async with serve_fake(fake) as fake_url, contextlib.AsyncExitStack() as push_stack:
            if pushes is not None:
                await push_stack.enter_async_context(pushes.target())
            settings = demo_settings(
                api_base=fake_url,
                port=port,
                database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'tokensvc.db'}",
                client_key=client_key,
                admin_key=admin_key,
                secrets_by_appid=app_secrets,
                rotation_window=rotation_window,
                push=pushes,
            )
            runner = TokensvcRunner(create_app(settings), access_log_class=AccessLogger)
            await runner.setup()
            try:
                for sock in sockets:
                    await web.SockSite(runner, sock).start()
                # print the curl only once it works: wait for the first tokens (a few ms)
                managers = runner.app[MANAGERS]
                ready = [OFFICIAL_APPID] if wrong_secret else [OFFICIAL_APPID, MINIPROGRAM_APPID]
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await asyncio.gather(*(managers[a].wait_for_token() for a in ready))
                base = f"http://127.0.0.1:{port}"
                print(
                    _banner(base, fake_url, ttl, rotation_window, client_key, admin_key), flush=True
                )
                if wrong_secret:
                    print(
                        f"  --wrong-secret: {MINIPROGRAM_APPID} has an AppSecret WeChat rejects",
                        flush=True,
                    )
                if pushes is not None:
                    print(f"  --push: forward target {pushes.target_url}", flush=True)
                    task = asyncio.create_task(
                        pushes.run_pushes(base, (OFFICIAL_APPID, MINIPROGRAM_APPID))
                    )
                    push_stack.callback(task.cancel)
                await wait()
            finally:
                await runner.cleanup()
    print("tokensvc demo stopped", flush=True)


def _banner(
    base: str, fake_url: str, ttl: float, window: float, client_key: str, admin_key: str
) -> str:
    return f"""
tokensvc demo is running (Ctrl-C stops it)
  tokensvc:          {base}
  WeChat simulator:  {fake_url}  (token lifetime {ttl:g}s, old and new overlap {window:g}s)
  apps:              {OFFICIAL_APPID} (official account, classic token API)
                     {MINIPROGRAM_APPID} (mini program, stable token API)
  demo client key:   {client_key}
  admin key:         {admin_key}

Status page (any user name, the admin key as password):
  {base}/status

Get a token:
  curl -s -H 'Authorization: Bearer {client_key}' {base}/v1/apps/{OFFICIAL_APPID}/token

Report a token WeChat rejected (passive refresh):
  curl -s -H 'Authorization: Bearer {client_key}' -H 'Content-Type: application/json' \\
       -d '{{"stale_token": "PASTE_TOKEN", "errcode": 40001}}' \\
       {base}/v1/apps/{MINIPROGRAM_APPID}/token/refresh
"""

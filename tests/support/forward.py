"""A business server on loopback that receives tokensvc's push deliveries, and the config that
points an app's ``[apps.push]`` at it.

The receiver checks every delivery with the verifier the README gives (extracted from
README.md and run as it is written), records it, and answers as told: 200, another status,
or not at all (``hold``); :meth:`ForwardReceiver.stop` and :meth:`~ForwardReceiver.start`
take it off the port and back (connection refused in between).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.config import SECRET_ENV, STABLE_APPID, base_config
from tests.support.service import free_port
from tokensvc.config import Settings, parse_settings

PUSH_TOKEN = "pushtoken5f0c2b7e9a"
FORWARD_KEY = "forward-hmac-key-3c9d1e7f5a2b"
PUSH_ENV = {**SECRET_ENV, "PUSH_TOKEN": PUSH_TOKEN, "FORWARD_KEY": FORWARD_KEY}
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_verifier() -> Callable[[bytes, dict[str, str], str], bool]:
    """The README's delivery verifier (the ```python block defining ``verify_delivery``),
    executed as written: ``verify_delivery(body, headers, key) -> bool``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    code = next(b for b in blocks if "def verify_delivery(" in b)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    verifier: Callable[[bytes, dict[str, str], str], bool] = namespace["verify_delivery"]
    return verifier


@dataclass
class Received:
    """One delivery as the target saw it: the body parsed, whether the HMAC verified, when."""

    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    verified: bool
    at: float


class ForwardReceiver:
    """See the module docstring. ``status``: the answer to every delivery (200 by default);
    ``hold``: when set, deliveries wait for it before answering."""

    def __init__(self, key: str = FORWARD_KEY, port: int | None = None) -> None:
        self.key = key
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/wechat-events"
        self.received: list[Received] = []
        self.answered: list[Received] = []
        self.status = 200
        self.hold: asyncio.Event | None = None
        self._verify = readme_verifier()
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        headers = dict(request.headers)
        entry = Received(
            body=_json(raw),
            raw=raw,
            headers=headers,
            verified=self._verify(raw, headers, self.key),
            at=time.monotonic(),
        )
        self.received.append(entry)
        if self.hold is not None:
            await self.hold.wait()
        if self.status == 200:
            self.answered.append(entry)
        return web.Response(status=self.status, text="ok")

    async def start(self) -> None:
        """Listen on :attr:`port` (the same one after a :meth:`stop`)."""
        app = web.Application()
        app.router.add_post("/wechat-events", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Stop listening: deliveries get connection refused."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def event_ids(self) -> list[str]:
        """The ``event_id`` of every delivery answered 200, in order."""
        return [r.body["event_id"] for r in self.answered]


def _json(raw: bytes) -> dict[str, Any]:
    import json

    value = json.loads(raw)
    assert isinstance(value, dict)
    return value


def push_config(target_url: str, *, enforce_grants: bool = False, **forward: Any) -> dict[str, Any]:
    """The ``[apps.push]`` table of an app (plaintext pushes) forwarding to ``target_url``."""
    return {
        "token_env": "PUSH_TOKEN",
        "mode": "plaintext",
        "enforce_grants": enforce_grants,
        "forward": [{"url": target_url, "secret_env": "FORWARD_KEY", **forward}],
    }


def push_raw_config(
    api_base: str, database_url: str, push: dict[str, Any], *, appid: str = STABLE_APPID
) -> dict[str, Any]:
    """The test configuration (:func:`base_config`) with ``push`` as ``appid``'s
    ``[apps.push]``."""
    raw = base_config(api_base, database_url)
    for app in raw["apps"]:
        if app["appid"] == appid:
            app["push"] = push
    return raw


def push_settings(
    api_base: str, database_url: str, push: dict[str, Any], *, appid: str = STABLE_APPID
) -> Settings:
    """Validated settings of :func:`push_raw_config`, the push secrets from
    :data:`PUSH_ENV`."""
    return parse_settings(push_raw_config(api_base, database_url, push, appid=appid), env=PUSH_ENV)

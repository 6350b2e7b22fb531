"""Shared fixtures: the WeChat simulator on loopback and tokensvc built around it."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tokensvc.config import Settings, parse_settings
from tokensvc.web.access_log import AccessLogger
from tokensvc.web.app import create_app
from tokensvc.web.auth import key_sha256
from tokensvc.wechat.fake import FakeWechat, serve_fake

CLASSIC_APPID = "wxclassic00000001"
STABLE_APPID = "wxstable000000002"
SECRETS = {CLASSIC_APPID: "classic-secret-5f0c2b7e9a", STABLE_APPID: "stable-secret-81d3e4a6c0"}
SECRET_ENV = {"CLASSIC_SECRET": SECRETS[CLASSIC_APPID], "STABLE_SECRET": SECRETS[STABLE_APPID]}
CLIENT_KEY = "client-key-a7b6c5d4e3f2a1b0"
LIMITED_KEY = "limited-key-0f1e2d3c4b5a6978"
ADMIN_KEY = "admin-key-99887766554433221100"
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}


def base_config(api_base: str, database_url: str) -> dict[str, Any]:
    """A config document (as parsed TOML) for the two test apps and two clients."""
    return {
        "database": {"url": database_url},
        "wechat": {"api_base": api_base, "timeout": 1.0, "rotation_window": 5},
        "refresh": {
            "retry_base": 0.1,
            "retry_max": 0.5,
            "config_error_retry": 30,
            "sync_interval": 0.2,
        },
        "admin": {"key_sha256": key_sha256(ADMIN_KEY)},
        "apps": [
            {
                "appid": CLASSIC_APPID,
                "name": "Classic OA",
                "kind": "official_account",
                "token_api": "classic",
                "secret_env": "CLASSIC_SECRET",
            },
            {
                "appid": STABLE_APPID,
                "name": "Stable MP",
                "kind": "miniprogram",
                "token_api": "stable",
                "secret_env": "STABLE_SECRET",
            },
        ],
        "clients": [
            {"name": "orders", "key_sha256": key_sha256(CLIENT_KEY), "apps": ["*"]},
            {"name": "limited", "key_sha256": key_sha256(LIMITED_KEY), "apps": [STABLE_APPID]},
        ],
    }


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``overrides`` into a copy of ``base`` (tables merge, other values replace)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture
def fake() -> FakeWechat:
    """A simulator with 60 s tokens and a 5 s overlap; tests shorten them as needed."""
    sim = FakeWechat(ttl=60, rotation_window=5, hang_seconds=5)
    for appid, secret in SECRETS.items():
        sim.add_app(appid, secret)
    return sim


@pytest.fixture
async def fake_url(fake: FakeWechat) -> AsyncIterator[str]:
    async with serve_fake(fake) as url:
        yield url


@pytest.fixture
def make_settings(fake_url: str, tmp_path: Path) -> Callable[..., Settings]:
    """``make_settings(**overrides)``: validated settings pointing at the simulator."""

    def make(**overrides: Any) -> Settings:
        raw = merge(
            base_config(fake_url, f"sqlite+aiosqlite:///{tmp_path / 'tokensvc.db'}"), overrides
        )
        return parse_settings(raw, env=SECRET_ENV)

    return make


@pytest.fixture
async def start_service() -> AsyncIterator[Callable[[Settings], Awaitable[TestClient[Any, Any]]]]:
    """``await start_service(settings)``: tokensvc on loopback; stopped at the end of the test."""
    clients: list[TestClient[Any, Any]] = []

    async def start(settings: Settings) -> TestClient[Any, Any]:
        server = TestServer(create_app(settings))
        await server.start_server(access_log_class=AccessLogger)  # the production access log
        client: TestClient[Any, Any] = TestClient(server)
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


async def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05
) -> None:
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)

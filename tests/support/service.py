"""Helpers to run tokensvc in tests: the start-service type, readiness, ports, polling."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.support.config import AUTH, CLASSIC_APPID, STABLE_APPID
from tokensvc.config import Settings

Start = Callable[[Settings], Awaitable[TestClient[Any, Any]]]
"""The ``start_service`` fixture: ``await start_service(settings)`` gives a client of tokensvc."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


async def ready(start_service: Start, settings: Settings) -> TestClient[Any, Any]:
    """Start tokensvc and return its client once both test apps serve a token."""
    client = await start_service(settings)
    await wait_until(lambda: all_served(client))
    return client


async def all_served(client: TestClient[Any, Any]) -> bool:
    """True when ``GET /token`` answers 200 for both test apps."""
    for appid in (CLASSIC_APPID, STABLE_APPID):
        response = await client.get(f"/v1/apps/{appid}/token", headers=AUTH)
        if response.status != 200:
            return False
    return True

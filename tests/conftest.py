"""Shared fixtures: the WeChat simulator on loopback and tokensvc built around it."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.support.config import (  # re-exported: tests import these from here
    ADMIN_KEY,
    AUTH,
    CLASSIC_APPID,
    CLIENT_KEY,
    LIMITED_KEY,
    SECRET_ENV,
    SECRETS,
    STABLE_APPID,
    base_config,
    merge,
)
from tests.support.postgres import PostgresCluster, find_bindir
from tests.support.service import wait_until
from tokensvc.config import Settings, parse_settings
from tokensvc.simulator import FakeWechat, serve_fake
from tokensvc.web.access_log import AccessLogger
from tokensvc.web.app import create_app
from tokensvc.web.server import TokensvcRunner

__all__ = [
    "ADMIN_KEY",
    "AUTH",
    "CLASSIC_APPID",
    "CLIENT_KEY",
    "LIMITED_KEY",
    "SECRETS",
    "SECRET_ENV",
    "STABLE_APPID",
    "base_config",
    "merge",
    "wait_until",
]


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


class _TokensvcTestServer(TestServer):
    """A test server with the production runner (its answers to malformed requests) and its
    defaults (handlers are not cancelled when a client goes away, as in ``tokensvc serve``)."""

    async def _make_runner(self, **kwargs: Any) -> TokensvcRunner:
        kwargs.pop("handler_cancellation", None)
        return TokensvcRunner(self.app, **kwargs)


@pytest.fixture
async def start_service() -> AsyncIterator[Callable[[Settings], Awaitable[TestClient[Any, Any]]]]:
    """``await start_service(settings)``: tokensvc on loopback; stopped at the end of the test."""
    clients: list[TestClient[Any, Any]] = []

    async def start(settings: Settings) -> TestClient[Any, Any]:
        server = _TokensvcTestServer(create_app(settings))
        await server.start_server(access_log_class=AccessLogger)  # the production access log
        client: TestClient[Any, Any] = TestClient(server)
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the whole run (skipped, saying why, without the
    server binaries; a failure instead under ``TOKENSVC_REQUIRE_POSTGRES``, as in CI)."""
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("TOKENSVC_REQUIRE_POSTGRES"):
            pytest.fail(
                "PostgreSQL server binaries not found, but TOKENSVC_REQUIRE_POSTGRES is set"
            )
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql-15"
        )
    # pytest's own temp root is private to root; the cluster runs as an unprivileged user
    base = Path(tempfile.mkdtemp(prefix="tokensvc-pg-"))
    base.chmod(0o755)
    cluster = PostgresCluster(bindir, base / "cluster")
    try:
        cluster.init()
        yield cluster
        cluster.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def database_url(postgres: PostgresCluster) -> str:
    """A new, empty database on the cluster: its SQLAlchemy URL."""
    return await postgres.create_database(f"tokensvc_{os.getpid()}_{next(_databases)}")

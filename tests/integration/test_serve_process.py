"""End to end: the real ``tokensvc`` command in a subprocess, against the simulator on loopback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import AUTH, CLASSIC_APPID, SECRET_ENV, SECRETS, STABLE_APPID
from tests.support.replicas import Replica, free_port, write_config
from tokensvc.web.auth import key_sha256
from tokensvc.wechat.fake import FakeWechat


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tokensvc", *args]


@pytest.fixture
async def serve(fake_url: str, tmp_path: Path) -> AsyncIterator[Replica]:
    port = free_port()
    config = write_config(
        tmp_path / "config.toml",
        api_base=fake_url,
        port=port,
        database_url=sqlite_url(tmp_path / "tokensvc.db"),
    )
    replica = Replica("serve", config, port, tmp_path)
    await replica.start()
    try:
        yield replica
    finally:
        await replica.stop()


async def test_real_serve_process_serves_valid_tokens(fake: FakeWechat, serve: Replica) -> None:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        for appid in (CLASSIC_APPID, STABLE_APPID):
            for _ in range(100):
                async with session.get(f"{serve.url}/v1/apps/{appid}/token") as response:
                    if response.status == 200:
                        body = await response.json()
                        break
                await asyncio.sleep(0.1)
            assert fake.is_valid(body["access_token"])

        # the send proxy and login, through the real process; a revoked token is replaced once
        fake.revoke(CLASSIC_APPID)
        message = {"touser": "o-1", "template_id": "t-1", "data": {"first": {"value": "hi"}}}
        async with session.post(
            f"{serve.url}/v1/apps/{CLASSIC_APPID}/messages/template", json=message
        ) as response:
            assert response.status == 200
            assert response.headers["X-Tokensvc-Retried"] == "1"
            assert (await response.json())["errcode"] == 0
        assert fake.sent("/cgi-bin/message/template/send")[-1].body == message
        fake.add_js_code(STABLE_APPID, "js-1", "openid-1", "session-key-e2e")
        async with session.post(
            f"{serve.url}/v1/apps/{STABLE_APPID}/jscode2session", json={"js_code": "js-1"}
        ) as response:
            assert (await response.json())["openid"] == "openid-1"

    # a second process on the same SQLite file refuses to start, with a clear message
    second = await asyncio.create_subprocess_exec(
        *command("serve", "--config", str(serve.config)),
        env={**os.environ, **SECRET_ENV},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(second.communicate(), 30)
    assert second.returncode == 1
    assert b"in use by another tokensvc process" in err

    await serve.stop()
    assert serve.process is not None and serve.process.returncode == 0  # clean SIGTERM shutdown
    output = serve.log_path.read_text()
    assert "refresh app=" in output and "client=orders" in output
    for secret in SECRETS.values():
        assert secret not in output
    assert body["access_token"] not in output
    assert "session-key-e2e" not in output


def test_check_config_names_the_bad_key_and_never_the_secret(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.toml",
        api_base="http://127.0.0.1:1",
        port=8080,
        database_url=sqlite_url(tmp_path / "x.db"),
    )
    ok = subprocess.run(
        command("check-config", str(config)),
        env={**os.environ, **SECRET_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "config OK: 2 apps, 1 clients" in ok.stdout
    assert SECRETS[CLASSIC_APPID] not in ok.stdout + ok.stderr

    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    bad = subprocess.run(
        command("check-config", str(config)),
        env={**env, "STABLE_SECRET": "x"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "tokensvc: config: apps[0].secret_env: environment variable CLASSIC_SECRET is not set"
    ]


def test_keygen_prints_a_key_and_its_hash() -> None:
    out = subprocess.run(command("keygen"), capture_output=True, text=True, check=True).stdout
    key = out.splitlines()[0].split()[-1]
    assert f'key_sha256 = "{key_sha256(key)}"' in out


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.toml",
        api_base="http://127.0.0.1:1",
        port=8080,
        database_url=sqlite_url(tmp_path / "m.db"),
    )
    done = subprocess.run(
        command("migrate", "--config", str(config)),
        env={**os.environ, **SECRET_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    import sqlite3

    with sqlite3.connect(tmp_path / "m.db") as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
    assert {"app_tokens", "alembic_version"} <= tables


def test_unreachable_database_at_start_is_one_clear_line(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.toml",
        api_base="http://127.0.0.1:1",
        port=free_port(),
        database_url="postgresql+asyncpg://tokensvc:db-password-123@127.0.0.1:1/x",
    )
    done = subprocess.run(
        command("serve", "--config", str(config)),
        env={**os.environ, **SECRET_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert (
        "tokensvc: cannot start: database postgresql+asyncpg://tokensvc:***@127.0.0.1:1/x"
        in done.stderr
    )
    assert "db-password-123" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr

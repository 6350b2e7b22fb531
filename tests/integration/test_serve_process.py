"""End to end: the real ``tokensvc`` command in a subprocess, against the simulator on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import AUTH, CLASSIC_APPID, SECRET_ENV, SECRETS, STABLE_APPID
from tokensvc.web.auth import key_sha256
from tokensvc.wechat.fake import FakeWechat


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(path: Path, api_base: str, port: int, database: Path) -> Path:
    path.write_text(f"""
[server]
host = "127.0.0.1"
port = {port}

[database]
url = "sqlite+aiosqlite:///{database}"

[wechat]
api_base = "{api_base}"
timeout = 2
rotation_window = 5

[[apps]]
appid = "{CLASSIC_APPID}"
name = "Classic OA"
kind = "official_account"
token_api = "classic"
secret_env = "CLASSIC_SECRET"

[[apps]]
appid = "{STABLE_APPID}"
name = "Stable MP"
kind = "miniprogram"
secret_env = "STABLE_SECRET"

[[clients]]
name = "orders"
key_sha256 = "{key_sha256(AUTH["Authorization"].split()[1])}"
apps = ["*"]
""")
    return path


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tokensvc", *args]


async def wait_healthy(url: str, process: asyncio.subprocess.Process, timeout: float = 20) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(int(timeout / 0.1)):
            if process.returncode is not None:
                raise AssertionError(f"tokensvc exited with {process.returncode}")
            try:
                async with session.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("tokensvc did not become healthy")


@pytest.fixture
async def serve(
    fake_url: str, tmp_path: Path
) -> AsyncIterator[tuple[str, Path, asyncio.subprocess.Process]]:
    port = free_port()
    config = write_config(tmp_path / "config.toml", fake_url, port, tmp_path / "tokensvc.db")
    process = await asyncio.create_subprocess_exec(
        *command("serve", "--config", str(config)),
        env={**os.environ, **SECRET_ENV},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, process)
        yield url, config, process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 20)


async def test_real_serve_process_serves_valid_tokens(
    fake: FakeWechat, serve: tuple[str, Path, asyncio.subprocess.Process]
) -> None:
    url, config, process = serve
    async with aiohttp.ClientSession(headers=AUTH) as session:
        for appid in (CLASSIC_APPID, STABLE_APPID):
            for _ in range(100):
                async with session.get(f"{url}/v1/apps/{appid}/token") as response:
                    if response.status == 200:
                        body = await response.json()
                        break
                await asyncio.sleep(0.1)
            assert fake.is_valid(body["access_token"])

    # a second process on the same SQLite file refuses to start, with a clear message
    second = await asyncio.create_subprocess_exec(
        *command("serve", "--config", str(config)),
        env={**os.environ, **SECRET_ENV},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(second.communicate(), 30)
    assert second.returncode == 1
    assert b"in use by another tokensvc process" in err

    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 20) == 0
    output = (await process.stdout.read()).decode() if process.stdout else ""
    assert "refresh app=" in output and "client=orders" in output
    for secret in SECRETS.values():
        assert secret not in output
    assert body["access_token"] not in output


def test_check_config_names_the_bad_key_and_never_the_secret(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", "http://127.0.0.1:1", 8080, tmp_path / "x.db")
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
    config = write_config(tmp_path / "config.toml", "http://127.0.0.1:1", 8080, tmp_path / "m.db")
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

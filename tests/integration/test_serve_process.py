"""End to end: the real ``tokensvc`` command in a subprocess, against the simulator on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import AUTH, CLASSIC_APPID, SECRET_ENV, SECRETS, STABLE_APPID
from tests.support.config import write_config
from tests.support.replicas import Replica
from tests.support.service import free_port, wait_until
from tokensvc import __version__
from tokensvc.secret import key_sha256
from tokensvc.simulator import FakeWechat


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tokensvc", *args]


async def served_token(session: aiohttp.ClientSession, serve: Replica, appid: str) -> str:
    """The app's token once the process serves one (polled; fails the test after 10 s)."""
    body: dict[str, str] = {}

    async def answered() -> bool:
        async with session.get(f"{serve.url}/v1/apps/{appid}/token") as response:
            if response.status == 200:
                body.update(await response.json())
            return response.status == 200

    await wait_until(answered)
    return body["access_token"]


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
        tokens = [await served_token(session, serve, a) for a in (CLASSIC_APPID, STABLE_APPID)]
        assert all(fake.is_valid(token) for token in tokens)

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

    # a second process on the same SQLite file (on another port) refuses to start, clearly
    other_port = serve.config.with_name("other-port.toml")
    other_port.write_text(
        serve.config.read_text().replace(
            f"port = {serve.url.rsplit(':', 1)[1]}", f"port = {free_port()}"
        )
    )
    second = await asyncio.create_subprocess_exec(
        *command("serve", "--config", str(other_port)),
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
    assert "refresh app=" in output and "client=orders" in output  # writes: a line each
    assert "event loop: " in output  # which loop serves (uvloop when installed)
    assert "token reads in the last" in output  # reads: counted, summarised at shutdown
    for secret in SECRETS.values():
        assert secret not in output
    assert not any(token in output for token in tokens)
    assert "session-key-e2e" not in output


async def test_request_values_cannot_forge_log_lines_and_the_database_is_private(
    serve: Replica, tmp_path: Path
) -> None:
    forged = "2026-11-21 15:10:00,000 INFO tokensvc: forged"
    reader, writer = await asyncio.open_connection("127.0.0.1", int(serve.url.rsplit(":", 1)[1]))
    path = "/v1/apps/x%0a" + forged.replace(" ", "%20") + "/token"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert b" 401 " in (await reader.read())[:20]
    writer.close()

    # the database holds live tokens: it and SQLite's companions are the owner's only
    files = sorted(p.name for p in tmp_path.glob("tokensvc.db*"))
    assert {"tokensvc.db", "tokensvc.db-wal", "tokensvc.db-shm", "tokensvc.db.lock"} <= set(files)
    for name in files:
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name

    await serve.stop()
    lines = serve.log_path.read_text().splitlines()
    assert not any(line.startswith(forged) for line in lines)
    assert any("/v1/apps/x\\n2026-11-21" in line for line in lines)  # escaped, on one line


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
    assert "config OK: 2 apps, 2 clients" in ok.stdout
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
    assert (tmp_path / "m.db").stat().st_mode & 0o777 == 0o600  # it will hold live tokens
    # one line says what changed; Alembic's own INFO lines (context, DDL mode) are held back
    assert "database schema upgraded empty -> " in done.stderr
    assert "alembic" not in done.stderr and "Running upgrade" not in done.stderr
    again = subprocess.run(
        command("migrate", "--config", str(config)),
        env={**os.environ, **SECRET_ENV},
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0 and "upgraded" not in again.stderr
    assert "is at the newest schema" in again.stderr


async def start_and_read(
    args: list[str], wanted: dict[str, str]
) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    """Start ``tokensvc ARGS`` and read its stdout until every pattern in ``wanted`` matched."""
    import re

    process = await asyncio.create_subprocess_exec(
        *command(*args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert process.stdout is not None
    found: dict[str, str] = {}
    while len(found) < len(wanted):
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line, f"tokensvc {args[0]} exited early"
        for name, pattern in wanted.items():
            match = re.search(pattern, line)
            if match:
                found[name] = match.group(1)
    return process, found


async def test_demo_prints_a_curl_that_returns_a_valid_token() -> None:
    process, found = await start_and_read(
        ["demo", "--port", str(free_port()), "--ttl", "30"],
        {
            "curl": r"(curl -s -H 'Authorization: Bearer \S+' \S+/token)",
            "simulator": r"WeChat simulator:\s+(\S+)",
            "admin": r"admin key:\s+(\S+)",
        },
    )
    try:
        curl = await asyncio.create_subprocess_shell(found["curl"], stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(curl.communicate(), 30)
        token = json.loads(out)["access_token"]
        async with aiohttp.ClientSession() as session:
            # the token works at the simulator the demo runs
            async with session.get(
                f"{found['simulator']}/cgi-bin/getcallbackip", params={"access_token": token}
            ) as response:
                assert "ip_list" in await response.json()
            base = found["curl"].split()[-1].split("/v1/")[0]
            basic = base64.b64encode(f"ops:{found['admin']}".encode()).decode()
            headers = {"Authorization": f"Basic {basic}"}
            async with session.get(f"{base}/status", headers=headers) as response:
                assert response.status == 200
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C stops both cleanly
        assert await asyncio.wait_for(process.wait(), 20) == 0


async def test_fake_wechat_command_serves_the_simulator() -> None:
    port = free_port()
    process, _ = await start_and_read(
        [
            "fake-wechat",
            "--port",
            str(port),
            "--ttl",
            "60",
            "--app",
            "wx00000000000c1001:cli-secret",
        ],
        {"ready": r"(WeChat simulator on)", "app": r"  app (\S+): AppSecret sha256:"},
    )
    try:
        async with aiohttp.ClientSession() as session:
            params = {
                "grant_type": "client_credential",
                "appid": "wx00000000000c1001",
                "secret": "cli-secret",
            }
            async with session.get(
                f"http://127.0.0.1:{port}/cgi-bin/token", params=params
            ) as response:
                body = await response.json()
        assert body["expires_in"] == 60 and body["access_token"]
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0


async def test_fake_wechat_without_apps_says_what_it_serves() -> None:
    port = free_port()
    process, found = await start_and_read(
        ["fake-wechat", "--port", str(port)], {"apps": r"  (no apps: .*)$"}
    )
    try:
        assert found["apps"] == (
            "no apps: every token request answers errcode 40013 (invalid appid); register apps "
            "with --app APPID:SECRET"
        )
        params = {"grant_type": "client_credential", "appid": CLASSIC_APPID, "secret": "s"}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/cgi-bin/token", params=params) as response,
        ):
            assert (await response.json())["errcode"] == 40013  # as it said
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0


async def test_serve_logs_what_it_serves_at_start_and_a_line_at_shutdown(
    fake: FakeWechat, serve: Replica
) -> None:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        for appid in (CLASSIC_APPID, STABLE_APPID):
            await served_token(session, serve, appid)
    await serve.stop()
    first = serve.log_path.read_text()
    port = serve.url.rsplit(":", 1)[1]
    database = f"sqlite+aiosqlite:///{serve.config.parent / 'tokensvc.db'}"
    assert (
        f"INFO tokensvc: tokensvc {__version__} listening on http://127.0.0.1:{port}, database "
        f"{database}, 2 clients; 2 apps: {CLASSIC_APPID} (no stored token: fetching one), "
        f"{STABLE_APPID} (no stored token: fetching one)\n"
    ) in first
    assert first.rstrip().endswith("INFO tokensvc: tokensvc stopped")
    assert (
        "INFO tokensvc: SIGTERM received: stopping (refreshes under way finish first, then the "
        "database closes)"
    ) in first

    # a restart serves the stored tokens from the database, and says so with their time left
    await serve.start()
    assert serve.process is not None
    serve.process.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(serve.process.wait(), 20) == 0
    second = serve.log_path.read_text()[len(first) :]
    line = next(x for x in second.splitlines() if " listening on " in x)
    left = [int(n) for n in re.findall(r"\(token from the database, (\d+) s left\)", line)]
    assert len(left) == 2 and all(0 < n <= 60 for n in left), line  # the simulator's 60 s tokens
    assert "INFO tokensvc: SIGINT received: stopping" in second
    for value in (*SECRETS.values(), *fake.tokens):
        assert value not in first + second

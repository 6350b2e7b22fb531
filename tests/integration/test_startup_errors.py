"""Start-up mistakes a new user makes, tried with the real ``tokensvc`` command: each is one line
on stderr naming the key (or option, or path) and the fix, exit 2, no traceback."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SECRET_ENV
from tests.support.config import write_config
from tests.support.replicas import Replica
from tests.support.service import free_port
from tokensvc.secret import key_sha256

WHERE_APPID = (
    "copy the AppID (开发者ID) from mp.weixin.qq.com: 设置与开发 → 基本配置 for an official "
    "account, 开发 → 开发管理 → 开发设置 for a mini program"
)


def tokensvc(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    """Run the real command; the AppSecrets of the test config are in its environment."""
    return subprocess.run(
        [sys.executable, "-m", "tokensvc", *args],
        env={**os.environ, **SECRET_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line(done: Any) -> str:
    """The single line a refused command printed (exit 2, nothing else on stderr)."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if " INFO " not in line]
    assert len(lines) == 1, done.stderr
    return str(lines[0])


def config(tmp_path: Path, database_url: str, **overrides: Any) -> Path:
    return write_config(
        tmp_path / "config.toml",
        api_base="http://127.0.0.1:1",
        port=overrides.pop("port", free_port()),
        database_url=database_url,
        overrides=overrides,
    )


def sqlite(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.mark.parametrize(
    ("appid", "line"),
    [
        (
            "wx11111",
            'tokensvc: config: apps[0].appid: "wx11111" is not an AppID: expected wx and 16 '
            f"lowercase hex digits (0-9, a-f), like wx1234567890abcdef; {WHERE_APPID}",
        ),
        (
            "WX1111111111111111",
            'tokensvc: config: apps[0].appid: "WX1111111111111111" is not an AppID: an AppID is '
            "wx and 16 lowercase hex digits; write wx1111111111111111",
        ),
        (
            "wx1111111111111111x",
            'tokensvc: config: apps[0].appid: "wx1111111111111111x" is not an AppID: expected wx '
            f"and 16 lowercase hex digits (0-9, a-f), like wx1234567890abcdef; {WHERE_APPID}",
        ),
        (
            "gh_1234567890ab",
            'tokensvc: config: apps[0].appid: "gh_1234567890ab" is the account\'s original ID '
            "(原始ID), not its AppID: the AppID starts with wx and has 16 hex digits after it; "
            f"{WHERE_APPID}",
        ),
    ],
)
def test_check_config_refuses_what_is_not_an_appid(tmp_path: Path, appid: str, line: str) -> None:
    path = config(tmp_path, sqlite(tmp_path / "t.db"))
    text = re.sub(r'appid = "wx[0-9a-f]{16}"', f'appid = "{appid}"', path.read_text(), count=1)
    path.write_text(text)
    assert one_line(tokensvc("check-config", "--config", str(path))) == line
    assert one_line(tokensvc("serve", "--config", str(path))) == line


def test_the_example_configs_placeholder_key_hashes_are_refused(tmp_path: Path) -> None:
    example = (Path(__file__).parents[2] / "config.example.toml").read_text()
    path = tmp_path / "config.toml"
    env = {"WX_OA_SECRET": "a", "WX_MP_SECRET": "b"}
    path.write_text(example)
    assert one_line(tokensvc("check-config", "--config", str(path), env=env)) == (
        "tokensvc: config: admin.key_sha256: is a placeholder (00000000…), not the SHA-256 of a "
        "key: run `tokensvc keygen`, keep the key it prints for the operators, and put the "
        "key_sha256 line it prints here"
    )
    path.write_text(example.replace("0" * 64, key_sha256("admin")))
    assert one_line(tokensvc("check-config", str(path), env=env)) == (
        "tokensvc: config: clients[0].key_sha256: is a placeholder (11111111…), not the SHA-256 "
        "of a key: run `tokensvc keygen`, give the key it prints to this client, and put the "
        "key_sha256 line it prints here"
    )
    path.write_text(example.replace("0" * 64, key_sha256("")))
    assert one_line(tokensvc("check-config", str(path), env=env)).startswith(
        "tokensvc: config: admin.key_sha256: is the SHA-256 of an empty key, which anyone can "
        "send: run `tokensvc keygen`"
    )


def test_a_database_in_a_missing_directory_or_under_a_file(tmp_path: Path) -> None:
    missing = tmp_path / "x" / "y"
    path = config(tmp_path, sqlite(missing / "tokensvc.db"))
    for command in ("check-config", "serve", "migrate"):
        assert one_line(tokensvc(command, "--config", str(path))) == (
            f"tokensvc: config: database.url: directory {missing} does not exist (create it, "
            "or point database.url elsewhere)"
        ), command
    a_file = tmp_path / "data"
    a_file.write_text("")
    path = config(tmp_path, sqlite(a_file / "tokensvc.db"))
    for command in ("check-config", "serve", "migrate"):
        assert one_line(tokensvc(command, "--config", str(path))) == (
            f"tokensvc: config: database.url: {a_file} is not a directory (it is a file): point "
            "database.url elsewhere"
        ), command


async def test_auto_migrate_false_on_a_new_database_says_to_run_migrate(tmp_path: Path) -> None:
    database = tmp_path / "tokensvc.db"
    port = free_port()
    path = config(tmp_path, sqlite(database), port=port, database={"auto_migrate": False})
    assert one_line(tokensvc("serve", "--config", str(path))) == (
        "tokensvc: config: database.auto_migrate: is false and the database "
        f"{sqlite(database)} has no tokensvc schema yet: run `tokensvc migrate --config {path}` "
        "once (or set auto_migrate = true)"
    )
    assert not database.exists()  # nothing was created on the way

    # the fix works: migrate, then serve starts
    assert tokensvc("migrate", "--config", str(path)).returncode == 0
    replica = Replica("serve", path, port, tmp_path)
    await replica.start()
    await replica.stop()
    assert replica.process is not None and replica.process.returncode == 0

    # a database some newer tokensvc migrated is refused, whatever auto_migrate says
    with sqlite3.connect(database) as db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    assert one_line(tokensvc("serve", "--config", str(path))) == (
        f"tokensvc: config: database.url: the database {sqlite(database)} is at schema revision "
        "9999, which this tokensvc does not know (a newer tokensvc migrated it): run that "
        "newer version"
    )


async def test_migrate_waits_for_the_server_using_a_sqlite_database_to_stop(
    tmp_path: Path,
) -> None:
    port = free_port()
    path = config(tmp_path, sqlite(tmp_path / "tokensvc.db"), port=port)
    replica = Replica("serve", path, port, tmp_path)
    await replica.start()
    try:
        done = tokensvc("migrate", "--config", str(path))
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stderr.splitlines()[-1] == (
            f"tokensvc: the SQLite database {tmp_path / 'tokensvc.db'} is in use by a running "
            "tokensvc: stop it before migrating (serve migrates at start unless auto_migrate = "
            "false)"
        )
    finally:
        await replica.stop()
    assert tokensvc("migrate", "--config", str(path)).returncode == 0


def test_a_file_that_is_not_a_sqlite_database(tmp_path: Path) -> None:
    not_a_database = tmp_path / "config.toml.db"
    not_a_database.write_text("[server]\n")
    path = config(tmp_path, sqlite(not_a_database))
    assert one_line(tokensvc("serve", "--config", str(path))) == (
        f"tokensvc: config: database.url: {not_a_database} is not a SQLite database: point "
        "database.url at tokensvc's database file, or at a new file"
    )
    assert not_a_database.read_text() == "[server]\n"


@pytest.mark.parametrize("command", ["migrate", "serve"])
def test_an_unreachable_postgresql_is_named_with_its_password_masked(
    tmp_path: Path, command: str
) -> None:
    url = "postgresql+asyncpg://tokensvc:db-password-123@127.0.0.1:1/tokensvc"
    path = config(tmp_path, url)
    done = tokensvc(command, "--config", str(path))
    assert one_line(done) == (
        "tokensvc: config: database.url: cannot connect to "
        "postgresql+asyncpg://tokensvc:***@127.0.0.1:1/tokensvc: connection refused at "
        "127.0.0.1:1 (is PostgreSQL running there, on that address?)"
    )
    assert "db-password-123" not in done.stdout + done.stderr
    done = tokensvc(command, "--config", str(path), env={"TOKENSVC_DATABASE_URL": url})
    assert one_line(done).startswith("tokensvc: config: TOKENSVC_DATABASE_URL: cannot connect")


def test_a_busy_port_is_named_before_any_migration_runs(tmp_path: Path) -> None:
    database = tmp_path / "tokensvc.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = config(tmp_path, sqlite(database), port=port)
        assert one_line(tokensvc("serve", "--config", str(path))) == (
            f"tokensvc: config: server.port: {port} is already in use on 127.0.0.1: stop the "
            "other process or choose another port"
        )
        assert not database.exists()  # checked before the database was touched
        assert one_line(tokensvc("demo", "--port", str(port))) == (
            f"tokensvc: --port: {port} is already in use on 127.0.0.1: stop the other process "
            "or choose another port"
        )
        assert one_line(tokensvc("fake-wechat", "--port", str(port))) == (
            f"tokensvc: --port: {port} is already in use on 127.0.0.1: stop the other process "
            "or choose another port"
        )


def test_check_config_takes_config_like_the_other_commands_and_warns_about_a_shared_secret_file(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "classic.secret"
    secret.write_text("classic-secret-from-a-file\n")
    secret.chmod(0o644)
    path = config(tmp_path, sqlite(tmp_path / "t.db"))
    text = path.read_text().replace('secret_env = "CLASSIC_SECRET"', f'secret_file = "{secret}"')
    path.write_text(text)
    for args in (["--config", str(path)], [str(path)]):
        done = tokensvc("check-config", *args)
        assert done.returncode == 0, done.stderr
        assert done.stderr.splitlines() == [
            f"warning: config: apps[0].secret_file: {secret} is readable by other users; "
            f"run: chmod 600 {secret}"
        ]
        assert "config OK: 2 apps, 2 clients, admin key set" in done.stdout
        assert (
            f"  database {sqlite(tmp_path / 't.db')} (file {tmp_path / 't.db'}, created at "
            "start); schema migrated at start\n"
        ) in done.stdout
        assert "classic-secret-from-a-file" not in done.stdout + done.stderr
    done = tokensvc("check-config", env={"TOKENSVC_CONFIG": str(path)})
    assert done.returncode == 0, done.stderr
    assert one_line(tokensvc("check-config", str(path), "--config", "other.toml")) == (
        "tokensvc: --config: give the config file once (either FILE or --config FILE)"
    )


@pytest.mark.parametrize(
    "command", ["serve", "demo", "migrate", "keygen", "check-config", "fake-wechat"]
)
def test_every_command_describes_itself_and_each_option_with_its_default(command: str) -> None:
    done = tokensvc(command, "--help")
    assert done.returncode == 0
    usage, description, *sections = done.stdout.split("\n\n")
    assert usage.startswith(f"usage: tokensvc {command}")
    assert len(description.split()) >= 10, description  # a sentence, not a word
    options = "\n".join(sections)
    # every option (and positional) has a help text: a line that names it also says something
    entries = re.findall(r"^  (\S.*?)(?:\n(?=  \S)|\Z)", options, re.M | re.S)
    for entry in entries:
        if entry.startswith("-h, --help"):
            continue
        name, _, help_text = entry.partition("  ")
        assert help_text.strip(), f"{command}: {name} has no help"
    for option, default in {
        "demo": {"--port": "8080", "--ttl": "120"},
        "fake-wechat": {"--host": "127.0.0.1", "--port": "8081", "--ttl": "7200"},
        "serve": {"--config": "$TOKENSVC_CONFIG"},
        "migrate": {"--config": "$TOKENSVC_CONFIG"},
        "check-config": {"--config": "$TOKENSVC_CONFIG"},
    }.get(command, {}).items():
        entry = next(e for e in entries if e.startswith(option))
        assert f"(default: {default}" in " ".join(entry.split()), entry

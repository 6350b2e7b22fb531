"""Real ``tokensvc serve`` processes for multi-replica tests; output goes to a log file each."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from tests.conftest import CLASSIC_APPID, CLIENT_KEY, SECRET_ENV, STABLE_APPID
from tokensvc.web.auth import key_sha256


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    path: Path,
    *,
    api_base: str,
    port: int,
    database_url: str,
    rotation_window: float = 5,
    extra: str = "",
) -> Path:
    """A config file for the two test apps and the ``orders`` client."""
    path.write_text(f"""
[server]
host = "127.0.0.1"
port = {port}

[database]
url = "{database_url}"

[wechat]
api_base = "{api_base}"
timeout = 2
rotation_window = {rotation_window}

[refresh]
retry_base = 0.2
retry_max = 1
sync_interval = 0.2

{extra}

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
key_sha256 = "{key_sha256(CLIENT_KEY)}"
apps = ["*"]
""")
    return path


class Replica:
    """One ``tokensvc serve`` process; :meth:`start` again after :meth:`kill` restarts it."""

    def __init__(self, name: str, config: Path, port: int, log_dir: Path) -> None:
        self.name = name
        self.config = config
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self, *, wait: bool = True) -> None:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tokensvc",
                "serve",
                "--config",
                str(self.config),
                env={**os.environ, **SECRET_ENV},
                stdout=log,
                stderr=log,
            )
        if wait:
            await self.wait_healthy()

    async def wait_healthy(self, timeout: float = 30) -> None:
        async with aiohttp.ClientSession() as session:
            for _ in range(int(timeout / 0.1)):
                if not self.alive:
                    raise AssertionError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
                try:
                    async with session.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} did not become healthy")

    async def kill(self) -> None:
        """SIGKILL: no clean-up, as in a crash."""
        if self.process is not None and self.alive:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM and wait."""
        if self.process is not None and self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                await self.kill()

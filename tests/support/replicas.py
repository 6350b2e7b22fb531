"""Real ``tokensvc serve`` processes for multi-replica tests; output goes to a log file each.

Also what the tests see of the replicas' listening connections (``LISTEN`` for token changes)
from the database's side.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import asyncpg

from tests.support.config import SECRET_ENV
from tokensvc.store.notify import APPLICATION_NAME

_LISTENERS = (
    "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()"
)


async def _connect(database_url: str) -> asyncpg.Connection:
    return await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))


async def listener_pids(database_url: str) -> list[int]:
    """The server pids of the replicas' listening connections to this database."""
    conn = await _connect(database_url)
    try:
        return [row["pid"] for row in await conn.fetch(_LISTENERS, APPLICATION_NAME)]
    finally:
        await conn.close()


async def kill_listeners(database_url: str) -> int:
    """``pg_terminate_backend`` every listening connection, from a separate connection, as an
    operator or a failover would; how many were killed."""
    conn = await _connect(database_url)
    try:
        pids = [row["pid"] for row in await conn.fetch(_LISTENERS, APPLICATION_NAME)]
        for pid in pids:
            await conn.execute("SELECT pg_terminate_backend($1)", pid)
        return len(pids)
    finally:
        await conn.close()


class Replica:
    """One ``tokensvc serve`` process; :meth:`start` again after :meth:`kill` restarts it."""

    def __init__(self, name: str, config: Path, port: int, log_dir: Path) -> None:
        self.name = name
        self.config = config
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None

    def log_text(self) -> str:
        """Everything the process logged so far."""
        return self.log_path.read_text() if self.log_path.exists() else ""

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

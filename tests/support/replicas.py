"""Real ``tokensvc serve`` processes for multi-replica tests; output goes to a log file each."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp

from tests.support.config import SECRET_ENV


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

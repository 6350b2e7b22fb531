"""The container's HEALTHCHECK, ``python -m tokensvc.healthcheck``, against a real ``tokensvc
serve`` on a port that is not 8080: it follows the config, not a port written into the image."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.support.config import write_config
from tests.support.replicas import Replica
from tests.support.service import free_port


async def healthcheck(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokensvc.healthcheck",
        *args,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    _, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_healthcheck_follows_the_configured_port(fake_url: str, tmp_path: Path) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "config.toml",
        api_base=fake_url,
        port=port,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'tokensvc.db'}",
    )
    assert await healthcheck("--config", str(config)) == (
        1,
        f"healthcheck: http://127.0.0.1:{port}/healthz: <urlopen error [Errno 111] "
        "Connection refused>\n",
    )
    replica = Replica("serve", config, port, tmp_path)
    await replica.start()
    try:
        assert await healthcheck("--config", str(config)) == (0, "")
        assert (await healthcheck(env={"TOKENSVC_CONFIG": str(config)}))[0] == 0
    finally:
        await replica.stop()

    code, message = await healthcheck("--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "missing.toml" in message and "Traceback" not in message
    code, message = await healthcheck(env={})
    assert code == 2 and "TOKENSVC_CONFIG" in message

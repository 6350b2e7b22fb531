"""Benchmark: how soon a token written on one replica is served by another (PostgreSQL).

Starts a throwaway PostgreSQL cluster (Debian's postgresql server binaries, as the test suite
does; or uses ``--database-url``, an empty database), the WeChat simulator in this process, and
two ``tokensvc serve`` replicas, A and B, with the shipped defaults. Then ``--count`` times, at
random intervals of 20-100 ms: an operator's "refresh now" on A (a new classic token, committed
before A answers), and ``GET /token`` on B every millisecond from A's answer until B serves the
new version. Prints p50, p99 and the largest of those delays. Loopback only, bounded.

    .venv/bin/python scripts/bench_replicas.py [--count 300] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from benchlib import free_port

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.postgres import PostgresCluster, find_bindir
from tokensvc.simulator import FakeWechat, serve_fake

APPID = "wx0be9c4e91ca00001"
SECRET = "bench-secret-0d9c8b7a6f"  # the simulator's, for this run only
CLIENT_KEY = "bench-client-key-5a4b3c2d1e"
ADMIN_KEY = "bench-admin-key-9f8e7d6c5b"


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def write_config(path: Path, *, port: int, database_url: str, api_base: str) -> None:
    """A replica's config: one classic app, one client, the admin key; every other key at its
    shipped default."""
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}

[database]
url = "{database_url}"

[wechat]
api_base = "{api_base}"

[admin]
key_sha256 = "{_sha256(ADMIN_KEY)}"

[[apps]]
appid = "{APPID}"
name = "bench"
kind = "official_account"
token_api = "classic"
secret_env = "BENCH_SECRET"

[[clients]]
name = "bench"
key_sha256 = "{_sha256(CLIENT_KEY)}"
apps = ["*"]
"""
    )


class Replica:
    """One ``tokensvc serve`` subprocess, its output in a log file."""

    def __init__(self, name: str, workdir: Path, database_url: str, api_base: str) -> None:
        self.name = name
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.config = workdir / f"{name}.toml"
        self.log = workdir / f"{name}.log"
        write_config(self.config, port=port, database_url=database_url, api_base=api_base)
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the process (it migrates the database if needed)."""
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tokensvc",
                "serve",
                "--config",
                str(self.config),
                env={**os.environ, "BENCH_SECRET": SECRET},
                stdout=log,
                stderr=log,
            )

    async def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 15 s)."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    def failed(self) -> str:
        """Why the replica is of no use: its log's end."""
        return f"{self.name} did not serve a token; its log ends:\n{self.log.read_text()[-2000:]}"


async def served_version(session: aiohttp.ClientSession, replica: Replica) -> int | None:
    try:
        async with session.get(f"{replica.url}/v1/apps/{APPID}/token") as response:
            if response.status != 200:
                return None
            return int((await response.json())["version"])
    except aiohttp.ClientConnectionError:
        return None


async def rotate(session: aiohttp.ClientSession, replica: Replica) -> int:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with session.post(
        f"{replica.url}/v1/apps/{APPID}/token/rotate", headers=headers
    ) as response:
        body = await response.json()
        if response.status != 200 or not body.get("refreshed"):
            raise RuntimeError(f"refresh now on {replica.name} failed: {response.status} {body}")
        return int(body["version"])


async def measure(a: Replica, b: Replica, count: int) -> list[float]:
    """``count`` delays, seconds, from A's answer with a new version to B's first answer with it."""
    rng = random.Random(12)  # noqa: S311 - pauses between tokens
    lags: list[float] = []
    headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for replica in (a, b):
            for _ in range(300):
                if await served_version(session, replica) is not None:
                    break
                if replica.process is None or replica.process.returncode is not None:
                    raise RuntimeError(replica.failed())
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(replica.failed())
        for _ in range(count):
            await asyncio.sleep(rng.uniform(0.02, 0.1))
            version = await rotate(session, a)
            written = time.perf_counter()
            while True:
                served = await served_version(session, b)
                if served is not None and served >= version:
                    lags.append(time.perf_counter() - written)
                    break
                if time.perf_counter() - written > 10:
                    raise RuntimeError(f"B did not serve version {version} within 10 s")
                await asyncio.sleep(0.001)
    return lags


async def run(workdir: Path, count: int, database_url: str | None) -> list[float]:
    """Start the cluster (unless given a database), the simulator and two replicas; measure."""
    cluster = None
    replicas: list[Replica] = []
    try:
        if database_url is None:
            bindir = find_bindir()
            if bindir is None:
                raise SystemExit(
                    "PostgreSQL server binaries not found (apt-get install postgresql-15), "
                    "or pass --database-url"
                )
            cluster = PostgresCluster(bindir, workdir / "cluster")
            cluster.init()
            database_url = await cluster.create_database("bench")
        fake = FakeWechat(ttl=7200, rotation_window=300)
        fake.daily_quota = 1_000_000
        fake.add_app(APPID, SECRET)
        async with serve_fake(fake) as api_base:
            replicas = [Replica(n, workdir, database_url, api_base) for n in ("A", "B")]
            await asyncio.gather(*(r.start() for r in replicas))  # they take turns migrating
            return await measure(replicas[0], replicas[1], count)
    finally:
        await asyncio.gather(*(r.stop() for r in replicas))
        if cluster is not None:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=300, help="tokens written on A")
    parser.add_argument("--smoke", action="store_true", help="10 tokens: proves the bench works")
    parser.add_argument(
        "--database-url", help="an empty PostgreSQL database (postgresql+asyncpg://...)"
    )
    args = parser.parse_args()
    count = 10 if args.smoke else args.count
    workdir = Path(tempfile.mkdtemp(prefix="tokensvc-bench-replicas-"))
    workdir.chmod(0o755)  # the cluster may run as the unprivileged postgres user
    try:
        lags = sorted(asyncio.run(run(workdir, count, args.database_url)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    p50 = statistics.median(lags) * 1000
    p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000
    print(
        f"new token on replica A served by replica B: {len(lags)} tokens, p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms, max {lags[-1] * 1000:.1f} ms "
        "(from A's answer to B's first answer with it; B asked every ~1 ms)"
    )


if __name__ == "__main__":
    main()

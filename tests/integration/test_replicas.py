"""Several ``tokensvc serve`` replicas on one real PostgreSQL (started by the test suite).

They may skip only where the PostgreSQL server binaries are absent; ``.ci/run`` installs them
and sets ``TOKENSVC_REQUIRE_POSTGRES=1`` so that a missing cluster fails instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import (
    ADMIN_KEY,
    AUTH,
    CLASSIC_APPID,
    SECRET_ENV,
    SECRETS,
    STABLE_APPID,
    wait_until,
)
from tests.support.config import write_config
from tests.support.fakes import APPID, ScriptedWechat, make_manager
from tests.support.postgres import PostgresCluster
from tests.support.replicas import Replica, kill_listeners, listener_pids
from tests.support.service import free_port
from tokensvc.clock import FakeClock
from tokensvc.errors import RefreshDeferred, TokenUnavailable, WechatAPIError
from tokensvc.simulator import FakeWechat
from tokensvc.store.migrate import upgrade_to_head
from tokensvc.store.notify import TokenChangeListener
from tokensvc.store.repo import TokenStore, make_engine
from tokensvc.wechat.errcodes import classify

APPIDS = (CLASSIC_APPID, STABLE_APPID)
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
OTHER_APPID = "wx0000000000000002"
DB_PASSWORD = "db-password-5e2c7a91f0"  # the cluster trusts every login; never to be logged


@pytest.fixture
async def replicas(
    fake_url: str, database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[list[Replica]]:
    count = getattr(request, "param", 3)
    window = 4
    group = []
    with_password = database_url.replace("://postgres@", f"://postgres:{DB_PASSWORD}@")
    for i in range(count):
        port = free_port()
        config = write_config(
            tmp_path / f"r{i}.toml",
            api_base=fake_url,
            port=port,
            database_url=with_password,
            rotation_window=window,
        )
        group.append(Replica(f"replica{i}", config, port, tmp_path))
    await asyncio.gather(*(r.start() for r in group))
    try:
        yield group
    finally:
        await asyncio.gather(*(r.stop() for r in group))
        logs = "".join(r.log_path.read_text() for r in group if r.log_path.exists())
        for secret in [*SECRETS.values(), DB_PASSWORD]:
            assert secret not in logs


async def get_token(session: aiohttp.ClientSession, replica: Replica, appid: str) -> str | None:
    try:
        async with session.get(f"{replica.url}/v1/apps/{appid}/token", headers=AUTH) as response:
            if response.status != 200:
                return None
            return str((await response.json())["access_token"])
    except aiohttp.ClientConnectionError:
        return None


async def report_stale(
    session: aiohttp.ClientSession, replica: Replica, appid: str, stale: str | None
) -> str:
    """A passive refresh through ``replica``; must succeed; returns the token it answers."""
    async with session.post(
        f"{replica.url}/v1/apps/{appid}/token/refresh",
        headers=AUTH,
        json={"stale_token": stale, "errcode": 40001},
    ) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["access_token"])


async def served_version(
    session: aiohttp.ClientSession, replica: Replica, appid: str
) -> int | None:
    """The version of the token ``replica`` serves, or None when it serves none."""
    try:
        async with session.get(f"{replica.url}/v1/apps/{appid}/token", headers=AUTH) as response:
            if response.status != 200:
                return None
            return int((await response.json())["version"])
    except aiohttp.ClientConnectionError:
        return None


async def rotate(session: aiohttp.ClientSession, replica: Replica, appid: str) -> int:
    """An operator's "refresh now" on ``replica``; the new token's version (committed)."""
    async with session.post(
        f"{replica.url}/v1/apps/{appid}/token/rotate", headers=ADMIN
    ) as response:
        body = await response.json()
        assert response.status == 200 and body["refreshed"], body
        return int(body["version"])


async def propagation(
    session: aiohttp.ClientSession,
    group: list[Replica],
    appid: str,
    version: int,
    *,
    timeout: float = 3,
) -> list[float]:
    """Seconds from now until each replica of ``group`` serves ``version`` (or a later one)."""
    started = time.monotonic()

    async def one(replica: Replica) -> float:
        async def serves() -> bool:
            served = await served_version(session, replica, appid)
            return served is not None and served >= version

        await wait_until(serves, timeout=timeout, interval=0.005)
        return time.monotonic() - started

    return list(await asyncio.gather(*(one(r) for r in group)))


async def stopped_serving(
    session: aiohttp.ClientSession, replica: Replica, appid: str, dead: str, since: float
) -> float:
    """Seconds from ``since`` until a request to ``replica`` was sent whose answer was not
    ``dead`` (the answer itself may wait for the replacement, up to ``[wechat] timeout``)."""
    asked = since

    async def stopped() -> bool:
        nonlocal asked
        asked = time.monotonic()
        return await get_token(session, replica, appid) != dead

    await wait_until(stopped, timeout=5, interval=0.005)
    return asked - since


def _ms(lags: list[float]) -> str:
    return ", ".join(f"{lag * 1000:.0f} ms" for lag in lags)


async def wait_all_served(session: aiohttp.ClientSession, group: list[Replica]) -> None:
    async def all_served() -> bool:
        return all([await get_token(session, r, a) for r in group for a in APPIDS])

    await wait_until(all_served, timeout=20)


@pytest.mark.slow
async def test_random_kills_over_two_lifetimes_serve_no_invalid_token(
    fake: FakeWechat, replicas: list[Replica]
) -> None:
    fake.ttl, fake.rotation_window = 8.0, 4.0
    fake.revoke(CLASSIC_APPID)  # start the measured period with fresh 8-second tokens
    fake.revoke(STABLE_APPID)
    rng = random.Random(5)
    served = invalid = 0
    kills = 0
    async with aiohttp.ClientSession() as session:
        for appid in APPIDS:  # one passive refresh through replica 0 gets the short tokens in
            await report_stale(
                session, replicas[0], appid, await get_token(session, replicas[0], appid)
            )

        async def all_replicas_serve_valid_tokens() -> bool:
            tokens = [await get_token(session, r, a) for r in replicas for a in APPIDS]
            return all(t is not None and fake.is_valid(t) for t in tokens)

        await wait_until(all_replicas_serve_valid_tokens)  # the others learn it from the database
        start_calls = {a: fake.token_calls(a) for a in APPIDS}
        started = time.monotonic()
        duration = 2 * fake.ttl + 1

        async def killer() -> None:
            nonlocal kills
            while time.monotonic() - started < duration - 2:
                await asyncio.sleep(rng.uniform(1.0, 2.5))
                victim = rng.choice([r for r in replicas if r.alive])
                await victim.kill()
                kills += 1
                await asyncio.sleep(rng.uniform(0.3, 1.0))
                await victim.start(wait=False)

        killing = asyncio.create_task(killer())
        while time.monotonic() - started < duration:
            for replica in replicas:
                for appid in APPIDS:
                    token = await get_token(session, replica, appid)
                    if token is None:
                        continue
                    served += 1
                    if not fake.is_valid(token):
                        invalid += 1
            await asyncio.sleep(0.02)
        await killing
        calls = {a: fake.token_calls(a) - start_calls[a] for a in APPIDS}
    print(
        f"\nreplica kill test: {kills} kills, {served} tokens served, {invalid} invalid, "
        f"upstream token calls {calls} over {duration:.0f}s ({duration / fake.ttl:.1f} lifetimes)"
    )
    assert kills >= 4
    assert served > 300
    assert invalid == 0
    for appid in APPIDS:
        assert 1 <= calls[appid] <= 3 + kills, (appid, calls[appid], kills)


async def test_passive_storm_across_replicas_costs_one_upstream_call(
    fake: FakeWechat, replicas: list[Replica]
) -> None:
    async with aiohttp.ClientSession() as session:
        await wait_all_served(session, replicas)
        for appid in APPIDS:
            old = await get_token(session, replicas[0], appid)
            fake.revoke(appid)
            before = fake.token_calls(appid)

            answers = await asyncio.gather(
                *(report_stale(session, replicas[i % 3], appid, old) for i in range(300))
            )
            assert fake.token_calls(appid) == before + 1
            assert len(set(answers)) == 1 and fake.is_valid(answers[0])


async def test_a_new_token_reaches_the_other_replicas_as_it_commits(
    fake: FakeWechat, replicas: list[Replica]
) -> None:
    """Replicas hear of a write when it commits (LISTEN/NOTIFY), not at their next poll: five new
    tokens in a row all reach both other replicas in under half the poll interval, which polling
    every second would manage by chance once in a thousand runs."""
    lags: list[float] = []
    async with aiohttp.ClientSession() as session:
        await wait_all_served(session, replicas)
        for _ in range(5):
            version = await rotate(session, replicas[0], CLASSIC_APPID)
            lags += await propagation(session, replicas[1:], CLASSIC_APPID, version)
    print(f"\npropagation of a new token to the other replicas: {_ms(lags)}")
    assert max(lags) < 0.5


async def test_a_dead_mark_stops_the_other_replicas_serving_the_token_at_once(
    fake: FakeWechat, replicas: list[Replica]
) -> None:
    """A token WeChat proved dead on one replica, whose replacement failed, is no longer served
    by the others as soon as the dead mark commits (twice for each app: eight observations)."""
    first, others = replicas[0], replicas[1:]
    lags: list[float] = []
    async with aiohttp.ClientSession() as session:
        await wait_all_served(session, replicas)
        for appid, api in [
            (CLASSIC_APPID, "/cgi-bin/token"),
            (STABLE_APPID, "/cgi-bin/stable_token"),
        ] * 2:
            dead = await get_token(session, first, appid)
            assert dead is not None
            fake.revoke(appid)
            fake.inject(api, "busy", times=None)  # the replacement fails: only the mark is written
            async with session.post(
                f"{first.url}/v1/apps/{appid}/token/refresh",
                headers=AUTH,
                json={"stale_token": dead, "errcode": 40001},
            ) as response:
                assert response.status != 200, await response.text()
            marked = time.monotonic()
            lags += await asyncio.gather(
                *(stopped_serving(session, r, appid, dead, marked) for r in others)
            )
            fake.clear_faults()

            async def all_serve_a_valid_token(appid: str = appid) -> bool:
                tokens = [await get_token(session, r, appid) for r in replicas]
                return all(t is not None and fake.is_valid(t) for t in tokens)

            await wait_until(all_serve_a_valid_token, timeout=20)
    print(f"\na dead mark stopped the other replicas serving the token after: {_ms(lags)}")
    assert max(lags) < 0.5


@pytest.mark.parametrize("replicas", [2], indirect=True)
async def test_a_killed_listening_connection_falls_back_to_polling_and_comes_back(
    fake: FakeWechat, replicas: list[Replica], database_url: str
) -> None:
    first, second = replicas
    async with aiohttp.ClientSession() as session:
        await wait_all_served(session, replicas)

        async def both_listen() -> bool:
            return len(await listener_pids(database_url)) == len(replicas)

        await wait_until(both_listen)
        killed = 0
        stop = asyncio.Event()

        async def kill_until_stopped() -> bool:
            nonlocal killed
            if stop.is_set():  # no kill after the stop: it would go unseen for up to 1 s
                return True
            killed += await kill_listeners(database_url)
            return False

        # every listening connection is killed as soon as it (re)appears
        killing = asyncio.create_task(wait_until(kill_until_stopped, timeout=60, interval=0.02))
        await wait_until(lambda: killed >= len(replicas))
        for _ in range(3):  # polling keeps the replicas in sync meanwhile
            version = await rotate(session, first, CLASSIC_APPID)
            await propagation(session, [second], CLASSIC_APPID, version, timeout=5)
        stop.set()
        await killing

        def caught_up(replica: Replica) -> bool:
            """Listening again, LISTEN issued and the catch-up read done: the recovery line
            comes after the last loss line (a connection merely open is not yet listening)."""
            log = replica.log_text()
            return log.rfind("again after") > log.rfind("replica sync: not listening")

        await wait_until(both_listen, timeout=30)  # reconnected, with backoff
        await wait_until(lambda: all(caught_up(replica) for replica in replicas), timeout=30)
        lags: list[float] = []
        for _ in range(3):  # and notifications work again
            version = await rotate(session, first, CLASSIC_APPID)
            lags += await propagation(session, [second], CLASSIC_APPID, version)
    print(f"\n{killed} listening connections killed; propagation after they came back: {_ms(lags)}")
    assert max(lags) < 0.5
    for replica in replicas:
        log = replica.log_text()
        assert "replica sync: not listening for token changes on postgresql+asyncpg://" in log
        assert "listening for token changes on postgresql+asyncpg://postgres:***@" in log
        assert "again after" in log


@pytest.mark.parametrize("replicas", [2], indirect=True)
async def test_a_replica_that_loses_the_database_keeps_serving_and_reports_not_ready(
    fake: FakeWechat, replicas: list[Replica], postgres: PostgresCluster
) -> None:
    async with aiohttp.ClientSession() as session:
        await wait_all_served(session, replicas)
        async with session.get(f"{replicas[0].url}/readyz") as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ready"
        postgres.stop()
        try:
            for replica in replicas:
                token = await get_token(session, replica, CLASSIC_APPID)
                assert token is not None and fake.is_valid(token)
                async with session.get(f"{replica.url}/readyz") as response:
                    body = await response.json()
                    assert response.status == 503
                    assert body["database"] == "unavailable"
        finally:
            postgres.start()
        for replica in replicas:

            async def ready(replica: Replica = replica) -> bool:
                async with session.get(f"{replica.url}/readyz") as response:
                    return response.status == 200

            await wait_until(ready)
        # and it refreshes through the database again
        old = await get_token(session, replicas[1], CLASSIC_APPID)
        fake.revoke(CLASSIC_APPID)
        new = await report_stale(session, replicas[1], CLASSIC_APPID, old)

        async def learned() -> bool:
            return await get_token(session, replicas[0], CLASSIC_APPID) == new

        await wait_until(learned, timeout=5)


async def test_migrate_command_on_postgresql(
    database_url: str, postgres: PostgresCluster, tmp_path: Path
) -> None:
    import asyncpg

    config = write_config(
        tmp_path / "m.toml", api_base="http://127.0.0.1:1", port=8080, database_url=database_url
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokensvc",
        "migrate",
        "--config",
        str(config),
        env={**os.environ, **SECRET_ENV},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        tables = {r["tablename"] for r in await conn.fetch("select tablename from pg_tables")}
    finally:
        await conn.close()
    assert {"app_tokens", "alembic_version"} <= tables


@pytest.mark.parametrize("replicas", [2], indirect=True)
async def test_a_replica_killed_inside_the_row_lock_does_not_block_the_others(
    fake: FakeWechat, replicas: list[Replica]
) -> None:
    first, second = replicas
    async with aiohttp.ClientSession() as session:
        await wait_all_served(session, replicas)
        old = await get_token(session, first, STABLE_APPID)
        fake.revoke(STABLE_APPID)
        fake.inject("/cgi-bin/stable_token", "timeout")  # WeChat hangs on the first call
        calls = fake.token_calls(STABLE_APPID)
        stuck = asyncio.create_task(report_stale(session, first, STABLE_APPID, old))
        await wait_until(lambda: fake.token_calls(STABLE_APPID) == calls + 1)
        await first.kill()  # dies holding the row lock, mid-refresh
        with contextlib.suppress(aiohttp.ClientError):
            await stuck
        started = time.monotonic()
        new = await report_stale(session, second, STABLE_APPID, old)
        took = time.monotonic() - started
    print(f"\nreplica killed inside the row lock: the other refreshed {took * 1000:.0f} ms later")
    assert fake.is_valid(new) and new != old
    assert fake.token_calls(STABLE_APPID) == calls + 2  # the hung call and the survivor's
    assert took < 3


async def test_what_a_failed_replacement_writes_survives_on_postgresql(database_url: str) -> None:
    """The row lock is one transaction: a failure after the write must not roll the write back
    (dead mark, error, backoff and quota pause are what the other replicas go by)."""
    engine = make_engine(database_url)
    try:
        await upgrade_to_head(engine)
        store = TokenStore(engine)
        await store.ensure_apps([APPID])
        clock, wechat = FakeClock(), ScriptedWechat()
        one = make_manager(clock, wechat, store)  # type: ignore[arg-type]
        two = make_manager(clock, wechat, store)  # type: ignore[arg-type]
        await one.run_scheduled()
        token = one.current().access_token
        two.adopt((await store.load_all())[APPID])
        wechat.kill(token)
        wechat.fetch_script = [
            WechatAPIError(
                "/cgi-bin/token", 45009, "quota", None, classify(45009, token_endpoint=True)
            )
        ]
        with pytest.raises(WechatAPIError):
            await one.refresh_stale(token)
        row = (await store.load_all())[APPID]
        assert row.dead_at is not None and row.blocked_until is not None
        assert row.last_error is not None and row.last_error.errcode == 45009
        assert row.failures == 1 and row.retry_at is not None
        assert two.adopt(row) and two.served() is None  # the other replica stops serving it
        with pytest.raises((TokenUnavailable, RefreshDeferred)):
            await two.refresh_stale(token)  # and respects the pause: no call
        assert len(wechat.fetches) == 2
    finally:
        await engine.dispose()


async def test_the_listener_hears_committed_writes_only_and_reads_rows_as_the_pool_does(
    database_url: str,
) -> None:
    """What a replica adopts from a notification is the row as committed: a rolled-back write
    notifies no one, and the row read over the listening connection (a dead mark, its early
    death, the error) equals the one read through the pool."""
    engine = make_engine(database_url)
    listener = TokenChangeListener(engine)
    try:
        await upgrade_to_head(engine)
        store = TokenStore(engine)
        await store.ensure_apps([APPID, OTHER_APPID])
        heard: list[str] = []
        lost: list[str] = []
        await listener.listen(heard.append, lost.append)
        clock, wechat = FakeClock(), ScriptedWechat()
        manager = make_manager(clock, wechat, store)  # type: ignore[arg-type]
        await manager.run_scheduled()
        await wait_until(lambda: heard == [APPID])
        with pytest.raises(RuntimeError):
            async with store.lock(APPID) as row:
                await row.save(dataclasses.replace(row.record, revision=row.record.revision + 1))
                raise RuntimeError("rolled back")
        token = manager.current().access_token
        wechat.kill(token)
        wechat.fetch_script = [
            WechatAPIError("/cgi-bin/token", -1, "system busy", None, classify(-1))
        ]
        with pytest.raises(WechatAPIError):
            await manager.refresh_stale(token)
        async with store.lock(OTHER_APPID) as other:  # notifications arrive in commit order:
            await other.save(dataclasses.replace(other.record, revision=1))
        await wait_until(lambda: OTHER_APPID in heard)  # once this one is heard, all are
        assert heard == [APPID, APPID, OTHER_APPID]  # the token, its dead mark; no rollback
        stored = (await store.load_all())[APPID]
        assert stored.dead_at is not None and stored.early_deaths and stored.last_error
        assert await listener.read([APPID, "wx00000000000000ff"]) == {APPID: stored}
    finally:
        await listener.close()
        await engine.dispose()
    assert lost == []  # closing is not losing

"""TokenManager scheduling decisions on a fake clock shared with the simulator.

The simulator and the manager read the same FakeClock, so lifetimes of hours pass instantly and
every delay the scheduler would wait is checked exactly. (The simulator still answers over
loopback: it is the real server.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import CLASSIC_APPID, SECRET_ENV, STABLE_APPID, base_config
from tokensvc.clock import FakeClock
from tokensvc.config import Settings, parse_settings
from tokensvc.errors import TokenUnavailable
from tokensvc.simulator import FakeWechat, serve_fake
from tokensvc.store.migrate import upgrade_to_head
from tokensvc.store.repo import TokenStore, make_engine
from tokensvc.tokens.manager import TokenManager
from tokensvc.tokens.values import TokenState
from tokensvc.wechat.client import WechatClient

# 2026-11-21 10:00 in Beijing
START = datetime(2026, 11, 21, 2, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
async def managers(
    clock: FakeClock, tmp_path: Path
) -> AsyncIterator[tuple[FakeWechat, dict[str, TokenManager]]]:
    fake = FakeWechat(clock=clock, ttl=7200, rotation_window=300)
    fake.add_app(CLASSIC_APPID, SECRET_ENV["CLASSIC_SECRET"])
    fake.add_app(STABLE_APPID, SECRET_ENV["STABLE_SECRET"])
    async with serve_fake(fake) as url, aiohttp.ClientSession() as session:
        settings: Settings = parse_settings(
            base_config(url, f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
            | {"wechat": {"api_base": url, "timeout": 1, "rotation_window": 300}},
            env=SECRET_ENV,
        )
        engine = make_engine(settings.database.url)
        await upgrade_to_head(engine)
        store = TokenStore(engine)
        await store.ensure_apps([CLASSIC_APPID, STABLE_APPID])
        client = WechatClient(session, url, 1)
        built = {
            app.appid: TokenManager(
                app,
                client=client,
                store=store,
                clock=clock,
                wechat=settings.wechat,
                refresh=settings.refresh,
                rand=lambda: 0.999999,
            )
            for app in settings.apps
        }
        try:
            yield fake, built
        finally:
            await engine.dispose()


async def test_classic_schedule_follows_expires_in(
    clock: FakeClock, managers: tuple[FakeWechat, dict[str, TokenManager]]
) -> None:
    fake, by_app = managers
    manager = by_app[CLASSIC_APPID]
    delay = await manager.run_scheduled()  # start-up fetch
    assert delay == pytest.approx(7200 - 30 * 0 - 600, abs=0.01)  # classic_margin 600 s
    first = manager.current().access_token
    assert manager.current().expires_in == 7200 - 600 + 300 - 30
    clock.advance(delay - 10)
    assert await manager.run_scheduled() == pytest.approx(10, abs=0.01)  # not due yet
    assert fake.token_calls(CLASSIC_APPID) == 1
    clock.advance(10)
    await manager.run_scheduled()
    assert manager.current().access_token != first and fake.token_calls(CLASSIC_APPID) == 2
    assert manager.record.is_previous(first, clock.now())
    assert manager.record.previous_valid_until == pytest.approx(clock.now() + 300)
    fake.ttl = 3600  # WeChat changes expires_in: the schedule follows
    clock.advance(7200 - 600)
    delay = await manager.run_scheduled()
    assert delay == pytest.approx(3600 - 600, abs=0.01)


async def test_stable_refreshes_in_the_last_window_and_same_token_is_success(
    clock: FakeClock, managers: tuple[FakeWechat, dict[str, TokenManager]]
) -> None:
    fake, by_app = managers
    manager = by_app[STABLE_APPID]
    delay = await manager.run_scheduled()
    assert delay == pytest.approx(7200 - 240, abs=0.01)
    first = manager.current().access_token
    clock.advance(delay)
    await manager.run_scheduled()  # inside the last 300 s: WeChat hands out the next token
    assert manager.current().access_token != first and fake.is_valid(first)
    assert fake.forces == {}


async def test_failures_back_off_then_config_errors_wait_long_and_quota_waits_for_midnight(
    clock: FakeClock, managers: tuple[FakeWechat, dict[str, TokenManager]]
) -> None:
    fake, by_app = managers
    manager = by_app[CLASSIC_APPID]
    fake.inject("/cgi-bin/token", "busy", times=3)
    delays = []
    for _ in range(3):
        delays.append(await manager.run_scheduled())
        assert manager.next_refresh_at() == pytest.approx(clock.now() + delays[-1])
        assert await manager.run_scheduled() == pytest.approx(delays[-1])  # not yet: no call
        clock.advance(delays[-1])
    assert delays == pytest.approx([1, 2, 4], rel=0.01)  # retry_base 1 s, doubling
    assert fake.token_calls(CLASSIC_APPID) == 3
    assert manager.state() is TokenState.EXPIRED
    with pytest.raises(TokenUnavailable) as info:
        manager.current()
    assert info.value.errcode == -1
    await manager.run_scheduled()
    assert manager.state() is TokenState.FRESH

    fake.apps[CLASSIC_APPID] = "changed"
    clock.advance(7200)
    assert await manager.run_scheduled() == 600  # config_error_retry (default)
    assert manager.state() is TokenState.MISCONFIGURED

    fake.apps[CLASSIC_APPID] = SECRET_ENV["CLASSIC_SECRET"]
    assert manager.next_refresh_at() == pytest.approx(clock.now() + 600)  # the real next try
    clock.advance(600)
    fake.inject("/cgi-bin/token", "quota", times=None)
    delay = await manager.run_scheduled()
    midnight_beijing = datetime(2026, 11, 21, 16, 0, tzinfo=UTC).timestamp()
    assert clock.now() + delay == pytest.approx(midnight_beijing)
    calls = fake.token_calls(CLASSIC_APPID)
    clock.advance(60)
    assert await manager.run_scheduled() == pytest.approx(delay - 60)  # paused: no call
    assert fake.token_calls(CLASSIC_APPID) == calls

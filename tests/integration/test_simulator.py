"""The simulator keeps WeChat's documented token semantics (it is what every test relies on)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tokensvc.clock import FakeClock
from tokensvc.simulator import FakeWechat, serve_fake

APPID, SECRET = "wxsim0000000001", "sim-secret"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> FakeWechat:
    fake = FakeWechat(clock=clock, ttl=7200, rotation_window=300)
    fake.add_app(APPID, SECRET)
    return fake


@pytest.fixture
async def http(sim: FakeWechat) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with serve_fake(sim) as url, aiohttp.ClientSession() as session:
        yield session, url


async def classic(
    http: tuple[aiohttp.ClientSession, str], secret: str = SECRET
) -> dict[str, object]:
    session, url = http
    params = {"grant_type": "client_credential", "appid": APPID, "secret": secret}
    async with session.get(f"{url}/cgi-bin/token", params=params) as response:
        return dict(await response.json())


async def stable(
    http: tuple[aiohttp.ClientSession, str], force: bool = False, secret: str = SECRET
) -> dict[str, object]:
    session, url = http
    body = {
        "grant_type": "client_credential",
        "appid": APPID,
        "secret": secret,
        "force_refresh": force,
    }
    async with session.post(f"{url}/cgi-bin/stable_token", json=body) as response:
        return dict(await response.json())


async def test_classic_new_token_each_call_old_valid_for_the_window(
    sim: FakeWechat, clock: FakeClock, http: tuple[aiohttp.ClientSession, str]
) -> None:
    first = await classic(http)
    assert first["expires_in"] == 7200
    second = await classic(http)
    assert first["access_token"] != second["access_token"]
    assert sim.check(str(first["access_token"])) == 0
    clock.advance(301)
    assert sim.check(str(first["access_token"])) == 40001
    assert sim.check(str(second["access_token"])) == 0
    clock.advance(7200)
    assert sim.check(str(second["access_token"])) == 42001
    assert sim.check(None) == 41001


async def test_stable_normal_mode_same_token_until_the_last_window(
    sim: FakeWechat, clock: FakeClock, http: tuple[aiohttp.ClientSession, str]
) -> None:
    first = await stable(http)
    clock.advance(1000)
    again = await stable(http)
    assert again["access_token"] == first["access_token"] and again["expires_in"] == 6200
    clock.advance(6000)  # 200 s left: inside the last 300 s
    new = await stable(http)
    assert new["access_token"] != first["access_token"] and new["expires_in"] == 7200
    assert sim.check(str(first["access_token"])) == 0  # both valid until the old one expires


async def test_stable_force_mode_limits_and_chain_isolation(
    sim: FakeWechat, clock: FakeClock, http: tuple[aiohttp.ClientSession, str]
) -> None:
    classic_token = (await classic(http))["access_token"]
    first = await stable(http)
    forced = await stable(http, force=True)
    assert forced["access_token"] != first["access_token"]
    clock.advance(10)
    too_soon = await stable(http, force=True)  # under 30 s apart: no refresh
    assert too_soon["access_token"] == forced["access_token"]
    clock.advance(30)
    again = await stable(http, force=True)  # the second force kills the first token at once
    assert sim.check(str(first["access_token"])) == 40001
    assert sim.check(str(forced["access_token"])) == 0
    assert sim.check(str(again["access_token"])) == 0
    assert sim.check(str(classic_token)) == 0  # the classic chain is untouched
    for _ in range(18):
        clock.advance(31)
        await stable(http, force=True)
    clock.advance(31)
    assert (await stable(http, force=True))["errcode"] == 45009


async def test_wrong_credentials_and_quota(
    sim: FakeWechat, http: tuple[aiohttp.ClientSession, str]
) -> None:
    assert (await classic(http, secret="bad"))["errcode"] == 40001
    assert (await stable(http, secret="bad"))["errcode"] == 40125
    sim.daily_quota = 2
    await classic(http)
    await classic(http)
    answer = await classic(http)
    assert answer["errcode"] == 45009 and "rid:" in str(answer["errmsg"])


async def test_http_controls(sim: FakeWechat, http: tuple[aiohttp.ClientSession, str]) -> None:
    session, url = http
    token = str((await classic(http))["access_token"])
    async with session.post(f"{url}/_sim/revoke", json={"appid": APPID}) as response:
        assert response.status == 200
    assert sim.check(token) == 40001
    async with session.post(
        f"{url}/_sim/faults", json={"api": "/cgi-bin/token", "fault": "busy"}
    ) as response:
        assert response.status == 200
    assert (await classic(http))["errcode"] == -1
    async with session.get(f"{url}/_sim/stats") as response:
        stats = await response.json()
    assert stats["calls"]["/cgi-bin/token"][APPID] == 2

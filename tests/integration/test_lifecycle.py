"""Token lifecycle against the simulator with lifetimes of seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tests.conftest import ADMIN_KEY, AUTH, CLASSIC_APPID, STABLE_APPID, wait_until
from tests.support.service import Start, ready
from tokensvc.config import Settings
from tokensvc.simulator import FakeWechat
from tokensvc.tokens import timing


@pytest.mark.slow
async def test_steady_refresh_serves_only_valid_tokens_over_three_lifetimes(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    fake.ttl, fake.rotation_window = 6.0, 3.0
    client = await ready(start_service, make_settings(wechat={"rotation_window": 3}))
    served: dict[str, set[str]] = {CLASSIC_APPID: set(), STABLE_APPID: set()}
    invalid = 0
    requests = 0
    deadline = time.monotonic() + 3 * fake.ttl
    while time.monotonic() < deadline:
        for appid in served:
            response = await client.get(f"/v1/apps/{appid}/token", headers=AUTH)
            assert response.status == 200, await response.text()
            body = await response.json()
            requests += 1
            if not fake.is_valid(body["access_token"]):
                invalid += 1
            served[appid].add(body["access_token"])
            assert body["expires_in"] >= 0
        await asyncio.sleep(0.05)
    calls = {appid: fake.token_calls(appid) for appid in served}
    period = 0.75 * fake.ttl  # short lifetimes refresh a quarter of the lifetime before expiry
    print(
        f"\nsteady refresh: {requests} tokens served over 3 lifetimes of {fake.ttl:g}s, "
        f"{invalid} invalid; upstream token calls per app {calls} "
        f"(start-up + one per {period:g}s refresh period)"
    )
    assert invalid == 0
    assert requests > 200
    expected = 1 + int(3 * fake.ttl // period)  # start-up + one per refresh period
    for appid in served:
        assert expected - 1 <= calls[appid] <= expected + 1, (appid, calls[appid])
        # every token fetched was handed out (the last may arrive after the final poll)
        assert len(served[appid]) >= fake.token_calls(appid) - 1


async def test_restart_serves_the_stored_token_without_an_upstream_call(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    settings = make_settings()
    first = await ready(start_service, settings)
    tokens = {
        a: (await (await first.get(f"/v1/apps/{a}/token", headers=AUTH)).json())["access_token"]
        for a in (CLASSIC_APPID, STABLE_APPID)
    }
    await first.close()
    calls = fake.token_calls()
    second = await start_service(settings)
    for appid, token in tokens.items():
        response = await second.get(f"/v1/apps/{appid}/token", headers=AUTH)
        assert (await response.json())["access_token"] == token
    await asyncio.sleep(0.5)  # the scheduler's start-up run finds nothing due
    print(f"\nrestart: stored tokens served, {fake.token_calls() - calls} upstream calls")
    assert fake.token_calls() == calls


async def test_wechat_busy_for_a_whole_lifetime_then_recovery(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    fake.ttl, fake.rotation_window = 4.0, 2.0
    client = await ready(start_service, make_settings(wechat={"rotation_window": 2}))
    url = f"/v1/apps/{CLASSIC_APPID}/token"
    token = (await (await client.get(url, headers=AUTH)).json())["access_token"]
    fake.inject("/cgi-bin/token", "busy", times=None)
    expires = fake.tokens[token].expires_at
    # while the token is valid it keeps being served
    while fake.clock.now() < expires - 1.5:
        response = await client.get(url, headers=AUTH)
        assert response.status == 200, (await response.text(), expires - fake.clock.now())
        assert (await response.json())["access_token"] == token
        await asyncio.sleep(0.1)
    await wait_until(lambda: fake.clock.now() > expires, timeout=5)
    response = await client.get(url, headers=AUTH)
    body = await response.json()
    assert response.status == 503
    assert body["error"] == "token_unavailable" and body["errcode"] == -1
    busy_calls = fake.count("/cgi-bin/token", CLASSIC_APPID)
    assert busy_calls >= 3  # retried with backoff...
    assert busy_calls < 40  # ...but bounded (retry_max 0.5 s over ~4 s)
    fake.clear_faults()

    async def recovered() -> bool:
        response = await client.get(url, headers=AUTH)
        return response.status == 200 and fake.is_valid((await response.json())["access_token"])

    await wait_until(recovered, timeout=5)


async def test_wrong_secret_is_a_configuration_error_not_a_retry_loop(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    fake.apps[CLASSIC_APPID] = "rotated-secret"
    fake.apps[STABLE_APPID] = "rotated-secret"
    client = await start_service(make_settings())
    await wait_until(lambda: fake.token_calls(CLASSIC_APPID) and fake.token_calls(STABLE_APPID))
    response = await client.get(f"/v1/apps/{CLASSIC_APPID}/token", headers=AUTH)
    assert response.status == 503
    assert (await response.json())["errcode"] == 40001
    # the next attempt is config_error_retry (600 s) away, and the answer says so: no loop
    assert 590 <= int(response.headers["Retry-After"]) <= 600
    assert fake.token_calls(CLASSIC_APPID) == 1 and fake.token_calls(STABLE_APPID) == 1
    response = await client.get(f"/v1/apps/{STABLE_APPID}/token", headers=AUTH)
    assert (await response.json())["errcode"] == 40125


async def test_daily_quota_stops_calls(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    fake.inject("/cgi-bin/stable_token", "quota", times=None)
    client = await start_service(make_settings())
    await wait_until(lambda: fake.token_calls(STABLE_APPID) >= 1)
    response = await client.get(f"/v1/apps/{STABLE_APPID}/token", headers=AUTH)
    assert (await response.json())["errcode"] == 45009
    midnight = timing.next_quota_reset(time.time())
    assert int(response.headers["Retry-After"]) == pytest.approx(midnight - time.time(), abs=2)
    assert fake.token_calls(STABLE_APPID) == 1
    # a caller cannot push past the pause either
    response = await client.post(
        f"/v1/apps/{STABLE_APPID}/token/refresh", headers=AUTH, json={"stale_token": "x"}
    )
    assert response.status == 503 and "Retry-After" in response.headers
    assert fake.token_calls(STABLE_APPID) == 1


async def test_malformed_and_failed_answers_are_retried_not_stored(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    for fault in ("malformed", "http500", "timeout", "reset"):
        fake.inject("/cgi-bin/token", fault)
    client = await start_service(make_settings())

    async def served() -> bool:
        response = await client.get(f"/v1/apps/{CLASSIC_APPID}/token", headers=AUTH)
        return response.status == 200 and fake.is_valid((await response.json())["access_token"])

    await wait_until(served, timeout=15)
    assert fake.count("/cgi-bin/token", CLASSIC_APPID) == 5


async def test_a_token_from_outside_the_schedule_is_refreshed_on_its_own_schedule(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    """An operator's Refresh now (or a passive refresh) brings a token whose lifetime may be
    shorter than the one the scheduler's job was armed for: it is refreshed before it expires,
    not when the old token's refresh was planned."""
    fake.ttl, fake.rotation_window = 60.0, 2.0
    client = await ready(start_service, make_settings(wechat={"rotation_window": 2}))
    fake.ttl = 6.0  # WeChat now hands out shorter lifetimes (refreshed 1.5 s before expiry)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    response = await client.post(f"/v1/apps/{CLASSIC_APPID}/token/rotate", headers=admin)
    assert response.status == 200, await response.text()
    rotated = fake.token_calls(CLASSIC_APPID)
    deadline = time.monotonic() + 1.5 * fake.ttl
    while time.monotonic() < deadline:
        response = await client.get(f"/v1/apps/{CLASSIC_APPID}/token", headers=AUTH)
        assert response.status == 200, await response.text()
        assert fake.is_valid((await response.json())["access_token"])
        await asyncio.sleep(0.05)
    assert fake.token_calls(CLASSIC_APPID) > rotated  # refreshed on the 6 s token's schedule

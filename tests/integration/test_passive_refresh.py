"""Passive refresh: compare-and-refresh, probe before spending a refresh, one call per storm."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import AUTH, CLASSIC_APPID, STABLE_APPID
from tests.integration.test_token_api import ready
from tokensvc.config import Settings
from tokensvc.wechat.fake import FakeWechat

Start = Callable[[Settings], Awaitable[TestClient[Any, Any]]]


async def current(client: TestClient[Any, Any], appid: str) -> dict[str, Any]:
    response = await client.get(f"/v1/apps/{appid}/token", headers=AUTH)
    assert response.status == 200
    body: dict[str, Any] = await response.json()
    return body


async def test_storm_of_300_on_a_revoked_token_costs_one_upstream_call(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await ready(start_service, make_settings())
    for appid in (CLASSIC_APPID, STABLE_APPID):
        old = (await current(client, appid))["access_token"]
        fake.revoke(appid)
        calls_before = fake.token_calls(appid)
        probes_before = fake.count("/cgi-bin/getcallbackip")

        async def report(appid: str = appid, old: str = old) -> dict[str, Any]:
            response = await client.post(
                f"/v1/apps/{appid}/token/refresh",
                headers=AUTH,
                json={"stale_token": old, "errcode": 40001},
            )
            assert response.status == 200, await response.text()
            body: dict[str, Any] = await response.json()
            return body

        answers = await asyncio.gather(*(report() for _ in range(300)))
        print(
            f"\nstorm on {appid}: 300 reports -> {fake.token_calls(appid) - calls_before} "
            f"token call, {fake.count('/cgi-bin/getcallbackip') - probes_before} probe"
        )
        assert fake.token_calls(appid) == calls_before + 1
        assert fake.count("/cgi-bin/getcallbackip") == probes_before + 1
        tokens = {a["access_token"] for a in answers}
        assert len(tokens) == 1 and old not in tokens
        assert fake.is_valid(tokens.pop())
        assert sum(a["refreshed"] for a in answers) >= 1
        # a latecomer with the old token gets the new one at no cost
        late = await client.post(
            f"/v1/apps/{appid}/token/refresh", headers=AUTH, json={"stale_token": old}
        )
        assert (await late.json())["refreshed"] is False
        assert fake.token_calls(appid) == calls_before + 1


async def test_a_false_claim_costs_no_refresh(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await ready(start_service, make_settings())
    token = (await current(client, STABLE_APPID))["access_token"]
    before = fake.token_calls()
    response = await client.post(
        f"/v1/apps/{STABLE_APPID}/token/refresh",
        headers=AUTH,
        json={"stale_token": token, "errcode": 40001},
    )
    body = await response.json()
    assert response.status == 200
    assert body["refreshed"] is False and body["access_token"] == token
    assert fake.token_calls() == before
    # a token that was never ours gets the current one, with no call at all
    probes = fake.count("/cgi-bin/getcallbackip")
    response = await client.post(
        f"/v1/apps/{STABLE_APPID}/token/refresh",
        headers=AUTH,
        json={"stale_token": "some-old-token"},
    )
    assert (await response.json())["access_token"] == token
    assert fake.token_calls() == before and fake.count("/cgi-bin/getcallbackip") == probes


async def test_probe_that_cannot_answer_means_refresh(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await ready(start_service, make_settings())
    token = (await current(client, CLASSIC_APPID))["access_token"]
    fake.inject("/cgi-bin/getcallbackip", "http500")
    before = fake.token_calls(CLASSIC_APPID)
    response = await client.post(
        f"/v1/apps/{CLASSIC_APPID}/token/refresh", headers=AUTH, json={"stale_token": token}
    )
    body = await response.json()
    assert body["refreshed"] is True and body["access_token"] != token
    assert fake.token_calls(CLASSIC_APPID) == before + 1


async def test_verified_refreshes_are_rate_limited(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await ready(start_service, make_settings(refresh={"passive_min_interval": 30}))
    token = (await current(client, STABLE_APPID))["access_token"]
    fake.revoke(STABLE_APPID)
    before = fake.token_calls(STABLE_APPID)
    response = await client.post(
        f"/v1/apps/{STABLE_APPID}/token/refresh", headers=AUTH, json={"stale_token": token}
    )
    assert response.status == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 30
    assert (await response.json())["error"] == "rate_limited"
    assert fake.token_calls(STABLE_APPID) == before


async def test_stable_apps_never_force_refresh_for_a_caller(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await ready(start_service, make_settings())
    token = (await current(client, STABLE_APPID))["access_token"]
    fake.revoke(STABLE_APPID)
    await client.post(
        f"/v1/apps/{STABLE_APPID}/token/refresh", headers=AUTH, json={"stale_token": token}
    )
    assert fake.forces == {}  # no force_refresh call reached the simulator

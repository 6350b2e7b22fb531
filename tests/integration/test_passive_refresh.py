"""Passive refresh: compare-and-refresh, probe before spending a refresh, one call per storm."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import AUTH, CLASSIC_APPID, STABLE_APPID, wait_until
from tests.support.service import Start, ready
from tokensvc.config import Settings
from tokensvc.simulator import FakeWechat


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

        started = time.monotonic()
        answers = await asyncio.gather(*(report() for _ in range(300)))
        served = await current(client, appid)
        elapsed = time.monotonic() - started
        assert served["access_token"] != old and fake.is_valid(served["access_token"])
        print(
            f"\nstorm on {appid}: 300 reports -> {fake.token_calls(appid) - calls_before} "
            f"token call, {fake.count('/cgi-bin/getcallbackip') - probes_before} probe; "
            f"kill to a valid token served {elapsed * 1000:.0f} ms"
        )
        assert fake.token_calls(appid) == calls_before + 1
        assert fake.count("/cgi-bin/getcallbackip") == probes_before + 1
        tokens = {a["access_token"] for a in answers}
        assert len(tokens) == 1 and old not in tokens
        assert all(a["verified"] for a in answers)
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


async def test_claims_the_probe_cannot_judge_spend_a_small_budget(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await ready(start_service, make_settings())
    fake.inject("/cgi-bin/getcallbackip", "http500", times=None)  # the probe is broken
    before = fake.token_calls(CLASSIC_APPID)
    answers = []
    for _ in range(20):  # reports of the current, valid token
        token = (await current(client, CLASSIC_APPID))["access_token"]
        response = await client.post(
            f"/v1/apps/{CLASSIC_APPID}/token/refresh", headers=AUTH, json={"stale_token": token}
        )
        assert response.status == 200
        answers.append(await response.json())
    assert fake.token_calls(CLASSIC_APPID) == before + 3  # [refresh] unverified_budget
    assert [a["refreshed"] for a in answers] == [True] * 3 + [False] * 17
    assert not any(a["verified"] for a in answers)
    assert all(fake.is_valid(a["access_token"]) for a in answers)


async def test_a_dead_token_is_never_served_while_its_replacement_is_fetched(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await ready(start_service, make_settings())
    old = (await current(client, CLASSIC_APPID))["access_token"]
    fake.revoke(CLASSIC_APPID)  # a legacy service fetched with the AppSecret, or a leak
    fake.inject("/cgi-bin/token", "busy")  # the first replacement fails; the retry succeeds

    async def read() -> tuple[int, str | None]:
        response = await client.get(f"/v1/apps/{CLASSIC_APPID}/token", headers=AUTH)
        body = await response.json()
        return response.status, body.get("access_token")

    report = await client.post(
        f"/v1/apps/{CLASSIC_APPID}/token/refresh", headers=AUTH, json={"stale_token": old}
    )
    assert report.status == 503 and int(report.headers["Retry-After"]) >= 1
    reads = await asyncio.gather(*(read() for _ in range(50)))  # they wait for the retry
    assert {status for status, _ in reads} == {200}
    assert old not in {token for _, token in reads}
    assert all(fake.is_valid(token) for _, token in reads if token)


async def test_reports_against_a_misconfigured_app_make_no_upstream_call(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    fake.apps[STABLE_APPID] = "rotated-secret"  # the AppSecret was reset in the console
    client = await start_service(make_settings())
    await wait_until(lambda: fake.token_calls(STABLE_APPID) == 1)
    for n in range(80):
        response = await client.post(
            f"/v1/apps/{STABLE_APPID}/token/refresh",
            headers=AUTH,
            json={"stale_token": f"token-{n}", "errcode": 40001},
        )
        assert response.status == 503
        assert (await response.json())["errcode"] == 40125
        assert 590 <= int(response.headers["Retry-After"]) <= 600  # config_error_retry
    print(f"\n80 reports against a misconfigured app: {fake.token_calls(STABLE_APPID) - 1} calls")
    assert fake.token_calls(STABLE_APPID) == 1


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

"""A fight: another system keeps fetching the classic token with the AppSecret.

A rogue client calls the simulator's ``/cgi-bin/token`` every half second for several token
lifetimes, so every token tokensvc fetches dies early (2 s after the rogue's next call). A
business client polls ``GET /token`` and reports every token WeChat rejects, as an SDK would
after 40001. Shipped ``[refresh]`` defaults; time is scaled by 20-second tokens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.conftest import ADMIN_KEY, AUTH, CLASSIC_APPID, SECRETS, wait_until
from tests.support.service import Start, ready
from tokensvc.config import Settings
from tokensvc.simulator import FakeWechat

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
FIGHT_SECONDS = 12.0


@pytest.mark.slow
async def test_a_fight_is_bounded_shown_as_contested_and_recovers(
    fake: FakeWechat, fake_url: str, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await ready(start_service, make_settings())
    fake.ttl, fake.rotation_window = 20.0, 2.0
    fake.revoke(CLASSIC_APPID)  # start with a 20-second token
    old = await (await client.get(f"/v1/apps/{CLASSIC_APPID}/token", headers=AUTH)).json()
    await client.post(
        f"/v1/apps/{CLASSIC_APPID}/token/refresh",
        headers=AUTH,
        json={"stale_token": old["access_token"]},
    )
    before = fake.count("/cgi-bin/token", CLASSIC_APPID)
    rogue_calls = 0
    served: list[tuple[float, str]] = []  # (when, token) of every 200 from GET /token
    reported: dict[str, float] = {}  # token -> when WeChat's rejection was reported
    states: set[str] = set()
    ready_while_contested: list[int] = []
    started = time.monotonic()

    async def rogue(session: aiohttp.ClientSession) -> None:
        nonlocal rogue_calls
        params = {
            "grant_type": "client_credential",
            "appid": CLASSIC_APPID,
            "secret": SECRETS[CLASSIC_APPID],
        }
        while time.monotonic() - started < FIGHT_SECONDS:
            async with session.get(f"{fake_url}/cgi-bin/token", params=params) as response:
                assert "access_token" in await response.json()
            rogue_calls += 1
            await asyncio.sleep(0.5)

    async def business() -> None:
        while time.monotonic() - started < FIGHT_SECONDS + 1:
            response = await client.get(f"/v1/apps/{CLASSIC_APPID}/token", headers=AUTH)
            if response.status == 200:
                token = (await response.json())["access_token"]
                served.append((time.monotonic(), token))
                if not fake.is_valid(token) and token not in reported:
                    reported[token] = time.monotonic()
                    await client.post(
                        f"/v1/apps/{CLASSIC_APPID}/token/refresh",
                        headers=AUTH,
                        json={"stale_token": token, "errcode": 40001},
                    )
            else:
                assert response.status == 503 and "Retry-After" in response.headers
            await asyncio.sleep(0.1)

    async def operator() -> None:
        while time.monotonic() - started < FIGHT_SECONDS + 1:
            status = await (await client.get("/v1/status", headers=ADMIN)).json()
            app = next(a for a in status["apps"] if a["appid"] == CLASSIC_APPID)
            state = app["state"]
            states.add(state)
            if state == "fresh":
                assert app["notice"] is None
            if state == "contested":
                assert "remove the AppSecret" in app["notice"]
                ready_while_contested.append((await client.get("/readyz")).status)
            await asyncio.sleep(0.2)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(rogue(session), business(), operator())
    ours = fake.count("/cgi-bin/token", CLASSIC_APPID) - before - rogue_calls
    late = [t for when, t in served if t in reported and when > reported[t] + 0.05]
    print(
        f"\nfight: {FIGHT_SECONDS:.0f}s, rogue {rogue_calls} calls, tokensvc {ours} token calls, "
        f"{len(reported)} tokens reported dead, states seen {sorted(states)}"
    )
    assert "contested" in states
    assert ready_while_contested and set(ready_while_contested) == {200}
    assert not late  # a token reported dead is never served again
    # at most one replacement per death, and a token dies 2 s (WeChat's window) after the
    # rogue's next call: bounded by the fight's length over that window, plus the first
    assert ours <= FIGHT_SECONDS / 2 + 2
    metrics = (await (await client.get("/metrics", headers=ADMIN)).read()).decode()
    assert f'tokensvc_token_proven_dead_total{{appid="{CLASSIC_APPID}"}}' in metrics

    async def recovered() -> bool:
        status = await (await client.get("/v1/status", headers=ADMIN)).json()
        app: dict[str, Any] = next(a for a in status["apps"] if a["appid"] == CLASSIC_APPID)
        if app["state"] != "fresh":
            return False
        response = await client.get(f"/v1/apps/{CLASSIC_APPID}/token", headers=AUTH)
        if response.status != 200:
            return False
        token = (await response.json())["access_token"]
        if not fake.is_valid(token):
            await client.post(
                f"/v1/apps/{CLASSIC_APPID}/token/refresh", headers=AUTH, json={"stale_token": token}
            )
            return False
        return True

    await wait_until(recovered, timeout=20)  # the contest window (10 s) passes quietly
    events = (await (await client.get("/v1/status", headers=ADMIN)).json())["events"]
    contested = [e for e in events if e["outcome"] == "contested"]
    assert contested and "remove its AppSecret" in contested[0]["errmsg"]

"""WeChat's daily quotas read with ``quota/get`` against the simulator, whose counts are the
calls it served: the token API and the most forwarded APIs, what a round can afford, the
warning before 45009, and the metric, ``/v1/status`` and page that show it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN_KEY, AUTH, CLASSIC_APPID, SECRETS, STABLE_APPID
from tests.support.service import Start, ready, wait_until
from tokensvc.clock import SystemClock
from tokensvc.quota import QuotaWatcher
from tokensvc.simulator import FakeWechat
from tokensvc.store.calls import FLUSH_SECONDS, CallCounter
from tokensvc.store.migrate import upgrade_to_head
from tokensvc.store.repo import TokenStore, make_engine
from tokensvc.web.keys import CALLS, CLIENT, CLOCK, MANAGERS, QUOTA, STORE

QUOTA_API = "/cgi-bin/openapi/quota/get"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TEMPLATE = {"touser": "o-1", "template_id": "t-1", "data": {"first": {"value": "hi"}}}


@pytest.fixture
async def service(start_service: Start, make_settings: Any) -> TestClient[Any, Any]:
    return await ready(start_service, make_settings())


def watcher_of(service: TestClient[Any, Any]) -> QuotaWatcher:
    """A watcher on the running service's WeChat client and managers (never started as a loop:
    the test runs its rounds)."""
    app = service.server.app
    return QuotaWatcher(app[CLIENT], app[MANAGERS], app[CLOCK], calls=app[CALLS])


async def test_quota_readings_match_what_wechat_served(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    for _ in range(3):
        response = await service.post(
            f"/v1/apps/{CLASSIC_APPID}/messages/template", json=TEMPLATE, headers=AUTH
        )
        assert (await response.json())["errcode"] == 0
    watcher = watcher_of(service)  # the proxy counted the 3 sends
    service.server.app[CALLS].note(CLASSIC_APPID, "/sns/jscode2session")  # not reported: 76022

    manager = service.server.app[MANAGERS][CLASSIC_APPID]
    await watcher.check(manager)
    readings = {r.api: r for r in watcher.readings(CLASSIC_APPID)}
    assert readings["/cgi-bin/token"].used == fake.token_calls(CLASSIC_APPID) >= 1
    assert readings["/cgi-bin/token"].daily_limit == 2000 and not readings["/cgi-bin/token"].low
    assert readings["/cgi-bin/message/template/send"].used == 3
    assert "/sns/jscode2session" not in readings
    assert readings["/cgi-bin/token"].as_json()["remain"] == 2000 - fake.token_calls(CLASSIC_APPID)

    # 76022 is remembered for the day: the next round asks for the other two only
    asked = fake.count(QUOTA_API)
    await watcher.check(manager)
    assert fake.count(QUOTA_API) == asked + 2

    stable = service.server.app[MANAGERS][STABLE_APPID]
    await watcher.check(stable)
    assert [r.api for r in watcher.readings(STABLE_APPID)] == ["/cgi-bin/stable_token"]


async def test_low_quota_warns_once_and_quota_get_over_quota_stops_reading(
    fake: FakeWechat,
    fake_url: str,
    service: TestClient[Any, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.daily_quota = 20
    body = {"grant_type": "client_credential", "appid": STABLE_APPID}
    body["secret"] = SECRETS[STABLE_APPID]
    async with aiohttp.ClientSession() as session:  # another system spends the quota
        while fake.token_calls(STABLE_APPID) < 19:
            async with session.post(f"{fake_url}/cgi-bin/stable_token", json=body) as answer:
                assert "access_token" in await answer.json()
    watcher = service.server.app[QUOTA]  # the running service's: its warning is an event too
    manager = service.server.app[MANAGERS][STABLE_APPID]
    with caplog.at_level(logging.WARNING, logger="tokensvc.quota"):
        await watcher.check(manager)
        await watcher.check(manager)
    (reading,) = watcher.readings(STABLE_APPID)
    assert reading.low and reading.remain == 1 and reading.used == 19
    logged = [record.getMessage() for record in caplog.records]
    warnings = [line for line in logged if "quota of /cgi-bin/stable_token is low" in line]
    assert len(warnings) == 1 and "1 of 20 left" in warnings[0]
    assert SECRETS[STABLE_APPID] not in caplog.text

    # the operator sees it: a notice and a quota_low event in /v1/status, a red reading on the page
    async def status() -> dict[str, Any]:
        answer = await service.get("/v1/status", headers=ADMIN)
        assert answer.status == 200
        document: dict[str, Any] = await answer.json()
        return document

    async def low_event() -> list[dict[str, Any]]:
        events = (await status())["events"]
        return [e for e in events if e["outcome"] == "quota_low" and e["appid"] == STABLE_APPID]

    await wait_until(low_event)
    (event,) = await low_event()
    assert event["trigger"] == "quota" and "1 of 20 calls left" in event["errmsg"]
    app = next(a for a in (await status())["apps"] if a["appid"] == STABLE_APPID)
    assert app["quota"][0]["low"] is True and app["quota"][0]["remain"] == 1
    assert app["notice"].startswith("WeChat quota low (/cgi-bin/stable_token: 1 of 20 calls left)")
    page = await (await service.get(f"/status?app={STABLE_APPID}", headers=ADMIN)).text()
    assert 'data-api="/cgi-bin/stable_token" data-low="true"' in page
    assert "low: 1 left" in page and 'data-outcome="quota_low"' in page

    fake.inject(QUOTA_API, "quota")
    await watcher.check(manager)  # 45009 from quota/get itself
    asked = fake.count(QUOTA_API)
    await watcher.check(manager)
    assert fake.count(QUOTA_API) == asked  # nothing more until midnight China time


async def test_an_app_without_a_valid_token_is_not_read(
    fake: FakeWechat, start_service: Start, make_settings: Any
) -> None:
    fake.apps[STABLE_APPID] = "rotated-secret"
    service = await start_service(make_settings())
    watcher = watcher_of(service)
    await watcher.check(service.server.app[MANAGERS][STABLE_APPID])
    assert fake.count(QUOTA_API) == 0 and watcher.readings(STABLE_APPID) == []


async def test_the_running_service_exports_its_readings(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    app = service.server.app
    watcher = app[QUOTA]
    assert watcher.interval == 600 and watcher.first_delay == 30  # the shipped defaults
    response = await service.post(
        f"/v1/apps/{CLASSIC_APPID}/messages/template", json=TEMPLATE, headers=AUTH
    )
    assert (await response.json())["errcode"] == 0
    manager = app[MANAGERS][CLASSIC_APPID]
    assert await watcher.apis(manager) == ["/cgi-bin/token", "/cgi-bin/message/template/send"]
    await watcher.check(manager)  # the round the loop runs every 10 minutes
    metrics = await (
        await service.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    ).text()
    remain = 2000 - fake.token_calls(CLASSIC_APPID)
    line = f'tokensvc_wechat_quota_remaining{{api="/cgi-bin/token",appid="{CLASSIC_APPID}"}}'
    assert f"{line} {remain}.0" in metrics
    assert (
        "tokensvc_wechat_quota_limit{"
        f'api="/cgi-bin/message/template/send",appid="{CLASSIC_APPID}"}} 2000.0'
    ) in metrics

    # the same readings in /v1/status and on the page, with what tokensvc forwarded today
    document = await (await service.get("/v1/status", headers=ADMIN)).json()
    status = next(a for a in document["apps"] if a["appid"] == CLASSIC_APPID)
    by_api = {q["api"]: q for q in status["quota"]}
    assert by_api["/cgi-bin/token"]["used"] == fake.token_calls(CLASSIC_APPID)
    assert by_api["/cgi-bin/message/template/send"]["used"] == 1
    assert by_api["/cgi-bin/token"]["low"] is False and status["notice"] is None
    assert status["forwarded_today"] == {"/cgi-bin/message/template/send": 1}
    page = await (await service.get(f"/status?app={CLASSIC_APPID}", headers=ADMIN)).text()
    assert 'data-api="/cgi-bin/message/template/send" data-low="false"' in page
    assert "<code>/cgi-bin/message/template/send</code> 1 / 2,000" in page


async def test_a_round_reads_every_app_within_seconds_not_spread_over_the_interval(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    """With few apps the first round still ends within a second or two (the demo's two apps
    used to be read 5 minutes apart: the 10-minute interval divided by two)."""
    app = service.server.app
    watcher = QuotaWatcher(app[CLIENT], app[MANAGERS], app[CLOCK], first_delay=0.0)
    assert watcher.interval == 600  # the shipped interval
    task = asyncio.create_task(watcher.run())
    try:
        await wait_until(lambda: all(watcher.readings(appid) for appid in app[MANAGERS]), 5.0)
    finally:
        task.cancel()
    assert fake.count(QUOTA_API) == len(app[MANAGERS])  # one round: one reading per app


async def test_forwarded_calls_are_stored_and_summed_over_replicas(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    """The calls tokensvc forwarded today are written to ``api_calls`` (every minute and at
    shutdown) and ``/v1/status`` shows every replica's sum, also for an API ``quota/get`` does
    not report."""
    app = service.server.app
    for _ in range(2):
        response = await service.post(
            f"/v1/apps/{CLASSIC_APPID}/messages/template", json=TEMPLATE, headers=AUTH
        )
        assert (await response.json())["errcode"] == 0
    assert FLUSH_SECONDS == 60
    await app[CALLS].flush()  # what the service's loop does every minute
    other = CallCounter(app[STORE], app[CLOCK])  # another replica on the same database
    for _ in range(5):
        other.note(CLASSIC_APPID, "/cgi-bin/message/template/send")
    other.note(CLASSIC_APPID, "/wxa/getwxacodeunlimit")
    await other.flush()
    app[CALLS].note(CLASSIC_APPID, "/wxa/getwxacodeunlimit")  # not written yet: counted too

    document = await (await service.get("/v1/status", headers=ADMIN)).json()
    status = next(a for a in document["apps"] if a["appid"] == CLASSIC_APPID)
    assert status["forwarded_today"] == {
        "/cgi-bin/message/template/send": 7,
        "/wxa/getwxacodeunlimit": 2,
    }
    assert list(status["forwarded_today"]) == [
        "/cgi-bin/message/template/send",
        "/wxa/getwxacodeunlimit",
    ]  # most called first
    assert await CallCounter(app[STORE], app[CLOCK]).today([CLASSIC_APPID]) == {
        CLASSIC_APPID: {"/cgi-bin/message/template/send": 7, "/wxa/getwxacodeunlimit": 1}
    }  # what is in the table: the last call is still in the service's memory


async def test_forwarded_call_counts_add_up_on_postgresql(database_url: str) -> None:
    """Two replicas' counters on one PostgreSQL database: each flush adds to the day's row (the
    upsert's ``calls + excluded.calls``), and a count not yet written is counted by its own
    replica."""
    engine = make_engine(database_url)
    try:
        await upgrade_to_head(engine)
        store, clock = TokenStore(engine), SystemClock()
        first, second = CallCounter(store, clock), CallCounter(store, clock)
        for counter, calls in ((first, 3), (second, 4), (first, 2)):
            for _ in range(calls):
                counter.note(CLASSIC_APPID, "/cgi-bin/message/custom/send")
            await counter.flush()
        second.note(STABLE_APPID, "/wxa/msg_sec_check")
        assert await first.today() == {CLASSIC_APPID: {"/cgi-bin/message/custom/send": 9}}
        assert await second.today([STABLE_APPID]) == {STABLE_APPID: {"/wxa/msg_sec_check": 1}}
    finally:
        await engine.dispose()

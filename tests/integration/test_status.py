"""Operator endpoints against the simulator: status JSON, actions, events, metrics, readiness."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import (
    ADMIN_KEY,
    AUTH,
    CLASSIC_APPID,
    CLIENT_KEY,
    SECRETS,
    STABLE_APPID,
    base_config,
    wait_until,
)
from tests.support.service import Start, ready
from tokensvc.config import AdminConfig, Settings
from tokensvc.secret import fingerprint
from tokensvc.simulator import FakeWechat
from tokensvc.status_report import AppStatus
from tokensvc.store.events import EventLog
from tokensvc.store.migrate import upgrade_to_head
from tokensvc.store.repo import TokenStore, make_engine
from tokensvc.tokens.values import RefreshAttempt, TokenState, Trigger
from tokensvc.web.keys import EVENTS
from tokensvc.web.status_view import (
    STRIP_SLOT_SECONDS,
    STRIP_SLOTS,
    Formatter,
    day_strip,
    duration,
    group_events,
    lifetime_bar,
    strip_start,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def instant(text: str) -> float:
    """UTC epoch seconds of an RFC 3339 ``...Z`` instant."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()}


async def status(client: TestClient[Any, Any]) -> dict[str, Any]:
    await client.app[EVENTS].flush()
    response = await client.get("/v1/status", headers=ADMIN)
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def app_of(document: dict[str, Any], appid: str) -> dict[str, Any]:
    return next(a for a in document["apps"] if a["appid"] == appid)


async def test_operator_endpoints_need_the_admin_key(
    make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await ready(start_service, make_settings())
    for path in ("/status", "/v1/status", "/metrics"):
        response = await client.get(path)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        assert (await client.get(path, headers=basic("wrong"))).status == 401
        assert (await client.get(path, headers=basic(CLIENT_KEY))).status == 401
        assert (await client.get(path, headers=AUTH)).status == 403  # a client key is refused
        assert (await client.get(path, headers=basic(ADMIN_KEY))).status == 200
        assert (await client.get(path, headers=ADMIN)).status == 200
    response = await client.post(f"/v1/apps/{CLASSIC_APPID}/token/rotate", headers=AUTH)
    assert response.status == 403


async def test_status_json_shape_and_no_tokens(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await ready(start_service, make_settings())
    token = (await (await client.get(f"/v1/apps/{CLASSIC_APPID}/token", headers=AUTH)).json())[
        "access_token"
    ]
    document = await status(client)
    classic = app_of(document, CLASSIC_APPID)
    assert classic["name"] == "Classic OA" and classic["kind"] == "official_account"
    assert classic["token_api"] == "classic" and classic["state"] == "fresh"
    assert classic["fingerprint"] == fingerprint(token)
    for field in ("fetched_at", "expires_at", "planned_refresh_at", "next_refresh_at"):
        assert RFC3339.match(classic[field]), field
    assert classic["next_refresh_at"] == classic["planned_refresh_at"]
    assert classic["next_refresh_reason"] == "schedule" and classic["failures"] == 0
    assert classic["fetched_at"] < classic["planned_refresh_at"] < classic["expires_at"]
    assert classic["last_error"] is None
    assert classic["upstream_calls_today"] == 1 and classic["daily_limit"] == 2000
    assert app_of(document, STABLE_APPID)["daily_limit"] == 500_000
    assert {e["trigger"] for e in document["events"]} == {"startup"}
    text = str(document)
    assert token not in text and all(s not in text for s in SECRETS.values())


async def test_a_rejected_app_secret_shows_as_misconfigured(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    fake.apps[STABLE_APPID] = "the-real-secret-changed"
    client = await start_service(make_settings())

    async def misconfigured() -> bool:
        return bool(app_of(await status(client), STABLE_APPID)["state"] == "misconfigured")

    await wait_until(misconfigured)
    document = await status(client)
    stable = app_of(document, STABLE_APPID)
    assert stable["last_error"]["errcode"] == 40125 and stable["last_error"]["rid"]
    assert RFC3339.match(stable["last_error"]["at"])
    # the next attempt is config_error_retry away (600 s for a token of unknown lifetime),
    # not "now"
    assert stable["next_refresh_reason"] == "config_error"
    wait = instant(stable["next_refresh_at"]) - instant(stable["last_error"]["at"])
    assert 595 <= wait <= 601, wait
    assert stable["fingerprint"] is None and stable["planned_refresh_at"] is None
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 503 and body["apps_without_token"] == [STABLE_APPID]
    assert body["database"] == "ok"
    metrics = (await (await client.get("/metrics", headers=ADMIN)).read()).decode()
    assert (
        f'tokensvc_refresh_total{{appid="{STABLE_APPID}",outcome="error",trigger="startup"}} 1.0'
        in metrics
    )
    assert (
        'tokensvc_upstream_requests_total{api="/cgi-bin/stable_token",errcode="40125"} 1.0'
        in metrics
    )


async def test_refresh_now_and_events_survive_a_restart(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    settings = make_settings()
    client = await ready(start_service, settings)
    before = app_of(await status(client), CLASSIC_APPID)["fingerprint"]
    response = await client.post(f"/v1/apps/{CLASSIC_APPID}/token/rotate", headers=ADMIN)
    body = await response.json()
    assert response.status == 200 and body["refreshed"] is True
    assert "access_token" not in body and body["fingerprint"] != before
    # from a browser (Basic auth) the action needs the anti-CSRF header, and no foreign Origin
    url = f"/v1/apps/{CLASSIC_APPID}/token/rotate"
    assert (await client.post(url, headers=basic(ADMIN_KEY))).status == 403
    foreign = {**basic(ADMIN_KEY), "X-Requested-With": "tokensvc", "Origin": "https://evil.example"}
    assert (await client.post(url, headers=foreign)).status == 403
    ok = await client.post(url, headers={**basic(ADMIN_KEY), "X-Requested-With": "tokensvc"})
    assert ok.status == 200
    document = await status(client)
    assert [e["trigger"] for e in document["events"]][:2] == ["operator", "operator"]
    assert app_of(document, CLASSIC_APPID)["upstream_calls_today"] == 3
    assert app_of(document, CLASSIC_APPID)["previous_valid_until"] is not None
    await client.close()

    again = await start_service(settings)
    document = await status(again)
    assert len(document["events"]) == 4  # 2 start-up + 2 operator, read back from the database
    assert app_of(document, CLASSIC_APPID)["upstream_calls_today"] == 3


async def test_revoke_a_leaked_stable_token(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    fake.force_min_interval = 0.3
    client = await ready(start_service, make_settings(refresh={"revoke_gap": 0.5}))
    leaked = (await (await client.get(f"/v1/apps/{STABLE_APPID}/token", headers=AUTH)).json())[
        "access_token"
    ]
    response = await client.post(f"/v1/apps/{STABLE_APPID}/token/revoke", headers=ADMIN)
    body = await response.json()
    assert response.status == 200 and body["refreshed"] is True and body["second_force_at"]
    assert fake.check(leaked) == 0  # still valid during the hand-over...
    await wait_until(lambda: len(fake.forces.get(STABLE_APPID, [])) == 2, timeout=5)
    assert fake.check(leaked) == 40001  # ...and dead after the second force refresh
    served = (await (await client.get(f"/v1/apps/{STABLE_APPID}/token", headers=AUTH)).json())[
        "access_token"
    ]
    assert fake.is_valid(served)
    response = await client.post(f"/v1/apps/{CLASSIC_APPID}/token/revoke", headers=ADMIN)
    assert response.status == 400


async def test_passive_refreshes_are_tallied_by_client(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await ready(start_service, make_settings())
    token = (await (await client.get(f"/v1/apps/{STABLE_APPID}/token", headers=AUTH)).json())[
        "access_token"
    ]
    fake.revoke(STABLE_APPID)
    replaced = await client.post(
        f"/v1/apps/{STABLE_APPID}/token/refresh", headers=AUTH, json={"stale_token": token}
    )
    new_token = (await replaced.json())["access_token"]
    await client.post(  # a false claim about the new token: the probe says it is fine
        f"/v1/apps/{STABLE_APPID}/token/refresh", headers=AUTH, json={"stale_token": new_token}
    )
    stable = app_of(await status(client), STABLE_APPID)
    assert stable["passive_today"] == {"orders": {"requests": 2, "refreshed": 1}}
    metrics = (await (await client.get("/metrics", headers=ADMIN)).read()).decode()
    assert (
        f'tokensvc_passive_refresh_total{{appid="{STABLE_APPID}",outcome="still_valid"}} 1.0'
        in metrics
    )
    assert (
        f'tokensvc_passive_refresh_total{{appid="{STABLE_APPID}",outcome="refreshed"}} 1.0'
        in metrics
    )


async def test_metrics_names_and_public_switch(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await ready(start_service, make_settings(metrics={"public": True}))
    await client.post(
        f"/v1/apps/{CLASSIC_APPID}/messages/custom",
        headers=AUTH,
        json={"touser": "o", "msgtype": "text", "text": {"content": "x"}},
    )
    response = await client.get("/metrics")  # no key needed when public
    assert response.status == 200 and response.content_type == "text/plain"
    text = (await response.read()).decode()
    for name in (
        "tokensvc_token_expires_at_seconds{",
        "tokensvc_refresh_total{",
        "tokensvc_upstream_requests_total{",
        "tokensvc_upstream_request_duration_seconds_bucket{",
        "tokensvc_token_requests_total{",
        "tokensvc_proxy_requests_total{",
        "tokensvc_token_valid{",
    ):
        assert name in text, name
    expires = re.search(
        rf'tokensvc_token_expires_at_seconds{{appid="{CLASSIC_APPID}"}} (\S+)', text
    )
    assert expires is not None
    assert abs(float(expires.group(1)) - fake.clock.now() - fake.ttl) < 5
    assert all(token not in text for token in fake.tokens)


async def test_events_older_than_the_retention_are_pruned(tmp_path: Any) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'e.db'}")
    try:
        await upgrade_to_head(engine)
        events = EventLog(TokenStore(engine))
        for at in (1000.0, 2000.0, 3000.0):
            events.record(
                RefreshAttempt(
                    "wx1", Trigger.SCHEDULED, "success", 0, None, None, "abcd1234", 0.01, at
                )
            )
        await events.flush()
        assert await events.prune(older_than=2500.0) == 2
        assert [e.at for e in await events.latest()] == [3000.0]
        assert await events.count_since(0) == {"wx1": 1}
    finally:
        await engine.dispose()


async def test_operator_endpoints_are_off_without_an_admin_key(
    make_settings: Callable[..., Settings], start_service: Start
) -> None:
    settings = dataclasses.replace(make_settings(), admin=AdminConfig(key_sha256=None))
    client = await start_service(settings)
    response = await client.get("/v1/status", headers=ADMIN)
    body = await response.json()
    assert response.status == 403 and "key_sha256" in body["message"]


async def test_a_failing_app_shows_its_real_next_attempt_and_why(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    fake.ttl = 6  # the classic token's refresh is due after 4.5 s
    client = await ready(start_service, make_settings())
    fake.inject("/cgi-bin/token", "busy", times=None)  # WeChat answers -1 until cleared

    async def retried_twice() -> bool:
        return bool(app_of(await status(client), CLASSIC_APPID)["failures"] >= 3)

    await wait_until(retried_twice)
    for _ in range(3):  # whenever one looks: an attempt still to come, backing off
        document = await status(client)
        classic = app_of(document, CLASSIC_APPID)
        assert classic["state"] in ("retrying", "expired")
        assert classic["next_refresh_reason"] == "backoff"
        assert classic["next_refresh_at"] >= document["now"]
        assert classic["last_error"]["errcode"] == -1
        assert app_of(document, STABLE_APPID)["next_refresh_reason"] == "schedule"

    # the page groups the flood of identical errors, and filters by app and outcome
    page = await client.get(
        "/status", params={"app": CLASSIC_APPID, "outcome": "error"}, headers=ADMIN
    )
    html = await page.text()
    events = EVENT_LINE.findall(html)
    assert events and all(e[:2] == (CLASSIC_APPID, "error") for e in events)
    scheduled = [e for e in events if int(e[2]) >= 2]
    assert scheduled, events  # "scheduled error -1 ×N" on one line
    assert re.search(r"scheduled <b class=\"outcome\">error</b> -1 <b class=\"times\">×\d+", html)
    everything = EVENT_LINE.findall(await (await client.get("/status", headers=ADMIN)).text())
    assert {e[0] for e in everything} == {CLASSIC_APPID, STABLE_APPID}
    assert sum(int(e[2]) for e in everything) > len(everything)  # repeats are grouped
    fake.clear_faults()


EVENT_LINE = re.compile(
    r'<li class="event [^"]*" data-appid="([^"]+)" data-outcome="([^"]+)" '
    r'data-count="(\d+)"'
)
CARD = re.compile(r'<article class="app state-(\w+)" data-appid="([^"]+)"')


async def test_a_quota_pause_shows_when_it_ends(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await ready(start_service, make_settings())
    fake.inject("/cgi-bin/token", "quota")  # 45009 once
    response = await client.post(f"/v1/apps/{CLASSIC_APPID}/token/rotate", headers=ADMIN)
    assert response.status == 503 and (await response.json())["errcode"] == 45009
    document = await status(client)
    classic = app_of(document, CLASSIC_APPID)
    assert classic["next_refresh_reason"] == "quota_pause"
    midnight_beijing = (instant(document["now"]) + 8 * 3600) // 86400 * 86400 + 86400 - 8 * 3600
    assert instant(classic["next_refresh_at"]) == midnight_beijing
    html = await (await client.get("/status", headers=ADMIN)).text()
    assert "quota exhausted: paused until WeChat resets it" in html


async def test_status_page_buttons_say_what_the_configuration_does(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    settings = make_settings(wechat={"rotation_window": 45}, refresh={"revoke_gap": 40})
    client = await ready(start_service, settings)
    page = await client.get("/status", headers=ADMIN)
    csp = page.headers["Content-Security-Policy"]  # strict: own nonce'd code only, no assets
    assert "default-src 'none'" in csp and "form-action 'self'" in csp and "unsafe" not in csp
    assert re.search(r"script-src 'nonce-[\w-]{16,}'; style-src 'nonce-[\w-]{16,}';", csp)
    html = await page.text()
    assert "style=" not in html and "<script src" not in html and "://" not in html
    rotate = re.search(
        rf'data-action="rotate" data-appid="{CLASSIC_APPID}" data-confirm="([^"]+)"', html
    )
    assert rotate is not None
    assert "stays valid for 45 seconds (rotation_window)" in rotate.group(1)
    stable_rotate = re.search(
        rf'data-action="rotate" data-appid="{STABLE_APPID}" data-confirm="([^"]+)"', html
    )
    assert stable_rotate is not None and "in its last 45 seconds" in stable_rotate.group(1)
    revoke = re.search(
        rf'data-action="revoke" data-appid="{STABLE_APPID}" data-confirm="([^"]+)"', html
    )
    assert revoke is not None and "two force refreshes 40 seconds apart" in revoke.group(1)
    assert "5 minutes" not in html
    assert f'data-action="revoke" data-appid="{CLASSIC_APPID}"' not in html  # classic: no revoke


async def test_no_revoke_button_for_an_app_without_a_token(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    fake.apps[STABLE_APPID] = "the-real-secret-changed"
    client = await start_service(make_settings())

    async def misconfigured() -> bool:
        return bool(app_of(await status(client), STABLE_APPID)["state"] == "misconfigured")

    await wait_until(misconfigured)
    html = await (await client.get("/status", headers=ADMIN)).text()
    assert f'data-action="rotate" data-appid="{STABLE_APPID}"' in html
    assert 'data-action="revoke"' not in html
    assert "configuration error: retried only every config_error_retry" in html
    assert [state for state, _ in CARD.findall(html)] == ["misconfigured", "fresh"]


def numbered_apps(n: int) -> list[dict[str, str]]:
    """``n`` classic apps ``wx00000000000000NN`` sharing the classic test app's secret."""
    return [
        {
            "appid": f"wx{i:016x}",
            "name": f"Shop {i:04d}",
            "kind": "official_account",
            "token_api": "classic",
            "secret_env": "CLASSIC_SECRET",
        }
        for i in range(1, n + 1)
    ]


async def test_many_apps_failing_first_with_search_and_pages(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    apps = numbered_apps(148)
    broken = {apps[i]["appid"] for i in (20, 70, 140)}
    for app in apps:
        wrong = app["appid"] in broken  # the AppSecret was reset on WeChat's side
        fake.add_app(app["appid"], "changed-on-wechat" if wrong else SECRETS[CLASSIC_APPID])
    client = await start_service(make_settings(apps=base_config("", "")["apps"] + apps))

    async def all_settled() -> bool:
        states = [a["state"] for a in (await status(client))["apps"]]
        return states.count("fresh") == 147 and states.count("misconfigured") == 3

    await wait_until(all_settled, timeout=30)
    assert len((await status(client))["apps"]) == 150

    async def cards(**params: str) -> list[tuple[str, str]]:
        response = await client.get("/status", params=params, headers=ADMIN)
        assert response.status == 200, await response.text()
        return CARD.findall(await response.text())

    first = await cards()
    assert len(first) == 100
    assert {appid for _, appid in first[:3]} == broken  # failing apps first
    assert all(state == "fresh" for state, _ in first[3:])
    second = await cards(page="2")
    assert len(second) == 50 and not {a for _, a in first} & {a for _, a in second}
    assert await cards(q="SHOP 0042") == [("fresh", "wx000000000000002a")]  # any case
    assert await cards(q="00000000008c") == [("fresh", "wx000000000000008c")]  # appid part
    assert {appid for _, appid in await cards(state="failing")} == broken
    assert await cards(q="no such app") == []
    assert len(await cards(page="99")) == 50  # past the end: the last page


async def test_status_page_refuses_bad_parameters_clearly(
    make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await ready(start_service, make_settings())
    for params, named in (
        ({"page": "0"}, "page"),
        ({"page": "two"}, "page"),
        ({"page": "1" * 5000}, "page"),
        ({"app": f" {CLASSIC_APPID}"}, "app"),
        ({"outcome": "failed"}, "outcome"),
        ({"state": "broken"}, "state"),
        ({"app": "wx<script>"}, "app"),
        ({"q": "x" * 101}, "q"),
    ):
        response = await client.get("/status", params=params, headers=ADMIN)
        body = await response.json()
        assert response.status == 400 and body["error"] == "bad_request", params
        assert body["message"].startswith(f"{named}:"), body


def test_lifetime_bar_places_the_markers_in_order() -> None:
    now = 1_800_000_000.0
    fresh = AppStatus(
        appid="wx1",
        name="n",
        kind="official_account",
        token_api="classic",
        state=TokenState.FRESH,
        notice=None,
        fingerprint="abcd1234",
        version=2,
        fetched_at=now - 1000,
        expires_at=now + 6200,
        rejected_at=None,
        planned_refresh_at=now + 5600,
        next_refresh_at=now + 5600,
        next_refresh_reason="schedule",
        previous_valid_until=now - 700,
        last_error=None,
        error_current=False,
        failures=0,
        upstream_calls_today=2,
        daily_limit=2000,
        passive_today={},
        revoke_second_at=None,
        has_token=True,
        served=True,
    )
    bar = lifetime_bar(fresh, now)
    assert bar.fetched is not None and bar.refresh is not None and bar.expiry is not None
    assert 0 < bar.fetched < bar.now < bar.refresh < bar.expiry < 100
    assert bar.overlap is not None and bar.overlap[0] == bar.fetched  # 300 s of overlap
    assert bar.overlap[1] - bar.overlap[0] == pytest.approx(30000 / (bar.end - bar.start), abs=0.02)
    assert bar.next is None  # the next attempt is the planned refresh
    assert bar.start < now - 1000 and bar.end > now + 6200

    failing = dataclasses.replace(
        fresh,
        state=TokenState.RETRYING,
        planned_refresh_at=now - 100,
        fetched_at=now - 7000,
        expires_at=now + 200,
        next_refresh_at=now + 400,
        next_refresh_reason="backoff",
        previous_valid_until=None,
    )
    bar = lifetime_bar(failing, now)
    assert bar.fetched is not None and bar.refresh is not None and bar.expiry is not None
    assert bar.next is not None and bar.overlap is None
    assert bar.fetched < bar.refresh < bar.now < bar.expiry < bar.next < 100

    no_token = dataclasses.replace(
        failing,
        state=TokenState.MISCONFIGURED,
        fingerprint=None,
        fetched_at=None,
        expires_at=None,
        planned_refresh_at=None,
        next_refresh_at=now + 600,
        next_refresh_reason="config_error",
        has_token=False,
    )
    bar = lifetime_bar(no_token, now)
    assert bar.fetched is None and bar.expiry is None and bar.refresh is None
    assert bar.next is not None and 0 < bar.now < bar.next < 100


def test_identical_events_of_an_app_are_grouped_across_other_apps_events() -> None:
    def event(appid: str, at: float, outcome: str = "error", errcode: int | None = 40125) -> Any:
        trigger = Trigger.PASSIVE if outcome == "error" else Trigger.SCHEDULED
        fp = None if outcome == "error" else f"fp{at:.0f}"
        return RefreshAttempt(appid, trigger, outcome, errcode, "bad", f"rid{at}", fp, 0.01, at)

    newest_first = [
        event("a", 110),
        event("b", 109, "success", 0),
        *(event("a", t) for t in range(108, 91, -1)),  # 17 more, interleaved with b below
        event("b", 91, "success", 0),
        event("a", 90, errcode=-1),
        event("a", 80),
    ]
    groups = group_events(newest_first)
    summary = [(g.appid, g.outcome, g.errcode, g.count, g.first_at, g.last_at) for g in groups]
    assert summary == [
        ("a", "error", 40125, 18, 92, 110),
        ("b", "success", 0, 1, 109, 109),  # different tokens: not identical
        ("b", "success", 0, 1, 91, 91),
        ("a", "error", -1, 1, 90, 90),
        ("a", "error", 40125, 1, 80, 80),  # not part of the run above: -1 came between
    ]
    assert groups[0].rid == "rid110"  # the newest's details


async def test_event_filters_and_the_day_strip_counts(tmp_path: Any) -> None:
    now = 1_800_000_000.0 + 100  # 100 s into a half-hour slot
    start = strip_start(now)
    assert start == 1_800_000_000.0 - (STRIP_SLOTS - 1) * STRIP_SLOT_SECONDS
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'e.db'}")
    try:
        await upgrade_to_head(engine)
        events = EventLog(TokenStore(engine))
        for appid, at, outcome in (
            ("wx1", start - 1, "error"),  # before the strip
            ("wx1", start, "success"),  # first slot
            ("wx1", now - 50, "success"),  # last slot
            ("wx1", now - 40, "error"),
            ("wx1", now - 30, "dead"),
            ("wx1", start + 5 * STRIP_SLOT_SECONDS + 1799, "error"),  # slot 5, at its end
            ("wx2", now - 10, "unchanged"),
            ("wx3", now - 10, "error"),
        ):
            errcode = -1 if outcome == "error" else 0
            events.record(
                RefreshAttempt(appid, Trigger.SCHEDULED, outcome, errcode, None, None, None, 0, at)
            )
        await events.flush()
        counts = await events.slot_counts(["wx1", "wx2"], int(start), STRIP_SLOT_SECONDS)
        assert set(counts) == {"wx1", "wx2"}
        strip = day_strip(counts["wx1"], start)
        assert len(strip) == STRIP_SLOTS and strip[0].start == start
        assert [(i, s.level) for i, s in enumerate(strip) if s.level != "none"] == [
            (0, "ok"),
            (5, "error"),
            (STRIP_SLOTS - 1, "mixed"),
        ]
        last = strip[-1]
        assert (last.ok, last.errors, last.notes) == (1, 1, 1)
        assert day_strip(counts["wx2"], start)[-1].level == "ok"

        only = await events.latest(10, appid="wx1", outcome="error")
        assert [e.at for e in only] == [now - 40, start + 5 * STRIP_SLOT_SECONDS + 1799, start - 1]
        assert [e.appid for e in await events.latest(10, outcome="unchanged")] == ["wx2"]
    finally:
        await engine.dispose()


def test_the_page_says_times_in_utc_with_the_date_only_for_other_days() -> None:
    now = datetime(2026, 11, 5, 14, 55, 0, tzinfo=UTC).timestamp()
    fmt = Formatter(now)
    assert fmt.time(now - 28) == "14:54:32"
    assert fmt.span(now - 28, now - 17) == "14:54:32–14:54:43"
    assert fmt.span(now - 28, now - 28) == "14:54:32"
    yesterday = now - 86400
    assert fmt.span(yesterday - 28, yesterday - 17) == "Nov 04 14:54:32–14:54:43"
    assert fmt.span(yesterday, now) == "Nov 04 14:55:00–14:55:00"
    assert fmt.until(now + 28) == "in 28 s" and fmt.until(now - 3) == "now"
    assert fmt.until(now + 242) == "in 4 min 2 s" and fmt.until(now + 6600) == "in 1 h 50 min"
    assert fmt.slot(now - 1500) == "14:30–15:00"
    assert duration(300) == "5 minutes" and duration(5) == "5 seconds" and duration(1) == "1 second"
    assert duration(31) == "31 seconds" and duration(7200) == "2 hours"


async def test_an_app_without_a_token_stays_expired_while_a_retry_runs(
    fake: FakeWechat, make_settings: Any, start_service: Any
) -> None:
    """Callers get 503 while the replacement of a dead token hangs: the app is ``expired`` (red,
    failing first), not ``refreshing``, for as long as the attempt is under way."""
    client = await ready(start_service, make_settings())
    token = await (await client.get(f"/v1/apps/{CLASSIC_APPID}/token", headers=AUTH)).json()
    fake.revoke(CLASSIC_APPID)
    fake.inject("/cgi-bin/token", "busy", times=None)
    report = {"stale_token": token["access_token"]}
    refresh = f"/v1/apps/{CLASSIC_APPID}/token/refresh"
    assert (await client.post(refresh, json=report, headers=AUTH)).status == 503
    fake.clear_faults()
    fake.inject("/cgi-bin/token", "timeout", times=None)  # the next attempt hangs
    asked = fake.count("/cgi-bin/token")
    rotate = asyncio.create_task(
        client.post(f"/v1/apps/{CLASSIC_APPID}/token/rotate", headers=ADMIN)
    )
    try:
        await wait_until(lambda: fake.count("/cgi-bin/token") > asked)  # the attempt is under way
        document = await status(client)
        assert app_of(document, CLASSIC_APPID)["state"] == "expired"
        assert app_of(document, STABLE_APPID)["state"] == "fresh"
    finally:
        fake.release_hung_requests()
        await rotate

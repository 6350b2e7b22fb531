"""Operator endpoints against the simulator: status JSON, actions, events, metrics, readiness."""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import (
    ADMIN_KEY,
    AUTH,
    CLASSIC_APPID,
    CLIENT_KEY,
    SECRETS,
    STABLE_APPID,
    wait_until,
)
from tests.support.service import Start, ready
from tokensvc.config import AdminConfig, Settings, fingerprint
from tokensvc.web.keys import EVENTS
from tokensvc.wechat.fake import FakeWechat

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


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
    for field in ("fetched_at", "expires_at", "next_refresh_at"):
        assert RFC3339.match(classic[field]), field
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
    stable = app_of(await status(client), STABLE_APPID)
    assert stable["last_error"]["errcode"] == 40125 and stable["last_error"]["rid"]
    assert RFC3339.match(stable["last_error"]["at"])
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
    from tokensvc.store.events import EventLog
    from tokensvc.store.migrate import upgrade_to_head
    from tokensvc.store.repo import TokenStore, make_engine
    from tokensvc.tokens.values import RefreshAttempt, Trigger

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

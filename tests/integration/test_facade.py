"""The WeChat-shaped facade: token endpoints answered from tokensvc's token, issued-token calls
forwarded with the app's token, sns APIs with the client key as ``secret``."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN_KEY, AUTH, CLASSIC_APPID, CLIENT_KEY, LIMITED_KEY, STABLE_APPID
from tests.support.service import Start, ready
from tokensvc.simulator import FakeWechat

CUSTOM = {"touser": "o-1", "msgtype": "text", "text": {"content": "hi"}}


@pytest.fixture
async def service(start_service: Start, make_settings: Any) -> TestClient[Any, Any]:
    return await ready(start_service, make_settings())


async def v1_token(service: TestClient[Any, Any], appid: str) -> str:
    body = await (await service.get(f"/v1/apps/{appid}/token", headers=AUTH)).json()
    return str(body["access_token"])


def classic_query(appid: str = CLASSIC_APPID, secret: str = CLIENT_KEY) -> dict[str, str]:
    return {"grant_type": "client_credential", "appid": appid, "secret": secret}


async def test_token_endpoints_answer_from_tokensvc(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    calls = fake.token_calls()
    response = await service.get("/cgi-bin/token", params=classic_query())
    body = await response.json()
    assert response.status == 200 and set(body) == {"access_token", "expires_in"}
    assert body["access_token"] == await v1_token(service, CLASSIC_APPID)
    assert 0 < body["expires_in"] <= 60

    stable = {"grant_type": "client_credential", "appid": STABLE_APPID, "secret": CLIENT_KEY}
    body = await (await service.post("/cgi-bin/stable_token", json=stable)).json()
    assert body["access_token"] == await v1_token(service, STABLE_APPID)
    assert fake.token_calls() == calls  # nothing reached WeChat's token APIs
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    metrics = await (await service.get("/metrics", headers=admin)).text()
    line = f'tokensvc_token_requests_total{{appid="{CLASSIC_APPID}",client="orders"}}'
    assert line in metrics  # counted per client, like GET /v1/apps/{appid}/token


@pytest.mark.parametrize(
    ("query", "errcode"),
    [
        (classic_query(secret="wrong-key"), 40001),
        (classic_query(secret=LIMITED_KEY), 40001),  # a real key, not granted this app
        (classic_query(appid="wxnotconfigured01"), 40013),
        ({**classic_query(), "grant_type": "password"}, 40002),
        ({"grant_type": "client_credential", "secret": CLIENT_KEY}, 41002),
        ({"grant_type": "client_credential", "appid": CLASSIC_APPID}, 41004),
    ],
)
async def test_token_errors_are_wechat_shaped(
    service: TestClient[Any, Any], query: dict[str, str], errcode: int
) -> None:
    response = await service.get("/cgi-bin/token", params=query)
    assert response.status == 200
    body = await response.json()
    assert body["errcode"] == errcode and "access_token" not in body


async def test_stable_errors_and_force_refresh_is_a_claim(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    stable = {"grant_type": "client_credential", "appid": STABLE_APPID, "secret": "wrong"}
    assert (await (await service.post("/cgi-bin/stable_token", json=stable)).json())[
        "errcode"
    ] == 40125
    assert (await (await service.get("/cgi-bin/stable_token")).json())["errcode"] == 43002
    assert (await (await service.post("/cgi-bin/stable_token", data=b"[")).json())[
        "errcode"
    ] == 47001

    before = await v1_token(service, STABLE_APPID)
    calls = fake.token_calls(STABLE_APPID)
    force = {**stable, "secret": CLIENT_KEY, "force_refresh": True}
    fake.revoke(STABLE_APPID)  # the claim is true: the probe proves it dead, replaced once
    body = await (await service.post("/cgi-bin/stable_token", json=force)).json()
    after = body["access_token"]
    assert after != before and fake.is_valid(after)
    assert fake.token_calls(STABLE_APPID) == calls + 1

    # a false claim: the probe finds the token good, nothing is spent, the same token comes back
    body = await (await service.post("/cgi-bin/stable_token", json=force)).json()
    assert body["access_token"] == after and fake.token_calls(STABLE_APPID) == calls + 1
    assert fake.forces.get(STABLE_APPID, []) == []  # never a WeChat force refresh

    # counted per client, like the /v1 routes
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    metrics = await (await service.get("/metrics", headers=admin)).text()
    assert f'tokensvc_passive_refresh_total{{appid="{STABLE_APPID}",outcome="refreshed"}} 1.0' in (
        metrics
    )
    status = await (await service.get("/v1/status", headers=admin)).json()
    app = next(a for a in status["apps"] if a["appid"] == STABLE_APPID)
    assert app["passive_today"]["orders"]["refreshed"] == 1


async def test_issued_tokens_are_forwarded_and_others_refused(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    token = await v1_token(service, STABLE_APPID)
    url = "/cgi-bin/message/custom/send"
    response = await service.post(url, params={"access_token": token}, json=CUSTOM)
    assert response.status == 200 and (await response.json())["errcode"] == 0
    assert fake.sent(url)[-1].body == CUSTOM

    sent = len(fake.sent(url))
    for params, errcode in (
        ({"access_token": "not-issued-by-tokensvc"}, 40001),
        ({}, 41001),
    ):
        body = await (await service.post(url, params=params, json=CUSTOM)).json()
        assert body["errcode"] == errcode
    body = await (await service.get("/cgi-bin/clear_quota", params={"access_token": token})).json()
    assert body["errcode"] == 48001
    assert len(fake.sent(url)) == sent and fake.count("/cgi-bin/clear_quota") == 0

    # a token killed outside tokensvc: proven dead by WeChat's answer, replaced, retried once
    calls = fake.token_calls(STABLE_APPID)
    fake.revoke(STABLE_APPID)
    response = await service.post(url, params={"access_token": token}, json=CUSTOM)
    assert (await response.json())["errcode"] == 0
    assert fake.token_calls(STABLE_APPID) == calls + 1 and len(fake.sent(url)) == sent + 1

    # the dead token is no longer accepted: the SDK refetches (WeChat's 40001)
    response = await service.post(url, params={"access_token": token}, json=CUSTOM)
    assert (await response.json())["errcode"] == 40001

    # a replaced token stays accepted within the overlap window, forwarded with the new one
    previous = await v1_token(service, CLASSIC_APPID)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert (await service.post(f"/v1/apps/{CLASSIC_APPID}/token/rotate", headers=admin)).ok
    current = await v1_token(service, CLASSIC_APPID)
    assert current != previous
    template = {"touser": "o-1", "template_id": "t-1", "data": {"k": {"value": "v"}}}
    response = await service.post(
        "/cgi-bin/message/template/send", params={"access_token": previous}, json=template
    )
    assert (await response.json())["errcode"] == 0


async def test_an_unusable_upstream_answer_is_a_502_like_the_passthrough(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    """WeChat's HTTP errors and HTML pages are not passed on as if they were its answer: the
    facade answers 502 ``upstream_bad_response`` (as documented in /openapi.json), never the
    upstream's 404 or text/plain."""
    token = await v1_token(service, CLASSIC_APPID)
    for fault in ("http500", "malformed"):
        fake.inject("/cgi-bin/user/info", fault)
        response = await service.get(
            "/cgi-bin/user/info", params={"access_token": token, "openid": "o-1"}
        )
        assert response.status == 502, fault
        assert (await response.json())["error"] == "upstream_bad_response"
    response = await service.get("/wxa/not-a-wechat-api", params={"access_token": token})
    assert response.status == 502 and response.content_type == "application/json"


async def test_sns_apis_take_the_client_key_as_secret(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    fake.add_js_code(STABLE_APPID, "js-9", "openid-9", "session-key-9")
    query = {"appid": STABLE_APPID, "secret": CLIENT_KEY, "js_code": "js-9"}
    query["grant_type"] = "authorization_code"
    body = await (await service.get("/sns/jscode2session", params=query)).json()
    assert body == {"openid": "openid-9", "session_key": "session-key-9"}
    assert (await (await service.get("/sns/jscode2session", params=query)).json())[
        "errcode"
    ] == 40163  # a code works once, and is never resent by tokensvc
    wrong = {**query, "secret": "not-a-key"}
    assert (await (await service.get("/sns/jscode2session", params=wrong)).json())[
        "errcode"
    ] == 40125

    fake.add_oauth_code(CLASSIC_APPID, "web-code", "openid-w", "user-token-w")
    oauth = {"appid": CLASSIC_APPID, "secret": CLIENT_KEY, "code": "web-code"}
    body = await (await service.get("/sns/oauth2/access_token", params=oauth)).json()
    assert body["openid"] == "openid-w" and body["access_token"] == "user-token-w"


async def test_web_login_user_token_calls_are_relayed(
    fake: FakeWechat, service: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """An SDK's whole web login (网页授权) through tokensvc: code → user token → userinfo, auth,
    refresh_token → userinfo with the renewed token. The user's tokens are relayed, never
    logged; the app's token never goes with them."""
    fake.add_oauth_code(CLASSIC_APPID, "web-code-2", "openid-u", "user-token-u")
    oauth = {"appid": CLASSIC_APPID, "secret": CLIENT_KEY, "code": "web-code-2"}
    grant = await (await service.get("/sns/oauth2/access_token", params=oauth)).json()
    user = {"access_token": grant["access_token"], "openid": "openid-u"}

    info = await (await service.get("/sns/userinfo", params={**user, "lang": "zh_CN"})).json()
    assert info["openid"] == "openid-u" and "nickname" in info
    assert await (await service.get("/sns/auth", params=user)).json() == {
        "errcode": 0,
        "errmsg": "ok",
    }
    renew = {"appid": CLASSIC_APPID, "grant_type": "refresh_token"}
    renewed = await (
        await service.get("/sns/oauth2/refresh_token", params={**renew, **grant})
    ).json()
    assert renewed["openid"] == "openid-u" and renewed["access_token"] != grant["access_token"]
    again = {"access_token": renewed["access_token"], "openid": "openid-u"}
    assert (await (await service.get("/sns/userinfo", params=again)).json())["openid"] == "openid-u"

    # WeChat's own errors come back as they are; tokensvc's checks come first
    wrong = {**user, "openid": "someone-else"}
    assert (await (await service.get("/sns/auth", params=wrong)).json())["errcode"] == 40003
    assert (await (await service.get("/sns/userinfo", params={"openid": "o"})).json())[
        "errcode"
    ] == 41001
    unknown = {**renew, "appid": "wx0000000000000000", "refresh_token": "r"}
    calls = fake.count("/sns/oauth2/refresh_token")
    assert (await (await service.get("/sns/oauth2/refresh_token", params=unknown)).json())[
        "errcode"
    ] == 40013
    assert fake.count("/sns/oauth2/refresh_token") == calls  # nothing relayed for other apps

    metrics = await (
        await service.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    ).text()
    relayed = (
        'tokensvc_proxy_requests_total{api="/sns/userinfo",appid="-",client="sdk",errcode="0"} 2.0'
    )
    assert relayed in metrics
    assert 'api="/sns/oauth2/access_token"' in metrics  # a known API, not "other"
    logged = caplog.text
    assert grant["access_token"] not in logged and grant["refresh_token"] not in logged

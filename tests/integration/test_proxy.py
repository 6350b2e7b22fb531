"""Send proxy, login and passthrough against the simulator on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import AUTH, CLASSIC_APPID, LIMITED_KEY, STABLE_APPID
from tests.support.service import Start, ready
from tokensvc.config import Settings
from tokensvc.logs import quiet_sensitive_loggers
from tokensvc.simulator import FAKE_QR_CODE, REFUSING_OPENID, FakeWechat
from tokensvc.web.keys import METRICS

TEMPLATE = {
    "touser": "openid-1",
    "template_id": "tmpl-1",
    "url": "https://example.com/order/1",
    "miniprogram": {"appid": "wxmini", "pagepath": "pages/order?id=1"},
    "client_msg_id": "order-1-shipped",
    "data": {"first": {"value": "Shipped", "color": "#173177"}, "keyword1": {"value": "A-1"}},
}
SUBSCRIBE = {
    "touser": "openid-2",
    "template_id": "sub-1",
    "page": "pages/index",
    "miniprogram_state": "formal",
    "lang": "zh_CN",
    "data": {"thing1": {"value": "你的订单已发货"}, "time2": {"value": "2026-11-21 10:00"}},
}
CUSTOM = {"touser": "openid-3", "msgtype": "text", "text": {"content": "hello"}}
WXOPEN = {
    "touser": "openid-4",
    "template_id": "t",
    "form_id": "form-1",
    "data": {"k": {"value": "v"}},
}


@pytest.fixture
async def service(
    make_settings: Callable[..., Settings], start_service: Start
) -> TestClient[Any, Any]:
    return await ready(start_service, make_settings())


async def test_each_route_delivers_the_body_intact_to_the_right_app(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    cases = [
        (CLASSIC_APPID, "template", "/cgi-bin/message/template/send", TEMPLATE),
        (STABLE_APPID, "subscribe", "/cgi-bin/message/subscribe/send", SUBSCRIBE),
        (CLASSIC_APPID, "custom", "/cgi-bin/message/custom/send", CUSTOM),
        (STABLE_APPID, "custom", "/cgi-bin/message/custom/send", CUSTOM),
        (STABLE_APPID, "wxopen-template", "/cgi-bin/message/wxopen/template/send", WXOPEN),
    ]
    for appid, route, api, body in cases:
        response = await service.post(f"/v1/apps/{appid}/messages/{route}", headers=AUTH, json=body)
        assert response.status == 200, await response.text()
        answer = await response.json()
        assert answer["errcode"] == 0 and answer["errmsg"] == "ok"
        assert response.headers["X-Tokensvc-Retried"] == "0"
        received = fake.sent(api)[-1]
        assert received.appid == appid and received.body == body
    assert len(fake.sent()) == len(cases)
    metrics = service.app[METRICS].render().decode()
    assert (
        'tokensvc_proxy_requests_total{api="/cgi-bin/message/template/send",'
        f'appid="{CLASSIC_APPID}",client="orders",errcode="0"}} 1.0'
    ) in metrics


async def test_a_route_that_does_not_fit_the_app_kind_says_which_does(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    response = await service.post(
        f"/v1/apps/{STABLE_APPID}/messages/template", headers=AUTH, json=TEMPLATE
    )
    body = await response.json()
    assert response.status == 400 and "/messages/subscribe" in body["message"]
    response = await service.post(
        f"/v1/apps/{CLASSIC_APPID}/messages/subscribe", headers=AUTH, json=SUBSCRIBE
    )
    assert response.status == 400 and "/messages/template" in (await response.json())["message"]
    response = await service.post(
        f"/v1/apps/{CLASSIC_APPID}/messages/nope", headers=AUTH, json=SUBSCRIBE
    )
    assert response.status == 404
    assert fake.sent() == []


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("template", {**TEMPLATE, "touser": ""}, "touser"),
        ("template", {k: v for k, v in TEMPLATE.items() if k != "template_id"}, "template_id"),
        ("template", {**TEMPLATE, "data": {"first": "Shipped"}}, "data.first"),
        ("template", {**TEMPLATE, "data": {"first": {"value": 5}}}, "data.first.value"),
        ("template", {**TEMPLATE, "data": {}}, "data"),
        ("template", {**TEMPLATE, "miniprogram": {"pagepath": "x"}}, "miniprogram.appid"),
        ("template", {**TEMPLATE, "touser": "x" * 200}, "touser"),
        ("template", {**TEMPLATE, "access_token": "mine"}, "access_token"),
        ("custom", {"touser": "o", "msgtype": "text"}, "text"),
        ("custom", {"touser": "o", "msgtype": "fax", "fax": {}}, "msgtype"),
        ("custom", {"touser": "o", "msgtype": "image", "image": {}}, "image.media_id"),
    ],
)
async def test_invalid_bodies_never_reach_wechat(
    fake: FakeWechat, service: TestClient[Any, Any], route: str, body: dict[str, Any], field: str
) -> None:
    response = await service.post(
        f"/v1/apps/{CLASSIC_APPID}/messages/{route}", headers=AUTH, json=body
    )
    answer = await response.json()
    assert response.status == 400 and answer["error"] == "bad_request"
    assert field in answer["message"]
    assert fake.count(f"/cgi-bin/message/{route}/send") == 0


async def test_subscribe_rules(fake: FakeWechat, service: TestClient[Any, Any]) -> None:
    for bad, field in [
        ({**SUBSCRIBE, "lang": "fr"}, "lang"),
        ({**SUBSCRIBE, "miniprogram_state": "beta"}, "miniprogram_state"),
        ({**SUBSCRIBE, "data": {"thing1": {"value": "x", "color": "#fff"}}}, "color"),
        ({k: v for k, v in WXOPEN.items() if k != "form_id"}, "form_id"),
    ]:
        route = "wxopen-template" if field == "form_id" else "subscribe"
        response = await service.post(
            f"/v1/apps/{STABLE_APPID}/messages/{route}", headers=AUTH, json=bad
        )
        assert response.status == 400 and field in (await response.json())["message"]
    assert fake.sent() == []


async def test_revoked_token_send_succeeds_after_exactly_one_refresh(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    fake.revoke(CLASSIC_APPID)
    calls = fake.token_calls(CLASSIC_APPID)
    response = await service.post(
        f"/v1/apps/{CLASSIC_APPID}/messages/template", headers=AUTH, json=TEMPLATE
    )
    assert response.status == 200
    assert (await response.json())["errcode"] == 0
    assert response.headers["X-Tokensvc-Retried"] == "1"
    assert fake.token_calls(CLASSIC_APPID) == calls + 1
    assert (
        fake.count("/cgi-bin/message/template/send", CLASSIC_APPID) == 2
    )  # rejected once, then retried
    assert len(fake.sent("/cgi-bin/message/template/send")) == 1  # delivered exactly once
    # and the new token is what GET /token serves now
    token = (await (await service.get(f"/v1/apps/{CLASSIC_APPID}/token", headers=AUTH)).json())[
        "access_token"
    ]
    assert fake.is_valid(token)


async def test_other_errcodes_pass_through_without_retry(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    calls = fake.token_calls()
    response = await service.post(
        f"/v1/apps/{CLASSIC_APPID}/messages/template",
        headers=AUTH,
        json={**TEMPLATE, "touser": REFUSING_OPENID},
    )
    answer = await response.json()
    assert response.status == 200 and answer["errcode"] == 43101 and "rid:" in answer["errmsg"]
    assert response.headers["X-Tokensvc-Retried"] == "0"
    assert fake.token_calls() == calls
    assert fake.count("/cgi-bin/message/template/send") == 1


@pytest.mark.parametrize(
    ("fault", "status", "error"),
    [
        ("timeout", 504, "upstream_timeout"),
        ("reset", 502, "upstream_unavailable"),
        ("http500", 502, "upstream_bad_response"),
    ],
)
async def test_unknown_outcomes_are_never_resent(
    fake: FakeWechat, service: TestClient[Any, Any], fault: str, status: int, error: str
) -> None:
    api = "/cgi-bin/message/template/send"
    fake.inject(api, fault)
    response = await service.post(
        f"/v1/apps/{CLASSIC_APPID}/messages/template", headers=AUTH, json=TEMPLATE
    )
    assert response.status == status
    assert (await response.json())["error"] == error
    await asyncio.sleep(0.2)
    assert fake.count(api) == 1  # exactly one upstream attempt


async def test_wechat_unreachable_is_a_502(
    make_settings: Callable[..., Settings], start_service: Start, fake: FakeWechat
) -> None:
    service = await ready(start_service, make_settings())
    # point the running service's client at a closed port
    from tokensvc.web.keys import CLIENT

    client = service.app[CLIENT]
    client._api_base = "http://127.0.0.1:9"
    response = await service.post(
        f"/v1/apps/{CLASSIC_APPID}/messages/template", headers=AUTH, json=TEMPLATE
    )
    body = await response.json()
    assert response.status == 502 and body["error"] == "upstream_unavailable"
    assert "could not be reached" in body["message"]


async def test_per_app_authorisation(fake: FakeWechat, service: TestClient[Any, Any]) -> None:
    limited = {"Authorization": f"Bearer {LIMITED_KEY}"}
    response = await service.post(
        f"/v1/apps/{CLASSIC_APPID}/messages/custom", headers=limited, json=CUSTOM
    )
    assert response.status == 403
    response = await service.post(
        f"/v1/apps/{STABLE_APPID}/messages/custom", headers=limited, json=CUSTOM
    )
    assert response.status == 200
    response = await service.post(f"/v1/apps/{STABLE_APPID}/messages/custom", json=CUSTOM)
    assert response.status == 401
    response = await service.post(
        f"/v1/apps/{STABLE_APPID}/jscode2session",
        headers=limited.copy() | {"Authorization": "Bearer nope"},
        json={"js_code": "x"},
    )
    assert response.status == 401
    assert len(fake.sent()) == 1


async def test_bodies_over_one_mib_are_refused(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    big = json.dumps({**CUSTOM, "text": {"content": "x" * (1 << 20)}}).encode()
    headers = {**AUTH, "Content-Type": "application/json"}
    for url in (
        f"/v1/apps/{CLASSIC_APPID}/messages/custom",
        f"/v1/apps/{CLASSIC_APPID}/wechat/cgi-bin/message/custom/send",
    ):
        response = await service.post(url, headers=headers, data=io.BytesIO(big))
        assert response.status == 413
        assert (await response.json())["error"] == "payload_too_large"
    assert fake.sent() == []


async def test_passthrough_allow_list(fake: FakeWechat, service: TestClient[Any, Any]) -> None:
    response = await service.get(
        f"/v1/apps/{CLASSIC_APPID}/wechat/cgi-bin/user/info",
        params={"openid": "o-1", "lang": "zh_CN", "access_token": "caller-token"},
        headers=AUTH,
    )
    assert response.status == 200, await response.text()
    assert (await response.json())["openid"] == "o-1"
    received = fake.sent("/cgi-bin/user/info")[-1]
    assert received.query == {"openid": "o-1", "lang": "zh_CN"}  # the caller's access_token dropped

    response = await service.post(
        f"/v1/apps/{STABLE_APPID}/wechat/wxa/getwxacode", headers=AUTH, json={"path": "pages/index"}
    )
    assert response.status == 200 and response.content_type == "image/png"
    assert await response.read() == FAKE_QR_CODE
    assert fake.sent("/wxa/getwxacode")[-1].body == {"path": "pages/index"}

    for path in (
        "cgi-bin/token",
        "cgi-bin/stable_token",
        "cgi-bin/clear_quota",
        "cgi-bin/nothing",
        "sns/jscode2session",
        "SNS/jscode2session",
    ):
        response = await service.get(f"/v1/apps/{CLASSIC_APPID}/wechat/{path}", headers=AUTH)
        assert response.status == 403, path
        assert (await response.json())["error"] == "path_not_allowed"
    response = await service.get(
        f"/v1/apps/{CLASSIC_APPID[:-1]}%31/wechat/cgi-bin%2Fuser%2finfo?openid=o-2", headers=AUTH
    )
    assert response.status == 200 and (await response.json())["openid"] == "o-2"
    for path in ("cgi-bin//token", "cgi-bin/user/", "cgi-bin/user/info%3Fx"):
        response = await service.get(f"/v1/apps/{CLASSIC_APPID}/wechat/{path}", headers=AUTH)
        assert response.status == 400, path
        assert "plain segments" in (await response.json())["message"]
    response = await service.delete(
        f"/v1/apps/{CLASSIC_APPID}/wechat/cgi-bin/user/info", headers=AUTH
    )
    assert response.status == 405 and response.headers["Allow"] == "GET, POST"
    assert fake.count("/cgi-bin/token") == 1  # only tokensvc's own start-up fetch


async def test_passthrough_retries_once_on_a_token_error(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    fake.revoke(STABLE_APPID)
    response = await service.post(
        f"/v1/apps/{STABLE_APPID}/wechat/cgi-bin/message/custom/send", headers=AUTH, json=CUSTOM
    )
    assert response.status == 200 and response.headers["X-Tokensvc-Retried"] == "1"
    assert (await response.json())["errcode"] == 0
    assert fake.sent("/cgi-bin/message/custom/send")[-1].body == CUSTOM


async def test_jscode2session(
    fake: FakeWechat, service: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    quiet_sensitive_loggers()
    fake.add_js_code(STABLE_APPID, "code-1", "openid-9", "session-key-secret-1", unionid="union-9")
    url = f"/v1/apps/{STABLE_APPID}/jscode2session"
    response = await service.post(url, headers=AUTH, json={"js_code": "code-1"})
    assert response.status == 200
    assert await response.json() == {
        "openid": "openid-9",
        "session_key": "session-key-secret-1",
        "unionid": "union-9",
    }
    reused = await (await service.post(url, headers=AUTH, json={"js_code": "code-1"})).json()
    assert reused["errcode"] == 40163
    unknown = await (await service.post(url, headers=AUTH, json={"js_code": "nope"})).json()
    assert unknown["errcode"] == 40029
    assert (await service.post(url, headers=AUTH, json={})).status == 400
    response = await service.post(
        f"/v1/apps/{CLASSIC_APPID}/jscode2session", headers=AUTH, json={"js_code": "code-1"}
    )
    assert response.status == 400
    assert "session-key-secret-1" not in caplog.text
    assert fake.count("/sns/jscode2session") == 3

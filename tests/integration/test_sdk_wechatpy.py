"""The real wechatpy SDK against tokensvc and the simulator, through the WeChat-shaped facade.

wechatpy 1.8.18 (checked against its source): ``WeChatClient.fetch_access_token`` sends ``GET
https://api.weixin.qq.com/cgi-bin/token?grant_type=client_credential&appid=&secret=`` (URL
written in, hence :class:`~tokensvc.integrations.wechatpy.TokensvcWeChatClient`); business calls
go to ``API_BASE_URL`` (``.../cgi-bin/``) or a sub-API's own ``https://api.weixin.qq.com/`` base
with ``?access_token=``; ``wxa.code_to_session`` sends ``GET sns/jscode2session?appid&secret&
js_code&grant_type=authorization_code``; on 40001/40014/42001 ``_handle_result`` refetches the
token and retries once. wechatpy is synchronous (requests): it runs in a thread here, while
tokensvc and the simulator run in the test's event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import AUTH, CLASSIC_APPID, CLIENT_KEY, SECRETS, STABLE_APPID
from tests.support.service import Start, ready
from tokensvc.integrations.wechatpy import TokensvcWeChatClient
from tokensvc.simulator import FakeWechat

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # wechatpy's own _post


@pytest.fixture
async def service(start_service: Start, make_settings: Any) -> TestClient[Any, Any]:
    return await ready(start_service, make_settings())


async def test_wechatpy_works_unchanged_against_tokensvc(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    url = str(service.make_url(""))
    official = TokensvcWeChatClient(url, CLASSIC_APPID, CLIENT_KEY)
    mini = TokensvcWeChatClient(url, STABLE_APPID, CLIENT_KEY)
    assert SECRETS[CLASSIC_APPID] not in vars(official).values()  # the SDK holds a client key
    calls = fake.token_calls()

    fetched = await asyncio.to_thread(official.fetch_access_token)
    v1 = await (await service.get(f"/v1/apps/{CLASSIC_APPID}/token", headers=AUTH)).json()
    assert fetched["access_token"] == v1["access_token"]

    data = {"first": {"value": "shipped"}}
    answer = await asyncio.to_thread(official.message.send_template, "o-1", "t-1", data)
    assert answer["errcode"] == 0
    assert fake.sent("/cgi-bin/message/template/send")[-1].body["data"] == data

    answer = await asyncio.to_thread(
        mini.wxa.send_subscribe_message, "o-2", "t-2", {"thing1": {"value": "ok"}}
    )
    assert answer["errcode"] == 0
    assert fake.sent("/cgi-bin/message/subscribe/send")[-1].body["touser"] == "o-2"

    fake.add_js_code(STABLE_APPID, "js-sdk", "openid-sdk", "session-key-sdk")
    session = await asyncio.to_thread(mini.wxa.code_to_session, "js-sdk")
    assert session["openid"] == "openid-sdk" and session["session_key"] == "session-key-sdk"
    assert fake.token_calls() == calls  # the SDK never caused a WeChat token call

    # the token killed outside tokensvc: the send is delivered, with one upstream token call
    classic_calls = fake.token_calls(CLASSIC_APPID)
    fake.revoke(CLASSIC_APPID)
    answer = await asyncio.to_thread(official.message.send_template, "o-3", "t-1", data)
    assert answer["errcode"] == 0
    assert fake.sent("/cgi-bin/message/template/send")[-1].body["touser"] == "o-3"
    assert fake.token_calls(CLASSIC_APPID) == classic_calls + 1

"""A message body reaches WeChat as the bytes the client sent, unless they could mean something
other than what tokensvc validated (a member named twice): then the validated object is sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import AUTH, CLASSIC_APPID
from tests.support.service import Start, ready
from tokensvc.config import Settings
from tokensvc.simulator import FakeWechat

CUSTOM_API = "/cgi-bin/message/custom/send"


class RecordingRelay:
    """Between tokensvc and the simulator: records each body as it came over the wire."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.bodies: dict[str, list[bytes]] = {}

    async def relay(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.bodies.setdefault(request.path, []).append(raw)
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, self.upstream + request.path_qs, data=raw, headers=headers
            ) as answer,
        ):
            return web.Response(
                status=answer.status, body=await answer.read(), content_type=answer.content_type
            )


@pytest.fixture
async def relay(fake_url: str) -> AsyncIterator[tuple[RecordingRelay, str]]:
    recording = RecordingRelay(fake_url)
    app = web.Application()
    app.router.add_route("*", "/{path:.*}", recording.relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield recording, f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def service(
    make_settings: Callable[..., Settings],
    start_service: Start,
    relay: tuple[RecordingRelay, str],
) -> TestClient[Any, Any]:
    return await ready(start_service, make_settings(wechat={"api_base": relay[1]}))


async def send(service: TestClient[Any, Any], raw: bytes) -> dict[str, Any]:
    response = await service.post(
        f"/v1/apps/{CLASSIC_APPID}/messages/custom",
        headers={**AUTH, "Content-Type": "application/json"},
        data=raw,
    )
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def test_the_body_goes_to_wechat_as_the_bytes_sent(
    service: TestClient[Any, Any], relay: tuple[RecordingRelay, str], fake: FakeWechat
) -> None:
    raw = '{ "text":{"content":"你好, 1.50 €"},"msgtype" :"text", "touser":"openid-3" }'.encode()
    answer = await send(service, raw)
    assert answer["errcode"] == 0
    assert relay[0].bodies[CUSTOM_API] == [raw]  # not re-encoded (no \\u escapes, same order)
    assert fake.sent(CUSTOM_API)[-1].body["text"]["content"] == "你好, 1.50 €"


async def test_a_member_named_twice_is_sent_as_validated(
    service: TestClient[Any, Any], relay: tuple[RecordingRelay, str], fake: FakeWechat
) -> None:
    # another JSON reader may keep the first touser; tokensvc validated (and counts) the last
    raw = (
        b'{"touser": "openid-1", "touser": "openid-3", "msgtype": "text", "text": {"content": "x"}}'
    )
    answer = await send(service, raw)
    assert answer["errcode"] == 0
    (sent,) = relay[0].bodies[CUSTOM_API]
    assert sent.count(b"touser") == 1
    assert json.loads(sent) == {"touser": "openid-3", "msgtype": "text", "text": {"content": "x"}}
    assert fake.sent(CUSTOM_API)[-1].body["touser"] == "openid-3"


async def test_a_body_in_another_encoding_is_sent_as_utf8(
    service: TestClient[Any, Any], relay: tuple[RecordingRelay, str]
) -> None:
    message = {"touser": "openid-3", "msgtype": "text", "text": {"content": "你好"}}
    answer = await send(service, json.dumps(message, ensure_ascii=False).encode("utf-16"))
    assert answer["errcode"] == 0
    (sent,) = relay[0].bodies[CUSTOM_API]
    assert json.loads(sent.decode("utf-8")) == message

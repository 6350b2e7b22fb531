"""``tokensvc.client`` against a live tokensvc and the simulator.

The blocking client runs in a thread (``asyncio.to_thread``) while tokensvc and the simulator run
in the test's event loop. Token lifetimes stay the simulator's 60 s; the client's cache is driven
by an injected clock, so nothing here waits for a token to expire.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import AUTH, CLASSIC_APPID, CLIENT_KEY, LIMITED_KEY, STABLE_APPID
from tests.support.service import Start, free_port, ready, wait_until
from tokensvc.client import (
    AsyncTokensvcClient,
    BadRequest,
    Forbidden,
    TokensvcClient,
    TokensvcUnreachable,
    TokenUnavailable,
    Unauthorized,
    UnknownApp,
)
from tokensvc.config import Settings
from tokensvc.simulator import FakeWechat


class FakeClock:
    """A monotonic clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Counted:
    """Counts the requests a client sends, per path, with httpx's event hooks."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.opened: list[httpx.Client | httpx.AsyncClient] = []

    def sync(self) -> httpx.Client:
        http = httpx.Client(event_hooks={"request": [self._seen]})
        self.opened.append(http)
        return http

    def asynchronous(self) -> httpx.AsyncClient:
        async def seen(request: httpx.Request) -> None:
            self._seen(request)

        http = httpx.AsyncClient(event_hooks={"request": [seen]})
        self.opened.append(http)
        return http

    def _seen(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)


@pytest.fixture
async def counted() -> AsyncIterator[Counted]:
    """A :class:`Counted` whose HTTP clients (passed in, so not the client's own) are closed."""
    counting = Counted()
    yield counting
    for http in counting.opened:
        if isinstance(http, httpx.AsyncClient):
            await http.aclose()
        else:
            http.close()


@pytest.fixture
async def service(
    start_service: Start, make_settings: Callable[..., Settings]
) -> TestClient[Any, Any]:
    return await ready(start_service, make_settings())


def base_url(service: TestClient[Any, Any]) -> str:
    return str(service.make_url("")).rstrip("/")


async def current_token(service: TestClient[Any, Any], appid: str) -> dict[str, Any]:
    body: dict[str, Any] = await (await service.get(f"/v1/apps/{appid}/token", headers=AUTH)).json()
    return body


async def test_the_token_is_cached_until_expires_in(
    service: TestClient[Any, Any], fake: FakeWechat, counted: Counted
) -> None:
    clock = FakeClock()
    with TokensvcClient(base_url(service), CLIENT_KEY, http=counted.sync(), clock=clock) as client:
        first = await asyncio.to_thread(client.token_info, CLASSIC_APPID)
        assert first.access_token == (await current_token(service, CLASSIC_APPID))["access_token"]
        assert fake.is_valid(first.access_token)
        assert 0 < first.expires_in <= 60 and first.version >= 1 and first.expires_at
        assert first.access_token not in repr(first) and CLIENT_KEY not in repr(client)

        clock.now += first.expires_in - 1
        assert await asyncio.to_thread(client.token, CLASSIC_APPID) == first.access_token
        assert counted.paths == [f"/v1/apps/{CLASSIC_APPID}/token"]  # served from the cache

        clock.now += 1  # expires_in has run out: asked again
        await asyncio.to_thread(client.token, CLASSIC_APPID)
        assert len(counted.paths) == 2
        await asyncio.to_thread(client.token, STABLE_APPID)  # each app has its own entry
        assert counted.paths[-1] == f"/v1/apps/{STABLE_APPID}/token"


async def test_a_rejected_token_is_reported_and_replaced_once(
    service: TestClient[Any, Any], fake: FakeWechat, counted: Counted
) -> None:
    with TokensvcClient(base_url(service), CLIENT_KEY, http=counted.sync()) as client:
        old = await asyncio.to_thread(client.token, CLASSIC_APPID)
        calls = fake.token_calls(CLASSIC_APPID)
        fake.revoke(CLASSIC_APPID)  # killed outside tokensvc: WeChat now answers 40001

        # eight threads hit 40001 at once: one report, one upstream token call
        new = await asyncio.gather(
            *(asyncio.to_thread(client.report_rejected, CLASSIC_APPID, old) for _ in range(8))
        )
        assert len(set(new)) == 1 and new[0] != old and fake.is_valid(new[0])
        assert fake.token_calls(CLASSIC_APPID) == calls + 1
        assert counted.paths.count(f"/v1/apps/{CLASSIC_APPID}/token/refresh") == 1
        assert await asyncio.to_thread(client.token, CLASSIC_APPID) == new[0]  # cached
        assert (await current_token(service, CLASSIC_APPID))["access_token"] == new[0]

        with pytest.raises(ValueError, match="41001"):  # not fixed by a new token
            client.report_rejected(CLASSIC_APPID, new[0], 41001)


async def test_call_wechat_retries_once_with_the_replacement(
    service: TestClient[Any, Any], fake: FakeWechat, fake_url: str
) -> None:
    def send(token: str) -> Any:
        body = {"touser": "o-client", "template_id": "t-1", "data": {"k": {"value": "v"}}}
        url = f"{fake_url}/cgi-bin/message/template/send"
        return httpx.post(url, params={"access_token": token}, json=body).json()

    with TokensvcClient(base_url(service), CLIENT_KEY) as client:
        await asyncio.to_thread(client.token, CLASSIC_APPID)
        calls = fake.token_calls(CLASSIC_APPID)
        fake.revoke(CLASSIC_APPID)
        answer = await asyncio.to_thread(client.call_wechat, CLASSIC_APPID, send)
        assert answer["errcode"] == 0
        delivered = fake.sent("/cgi-bin/message/template/send")
        assert [call.body["touser"] for call in delivered].count("o-client") == 1
        assert fake.token_calls(CLASSIC_APPID) == calls + 1

        # an answer that is not about the token is returned as it is, never repeated
        fake.inject("/cgi-bin/message/template/send", "busy")
        answer = await asyncio.to_thread(client.call_wechat, CLASSIC_APPID, send)
        assert answer["errcode"] == -1
        assert len(fake.sent("/cgi-bin/message/template/send")) == len(delivered)


async def test_errors_are_typed_and_never_show_the_key(
    service: TestClient[Any, Any], fake: FakeWechat
) -> None:
    url = base_url(service)
    with TokensvcClient(url, "not-a-key-of-tokensvc") as stranger:
        with pytest.raises(Unauthorized) as unauthorized:
            await asyncio.to_thread(stranger.token, CLASSIC_APPID)
    assert unauthorized.value.status == 401 and "not-a-key" not in str(unauthorized.value)
    with TokensvcClient(url, LIMITED_KEY) as limited:
        with pytest.raises(Forbidden) as forbidden:
            await asyncio.to_thread(limited.token, CLASSIC_APPID)
        assert forbidden.value.error == "forbidden"
    with TokensvcClient(url, CLIENT_KEY) as client:
        with pytest.raises(UnknownApp):
            await asyncio.to_thread(client.token, "wx0000000000000000")
        with pytest.raises(BadRequest):  # no token is 4 KB long: refused before anything happens
            await asyncio.to_thread(client.report_rejected, CLASSIC_APPID, "x" * 4096)

    with TokensvcClient(f"http://127.0.0.1:{free_port()}", CLIENT_KEY, timeout=2) as nowhere:
        with pytest.raises(TokensvcUnreachable) as unreachable:
            await asyncio.to_thread(nowhere.token, CLASSIC_APPID)
    assert unreachable.value.status is None and CLIENT_KEY not in str(unreachable.value)


async def test_no_valid_token_is_token_unavailable_with_errcode_and_retry_after(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    fake.apps[STABLE_APPID] = "rotated-secret"  # tokensvc's AppSecret is now wrong
    service = await start_service(make_settings())
    await wait_until(lambda: fake.token_calls(STABLE_APPID))
    async with AsyncTokensvcClient(base_url(service), CLIENT_KEY) as client:
        with pytest.raises(TokenUnavailable) as unavailable:
            await client.token(STABLE_APPID)
    assert unavailable.value.errcode == 40125 and unavailable.value.status == 503
    assert unavailable.value.retry_after is not None and unavailable.value.retry_after > 500


async def test_the_async_client_shares_one_request_and_retries_like_the_blocking_one(
    service: TestClient[Any, Any], fake: FakeWechat, fake_url: str, counted: Counted
) -> None:
    clock = FakeClock()
    async with AsyncTokensvcClient(
        base_url(service), CLIENT_KEY, http=counted.asynchronous(), clock=clock
    ) as client:
        tokens = await asyncio.gather(*(client.token(STABLE_APPID) for _ in range(20)))
        assert len(set(tokens)) == 1 and counted.paths == [f"/v1/apps/{STABLE_APPID}/token"]
        info = await client.token_info(STABLE_APPID)
        clock.now += info.expires_in
        await client.token(STABLE_APPID)
        assert len(counted.paths) == 2

        async with httpx.AsyncClient() as wechat:

            async def send(token: str) -> Any:
                url = f"{fake_url}/cgi-bin/message/subscribe/send"
                body = {"touser": "o-async", "template_id": "t-2", "data": {"k": {"value": "v"}}}
                answer = await wechat.post(url, params={"access_token": token}, json=body)
                return answer.json()

            calls = fake.token_calls(STABLE_APPID)
            fake.revoke(STABLE_APPID)
            answer = await client.call_wechat(STABLE_APPID, send)
        assert answer["errcode"] == 0
        assert fake.token_calls(STABLE_APPID) == calls + 1
        assert [c.body["touser"] for c in fake.sent("/cgi-bin/message/subscribe/send")] == [
            "o-async"
        ]

"""No blind resends: only a connection that was never established is tried again, once."""

from __future__ import annotations

from typing import Any

import pytest

from tokensvc.config import AppConfig
from tokensvc.errors import UpstreamTimeout, UpstreamUnavailable
from tokensvc.secret import Secret
from tokensvc.sender import Sender
from tokensvc.wechat.client import RawAnswer

OK = RawAnswer(200, "application/json", b'{"openid": "o", "session_key": "k"}')
APP = AppConfig("wx1", "mini", "miniprogram", "stable", Secret("s"))


class ScriptedClient:
    """Stands in for WechatClient.exchange: raises or answers in the order given."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.calls = 0

    async def exchange(self, method: str, api: str, **kwargs: Any) -> RawAnswer:
        self.calls += 1
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        assert isinstance(step, RawAnswer)
        return step


async def test_a_connection_never_established_is_tried_once_more() -> None:
    client = ScriptedClient(
        UpstreamUnavailable("/sns/jscode2session", "refused", request_sent=False), OK
    )
    answer = await Sender(client, token_wait=1.0).jscode2session(APP, "code")  # type: ignore[arg-type]
    assert answer is OK and client.calls == 2


async def test_twice_unreachable_gives_up() -> None:
    unsent = UpstreamUnavailable("/sns/jscode2session", "refused", request_sent=False)
    client = ScriptedClient(unsent, unsent, OK)
    with pytest.raises(UpstreamUnavailable):
        await Sender(client, token_wait=1.0).jscode2session(APP, "code")  # type: ignore[arg-type]
    assert client.calls == 2


@pytest.mark.parametrize(
    "failure",
    [
        UpstreamUnavailable("/sns/jscode2session", "reset", request_sent=True),
        UpstreamTimeout("/sns/jscode2session", "no answer"),
    ],
)
async def test_a_request_that_may_have_arrived_is_never_resent(failure: Exception) -> None:
    client = ScriptedClient(failure, OK)
    with pytest.raises(type(failure)):
        await Sender(client, token_wait=1.0).jscode2session(APP, "code")  # type: ignore[arg-type]
    assert client.calls == 1

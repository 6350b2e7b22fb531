"""No AppSecret, access_token or client key ever reaches a log line."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from tests.conftest import (
    ADMIN_KEY,
    AUTH,
    CLASSIC_APPID,
    CLIENT_KEY,
    LIMITED_KEY,
    SECRETS,
    STABLE_APPID,
)
from tests.support.service import Start, ready
from tokensvc.config import Settings, fingerprint
from tokensvc.logs import quiet_sensitive_loggers
from tokensvc.wechat.fake import FakeWechat


async def test_logs_hold_fingerprints_never_secrets_tokens_or_keys(
    fake: FakeWechat,
    make_settings: Callable[..., Settings],
    start_service: Start,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    quiet_sensitive_loggers()  # what `tokensvc serve` does at any [logging] level
    client = await ready(start_service, make_settings())
    tokens = set()
    for appid in (CLASSIC_APPID, STABLE_APPID):
        body = await (await client.get(f"/v1/apps/{appid}/token", headers=AUTH)).json()
        tokens.add(body["access_token"])
        fake.revoke(appid)
        answer = await client.post(
            f"/v1/apps/{appid}/token/refresh",
            headers=AUTH,
            json={"stale_token": body["access_token"], "errcode": 40001},
        )
        tokens.add((await answer.json())["access_token"])
    fake.apps[CLASSIC_APPID] = "changed"  # a wrong secret: the error path logs too
    stale = (await (await client.get(f"/v1/apps/{CLASSIC_APPID}/token", headers=AUTH)).json())[
        "access_token"
    ]
    fake.revoke(CLASSIC_APPID)
    await client.post(
        f"/v1/apps/{CLASSIC_APPID}/token/refresh", headers=AUTH, json={"stale_token": stale}
    )
    await client.get(
        f"/v1/apps/{CLASSIC_APPID}/token", headers={"Authorization": "Bearer not-a-key-123"}
    )
    await client.get(
        f"/v1/apps/{CLASSIC_APPID}/token", headers={"Authorization": f"Bearer {LIMITED_KEY}"}
    )
    text = caplog.text
    assert "refresh app=" in text and "client=orders" in text  # the logs did capture the traffic
    for value in [*SECRETS.values(), CLIENT_KEY, LIMITED_KEY, ADMIN_KEY, "not-a-key-123", *tokens]:
        assert value not in text
    assert any(fingerprint(t) in text for t in tokens)  # tokens appear only as fingerprints

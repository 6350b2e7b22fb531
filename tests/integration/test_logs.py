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
from tokensvc.config import Settings
from tokensvc.logs import quiet_sensitive_loggers
from tokensvc.secret import fingerprint
from tokensvc.simulator import FakeWechat


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


async def test_token_reads_are_summarised_per_client_and_app_errors_logged_at_once(
    make_settings: Callable[..., Settings],
    start_service: Start,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    client = await ready(start_service, make_settings())
    caplog.clear()
    for _ in range(3):
        assert (await client.get(f"/v1/apps/{CLASSIC_APPID}/token", headers=AUTH)).status == 200
    limited = {"Authorization": f"Bearer {LIMITED_KEY}"}
    assert (await client.get(f"/v1/apps/{STABLE_APPID}/token", headers=limited)).status == 200
    denied = await client.get(f"/v1/apps/{CLASSIC_APPID}/token", headers=limited)
    assert denied.status == 403
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    # a successful read writes no line of its own; a refused one does, at once
    assert len(lines) == 1
    assert lines[0].startswith(f"GET /v1/apps/{CLASSIC_APPID}/token 403 client=limited ")

    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    metrics = await (await client.get("/metrics", headers=admin)).text()
    counted = f'tokensvc_token_requests_total{{appid="{CLASSIC_APPID}",client="orders"}} '
    reads = int(float(metrics.split(counted)[1].split()[0]))  # readiness polls, then our 3
    await client.close()  # shutdown writes the reads counted since the last summary
    summary = [r.getMessage() for r in caplog.records if "token reads" in r.getMessage()]
    assert len(summary) == 1, summary
    assert "(not logged one by one)" in summary[0]
    assert f"client=limited app={STABLE_APPID} 1 (slowest " in summary[0]
    assert f"client=orders app={CLASSIC_APPID} {reads} (slowest " in summary[0]
    assert LIMITED_KEY not in summary[0] and CLIENT_KEY not in summary[0]

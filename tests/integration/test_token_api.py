"""The /v1 token API through the real app on loopback: answers, auth, bad input."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

from tests.conftest import AUTH, CLASSIC_APPID, LIMITED_KEY, STABLE_APPID
from tests.support.service import Start, ready
from tokensvc.config import Settings
from tokensvc.simulator import FakeWechat


async def test_token_answer_shape(
    fake: FakeWechat, make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await ready(start_service, make_settings())
    response = await client.get(f"/v1/apps/{CLASSIC_APPID}/token", headers=AUTH)
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert set(body) == {"appid", "access_token", "expires_in", "expires_at", "version"}
    assert body["appid"] == CLASSIC_APPID and body["version"] == 1
    assert fake.is_valid(body["access_token"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["expires_at"])
    # 60 s token, classic margin scaled to 15 s, overlap 5 s, safety 0.5 s
    assert 45 <= body["expires_in"] <= 50


async def test_healthz_needs_no_auth(
    make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await start_service(make_settings())
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def expect_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body: dict[str, Any] = await response.json()
    assert body["error"] == code and body["message"]
    return body


async def test_auth_answers(make_settings: Callable[..., Settings], start_service: Start) -> None:
    client = await ready(start_service, make_settings())
    url = f"/v1/apps/{CLASSIC_APPID}/token"
    response = await client.get(url)
    await expect_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    await expect_error(
        await client.get(url, headers={"Authorization": "Bearer wrong"}), 401, "unauthorized"
    )
    await expect_error(
        await client.get(url, headers={"Authorization": "Basic abc"}), 401, "unauthorized"
    )
    limited = {"Authorization": f"Bearer {LIMITED_KEY}"}
    body = await expect_error(await client.get(url, headers=limited), 403, "forbidden")
    assert "limited" in body["message"] and LIMITED_KEY not in body["message"]
    assert (await client.get(f"/v1/apps/{STABLE_APPID}/token", headers=limited)).status == 200
    await expect_error(
        await client.get("/v1/apps/wxunknown/token", headers=AUTH), 404, "unknown_app"
    )
    # an unknown key learns nothing about which apps exist
    await expect_error(await client.get("/v1/apps/wxunknown/token"), 401, "unauthorized")


async def test_bad_input_answers(
    make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await ready(start_service, make_settings())
    url = f"/v1/apps/{STABLE_APPID}/token/refresh"
    json_headers = {**AUTH, "Content-Type": "application/json"}
    await expect_error(
        await client.post(url, headers=json_headers, data="{not json"), 400, "bad_request"
    )
    await expect_error(await client.post(url, headers=json_headers, data=""), 400, "bad_request")
    await expect_error(await client.post(url, headers=json_headers, data="[1]"), 400, "bad_request")
    for deep in ("[" * 60_000, '{"a":' * 10_000):  # RecursionError in the JSON parser
        body = await expect_error(
            await client.post(url, headers=json_headers, data=deep), 400, "bad_request"
        )
        assert "nested" in body["message"]
    body = await expect_error(await client.post(url, headers=AUTH, json={}), 400, "bad_request")
    assert "stale_token" in body["message"]
    body = await expect_error(
        await client.post(url, headers=AUTH, json={"stale_token": 5}), 400, "bad_request"
    )
    assert "stale_token" in body["message"]
    body = await expect_error(
        await client.post(url, headers=AUTH, json={"stale_token": "x", "errcode": "40001"}),
        400,
        "bad_request",
    )
    assert "errcode" in body["message"]
    body = await expect_error(
        await client.post(url, headers=AUTH, json={"stale_token": "x", "errcode": 41001}),
        400,
        "bad_request",
    )
    assert "41001" in body["message"]
    big = {"stale_token": "x" * (65 * 1024)}
    await expect_error(await client.post(url, headers=AUTH, json=big), 413, "payload_too_large")
    huge = io.BytesIO(b"{" + b" " * (2 << 20) + b"}")
    await expect_error(
        await client.post(url, headers=json_headers, data=huge), 413, "payload_too_large"
    )
    await expect_error(await client.get("/v1/nothing", headers=AUTH), 404, "not_found")
    response = await client.delete(f"/v1/apps/{STABLE_APPID}/token", headers=AUTH)
    await expect_error(response, 405, "method_not_allowed")
    # unauthorised bodies are refused before they are read
    await expect_error(await client.post(url, data="{not json"), 401, "unauthorized")


async def test_a_client_can_list_the_apps_it_may_use(
    make_settings: Callable[..., Settings], start_service: Start
) -> None:
    client = await start_service(make_settings())
    everything = await (await client.get("/v1/apps", headers=AUTH)).json()
    assert [a["appid"] for a in everything["apps"]] == [CLASSIC_APPID, STABLE_APPID]
    assert everything["apps"][0] == {
        "appid": CLASSIC_APPID,
        "name": "Classic OA",
        "kind": "official_account",
        "token_api": "classic",
    }
    limited = await (
        await client.get("/v1/apps", headers={"Authorization": f"Bearer {LIMITED_KEY}"})
    ).json()
    assert [a["appid"] for a in limited["apps"]] == [STABLE_APPID]
    assert (await client.get("/v1/apps")).status == 401

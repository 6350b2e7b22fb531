"""Hostile and broken requests, sent over real sockets where it matters: each gets a defined 4xx,
nothing partial is forwarded, resources stay bounded, no key reaches a log line or a body."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN_KEY, AUTH, CLASSIC_APPID, CLIENT_KEY, STABLE_APPID
from tests.support.service import Start, ready
from tokensvc.simulator import FakeWechat

SEND = f"/v1/apps/{STABLE_APPID}/wechat/cgi-bin/message/custom/send"


async def raw_request(
    client: TestClient[Any, Any],
    head: str | bytes,
    pieces: list[bytes] = (),  # type: ignore[assignment]
    *,
    gap: float = 0.0,
    timeout: float = 15.0,
) -> tuple[int, dict[str, str], bytes]:
    """Send a request head and body pieces (``gap`` seconds apart) on a fresh connection; return
    the status, headers and body of the answer (read until the server closes or the body ends)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(head.encode("latin-1") if isinstance(head, str) else head)
        await writer.drain()
        for piece in pieces:
            await asyncio.sleep(gap)
            writer.write(piece)
            await writer.drain()
        async with asyncio.timeout(timeout):
            status_line = await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            body = await reader.readexactly(length)
        return int(status_line.split()[1]), headers, body
    finally:
        writer.close()


def head(method: str, path: str, *headers: str, auth: str = f"Bearer {CLIENT_KEY}") -> str:
    lines = [f"{method} {path} HTTP/1.1", "Host: tokensvc", f"Authorization: {auth}", *headers]
    return "\r\n".join(lines) + "\r\n\r\n"


@pytest.fixture
async def service(start_service: Start, make_settings: Any) -> TestClient[Any, Any]:
    return await ready(start_service, make_settings())


# 1. Metric labels come from a bounded set, whatever paths clients send.
async def test_metric_labels_stay_bounded(service: TestClient[Any, Any]) -> None:
    for i in range(200):
        await service.get(f"/v1/apps/{STABLE_APPID}/wechat/wxa/random{i}x", headers=AUTH)
        await service.get(f"/v1/apps/{STABLE_APPID}/wechat/nothing{i}/y", headers=AUTH)
    await service.get(f"/v1/apps/{STABLE_APPID}/wechat/cgi-bin/user/info", headers=AUTH)
    metrics = await (
        await service.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    ).text()
    apis = set(re.findall(r'api="([^"]*)"', metrics))
    assert apis <= {
        "/wxa/",
        "/cgi-bin/user/",
        "/cgi-bin/token",
        "/cgi-bin/stable_token",
        "other",
    }, apis
    assert "/wxa/" in apis and not any("random" in api for api in apis)
    assert len(metrics) < 40_000


# 2. Bodies are read whole: chunked past the limit is 413; slow and split bodies arrive intact.
async def test_chunked_body_past_the_limit_is_refused_and_not_forwarded(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    chunk = b"x" * 65536
    pieces = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 32 + [b"0\r\n\r\n"]  # 2 MiB
    status, _, body = await raw_request(
        service,
        head("POST", SEND, "Content-Type: application/json", "Transfer-Encoding: chunked"),
        pieces,
    )
    assert status == 413 and json.loads(body)["error"] == "payload_too_large"
    assert fake.sent("/cgi-bin/message/custom/send") == []


async def test_a_slow_body_in_pieces_is_forwarded_whole(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    message = {"touser": "o-1", "msgtype": "text", "text": {"content": "y" * 300_000}}
    raw = json.dumps(message).encode()
    pieces = [raw[i : i + 20_000] for i in range(0, len(raw), 20_000)]  # 15 pieces, 30 ms apart
    status, _, body = await raw_request(
        service,
        head("POST", SEND, "Content-Type: application/json", f"Content-Length: {len(raw)}"),
        pieces,
        gap=0.03,
    )
    assert status == 200, body
    assert fake.sent("/cgi-bin/message/custom/send")[-1].body == message

    template = {
        "touser": "o-1",
        "template_id": "t-1",
        "data": {f"k{i}": {"value": "z" * 500} for i in range(20)},  # 10 KB
    }
    raw = json.dumps(template).encode()
    status, _, body = await raw_request(
        service,
        head(
            "POST",
            f"/v1/apps/{CLASSIC_APPID}/messages/template",
            "Content-Type: application/json",
            f"Content-Length: {len(raw)}",
        ),
        [raw[:5000], raw[5000:]],
        gap=0.05,
    )
    assert status == 200, body


# 3. A stalled body gets 408 within [server] body_timeout (10 s by default) and the connection
# is closed; 20 of them at once hold nothing for long.
@pytest.mark.slow
async def test_stalled_bodies_time_out(service: TestClient[Any, Any]) -> None:
    started = time.monotonic()

    async def stall() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        writer.write(head("POST", SEND, "Content-Length: 1000").encode())
        await writer.drain()
        try:
            async with asyncio.timeout(25):
                answer = await reader.read()  # until the server closes the connection
        finally:
            writer.close()
        return int(answer.split()[1]), answer

    async def unfinished(head: bytes) -> float:
        """Seconds until the server closes a connection whose request never completes."""
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        writer.write(head)
        await writer.drain()
        try:
            async with asyncio.timeout(40):
                assert await reader.read() == b""
        finally:
            writer.close()
        return time.monotonic() - started

    heads = [b"", b"GET /heal", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"]
    answers, closed = await asyncio.gather(
        asyncio.gather(*(stall() for _ in range(20))),
        asyncio.gather(*(unfinished(head) for head in heads)),
    )
    assert all(status == 408 for status, _ in answers), answers[0]
    assert b'"request_timeout"' in answers[0][1]
    assert all(seconds < 25 for seconds in closed), closed  # keep-alive timeout: 15 s


# 4. '.' segments and encodings never reach WeChat, even under a parent allow prefix.
async def test_dot_segments_cannot_bypass_the_deny_list(
    fake: FakeWechat, start_service: Start, make_settings: Any
) -> None:
    service = await ready(start_service, make_settings(proxy={"allow": ["cgi-bin/"]}))
    token_calls = fake.token_calls()
    base = f"/v1/apps/{CLASSIC_APPID}/wechat/"
    for path in (
        "cgi-bin/./clear_quota",
        "cgi-bin/%2e/token",
        "cgi-bin/%2E/stable_token",
        "cgi-bin/./stable_token",
        "cgi-bin/user/../token",
        "cgi-bin/user/%2e%2e/token",
        "cgi-bin%2f.%2ftoken",
        "cgi-bin/user%3finfo",
        "cgi-bin/.%2e/sns/jscode2session",
        "cgi-bin//token",
        "cgi-bin/user/info/.",
    ):
        status, _, body = await raw_request(service, head("GET", base + path))
        assert status == 400, (path, body)
        assert json.loads(body)["error"] == "bad_request"
    for path in ("cgi-bin/clear_quota", "cgi-bin/Token", "cgi-bin/openapi/quota/clear"):
        status, _, _ = await raw_request(service, head("GET", base + path))
        assert status == 403, path
    assert fake.count("/cgi-bin/clear_quota") == 0 and fake.token_calls() == token_calls
    assert fake.count("/sns/jscode2session") == 0


# 5. and 6. Authorization headers with bytes no key holds: 401 or 400, never a 500, never echoed.
async def test_non_utf8_authorization_is_401(service: TestClient[Any, Any]) -> None:
    for scheme in (b"Bearer", b"Basic"):
        for path in (b"/v1/apps", b"/v1/status", f"/v1/apps/{CLASSIC_APPID}/token".encode()):
            request = b"GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: %s \xff\xfe\r\n\r\n" % (
                path,
                scheme,
            )
            status, _, body = await raw_request(service, request)
            assert status == 401, (scheme, path, body)
            assert json.loads(body)["error"] == "unauthorized"
    basic = base64.b64encode(b"admin:\xff\xfe").decode()
    status, _, _ = await raw_request(service, head("GET", "/v1/status", auth=f"Basic {basic}"))
    assert status == 401


async def test_a_malformed_header_logs_one_warning_and_echoes_nothing(
    service: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for raw_head in (
        head("GET", "/v1/apps", auth=f"Bearer {CLIENT_KEY}\x7f"),
        head("GET", "/v1/apps", auth=f"Bearer {CLIENT_KEY[:8]}\x01{CLIENT_KEY[8:]}"),
        head("GET", "/v1/apps", f"Bad Header: {CLIENT_KEY}"),
    ):
        caplog.clear()
        status, headers, body = await raw_request(service, raw_head)
        assert status == 400 and headers["content-type"].startswith("application/json")
        assert json.loads(body)["error"] == "bad_request"
        assert CLIENT_KEY[:8].encode() not in body
        assert CLIENT_KEY[:8] not in caplog.text
        assert [r.levelname for r in caplog.records] == ["WARNING"], caplog.text
        assert not any(r.exc_info for r in caplog.records)


# 9. Operator buttons behind a TLS-terminating proxy listed in [server] trusted_proxies.
async def test_operator_action_behind_a_trusted_tls_proxy(
    start_service: Start, make_settings: Any
) -> None:
    basic = base64.b64encode(f"ops:{ADMIN_KEY}".encode()).decode()
    action = {
        "Authorization": f"Basic {basic}",
        "X-Requested-With": "tokensvc",
        "Origin": "https://tokens.example.com",
    }
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "tokens.example.com"}
    url = f"/v1/apps/{CLASSIC_APPID}/token/rotate"

    untrusting = await ready(start_service, make_settings())
    response = await untrusting.post(url, headers={**action, **forwarded})
    assert response.status == 403  # forwarding headers from anyone are ignored
    await untrusting.close()

    trusting = await ready(start_service, make_settings(server={"trusted_proxies": ["127.0.0.1"]}))
    response = await trusting.post(url, headers={**action, **forwarded})
    assert response.status == 200, await response.text()
    rfc7239 = {"Forwarded": 'for=10.0.0.9;proto=https;host="tokens.example.com"'}
    assert (await trusting.post(url, headers={**action, **rfc7239})).status == 200
    response = await trusting.post(
        url, headers={**action, **forwarded, "Origin": "https://evil.example"}
    )
    assert response.status == 403
    assert (await trusting.post(url, headers=action)).status == 403  # no forwarding headers


# 10. The passthrough never relays an HTTP error or an HTML page as if it were WeChat's answer.
async def test_passthrough_maps_upstream_errors_and_html_to_502(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    url = f"/v1/apps/{CLASSIC_APPID}/wechat/cgi-bin/user/info"
    for fault in ("http500", "malformed"):
        fake.inject("/cgi-bin/user/info", fault)
        response = await service.get(url, headers=AUTH, params={"openid": "o-1"})
        assert response.status == 502, fault
        assert (await response.json())["error"] == "upstream_bad_response"
    response = await service.get(url, headers=AUTH, params={"openid": "o-1"})
    assert response.status == 200 and (await response.json())["openid"] == "o-1"


# The passthrough reads WeChat's whole answer: large media intact, a nested JSON answer a 502.
async def test_passthrough_relays_whole_answers(
    fake: FakeWechat, service: TestClient[Any, Any]
) -> None:
    image = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8192  # 2 MiB
    fake.add_media("big", image, "image/png")
    fake.add_media("deep", b'{"a":' + b"[" * 200_000 + b"]" * 200_000 + b"}", "application/json")
    url = f"/v1/apps/{CLASSIC_APPID}/wechat/cgi-bin/media/get"
    response = await service.get(url, headers=AUTH, params={"media_id": "big"})
    assert response.status == 200 and response.content_type == "image/png"
    assert await response.read() == image
    fake.add_media("huge", b"v" * (12 << 20), "video/mp4")  # over the 10 MiB answer limit
    response = await service.get(url, headers=AUTH, params={"media_id": "huge"})
    assert response.status == 502 and (await response.json())["error"] == "upstream_bad_response"
    response = await service.get(url, headers=AUTH, params={"media_id": "deep"})
    assert response.status == 502 and (await response.json())["error"] == "upstream_bad_response"


# 11. Messages that name the problem; 405 names the allowed methods and sends Allow.
async def test_error_messages_name_the_problem(service: TestClient[Any, Any]) -> None:
    url = f"/v1/apps/{CLASSIC_APPID}/token/refresh"
    response = await service.post(url, headers=AUTH, json={"stale_token": 5})
    assert (await response.json())["message"] == "field stale_token must be a string"
    response = await service.post(url, headers=AUTH, json={})
    assert "field stale_token is required" in (await response.json())["message"]

    response = await service.delete(f"/v1/apps/{CLASSIC_APPID}/token", headers=AUTH)
    assert response.status == 405 and response.headers["Allow"] == "GET,HEAD"
    body = await response.json()
    assert body["error"] == "method_not_allowed" and "use GET, HEAD" in body["message"]


async def test_every_error_is_json(service: TestClient[Any, Any]) -> None:
    for method, path in (
        ("GET", "/nope"),
        ("PUT", "/v1/apps"),
        ("GET", "/v1/apps/wxunknown/token"),
        ("POST", f"/v1/apps/{CLASSIC_APPID}/messages/nope"),
    ):
        response = await service.request(method, path, headers=AUTH)
        assert 400 <= response.status < 500
        body = await response.json()
        assert set(body) >= {"error", "message"}, (method, path, body)

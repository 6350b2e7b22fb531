"""Receiving WeChat's pushes over HTTP: the URL check, plaintext and safe-mode pushes from the
simulator's pusher, WeChat's retries stored once, and every refusal answered with a JSON 4xx,
nothing stored and nothing forwarded. tokensvc runs on loopback with its real outbox; a forward
target (a small aiohttp server) shows what reaches business servers."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from tests.conftest import ADMIN_KEY, CLASSIC_APPID, SECRET_ENV, STABLE_APPID, base_config
from tests.support.service import Start, wait_until
from tokensvc.config import Settings, parse_settings
from tokensvc.errors import StoreUnavailable
from tokensvc.push import signing
from tokensvc.push.crypto import sha1_signature
from tokensvc.push.receive import MAX_PUSH_BYTES
from tokensvc.simulator.push import PreparedPush, WechatPusher, make_encoding_aes_key
from tokensvc.store.tables import PushMessage
from tokensvc.web import push as web_push
from tokensvc.web.keys import METRICS, OUTBOX, STORE

OA_TOKEN = "oaPushToken2026"
MP_TOKEN = "mpPushToken2026"
MP_AES_KEY = make_encoding_aes_key()
HOOK_KEY = "hook-key-5d1c0a9e8b7f6a5d4c3b"
ENV = {
    **SECRET_ENV,
    "OA_PUSH_TOKEN": OA_TOKEN,
    "MP_PUSH_TOKEN": MP_TOKEN,
    "MP_PUSH_AES": MP_AES_KEY,
    "HOOK_KEY": HOOK_KEY,
}


class Target:
    """A business server registered as a forward target: keeps every verified delivery."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.unverified = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not signing.verify(
            HOOK_KEY,
            body,
            request.headers.get(signing.TIMESTAMP_HEADER),
            request.headers.get(signing.SIGNATURE_HEADER),
            time.time(),
        ):
            self.unverified += 1
            return web.Response(status=401)
        self.received.append(json.loads(body))
        return web.Response(text="ok")


@pytest.fixture
async def target() -> AsyncIterator[tuple[Target, str]]:
    sink = Target()
    app = web.Application()
    app.router.add_post("/hook", sink.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield sink, f"http://127.0.0.1:{port}/hook"
    await runner.cleanup()


@pytest.fixture
def push_settings(
    fake_url: str, tmp_path: Path, target: tuple[Target, str]
) -> Callable[[], Settings]:
    """The official account pushes plaintext XML, the mini program safe-mode JSON; both
    forward to the target."""

    def make() -> Settings:
        raw = base_config(fake_url, f"sqlite+aiosqlite:///{tmp_path / 'tokensvc.db'}")
        forward = [{"url": target[1], "secret_env": "HOOK_KEY"}]
        raw["apps"][0]["push"] = {"token_env": "OA_PUSH_TOKEN", "forward": forward}
        raw["apps"][1]["push"] = {
            "token_env": "MP_PUSH_TOKEN",
            "encoding_aes_key_env": "MP_PUSH_AES",
            "format": "json",
            "forward": forward,
        }
        return parse_settings(raw, env=ENV)

    return make


@pytest.fixture
async def service(
    push_settings: Callable[[], Settings], start_service: Start
) -> TestClient[Any, Any]:
    return await start_service(push_settings())


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def oa_pusher(service: TestClient[Any, Any], session: aiohttp.ClientSession) -> WechatPusher:
    url = str(service.make_url(f"/wechat/push/{CLASSIC_APPID}"))
    return WechatPusher(session, url, appid=CLASSIC_APPID, token=OA_TOKEN)


def mp_pusher(service: TestClient[Any, Any], session: aiohttp.ClientSession) -> WechatPusher:
    url = str(service.make_url(f"/wechat/push/{STABLE_APPID}"))
    return WechatPusher(
        session,
        url,
        appid=STABLE_APPID,
        token=MP_TOKEN,
        encoding_aes_key=MP_AES_KEY,
        mode="safe",
        format="json",
    )


def received(service: TestClient[Any, Any], appid: str, outcome: str) -> float:
    value = service.app[METRICS].registry.get_sample_value(
        "tokensvc_push_received_total", {"appid": appid, "outcome": outcome}
    )
    return value or 0.0


async def stored(service: TestClient[Any, Any]) -> int:
    async with service.app[STORE].engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(PushMessage))).scalar_one())


async def post(
    service: TestClient[Any, Any], appid: str, prepared: PreparedPush, body: bytes | None = None
) -> aiohttp.ClientResponse:
    return await service.post(
        f"/wechat/push/{appid}", params=prepared.query, data=prepared.body if body is None else body
    )


# ---- URL check ---------------------------------------------------------------------------------


async def test_url_check_echoes_echostr_and_logs_nothing_of_the_query(
    service: TestClient[Any, Any],
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    pusher = oa_pusher(service, session)
    answer = await pusher.verify_url("5927782489442352469")
    assert (answer.status, answer.text) == (200, "5927782489442352469")
    wrong = WechatPusher(session, pusher.url, appid=CLASSIC_APPID, token="notTheToken")
    refused = await wrong.verify_url("1234567890")
    assert refused.status == 403
    assert json.loads(refused.text)["error"] == "bad_signature"
    for line in (r.getMessage() for r in caplog.records):
        assert "signature" not in line.replace("bad_signature", "")
        assert "5927782489442352469" not in line and "1234567890" not in line
        assert OA_TOKEN not in line
    assert any(f"/wechat/push/{CLASSIC_APPID}" in r.getMessage() for r in caplog.records)


async def test_unknown_app_and_app_without_push_are_404(
    push_settings: Callable[[], Settings],
    start_service: Start,
    session: aiohttp.ClientSession,
) -> None:
    settings = push_settings()
    no_mp_push = parse_settings(
        {
            **base_config(settings.wechat.api_base, settings.database.url),
            "apps": [
                {**base_config("", "")["apps"][0], "push": {"token_env": "OA_PUSH_TOKEN"}},
                base_config("", "")["apps"][1],
            ],
        },
        env=ENV,
    )
    service = await start_service(no_mp_push)
    for appid in (STABLE_APPID, "wx0000000000000000", "not-an-appid"):
        answer = await service.get(f"/wechat/push/{appid}", params={"echostr": "1"})
        assert answer.status == 404
        assert (await answer.json())["error"] == "not_found"
        answer = await service.post(f"/wechat/push/{appid}", data=b"<xml/>")
        assert answer.status == 404


# ---- accepted pushes ---------------------------------------------------------------------------


async def test_a_push_retried_three_times_is_stored_and_forwarded_once(
    service: TestClient[Any, Any],
    session: aiohttp.ClientSession,
    target: tuple[Target, str],
) -> None:
    sink, _ = target
    pusher = oa_pusher(service, session)
    event = pusher.event("openid-sub-1", "subscribe", EventKey="qrscene_42")
    answers = await pusher.push(event, tries=3)
    assert [(a.status, a.text) for a in answers] == [(200, "success")] * 3
    assert received(service, CLASSIC_APPID, "accepted") == 1
    assert received(service, CLASSIC_APPID, "duplicate") == 2
    assert await stored(service) == 1
    await wait_until(lambda: sink.received)
    await asyncio.sleep(0.3)  # a second delivery would have come by now
    assert len(sink.received) == 1
    delivered = sink.received[0]
    assert delivered["appid"] == CLASSIC_APPID and delivered["event_id"]
    assert delivered["Event"] == "subscribe" and delivered["EventKey"] == "qrscene_42"
    assert delivered["FromUserName"] == "openid-sub-1"
    assert sink.unverified == 0


async def test_safe_mode_json_pushes_of_a_mini_program(
    service: TestClient[Any, Any],
    session: aiohttp.ClientSession,
    target: tuple[Target, str],
) -> None:
    sink, _ = target
    pusher = mp_pusher(service, session)
    popup = pusher.popup("openid-mp-1", [("tmpl-A", "accept"), ("tmpl-B", "reject")])
    text = pusher.text("openid-mp-1", "你好 <b>&amp;")
    for message in (popup, text):
        for answer in await pusher.push(message, tries=2):
            assert (answer.status, answer.text) == (200, "success")
    assert received(service, STABLE_APPID, "accepted") == 2
    assert received(service, STABLE_APPID, "duplicate") == 2
    await wait_until(lambda: len(sink.received) == 2)
    by_type = {m["MsgType"]: m for m in sink.received}
    assert by_type["text"]["Content"] == "你好 <b>&amp;"
    assert by_type["text"]["MsgId"] == text["MsgId"]
    items = by_type["event"]["SubscribeMsgPopupEvent"]["List"]
    assert [(i["TemplateId"], i["SubscribeStatusString"]) for i in items] == [
        ("tmpl-A", "accept"),
        ("tmpl-B", "reject"),
    ]
    assert "Encrypt" not in by_type["text"]


async def test_pushes_are_answered_well_within_wechats_5_seconds(
    service: TestClient[Any, Any], session: aiohttp.ClientSession
) -> None:
    pusher = mp_pusher(service, session)
    slowest = 0.0
    for i in range(20):
        started = time.perf_counter()
        answers = await pusher.push(pusher.text(f"openid-{i}", "hi"))
        slowest = max(slowest, time.perf_counter() - started)
        assert answers[0].text == "success"
    assert slowest < 1.0, f"slowest push answer took {slowest:.3f}s"


# ---- refusals ----------------------------------------------------------------------------------


async def test_refused_pushes_are_json_4xx_with_nothing_stored_or_forwarded(
    service: TestClient[Any, Any],
    session: aiohttp.ClientSession,
    target: tuple[Target, str],
) -> None:
    sink, _ = target
    oa, mp = oa_pusher(service, session), mp_pusher(service, session)
    good_oa = oa.prepare(oa.text("openid-1", "hi"))
    good_mp = mp.prepare(mp.text("openid-2", "hi"))
    other_token = WechatPusher(session, oa.url, appid=CLASSIC_APPID, token="someOtherToken")
    other_key = WechatPusher(
        session,
        mp.url,
        appid=STABLE_APPID,
        token=MP_TOKEN,
        encoding_aes_key=make_encoding_aes_key(),
        mode="safe",
        format="json",
    )
    stale = oa.prepare(oa.text("openid-1", "hi"), timestamp=int(time.time()) - 3600)
    encrypted_to_oa = WechatPusher(
        session,
        oa.url,
        appid=CLASSIC_APPID,
        token=OA_TOKEN,
        encoding_aes_key=make_encoding_aes_key(),
        mode="safe",
    ).prepare(oa.text("o", "x"))
    plain_to_mp = WechatPusher(
        session, mp.url, appid=STABLE_APPID, token=MP_TOKEN, format="json"
    ).prepare(mp.text("o", "x"))
    cases: list[tuple[str, PreparedPush, bytes | None, int, str]] = [
        (CLASSIC_APPID, other_token.prepare(oa.text("o", "x")), None, 403, "bad_signature"),
        (CLASSIC_APPID, stale, None, 403, "stale_timestamp"),
        (CLASSIC_APPID, good_oa, b"<xml><FromUserName>o</xml>", 400, "bad_push"),
        (CLASSIC_APPID, good_oa, b"\xff\xfe\x00<", 400, "bad_push"),
        (
            CLASSIC_APPID,
            good_oa,
            b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><xml/>",
            400,
            "bad_push",
        ),
        (CLASSIC_APPID, encrypted_to_oa, None, 400, "mode_mismatch"),
        (
            STABLE_APPID,
            mp.prepare(mp.text("o", "x"), for_appid=CLASSIC_APPID),
            None,
            403,
            "wrong_appid",
        ),
        (STABLE_APPID, other_key.prepare(mp.text("o", "x")), None, 400, "bad_push"),  # padding
        (
            STABLE_APPID,
            good_mp,
            good_mp.body.replace(b'"Encrypt": "', b'"Encrypt": "AAAA'),
            403,
            "bad_signature",
        ),
        (STABLE_APPID, good_mp, b"[" * 50000, 400, "bad_push"),
        (STABLE_APPID, plain_to_mp, None, 400, "mode_mismatch"),
        (CLASSIC_APPID, good_oa, b"x" * (MAX_PUSH_BYTES + 1), 413, "payload_too_large"),
    ]
    for appid, prepared, body, status, code in cases:
        answer = await post(service, appid, prepared, body)
        assert answer.status == status, (code, await answer.text())
        assert answer.content_type == "application/json"
        assert (await answer.json())["error"] == code
    no_query = await service.post(f"/wechat/push/{CLASSIC_APPID}", data=good_oa.body)
    assert (no_query.status, (await no_query.json())["error"]) == (400, "bad_request")
    refusals = received(service, CLASSIC_APPID, "refused") + received(
        service, STABLE_APPID, "refused"
    )
    assert refusals == len(cases) + 1
    assert await stored(service) == 0
    assert received(service, CLASSIC_APPID, "accepted") == 0
    await asyncio.sleep(0.3)
    assert sink.received == []


async def test_a_chunked_body_past_the_limit_is_cut_off_with_413(
    service: TestClient[Any, Any], session: aiohttp.ClientSession
) -> None:
    oa = oa_pusher(service, session)
    prepared = oa.prepare(oa.text("openid-1", "hi"))
    query = "&".join(f"{k}={v}" for k, v in prepared.query.items())
    assert service.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
    writer.write(
        f"POST /wechat/push/{CLASSIC_APPID}?{query} HTTP/1.1\r\nHost: x\r\n"
        "Transfer-Encoding: chunked\r\nContent-Type: text/xml\r\n\r\n".encode()
    )
    chunk = b"<" * 8192
    try:
        for _ in range(MAX_PUSH_BYTES // len(chunk) + 4):
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
    except ConnectionError:
        pass  # the server may close before the whole body is sent
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    assert b" 413 " in status_line
    assert await stored(service) == 0


async def test_metrics_count_each_outcome_in_one_valid_exposition(
    service: TestClient[Any, Any], session: aiohttp.ClientSession
) -> None:
    """Prometheus refuses a scrape that declares one metric family twice."""
    oa = oa_pusher(service, session)
    await oa.push(oa.event("openid-m", "subscribe"), tries=2)
    await service.post(f"/wechat/push/{CLASSIC_APPID}", data=b"<xml/>")
    answer = await service.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    text = await answer.text()
    for outcome, count in (("accepted", 1), ("duplicate", 1), ("refused", 1)):
        line = (
            f'tokensvc_push_received_total{{appid="{CLASSIC_APPID}",outcome="{outcome}"}} {count}.0'
        )
        assert line in text.splitlines()
    declared = [line for line in text.splitlines() if line.startswith("# TYPE ")]
    twice = sorted({line for line in declared if declared.count(line) > 1})
    assert not twice, f"metric families declared twice: {twice}"


async def test_no_mutation_of_a_signed_safe_mode_push_is_accepted_as_a_new_one(
    service: TestClient[Any, Any], session: aiohttp.ClientSession
) -> None:
    """300 seeded mutations of one encrypted push (bytes flipped, cut, inserted; query values
    changed): never a 500, and never a second accepted push: a mutation that still verifies
    carries the same message, so it is a duplicate."""
    mp = mp_pusher(service, session)
    prepared = mp.prepare(mp.text("openid-fuzz", "original"))
    assert (await post(service, STABLE_APPID, prepared)).status == 200
    rng = random.Random(13)
    statuses: set[int] = set()
    for _ in range(300):
        body, query = bytearray(prepared.body), dict(prepared.query)
        action = rng.randrange(4)
        if action == 0:
            for _ in range(rng.randint(1, 4)):
                body[rng.randrange(len(body))] = rng.randrange(256)
        elif action == 1:
            del body[rng.randrange(len(body)) :]
        elif action == 2:
            at = rng.randrange(len(body))
            body[at:at] = rng.randbytes(rng.randint(1, 16))
        else:
            name = rng.choice(sorted(query))
            query[name] = rng.choice(
                ["", "aes", "0" * 40, query[name][:-1], query[name] + "\x00", "\u00e9" * 3]
            )
        answer = await service.post(f"/wechat/push/{STABLE_APPID}", params=query, data=bytes(body))
        statuses.add(answer.status)
        assert answer.status in (200, 400, 403), await answer.text()
        if answer.status != 200:
            assert (await answer.json())["error"]
    assert received(service, STABLE_APPID, "accepted") == 1
    assert await stored(service) == 1
    assert {400, 403} <= statuses


async def test_a_push_the_database_cannot_take_is_503_and_wechats_retry_is_accepted(
    service: TestClient[Any, Any],
    session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outbox = service.app[OUTBOX]
    real_accept = outbox.accept

    async def database_down(*args: Any) -> str | None:
        raise StoreUnavailable("database is locked")

    monkeypatch.setattr(outbox, "accept", database_down)
    oa = oa_pusher(service, session)
    event = oa.event("openid-db", "subscribe")
    (first,) = await oa.push(event)
    assert first.status == 503
    assert json.loads(first.text)["error"] == "database_unavailable"
    assert received(service, CLASSIC_APPID, "error") == 1
    monkeypatch.setattr(outbox, "accept", real_accept)
    assert [a.text for a in await oa.push(event, tries=2)] == ["success", "success"]
    assert received(service, CLASSIC_APPID, "accepted") == 1
    assert await stored(service) == 1


async def test_retries_spread_over_two_replicas_on_postgresql_are_stored_once(
    push_settings: Callable[[], Settings],
    start_service: Start,
    session: aiohttp.ClientSession,
    database_url: str,
) -> None:
    """Behind a load balancer WeChat's tries of one push reach different replicas, at once."""
    settings = push_settings()
    raw_apps = [
        {**table, "push": {"token_env": "OA_PUSH_TOKEN"}} if i == 0 else table
        for i, table in enumerate(base_config("", "")["apps"])
    ]
    shared = parse_settings(
        {**base_config(settings.wechat.api_base, database_url), "apps": raw_apps}, env=ENV
    )
    replicas = [await start_service(shared), await start_service(shared)]
    pushers = [oa_pusher(replica, session) for replica in replicas]
    events = [pushers[0].event(f"openid-r{i}", "subscribe") for i in range(20)]
    tries = [
        pushers[(i + k) % 2].send(pushers[0].prepare(event))
        for i, event in enumerate(events)
        for k in range(3)
    ]
    answers = await asyncio.gather(*tries)
    assert {(a.status, a.text) for a in answers} == {(200, "success")}
    for outcome, count in (("accepted", 20), ("duplicate", 40)):
        assert sum(received(r, CLASSIC_APPID, outcome) for r in replicas) == count
    assert await stored(replicas[0]) == 20


async def test_a_store_slower_than_wechats_patience_is_503_then_a_duplicate(
    service: TestClient[Any, Any],
    session: aiohttp.ClientSession,
    target: tuple[Target, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The 503 does not cancel the store: it commits, and WeChat's retry is recognised."""
    sink, _ = target
    outbox = service.app[OUTBOX]
    real_accept = outbox.accept
    release = asyncio.Event()

    async def slow_database(*args: Any) -> str | None:
        await release.wait()
        return await real_accept(*args)

    monkeypatch.setattr(web_push, "ACCEPT_TIMEOUT", 0.2)
    monkeypatch.setattr(outbox, "accept", slow_database)
    oa = oa_pusher(service, session)
    event = oa.event("openid-slow", "subscribe")
    (first,) = await oa.push(event)
    assert first.status == 503
    release.set()
    await wait_until(lambda: sink.received)
    monkeypatch.setattr(outbox, "accept", real_accept)
    (retry,) = await oa.push(event)
    assert retry.text == "success"
    assert received(service, CLASSIC_APPID, "duplicate") == 1
    assert await stored(service) == 1
    await asyncio.sleep(0.3)
    assert len(sink.received) == 1


async def test_bodies_python_cannot_decode_and_lookalike_values_are_json_400s(
    service: TestClient[Any, Any],
    session: aiohttp.ClientSession,
    target: tuple[Target, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An XML declaration naming an unknown encoding, a gzip body that does not inflate, and
    query values with a trailing newline or non-ASCII digits: 400, nothing stored, no
    traceback in the log."""
    sink, _ = target
    oa = oa_pusher(service, session)
    prepared = oa.prepare(oa.text("openid-1", "hi"))
    unknown = b"<?xml version='1.0' encoding='bogus-x'?>" + prepared.body
    answer = await post(service, CLASSIC_APPID, prepared, unknown)
    assert (answer.status, (await answer.json())["error"]) == (400, "bad_push")
    for encoding in ("gzip", "deflate"):
        answer = await service.post(
            f"/wechat/push/{CLASSIC_APPID}",
            params=prepared.query,
            data=b"not compressed",
            headers={"Content-Encoding": encoding},
        )
        assert (answer.status, (await answer.json())["error"]) == (400, "bad_request")
    now = str(int(time.time()))
    for timestamp, nonce, echostr in (
        (now, "n1", "123\n"),
        (now, "n1\n", "1"),
        ("\u00b2", "n", "1"),
    ):
        query = {
            "signature": sha1_signature(OA_TOKEN, timestamp, nonce),
            "timestamp": timestamp,
            "nonce": nonce,
            "echostr": echostr,
        }
        answer = await service.get(f"/wechat/push/{CLASSIC_APPID}", params=query)
        assert (answer.status, (await answer.json())["error"]) == (400, "bad_request")
    assert await stored(service) == 0 and not sink.received
    assert not any(r.exc_info or "Traceback" in r.getMessage() for r in caplog.records)
    assert not signing.verify(HOOK_KEY, b"{}", "\u00b2", "sha256=00", time.time())

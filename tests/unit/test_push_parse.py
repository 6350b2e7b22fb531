"""Receiving a push without a server: ``[apps.push]`` settings, signature and timestamp checks,
modes, parsing (no entity expansion), and dedupe keys. The pushes are made by the simulator's
pusher (:mod:`tokensvc.simulator.push`), which shares no code with what it checks."""

from __future__ import annotations

from typing import Any, cast

import aiohttp
import pytest

from tests.conftest import SECRET_ENV, base_config
from tokensvc.clock import FakeClock
from tokensvc.config import parse_settings
from tokensvc.errors import ConfigError
from tokensvc.push.receive import (
    MAX_SKEW,
    PushRefused,
    dedupe_key,
    open_push,
    parse_body,
    verify_url,
)
from tokensvc.secret import Secret
from tokensvc.settings import ForwardTarget, PushConfig
from tokensvc.simulator.push import WechatPusher, make_encoding_aes_key, wechat_signature

APPID = "wxc1a551c000000001"
TOKEN = "pushToken123"
AES_KEY = make_encoding_aes_key()
NOW = 1_800_000_000.0
ENV = {**SECRET_ENV, "PUSH_TOKEN": TOKEN, "PUSH_AES": AES_KEY, "HOOK_KEY": "h" * 32}


def settings_with(push: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    raw = base_config("http://127.0.0.1:1", "sqlite+aiosqlite:///x.db")
    raw["apps"][0]["push"] = push
    return parse_settings(raw, env=ENV if env is None else env)


def push_config(**table: Any) -> PushConfig:
    push = settings_with({"token_env": "PUSH_TOKEN", **table}).apps[0].push
    assert push is not None
    return cast(PushConfig, push)


def pusher(mode: str = "plaintext", fmt: str = "xml", clock: FakeClock | None = None) -> Any:
    return WechatPusher(
        cast(aiohttp.ClientSession, None),  # prepare() only: nothing is sent
        "http://unused",
        appid=APPID,
        token=TOKEN,
        encoding_aes_key=AES_KEY if mode != "plaintext" else None,
        mode=mode,  # type: ignore[arg-type]
        format=fmt,  # type: ignore[arg-type]
        clock=clock or FakeClock(NOW),
    )


def refused(call: Any) -> PushRefused:
    with pytest.raises(PushRefused) as info:
        call()
    return info.value


# ---- settings ---------------------------------------------------------------------------------


def test_mode_is_safe_with_an_encoding_aes_key_and_plaintext_without() -> None:
    assert push_config().mode == "plaintext"
    assert push_config().aes_key is None
    safe = push_config(encoding_aes_key_env="PUSH_AES")
    assert safe.mode == "safe" and safe.aes_key is not None
    assert push_config(encoding_aes_key_env="PUSH_AES", mode="compatible").mode == "compatible"
    assert push_config(format="json").format == "json"
    assert AES_KEY not in repr(safe) and TOKEN not in repr(safe)


@pytest.mark.parametrize(
    ("table", "env", "expected"),
    [
        ({}, None, "config: apps[0].push: give the push Token with token_env or token_file"),
        ({"token_env": "NOPE"}, None, "apps[0].push.token_env: environment variable NOPE is not"),
        ({"token_env": "X"}, {"X": "a b"}, "apps[0].push.token_env: is not a push Token"),
        (
            {"token_env": "PUSH_TOKEN", "mode": "safe"},
            None,
            'apps[0].push.mode: "safe" mode decrypts pushes: give the EncodingAESKey',
        ),
        (
            {"token_env": "PUSH_TOKEN", "encoding_aes_key_env": "X"},
            {"X": "tooshort"},
            "apps[0].push.encoding_aes_key_env: is not an EncodingAESKey (43 letters",
        ),
        ({"token_env": "PUSH_TOKEN", "mode": "secret"}, None, "apps[0].push.mode: unknown value"),
        ({"token_env": "PUSH_TOKEN", "format": "yaml"}, None, "apps[0].push.format: unknown"),
        ({"token_env": "PUSH_TOKEN", "tokn": 1}, None, "apps[0].push.tokn: unknown key"),
        (
            {"token_env": "PUSH_TOKEN", "forward": [{"url": "ftp://x", "secret_env": "HOOK_KEY"}]},
            None,
            "apps[0].push.forward[0].url: must be an http:// or https:// URL",
        ),
        (
            {"token_env": "PUSH_TOKEN", "forward": [{"url": "https://biz.example/wx"}]},
            None,
            "apps[0].push.forward[0]: give the HMAC key the target verifies",
        ),
        (
            {"token_env": "PUSH_TOKEN", "forward": [{"url": "https://b/x", "secret_env": "S"}]},
            "short",
            "apps[0].push.forward[0].secret_env: the HMAC key is 5 characters, at least 16",
        ),
        (
            {
                "token_env": "PUSH_TOKEN",
                "forward": [{"url": "https://b/x", "secret_env": "HOOK_KEY", "events": []}],
            },
            None,
            "apps[0].push.forward[0].events: must be a non-empty list of names",
        ),
    ],
)
def test_every_push_setting_mistake_names_its_key(
    table: dict[str, Any], env: dict[str, str] | str | None, expected: str
) -> None:
    if isinstance(env, str):
        env = {**ENV, "S": env}
    elif env is not None:
        env = {**ENV, **env}
    with pytest.raises(ConfigError) as info:
        settings_with(table, env)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    for secret in (TOKEN, AES_KEY, "h" * 32, "short", "tooshort"):
        assert secret not in message


def test_forward_filters() -> None:
    def target(**filters: Any) -> ForwardTarget:
        return ForwardTarget("https://b/x", secret=cast(Any, None), **filters)

    subscribe = {"MsgType": "event", "Event": "subscribe"}
    click = {"MsgType": "event", "Event": "CLICK"}
    text = {"MsgType": "text"}
    everything = target(events=(), msg_types=())
    assert all(everything.matches(m) for m in (subscribe, click, text))
    only_subscribe = target(events=("subscribe",), msg_types=())
    assert [only_subscribe.matches(m) for m in (subscribe, click, text)] == [True, False, False]
    text_and_clicks = target(events=("click",), msg_types=("text",))
    assert [text_and_clicks.matches(m) for m in (subscribe, click, text)] == [False, True, True]
    all_events = target(events=(), msg_types=("event",))
    assert [all_events.matches(m) for m in (subscribe, click, text)] == [True, True, False]


# ---- signatures, timestamps, URL check ---------------------------------------------------------


def url_query(timestamp: float = NOW, echostr: str = "5927782489442352469") -> dict[str, str]:
    ts = str(int(timestamp))
    return {
        "signature": wechat_signature(TOKEN, ts, "1234"),
        "timestamp": ts,
        "nonce": "1234",
        "echostr": echostr,
    }


def test_url_check_echoes_echostr_only_when_the_signature_holds() -> None:
    push = push_config()
    assert verify_url(push, url_query(), NOW) == "5927782489442352469"
    bad = {**url_query(), "signature": "0" * 40}
    assert refused(lambda: verify_url(push, bad, NOW)).status == 403
    missing = {k: v for k, v in url_query().items() if k != "signature"}
    assert refused(lambda: verify_url(push, missing, NOW)).code == "bad_request"
    html = url_query(echostr="<script>alert(1)</script>")
    assert refused(lambda: verify_url(push, html, NOW)).code == "bad_request"


@pytest.mark.parametrize("offset", [-MAX_SKEW - 1, MAX_SKEW + 1])
def test_timestamps_far_from_now_are_refused(offset: float) -> None:
    push = push_config()
    assert verify_url(push, url_query(NOW + offset), NOW + offset)
    error = refused(lambda: verify_url(push, url_query(NOW + offset), NOW))
    assert (error.status, error.code) == (403, "stale_timestamp")
    prepared = pusher(clock=FakeClock(NOW + offset)).prepare(pusher().text("openid-1", "hi"))
    error = refused(lambda: open_push(push, APPID, prepared.query, prepared.body, NOW))
    assert error.code == "stale_timestamp"


def test_a_timestamp_within_the_window_is_accepted() -> None:
    prepared = pusher(clock=FakeClock(NOW - MAX_SKEW + 1)).prepare(pusher().text("o", "hi"))
    assert open_push(push_config(), APPID, prepared.query, prepared.body, NOW)["Content"] == "hi"


def test_wechats_worked_example_of_a_plaintext_json_push_is_accepted() -> None:
    """The 明文模式 example of WeChat's 消息加解密说明 (Token ``AAAAA``, JSON format):
    https://developers.weixin.qq.com/doc/oplatform/developers/dev/push/encryption.md"""
    push = PushConfig(token=Secret("AAAAA"), aes_key=None, format="json")
    query = {
        "signature": "899cf89e464efb63f54ddac96b0a0a235f53aa78",
        "timestamp": "1714037059",
        "nonce": "486452656",
    }
    body = (
        b'{"ToUserName": "gh_97417a04a28d", "FromUserName": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY", '
        b'"CreateTime": 1714037059, "MsgType": "event", "Event": "debug_demo", '
        b'"debug_str": "hello world"}'
    )
    message = open_push(push, APPID, query, body, 1714037059 + 10)
    assert message["Event"] == "debug_demo" and message["debug_str"] == "hello world"
    assert dedupe_key(message) == "event:o9AgO5Kd5ggOC-bXrbNODIiE3bGY:1714037059:debug_demo"
    error = refused(lambda: open_push(push, APPID, query, body, 1714037059 + MAX_SKEW + 1))
    assert error.code == "stale_timestamp"


# ---- modes and formats -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["xml", "json"])
@pytest.mark.parametrize("mode", ["plaintext", "compatible", "safe"])
def test_every_mode_and_format_round_trips(mode: str, fmt: str) -> None:
    table: dict[str, Any] = {"mode": mode, "format": fmt}
    if mode != "plaintext":
        table["encoding_aes_key_env"] = "PUSH_AES"
    push = push_config(**table)
    sim = pusher(mode, fmt)
    sent = sim.popup("openid-7", [("tmpl-A", "accept"), ("tmpl-B", "reject")])
    prepared = sim.prepare(sent)
    message = open_push(push, APPID, prepared.query, prepared.body, NOW)
    assert message["Event"] == "subscribe_msg_popup_event"
    assert message["FromUserName"] == "openid-7"
    assert str(message["CreateTime"]) == str(int(NOW))
    items = message["SubscribeMsgPopupEvent"]["List"]
    assert [i["TemplateId"] for i in items] == ["tmpl-A", "tmpl-B"]
    assert [i["SubscribeStatusString"] for i in items] == ["accept", "reject"]
    assert "Encrypt" not in message or mode == "compatible"


def test_safe_mode_refuses_a_plaintext_push_and_plaintext_mode_an_encrypted_one() -> None:
    plain = pusher().prepare(pusher().text("o", "hi"))
    safe = push_config(encoding_aes_key_env="PUSH_AES")
    error = refused(lambda: open_push(safe, APPID, plain.query, plain.body, NOW))
    assert (error.status, error.code) == (400, "mode_mismatch")
    encrypted = pusher("safe").prepare(pusher().text("o", "hi"))
    error = refused(lambda: open_push(push_config(), APPID, encrypted.query, encrypted.body, NOW))
    assert (error.status, error.code) == (400, "mode_mismatch")
    keyed_plaintext = push_config(encoding_aes_key_env="PUSH_AES", mode="plaintext")
    error = refused(lambda: open_push(keyed_plaintext, APPID, encrypted.query, encrypted.body, NOW))
    assert error.code == "mode_mismatch"
    compatible = push_config(encoding_aes_key_env="PUSH_AES", mode="compatible")
    assert open_push(compatible, APPID, plain.query, plain.body, NOW)["Content"] == "hi"


def test_compatible_mode_uses_the_encrypted_copy_not_the_plaintext_one() -> None:
    push = push_config(encoding_aes_key_env="PUSH_AES", mode="compatible")
    prepared = pusher("compatible").prepare(pusher().text("o", "real"))
    forged = prepared.body.replace(b"real", b"fake")
    assert forged != prepared.body
    assert open_push(push, APPID, prepared.query, forged, NOW)["Content"] == "real"


def test_safe_mode_refusals() -> None:
    push = push_config(encoding_aes_key_env="PUSH_AES")
    sim = pusher("safe")
    prepared = sim.prepare(sim.text("o", "hi"))
    tampered = {**prepared.query, "msg_signature": "0" * 40}
    assert refused(lambda: open_push(push, APPID, tampered, prepared.body, NOW)).code == (
        "bad_signature"
    )
    no_msg_signature = {k: v for k, v in prepared.query.items() if k != "msg_signature"}
    assert refused(lambda: open_push(push, APPID, no_msg_signature, prepared.body, NOW)).status == (
        400
    )
    other_app = sim.prepare(sim.text("o", "hi"), for_appid="wx57ab1e0000000002")
    error = refused(lambda: open_push(push, APPID, other_app.query, other_app.body, NOW))
    assert (error.status, error.code) == (403, "wrong_appid")
    other_key = WechatPusher(
        cast(aiohttp.ClientSession, None),
        "http://unused",
        appid=APPID,
        token=TOKEN,
        encoding_aes_key=make_encoding_aes_key(),
        mode="safe",
        clock=FakeClock(NOW),
    ).prepare(sim.text("o", "hi"))
    error = refused(lambda: open_push(push, APPID, other_key.query, other_key.body, NOW))
    assert (error.status, error.code) == (400, "bad_push")


def test_plaintext_signature_is_checked_in_every_mode() -> None:
    for table in ({}, {"encoding_aes_key_env": "PUSH_AES"}):
        push = push_config(**table)
        sim = pusher(push.mode)
        prepared = sim.prepare(sim.text("o", "hi"))
        forged = {**prepared.query, "signature": wechat_signature("otherToken", "1", "2")}
        error = refused(lambda: open_push(push, APPID, forged, prepared.body, NOW))  # noqa: B023
        assert (error.status, error.code) == (403, "bad_signature")


# ---- parsing -----------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<xml><FromUserName>&lol2;</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType></xml>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><Content>&e;</Content></xml>"""


@pytest.mark.parametrize(
    "body",
    [
        BILLION_LAUGHS,
        EXTERNAL_ENTITY,
        b"<xml><a>unclosed</xml>",
        b"",
        b"   ",
        b"<xml>" * 20 + b"x" + b"</xml>" * 20,
        b"\xff\xfe<xml/>",
    ],
)
def test_malformed_or_dangerous_xml_is_refused(body: bytes) -> None:
    error = refused(lambda: parse_body(body, "xml"))
    assert (error.status, error.code) == (400, "bad_push")


@pytest.mark.parametrize(
    "body",
    [b"[1, 2]", b'{"a": ', b"\xff{}", b"[" * 5000 + b"]" * 5000, b'{"a":' * 20 + b"1" + b"}" * 20],
)
def test_malformed_json_is_refused(body: bytes) -> None:
    assert refused(lambda: parse_body(body, "json")).code == "bad_push"


def test_a_body_in_the_other_format_names_the_setting() -> None:
    for body, fmt in ((b' {"MsgType": "text"}', "xml"), (b"<xml><a>1</a></xml>", "json")):
        error = refused(lambda: parse_body(body, fmt))  # noqa: B023
        assert error.code == "bad_push" and "[apps.push] format" in error.message


def test_a_push_without_the_fields_every_push_has_is_refused() -> None:
    push = push_config()
    ts, nonce = str(int(NOW)), "99"
    query = {"signature": wechat_signature(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce}
    body = b"<xml><CreateTime>1</CreateTime><MsgType>text</MsgType></xml>"
    error = refused(lambda: open_push(push, APPID, query, body, NOW))
    assert (error.code, error.message) == ("bad_push", "the push has no FromUserName")


# ---- dedupe keys -------------------------------------------------------------------------------


def test_dedupe_keys() -> None:
    assert dedupe_key({"MsgId": "123", "FromUserName": "o"}) == "msgid:123"
    report = {"MsgType": "event", "Event": "TEMPLATESENDJOBFINISH", "MsgID": 123}
    assert dedupe_key(report) == "msgid:123:TEMPLATESENDJOBFINISH"
    assert dedupe_key(report) != dedupe_key({"MsgType": "text", "MsgId": 123})
    event = {"FromUserName": "o", "CreateTime": 1714037059, "Event": "subscribe"}
    assert dedupe_key(event) == "event:o:1714037059:subscribe"
    as_xml = {"FromUserName": "o", "CreateTime": "1714037059", "Event": "subscribe"}
    assert dedupe_key(as_xml) == dedupe_key(event)
    assert dedupe_key({**event, "Event": "unsubscribe"}) != dedupe_key(event)
    long = dedupe_key({"FromUserName": "o" * 500, "CreateTime": 1})
    assert long.startswith("sha256:") and len(long) < 80


def test_retries_of_one_push_share_a_dedupe_key_and_two_pushes_do_not() -> None:
    push = push_config(encoding_aes_key_env="PUSH_AES")
    sim = pusher("safe")
    event = sim.event("openid-3", "subscribe")
    keys = set()
    for _ in range(3):  # WeChat's tries of one push: fresh nonce and signature each
        prepared = sim.prepare(event)
        keys.add(dedupe_key(open_push(push, APPID, prepared.query, prepared.body, NOW)))
    assert len(keys) == 1
    texts = [sim.text("openid-3", "same words") for _ in range(2)]
    assert dedupe_key(texts[0]) != dedupe_key(texts[1])

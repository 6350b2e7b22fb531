"""The simulator's message push (消息推送): WeChat's side of a push URL.

:class:`WechatPusher` sends what WeChat sends to an app's push URL: the URL check (``GET
?signature&timestamp&nonce&echostr``) and pushes (``POST ?signature&timestamp&nonce[&openid]
[&encrypt_type=aes&msg_signature]``) in plaintext, compatible or safe mode, as XML or JSON,
and WeChat's retries of one push (the same message, each try signed afresh). Builders make the
messages (a text message, subscribe, a menu click, the subscribe-message events).

Written from WeChat's pages, sharing no code with :mod:`tokensvc.push` (a stand-in must not
reuse what it checks): ``signature = sha1(sort(Token, timestamp, nonce))``, ``msg_signature =
sha1(sort(Token, timestamp, nonce, Encrypt))``, ``Encrypt = base64(AES-256-CBC(key, iv=key[:16],
PKCS#7-32(random(16) + len(4, big-endian) + msg + appid)))`` with ``key =
base64decode(EncodingAESKey + "=")``. Pages:
https://developers.weixin.qq.com/doc/oplatform/developers/dev/push/encryption.md,
https://developers.weixin.qq.com/miniprogram/dev/framework/server-ability/message-push.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from xml.sax.saxutils import escape

import aiohttp
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tokensvc.clock import Clock, SystemClock

Mode = Literal["plaintext", "compatible", "safe"]
Format = Literal["xml", "json"]


@dataclass(frozen=True)
class PreparedPush:
    """One try of a push as WeChat sends it: the query parameters and the body bytes."""

    query: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class PushAnswer:
    """What the push URL answered one try: HTTP status and body text."""

    status: int
    text: str


def make_encoding_aes_key() -> str:
    """A new EncodingAESKey: 43 letters and digits, as WeChat's console generates."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(43))


def wechat_signature(*values: str) -> str:
    """sha1 of ``values`` sorted and joined (WeChat's push signature), 40 hex digits."""
    return hashlib.sha1("".join(sorted(values)).encode()).hexdigest()  # noqa: S324 (WeChat's)


def encrypt_message(
    message: bytes, encoding_aes_key: str, appid: str, random_prefix: bytes | None = None
) -> str:
    """The ``Encrypt`` field WeChat makes of ``message`` for ``appid`` (base64 text)."""
    key = base64.b64decode(encoding_aes_key + "=")
    prefix = os.urandom(16) if random_prefix is None else random_prefix
    plain = prefix + struct.pack(">I", len(message)) + message + appid.encode()
    pad = 32 - len(plain) % 32
    plain += bytes([pad]) * pad
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def to_xml(message: Mapping[str, Any]) -> bytes:
    """``message`` as WeChat's push XML: ``<xml><Field><![CDATA[text]]></Field>...</xml>``,
    numbers bare, a nested dict as child elements, a list as a repeated element."""

    def element(tag: str, value: Any) -> str:
        if isinstance(value, list):
            return "".join(element(tag, item) for item in value)
        if isinstance(value, Mapping):
            return f"<{tag}>" + "".join(element(k, v) for k, v in value.items()) + f"</{tag}>"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"<{tag}>{value}</{tag}>"
        text = str(value)
        inner = f"<![CDATA[{text}]]>" if "]]>" not in text else escape(text)
        return f"<{tag}>{inner}</{tag}>"

    return ("<xml>" + "".join(element(k, v) for k, v in message.items()) + "</xml>").encode()


def original_id(appid: str) -> str:
    """A made-up original ID (原始ID, ``gh_`` + 12 hex digits) for the app: ``ToUserName``."""
    return "gh_" + hashlib.sha256(appid.encode()).hexdigest()[:12]


class WechatPusher:
    """Pushes to one app's push URL as WeChat does (see the module docstring).

    ``mode``/``format`` as in the app's ``[apps.push]``; ``encoding_aes_key`` is needed for
    ``compatible`` and ``safe``. ``clock`` gives the ``timestamp`` of each try.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        appid: str,
        token: str,
        encoding_aes_key: str | None = None,
        mode: Mode = "plaintext",
        format: Format = "xml",
        clock: Clock | None = None,
    ) -> None:
        if mode != "plaintext" and not encoding_aes_key:
            raise ValueError(f"{mode} mode needs an EncodingAESKey")
        self.session = session
        self.url = url
        self.appid = appid
        self.token = token
        self.encoding_aes_key = encoding_aes_key
        self.mode = mode
        self.format = format
        self.clock = clock or SystemClock()
        self._next_msg_id = 24000000000000000 + secrets.randbelow(10**15)

    # --- messages -------------------------------------------------------------------------

    def _base(self, openid: str, msg_type: str) -> dict[str, Any]:
        return {
            "ToUserName": original_id(self.appid),
            "FromUserName": openid,
            "CreateTime": int(self.clock.now()),
            "MsgType": msg_type,
        }

    def text(self, openid: str, content: str) -> dict[str, Any]:
        """A user's text message (has a ``MsgId``)."""
        self._next_msg_id += 1
        return {**self._base(openid, "text"), "Content": content, "MsgId": self._next_msg_id}

    def event(self, openid: str, event: str, **fields: Any) -> dict[str, Any]:
        """An event push (``MsgType`` ``event``): ``subscribe``, ``CLICK`` (``EventKey=``)..."""
        return {**self._base(openid, "event"), "Event": event, **fields}

    def popup(self, openid: str, choices: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """``subscribe_msg_popup_event``: the user answered the subscribe pop-up;
        ``choices`` are (TemplateId, ``accept``/``reject``)."""
        items = [
            {"TemplateId": t, "SubscribeStatusString": s, "PopupScene": "0"} for t, s in choices
        ]
        return self.event(
            openid,
            "subscribe_msg_popup_event",
            SubscribeMsgPopupEvent={"List": items if len(items) > 1 else items[0]},
        )

    # --- the wire -------------------------------------------------------------------------

    def _encode(self, message: Mapping[str, Any]) -> bytes:
        if self.format == "json":
            return json.dumps(message, ensure_ascii=False).encode()
        return to_xml(message)

    def prepare(
        self,
        message: Mapping[str, Any],
        *,
        timestamp: int | None = None,
        nonce: str | None = None,
        for_appid: str | None = None,
    ) -> PreparedPush:
        """One try of ``message``: signed with this pusher's Token at ``timestamp`` (default
        now), encrypted in ``compatible``/``safe`` mode (for ``for_appid``, default the app)."""
        ts = str(int(self.clock.now()) if timestamp is None else timestamp)
        nonce = nonce or str(secrets.randbelow(10**10))
        query = {
            "signature": wechat_signature(self.token, ts, nonce),
            "timestamp": ts,
            "nonce": nonce,
            "openid": str(message.get("FromUserName", "")),
        }
        if self.mode == "plaintext":
            return PreparedPush(query, self._encode(message))
        assert self.encoding_aes_key is not None
        encrypted = encrypt_message(
            self._encode(message), self.encoding_aes_key, for_appid or self.appid
        )
        outer: dict[str, Any] = {"ToUserName": message.get("ToUserName", ""), "Encrypt": encrypted}
        if self.mode == "compatible":
            outer = {**message, "Encrypt": encrypted}
        query["encrypt_type"] = "aes"
        query["msg_signature"] = wechat_signature(self.token, ts, nonce, encrypted)
        return PreparedPush(query, self._encode(outer))

    async def send(self, prepared: PreparedPush) -> PushAnswer:
        """POST one prepared try; WeChat waits at most 5 s for the answer."""
        async with self.session.post(
            self.url,
            params=prepared.query,
            data=prepared.body,
            headers={"Content-Type": "application/json" if self.format == "json" else "text/xml"},
            timeout=aiohttp.ClientTimeout(total=5),
        ) as response:
            return PushAnswer(response.status, await response.text())

    async def push(self, message: Mapping[str, Any], *, tries: int = 1) -> list[PushAnswer]:
        """Push ``message`` ``tries`` times (WeChat retries an unanswered push up to 3 times
        in all), each try signed afresh; the answers in order."""
        return [await self.send(self.prepare(message)) for _ in range(tries)]

    async def verify_url(self, echostr: str | None = None) -> PushAnswer:
        """WeChat's URL check: ``GET ?signature&timestamp&nonce&echostr``."""
        ts = str(int(self.clock.now()))
        nonce = str(secrets.randbelow(10**10))
        echo = echostr or str(secrets.randbelow(10**19))
        query = {
            "signature": wechat_signature(self.token, ts, nonce),
            "timestamp": ts,
            "nonce": nonce,
            "echostr": echo,
        }
        async with self.session.get(
            self.url, params=query, timeout=aiohttp.ClientTimeout(total=5)
        ) as response:
            return PushAnswer(response.status, await response.text())

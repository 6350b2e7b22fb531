"""Receiving one WeChat push: check its signatures, decrypt it, parse it, name its dedupe key.

:func:`verify_url` answers WeChat's URL check (``GET``), :func:`open_push` turns a ``POST``
into the message (a dict of WeChat's fields) or raises :class:`PushRefused`, and
:func:`dedupe_key` names the message so that WeChat's retries of it are recognised. No I/O and
no clock here: ``now`` (UTC epoch seconds) is passed in.

What a push looks like (docs/wechat.md#message-push): ``POST URL?signature&timestamp&nonce
[&openid][&encrypt_type=aes&msg_signature]``; ``signature = sha1(sort(Token, timestamp,
nonce))`` always; an encrypted push's body is ``<xml><ToUserName/><Encrypt/></xml>`` (or JSON
``{"ToUserName", "Encrypt"}``) with ``msg_signature = sha1(sort(Token, timestamp, nonce,
Encrypt))``. The plaintext signature does not cover the body: only safe mode (or compatible
mode's encrypted pushes) authenticates the message itself.

Parsed messages: a JSON push as WeChat sent it; an XML push as a dict of its elements' text
(strings, as XML carries them: ``"CreateTime": "1714037059"``), an element with children as a
dict, a repeated element (``<List>`` of ``subscribe_msg_popup_event``) as a list of them.

Pages: https://developers.weixin.qq.com/doc/oplatform/developers/dev/push/encryption.md,
https://developers.weixin.qq.com/miniprogram/dev/framework/server-ability/message-push.md.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as safe_fromstring

from tokensvc.push.crypto import PushCipher, PushCryptoError, signature_matches
from tokensvc.secret import sha256_hex
from tokensvc.settings import PushConfig

MAX_PUSH_BYTES = 64 * 1024
"""Largest push body accepted (bytes). WeChat's pushes are a few KB; compatible mode, which
carries the message twice (once encrypted), about three times that."""

MAX_SKEW = 300.0
"""Seconds a push's ``timestamp`` may be from the receiver's clock; older or newer is refused
as a replay (WeChat signs each try afresh, so its retries carry current timestamps)."""

MAX_DEPTH = 8
"""Deepest nesting of elements (XML) or containers (JSON) a push may have; WeChat's go to 4."""

MAX_ECHOSTR = 128
"""Longest ``echostr`` echoed (WeChat sends a number of about 19 digits)."""

_TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ECHOSTR_RE = re.compile(r"[A-Za-z0-9+/=_-]+")
"""Matched whole (``fullmatch``: ``$`` would let a trailing newline through)."""


class PushRefused(Exception):
    """A push or URL check that is refused: answer ``status`` with JSON ``{"error": code,
    "message": message}``, store nothing, forward nothing.

    Codes: 400 ``bad_request`` (query parameters missing or malformed), 403 ``bad_signature``
    (``signature`` or ``msg_signature`` wrong), 403 ``stale_timestamp`` (more than
    :data:`MAX_SKEW` seconds from now), 400 ``mode_mismatch`` (encrypted push to a
    ``plaintext`` app or the reverse in ``safe`` mode), 400 ``bad_push`` (body not XML/JSON of
    a push, bad ciphertext or padding), 403 ``wrong_appid`` (decrypts, but for another app).
    The message names no Token, key or query value.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _check_signature(push: PushConfig, query: Mapping[str, str], now: float) -> tuple[str, str]:
    """The push's (timestamp, nonce) once ``signature`` holds and the timestamp is fresh."""
    signature, timestamp, nonce = (query.get(k, "") for k in ("signature", "timestamp", "nonce"))
    if not signature or not timestamp or not nonce:
        raise PushRefused(
            400, "bad_request", "signature, timestamp and nonce are required query parameters"
        )
    if not _TIMESTAMP_RE.fullmatch(timestamp) or not _NONCE_RE.fullmatch(nonce):
        raise PushRefused(400, "bad_request", "timestamp or nonce is malformed")
    if not signature_matches(signature, push.token.reveal(), timestamp, nonce):
        raise PushRefused(403, "bad_signature", "signature does not match this app's push Token")
    if abs(now - int(timestamp)) > MAX_SKEW:
        raise PushRefused(
            403,
            "stale_timestamp",
            f"timestamp is more than {MAX_SKEW:g} seconds from this server's clock",
        )
    return timestamp, nonce


def verify_url(push: PushConfig, query: Mapping[str, str], now: float) -> str:
    """WeChat's URL check (``GET URL?signature&timestamp&nonce&echostr``): the ``echostr`` to
    answer when ``signature`` holds; raises :class:`PushRefused` otherwise (also for an
    ``echostr`` that is not up to :data:`MAX_ECHOSTR` letters, digits and ``+/=_-``: the
    signature does not cover it, so no markup is ever echoed)."""
    _check_signature(push, query, now)
    echostr = query.get("echostr", "")
    if not echostr or len(echostr) > MAX_ECHOSTR or not _ECHOSTR_RE.fullmatch(echostr):
        raise PushRefused(400, "bad_request", "echostr is missing or malformed")
    return echostr


def open_push(
    push: PushConfig, appid: str, query: Mapping[str, str], body: bytes, now: float
) -> dict[str, Any]:
    """The message of one ``POST`` push to ``appid`` (see the module docstring for its shape).

    Checks ``signature`` and the timestamp, then by ``push.mode``: ``plaintext`` takes the
    body as the message; ``safe`` needs ``encrypt_type=aes``, checks ``msg_signature`` over
    the ``Encrypt`` field and decrypts it; ``compatible`` does the latter when the push is
    encrypted, else the former. Raises :class:`PushRefused`.
    """
    timestamp, nonce = _check_signature(push, query, now)
    outer = parse_body(body, push.format)
    encrypted = query.get("encrypt_type", "").lower() == "aes"
    if encrypted and (push.mode == "plaintext" or push.aes_key is None):
        raise PushRefused(
            400,
            "mode_mismatch",
            "the push is encrypted but this app is configured for plaintext pushes: set "
            "[apps.push] mode and encoding_aes_key_env as in WeChat's console",
        )
    if not encrypted:
        if push.mode == "safe":
            raise PushRefused(
                400,
                "mode_mismatch",
                'the push is not encrypted but this app is configured with mode = "safe"',
            )
        return _checked_message(outer)
    assert push.aes_key is not None
    encrypt = outer.get("Encrypt")
    if not isinstance(encrypt, str) or not encrypt:
        raise PushRefused(400, "bad_push", "encrypt_type=aes but the body has no Encrypt field")
    msg_signature = query.get("msg_signature", "")
    if not msg_signature:
        raise PushRefused(400, "bad_request", "msg_signature is required with encrypt_type=aes")
    if not signature_matches(msg_signature, push.token.reveal(), timestamp, nonce, encrypt):
        raise PushRefused(
            403, "bad_signature", "msg_signature does not match the Encrypt field and Token"
        )
    try:
        inner = PushCipher(push.aes_key.reveal(), appid).decrypt(encrypt)
    except PushCryptoError as exc:
        status = 403 if exc.reason == "wrong_appid" else 400
        code = "wrong_appid" if exc.reason == "wrong_appid" else "bad_push"
        raise PushRefused(status, code, str(exc)) from None
    return _checked_message(parse_body(inner, push.format))


def parse_body(body: bytes, push_format: str) -> dict[str, Any]:
    """A push body (``xml`` or ``json``) as a dict; raises :class:`PushRefused` (400
    ``bad_push``) when it is empty, not UTF-8, malformed, has a DTD or entities (never
    expanded), nests deeper than :data:`MAX_DEPTH`, or is not one object / one root element."""
    stripped = body.lstrip()
    if not stripped:
        raise PushRefused(400, "bad_push", "the push body is empty")
    other = "json" if push_format == "xml" else "xml"
    if stripped[:1] == (b"{" if other == "json" else b"<"):
        raise PushRefused(
            400,
            "bad_push",
            f'the push body is {other.upper()} but [apps.push] format is "{push_format}": '
            "set it as in WeChat's console (数据格式)",
        )
    if push_format == "json":
        try:
            parsed = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise PushRefused(400, "bad_push", "the push body is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise PushRefused(400, "bad_push", "the push body is not a JSON object")
        if _depth(parsed) > MAX_DEPTH:
            raise PushRefused(400, "bad_push", "the push body is nested too deeply")
        return parsed
    try:
        root = safe_fromstring(body, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException, ValueError, LookupError):  # LookupError:
        # an XML declaration naming an encoding Python does not know
        raise PushRefused(
            400, "bad_push", "the push body is not well-formed XML (DTDs and entities refused)"
        ) from None
    value = _element(root, 1)
    if not isinstance(value, dict):
        raise PushRefused(400, "bad_push", "the push body's root element holds no fields")
    return value


def _element(element: ET.Element, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise PushRefused(400, "bad_push", "the push body is nested too deeply")
    children = list(element)
    if not children:
        return (element.text or "").strip()
    grouped: dict[str, list[Any]] = {}
    for child in children:
        grouped.setdefault(child.tag, []).append(_element(child, depth + 1))
    return {tag: values[0] if len(values) == 1 else values for tag, values in grouped.items()}


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


_REQUIRED = ("FromUserName", "CreateTime", "MsgType")


def _checked_message(message: dict[str, Any]) -> dict[str, Any]:
    """``message`` once it has what every push has (``FromUserName``, ``CreateTime``,
    ``MsgType``, as strings or numbers)."""
    for name in _REQUIRED:
        value = message.get(name)
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise PushRefused(400, "bad_push", f"the push has no {name}")
    return message


def dedupe_key(message: Mapping[str, Any]) -> str:
    """The name of a push that WeChat's retries of it share: ``msgid:<MsgId>`` for a message,
    ``msgid:<MsgID>:<Event>`` for an event carrying one (``TEMPLATESENDJOBFINISH``: the id of
    the send it reports, another id space than users' messages), else ``event:<FromUserName>:
    <CreateTime>:<Event>`` (``Event`` empty when absent). One longer than 256 characters is
    replaced by ``sha256:<hex>`` of it."""
    msg_id = message.get("MsgId", message.get("MsgID"))
    if isinstance(msg_id, str | int) and not isinstance(msg_id, bool) and str(msg_id):
        event = message.get("Event")
        key = f"msgid:{msg_id}" + (f":{event}" if isinstance(event, str) and event else "")
    else:
        event = message.get("Event", "")
        parts = (message.get("FromUserName"), message.get("CreateTime"), event)
        key = "event:" + ":".join(str(p) if isinstance(p, str | int) else "" for p in parts)
    return key if len(key) <= 256 else "sha256:" + sha256_hex(key)

"""Validation of message bodies before anything leaves for WeChat (pure, no I/O).

Bodies are WeChat's own, without ``access_token``. Doc pages:

- template message (official accounts): https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Template_Message_Interface.html
- subscribe message (mini programs): https://developers.weixin.qq.com/miniprogram/dev/OpenApiDoc/mp-message-management/subscribe-message/sendMessage.html
- customer-service message: https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Service_Center_messages.html
- legacy mini program template message (``form_id``; switched off by WeChat on 2020-01-10):
  https://developers.weixin.qq.com/miniprogram/dev/api-backend/open-api/template-message/templateMessage.send.html

Only shapes, types and sizes are checked here; WeChat's per-keyword content rules stay WeChat's
(it answers 47003 for them, which is passed through).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_ID = 128
MAX_URL = 1024
MAX_DATA_KEYS = 50
MAX_DATA_VALUE = 1000
MAX_TEXT = 2048

CUSTOM_MSGTYPES: Mapping[str, tuple[str, ...]] = {
    "text": ("content",),
    "image": ("media_id",),
    "voice": ("media_id",),
    "video": ("media_id",),
    "music": ("musicurl", "hqmusicurl", "thumb_media_id"),
    "news": ("articles",),
    "mpnews": ("media_id",),
    "mpnewsarticle": ("article_id",),
    "msgmenu": ("list",),
    "wxcard": ("card_id",),
    "miniprogrampage": ("title", "pagepath", "thumb_media_id"),
    "link": ("title", "url"),
}
"""Customer-service ``msgtype`` values and the fields their payload object must have."""


class BodyError(ValueError):
    """A message body is invalid; ``field`` names the JSON path (``data.first.value``)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field {field} {problem}")
        self.field = field


def _str(
    body: Mapping[str, Any], field: str, *, required: bool, max_len: int, path: str = ""
) -> None:
    name = f"{path}{field}"
    if field not in body:
        if required:
            raise BodyError(name, "is required")
        return
    value = body[field]
    if not isinstance(value, str) or (required and not value):
        raise BodyError(name, "must be a non-empty string" if required else "must be a string")
    if len(value) > max_len:
        raise BodyError(name, f"is longer than {max_len} characters")


def _choice(body: Mapping[str, Any], field: str, choices: tuple[str, ...]) -> None:
    if field in body and body[field] not in choices:
        raise BodyError(field, f"must be one of {', '.join(choices)}")


def _data(body: Mapping[str, Any], *, allow_color: bool) -> None:
    data = body.get("data")
    if data is None:
        raise BodyError("data", 'is required: {"keyword": {"value": "..."}}')
    if not isinstance(data, dict) or not data:
        raise BodyError("data", 'must be a non-empty object {"keyword": {"value": "..."}}')
    if len(data) > MAX_DATA_KEYS:
        raise BodyError("data", f"has more than {MAX_DATA_KEYS} keywords")
    for key, item in data.items():
        if len(key) > 64:
            raise BodyError(f"data.{key[:64]}", "is a keyword longer than 64 characters")
        if not isinstance(item, dict):
            raise BodyError(f"data.{key}", 'must be an object {"value": "..."}')
        value = item.get("value")
        if not isinstance(value, str):
            raise BodyError(f"data.{key}.value", "must be a string")
        if len(value) > MAX_DATA_VALUE:
            raise BodyError(f"data.{key}.value", f"is longer than {MAX_DATA_VALUE} characters")
        allowed = {"value", "color"} if allow_color else {"value"}
        extra = sorted(set(item) - allowed)
        if extra:
            raise BodyError(f"data.{key}.{extra[0]}", "is not a field WeChat accepts here")
        if "color" in item and not isinstance(item["color"], str):
            raise BodyError(f"data.{key}.color", "must be a string like #173177")


def validate_template(body: Mapping[str, Any]) -> None:
    """Official-account template message: ``touser``, ``template_id``, ``data``; optional
    ``url``, ``miniprogram {appid, pagepath}``, ``client_msg_id`` (WeChat dedupes it for 10 min)."""
    _str(body, "touser", required=True, max_len=MAX_ID)
    _str(body, "template_id", required=True, max_len=MAX_ID)
    _str(body, "url", required=False, max_len=MAX_URL)
    _str(body, "client_msg_id", required=False, max_len=64)
    if "miniprogram" in body:
        mini = body["miniprogram"]
        if not isinstance(mini, dict):
            raise BodyError("miniprogram", "must be an object {appid, pagepath}")
        _str(mini, "appid", required=True, max_len=MAX_ID, path="miniprogram.")
        _str(mini, "pagepath", required=False, max_len=MAX_URL, path="miniprogram.")
    _data(body, allow_color=True)


def validate_subscribe(body: Mapping[str, Any]) -> None:
    """Mini program subscribe message: ``touser``, ``template_id``, ``data``; optional ``page``,
    ``miniprogram_state`` (developer|trial|formal), ``lang`` (zh_CN|en_US|zh_HK|zh_TW)."""
    _str(body, "touser", required=True, max_len=MAX_ID)
    _str(body, "template_id", required=True, max_len=MAX_ID)
    _str(body, "page", required=False, max_len=MAX_URL)
    _choice(body, "miniprogram_state", ("developer", "trial", "formal"))
    _choice(body, "lang", ("zh_CN", "en_US", "zh_HK", "zh_TW"))
    _data(body, allow_color=False)


def validate_custom(body: Mapping[str, Any]) -> None:
    """Customer-service message: ``touser``, ``msgtype`` and the payload object named by it
    (``{"msgtype": "text", "text": {"content": "..."}}``)."""
    _str(body, "touser", required=True, max_len=MAX_ID)
    msgtype = body.get("msgtype")
    if not isinstance(msgtype, str) or not msgtype:
        raise BodyError("msgtype", "is required: text, image, news, miniprogrampage, ...")
    if msgtype not in CUSTOM_MSGTYPES:
        raise BodyError("msgtype", f"must be one of {', '.join(CUSTOM_MSGTYPES)}")
    payload = body.get(msgtype)
    if not isinstance(payload, dict):
        raise BodyError(msgtype, f"is required for msgtype {msgtype} and must be an object")
    for field in CUSTOM_MSGTYPES[msgtype]:
        if field not in payload or payload[field] in ("", None):
            raise BodyError(f"{msgtype}.{field}", "is required")
    if msgtype == "text":
        _str(payload, "content", required=True, max_len=MAX_TEXT, path="text.")


def validate_wxopen_template(body: Mapping[str, Any]) -> None:
    """Legacy mini program template message: ``touser``, ``template_id``, ``form_id``, ``data``;
    optional ``page``, ``emphasis_keyword``."""
    _str(body, "touser", required=True, max_len=MAX_ID)
    _str(body, "template_id", required=True, max_len=MAX_ID)
    _str(body, "form_id", required=True, max_len=MAX_ID)
    _str(body, "page", required=False, max_len=MAX_URL)
    _str(body, "emphasis_keyword", required=False, max_len=MAX_ID)
    _data(body, allow_color=True)


@dataclass(frozen=True)
class MessageRoute:
    """A named send route: the WeChat API it calls, the app kinds it fits, its validator."""

    name: str
    api: str
    kinds: frozenset[str]
    validate: Callable[[Mapping[str, Any]], None]


MESSAGE_ROUTES: Mapping[str, MessageRoute] = {
    route.name: route
    for route in (
        MessageRoute(
            "template",
            "/cgi-bin/message/template/send",
            frozenset({"official_account"}),
            validate_template,
        ),
        MessageRoute(
            "subscribe",
            "/cgi-bin/message/subscribe/send",
            frozenset({"miniprogram"}),
            validate_subscribe,
        ),
        MessageRoute(
            "custom",
            "/cgi-bin/message/custom/send",
            frozenset({"official_account", "miniprogram"}),
            validate_custom,
        ),
        MessageRoute(
            "wxopen-template",
            "/cgi-bin/message/wxopen/template/send",
            frozenset({"miniprogram"}),
            validate_wxopen_template,
        ),
    )
}


def route_for_kind_hint(route: MessageRoute, kind: str) -> str:
    """A sentence for a route that does not fit the app's kind, naming the route that does."""
    fits = "subscribe" if kind == "miniprogram" else "template"
    what = "a mini program" if kind == "miniprogram" else "an official account"
    return (
        f"route {route.name} is not for {what}; use /messages/{fits} "
        f"(or /messages/custom for customer-service messages)"
    )

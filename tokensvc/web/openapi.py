"""The OpenAPI 3.1 document of every route, served at ``GET /openapi.json`` (no auth)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tokensvc.status_report import DAILY_LIMITS
from tokensvc.store.events import EVENT_OUTCOMES
from tokensvc.tokens.serving import NEXT_ATTEMPT_REASONS
from tokensvc.tokens.values import TokenState, Trigger
from tokensvc.web.facade import WECHAT_ROOTS
from tokensvc.web.operator import MAX_PAGE, MAX_QUERY, STATE_FILTERS
from tokensvc.wechat.errcodes import TOKEN_ERRCODES
from tokensvc.wechat.messages import (
    CUSTOM_MSGTYPES,
    MAX_DATA_KEYS,
    MAX_DATA_VALUE,
    MAX_ID,
    MAX_TEXT,
    MAX_URL,
    MESSAGE_ROUTES,
)

Json = dict[str, Any]

DESCRIPTION = """\
tokensvc is a central access_token server (中控服务器) for WeChat Official Accounts and Mini
Programs. It alone holds the AppSecrets, refreshes every app's `access_token` before WeChat's
`expires_in` runs out, and hands tokens to internal services over HTTP, so that no service
holds an AppSecret, fetches tokens of its own, knocks the others' tokens out (errcode 40001) or
burns the daily quota. It also sends template, subscribe and customer-service messages, runs
mini program logins (`jscode2session`) and forwards allow-listed WeChat APIs with the app's
token added, retrying once on a token error and never resending a call whose outcome is unknown.

Clients authenticate with `Authorization: Bearer <client key>` and may use the apps they are
granted. Operator endpoints (status page, status JSON, metrics, token actions) need the admin
key, as a Bearer key or as the HTTP Basic password (any user name). Every error answers
`{"error": "<code>", "message": "<sentence>"}` (plus `errcode` where WeChat's errcode explains
it). Tokens never appear in operator answers: a token is shown as its fingerprint, the first 8
hex digits of its SHA-256.

The `wechat` routes answer at tokensvc's root in WeChat's own shapes (`{"errcode", "errmsg"}`
with HTTP 200), so that an SDK pointed at tokensvc works unchanged, with a tokensvc client key
where the AppSecret was (see README, "Use tokensvc from an existing SDK")."""


# ---- small builders ---------------------------------------------------------------------------


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _response_ref(name: str) -> Json:
    return {"$ref": f"#/components/responses/{name}"}


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def _string(description: str | None = None, **keywords: Any) -> Json:
    schema: Json = {"type": "string", **keywords}
    if description:
        schema["description"] = description
    return schema


def _nullable(schema_type: str, description: str | None = None, **keywords: Any) -> Json:
    schema: Json = {"type": [schema_type, "null"], **keywords}
    if description:
        schema["description"] = description
    return schema


def _instant(description: str, *, nullable: bool = False) -> Json:
    """An RFC 3339 UTC instant (``2026-11-21T09:11:48Z``); or null, if ``nullable``."""
    kind: str | list[str] = ["string", "null"] if nullable else "string"
    return {"type": kind, "format": "date-time", "description": description}


def _object(properties: Json, *, required: list[str] | None = None, closed: bool = True) -> Json:
    """An object with these properties; ``required`` defaults to all of them."""
    return {
        "type": "object",
        "required": list(properties) if required is None else required,
        "properties": properties,
        "additionalProperties": not closed,
    }


def _header(description: str, schema: Json, *, required: bool = False) -> Json:
    return {"description": description, "required": required, "schema": schema}


def _ok(description: str, content: Json, headers: Json | None = None) -> Json:
    response: Json = {"description": description, "content": content}
    if headers:
        response["headers"] = headers
    return response


def _json_body(schema: Json, description: str, examples: dict[str, tuple[str, Json]]) -> Json:
    """A required JSON request body; ``examples`` by name, each ``(summary, value)``."""
    media: Json = {
        "schema": schema,
        "examples": {
            name: {"summary": summary, "value": value}
            for name, (summary, value) in examples.items()
        },
    }
    return {"required": True, "description": description, "content": {"application/json": media}}


# ---- shared pieces ----------------------------------------------------------------------------

_NO_STORE = {"Cache-Control": _header("Never cache it.", _string(enum=["no-store"]), required=True)}
_RETRIED = {
    "X-Tokensvc-Retried": _header(
        "`1` when WeChat rejected the app's token, tokensvc replaced it and retried once.",
        _string(enum=["0", "1"]),
        required=True,
    )
}
_RETRY_AFTER = {
    "Retry-After": _header(
        "Seconds until the next planned attempt to get a token, when known.",
        {"type": "integer", "minimum": 1},
    )
}


def _error_response(description: str, headers: Json | None = None) -> Json:
    return _ok(description, _json(_ref("Error")), headers)


CLIENT: list[Json] = [{"bearer": []}]
"""Client routes: a client key (Bearer)."""
OPERATOR: list[Json] = [{"bearer": []}, {"basic": []}]
"""Operator routes: the admin key, as Bearer or as the Basic password."""
PUBLIC: list[Json] = []
"""No authentication."""

_GENERIC_ERRORS = ["BadRequest", "NotFound", "MethodNotAllowed", "RequestTimeout", "TooLarge"]
"""What any route may answer: a malformed request, an unknown path, a wrong method, a body
that came too slowly or is too large."""


_RESPONSES_STATUS = {
    "BadRequest": "400",
    "Unauthorized": "401",
    "Forbidden": "403",
    "NotFound": "404",
    "MethodNotAllowed": "405",
    "NoSubscriptionGrant": "409",
    "RequestTimeout": "408",
    "TooLarge": "413",
    "UpstreamUnavailable": "502",
    "TokenUnavailable": "503",
    "RefreshFailed": "503",
    "DatabaseUnavailable": "503",
    "UpstreamTimeout": "504",
}
"""The status of each response component (``RESPONSES``)."""


def _responses(
    success: Json, *extra: str, auth: bool = True, more: dict[str, Json] | None = None
) -> Json:
    """The responses of an operation: ``success`` as 200, the generic errors, 401/403 for
    authenticated routes, the ``extra`` response components, and ``more`` by status."""
    names = list(_GENERIC_ERRORS)
    if auth:
        names += ["Unauthorized", "Forbidden"]
    names += list(extra)
    out: Json = {"200": success}
    for name in names:
        out[_RESPONSES_STATUS[name]] = _response_ref(name)
    out |= more or {}
    return dict(sorted(out.items()))


def _operation(
    operation_id: str,
    summary: str,
    description: str,
    tag: str,
    security: list[Json],
    responses: Json,
    *,
    parameters: list[Json] | None = None,
    body: Json | None = None,
) -> Json:
    op: Json = {
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "tags": [tag],
        "security": security,
    }
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = body
    op["responses"] = responses
    return op


APPID = {"$ref": "#/components/parameters/appid"}
ROUTE = {"$ref": "#/components/parameters/route"}
PATH = {"$ref": "#/components/parameters/path"}


# ---- schemas ----------------------------------------------------------------------------------


def _token_properties() -> Json:
    return {
        "appid": _string("The app's appid."),
        "access_token": _string("The app's current access_token.", minLength=1),
        "expires_in": {
            "type": "integer",
            "minimum": 0,
            "description": "Seconds you may keep using this token; cache it that long, then "
            "ask again. Less than the real remaining lifetime.",
        },
        "expires_at": _instant("The token's real expiry."),
        "version": {
            "type": "integer",
            "minimum": 0,
            "description": "Grows by one with every new token of the app.",
        },
    }


def _action_properties(*, revoke: bool) -> Json:
    """What rotate and revoke answer: the token's metadata, never the token."""
    properties = {k: v for k, v in _token_properties().items() if k != "access_token"}
    properties |= {
        "fingerprint": _string(
            "First 8 hex digits of the token's SHA-256.", pattern="^[0-9a-f]{8}$"
        ),
        "refreshed": {"type": "boolean", "description": "True when WeChat issued a new token."},
        "reason": _string(
            "`refreshed`, `already_replaced`, `still_valid`, `unverified` or `unchanged` "
            "(stable normal mode handed the same token back)."
        ),
    }
    if revoke:
        properties["second_force_at"] = _instant(
            "When the second force refresh of the revocation is due.", nullable=True
        )
    return properties


def _data_schema(*, allow_color: bool) -> Json:
    """``data`` of template-like messages: ``{"keyword": {"value": "..."}}``."""
    item: Json = {"value": _string(maxLength=MAX_DATA_VALUE)}
    if allow_color:
        item["color"] = _string("A colour like `#173177`.")
    return {
        "type": "object",
        "description": 'Keywords of the template: `{"keyword": {"value": "..."}}`.',
        "minProperties": 1,
        "maxProperties": MAX_DATA_KEYS,
        "propertyNames": {"maxLength": 64},
        "additionalProperties": _object(item, required=["value"]),
    }


def _message(description: str, properties: Json, required: list[str]) -> Json:
    """A message body: WeChat's own JSON without ``access_token`` (tokensvc adds it); fields
    tokensvc does not check pass through to WeChat."""
    return {
        "type": "object",
        "description": description,
        "required": required,
        "properties": properties,
        "additionalProperties": True,
        "not": {"required": ["access_token"]},
    }


_ID = _string(minLength=1, maxLength=MAX_ID)
_OPTIONAL_ID = _string(maxLength=MAX_ID)
_URL = _string(maxLength=MAX_URL)


def _custom_variant(msgtype: str, fields: tuple[str, ...]) -> Json:
    payload: Json = {field: {"not": {"enum": ["", None]}} for field in fields}
    if msgtype == "text":
        payload["content"] = _string(minLength=1, maxLength=MAX_TEXT)
    return {
        "type": "object",
        "required": ["touser", "msgtype", msgtype],
        "properties": {
            "msgtype": {"const": msgtype},
            msgtype: _object(payload, closed=False),
        },
    }


SCHEMAS: Json = {
    "Error": {
        "type": "object",
        "description": "Every error. `error` is a stable code, `message` a sentence for people.",
        "required": ["error", "message"],
        "properties": {
            "error": _string(
                "`bad_request`, `unauthorized`, `forbidden`, `path_not_allowed`, `not_found`, "
                "`unknown_app`, `method_not_allowed`, `request_timeout`, `payload_too_large`, "
                "`upstream_unavailable`, `upstream_bad_response`, `token_unavailable`, "
                "`refresh_failed`, `database_unavailable`, `upstream_timeout`, ..."
            ),
            "message": _string(),
            "errcode": _nullable(
                "integer",
                "WeChat's errcode of the last failure (`token_unavailable`, `refresh_failed`), "
                "e.g. -1 busy, 40125 wrong AppSecret, 45009 daily quota.",
            ),
        },
        "additionalProperties": False,
    },
    "Token": {**_object(_token_properties()), "description": "An app's current access_token."},
    "RefreshedToken": {
        **_object(
            _token_properties()
            | {
                "refreshed": {
                    "type": "boolean",
                    "description": "True when WeChat issued a new token for this report.",
                },
                "verified": {
                    "type": "boolean",
                    "description": "False when WeChat's probe could not judge the reported "
                    "token and the app's budget for such claims is spent.",
                },
            }
        ),
        "description": "The current token after a passive refresh.",
    },
    "RefreshRequest": {
        "type": "object",
        "required": ["stale_token"],
        "properties": {
            "stale_token": _string(
                "The token WeChat rejected, as tokensvc gave it to you.",
                minLength=1,
                maxLength=2048,
            ),
            "errcode": {
                "type": ["integer", "null"],
                "enum": [*sorted(TOKEN_ERRCODES), None],
                "description": "The errcode WeChat answered: 40001, 40014 or 42001 (others are "
                "not fixed by a new token). Optional.",
            },
        },
        "additionalProperties": True,
    },
    "TokenAction": {
        **_object(_action_properties(revoke=False)),
        "description": "The token's metadata after `Refresh now` (never the token).",
    },
    "RevokeAction": {
        **_object(_action_properties(revoke=True)),
        "description": "The first new token's metadata after a revocation (never the token).",
    },
    "App": _object(
        {
            "appid": _string(),
            "name": _string(),
            "kind": _string(enum=["official_account", "miniprogram"]),
            "token_api": _string(enum=sorted(DAILY_LIMITS)),
        }
    ),
    "AppList": _object({"apps": {"type": "array", "items": _ref("App")}}),
    "TemplateMessage": _message(
        "Official-account template message (`/cgi-bin/message/template/send`).",
        {
            "touser": _ID,
            "template_id": _ID,
            "url": _URL,
            "miniprogram": _object(
                {"appid": _ID, "pagepath": _URL}, required=["appid"], closed=False
            ),
            "client_msg_id": _string(
                "WeChat drops a repeated client_msg_id within 10 minutes.", maxLength=64
            ),
            "data": _data_schema(allow_color=True),
        },
        ["touser", "template_id", "data"],
    ),
    "SubscribeMessage": _message(
        "Mini program subscribe message (`/cgi-bin/message/subscribe/send`).",
        {
            "touser": _ID,
            "template_id": _ID,
            "page": _URL,
            "miniprogram_state": {"enum": ["developer", "trial", "formal"]},
            "lang": {"enum": ["zh_CN", "en_US", "zh_HK", "zh_TW"]},
            "data": _data_schema(allow_color=False),
        },
        ["touser", "template_id", "data"],
    ),
    "CustomMessage": {
        **_message(
            "Customer-service message (`/cgi-bin/message/custom/send`): `msgtype` names the "
            'payload object, e.g. `{"msgtype": "text", "text": {"content": "..."}}`.',
            {
                "touser": _ID,
                "msgtype": _string(enum=list(CUSTOM_MSGTYPES)),
            },
            ["touser", "msgtype"],
        ),
        "oneOf": [_custom_variant(name, fields) for name, fields in CUSTOM_MSGTYPES.items()],
    },
    "WxopenTemplateMessage": _message(
        "Legacy mini program template message (`/cgi-bin/message/wxopen/template/send`; "
        "WeChat switched it off in 2020).",
        {
            "touser": _ID,
            "template_id": _ID,
            "form_id": _ID,
            "page": _URL,
            "emphasis_keyword": _OPTIONAL_ID,
            "data": _data_schema(allow_color=True),
        },
        ["touser", "template_id", "form_id", "data"],
    ),
    "Jscode2sessionRequest": {
        "type": "object",
        "required": ["js_code"],
        "properties": {
            "js_code": _string("The code from `wx.login()`.", minLength=1, maxLength=256)
        },
        "additionalProperties": True,
    },
    "WechatAnswer": {
        "type": "object",
        "description": "WeChat's JSON answer, unchanged, whatever its errcode (`msgid` for "
        "sends; `openid`, `session_key`, `unionid` for logins).",
        "properties": {"errcode": {"type": "integer"}, "errmsg": {"type": "string"}},
        "additionalProperties": True,
    },
    "Health": _object({"status": _string(enum=["ok"])}),
    "Readiness": _object(
        {
            "status": _string(enum=["ready", "not_ready"]),
            "database": _string(enum=["ok", "unavailable"]),
            "apps_without_token": {"type": "array", "items": _string()},
            "contested": {
                "type": "array",
                "items": _string(),
                "description": "Apps whose tokens another system keeps killing; they do not "
                "make the replica unready.",
            },
        }
    ),
    "LastError": _object(
        {
            "errcode": _nullable("integer", "None for network errors."),
            "errmsg": _string(),
            "rid": _nullable("string", "WeChat's request id, for `/cgi-bin/openapi/rid/get`."),
            "at": _instant("When it happened."),
        }
    ),
    "AppStatus": _object(
        {
            "appid": _string(),
            "name": _string(),
            "kind": _string(enum=["official_account", "miniprogram"]),
            "token_api": _string(enum=sorted(DAILY_LIMITS)),
            "state": _string(enum=[state.value for state in TokenState]),
            "notice": _nullable(
                "string",
                "What to do about a `contested` app, or about a WeChat quota under 10 %.",
            ),
            "fingerprint": _nullable("string", "The current token's fingerprint."),
            "version": {"type": "integer"},
            "fetched_at": _instant("When the current token was fetched.", nullable=True),
            "expires_at": _instant("When the current token expires.", nullable=True),
            "rejected_at": _instant(
                "When WeChat proved the current token dead (it is not served from then on).",
                nullable=True,
            ),
            "planned_refresh_at": _instant(
                "The refresh the current token's schedule plans (null without a token); "
                "`next_refresh_at` says when tokensvc will really try.",
                nullable=True,
            ),
            "next_refresh_at": _instant(
                "When tokensvc will next call WeChat for this app's token, never in the past "
                "(an attempt that is due or under way is `now`)."
            ),
            "next_refresh_reason": _string(
                "Why then: `first_fetch` (no token yet), `schedule` (the planned refresh), "
                "`token_rejected` (WeChat proved the token dead: replaced at once), `backoff` "
                "(retrying after failures), `config_error` (wrong AppSecret, appid or IP "
                "whitelist: retried every `config_error_retry`), `quota_pause` (45009: until "
                "midnight China time; 45011: the next minute) or `contested` (another system "
                "kills the tokens: replacements back off).",
                enum=list(NEXT_ATTEMPT_REASONS),
            ),
            "previous_valid_until": _instant(
                "Until when WeChat still accepts the previous token (the overlap).",
                nullable=True,
            ),
            "last_error": {
                "oneOf": [{"type": "null"}, _ref("LastError")],
                "description": "The last failed attempt; kept after a later success.",
            },
            "failures": {
                "type": "integer",
                "minimum": 0,
                "description": "Failed attempts since the last success.",
            },
            "upstream_calls_today": {
                "type": "integer",
                "description": "Calls to WeChat's token API today (China time).",
            },
            "daily_limit": {"type": "integer", "enum": sorted(DAILY_LIMITS.values())},
            "passive_today": {
                "type": "object",
                "description": "Passive refreshes today per client, and how many were real.",
                "additionalProperties": _object(
                    {"requests": {"type": "integer"}, "refreshed": {"type": "integer"}}
                ),
            },
            "revoke_second_at": _instant(
                "When a revocation's second force refresh is due.", nullable=True
            ),
            "quota": {
                "type": "array",
                "description": "WeChat's latest `quota/get` readings for the app (its token API "
                "first, then the APIs tokensvc forwarded most; at most 4), read about 30 s "
                "after start and then every 10 minutes; empty until read.",
                "items": _ref("QuotaReading"),
            },
            "forwarded_today": {
                "type": "object",
                "description": "Calls this replica forwarded for the app today (China time), "
                "per WeChat API path, most first.",
                "additionalProperties": {"type": "integer", "minimum": 1},
            },
            "push": {
                "anyOf": [_ref("PushStatus"), {"type": "null"}],
                "description": "Message push (every replica's); null without `[apps.push]`.",
            },
        },
        closed=False,
    ),
    "PushStatus": _object(
        {
            "received_24h": {"type": "integer", "description": "Pushes accepted in 24 h."},
            "last_received_at": _instant("The last push accepted.", nullable=True),
            "backlog": {
                "type": "integer",
                "description": "Deliveries waiting for a first try or a retry.",
            },
            "oldest_pending_at": _instant(
                "When the oldest waiting push was accepted.", nullable=True
            ),
            "failed": {
                "type": "integer",
                "description": "Deliveries given up after 24 h (`POST .../push/redeliver`).",
            },
            "targets": {
                "type": "array",
                "items": _object(
                    {
                        "url": _string("The target's URL without user, password or query."),
                        "pending": {"type": "integer"},
                        "failed": {"type": "integer"},
                        "last_delivered_at": _instant("The last delivery.", nullable=True),
                        "last_failure": {
                            "anyOf": [
                                _object(
                                    {
                                        "at": _instant("When."),
                                        "http_status": _nullable(
                                            "integer", "None: no HTTP answer."
                                        ),
                                        "error": _string(),
                                        "attempts": {"type": "integer"},
                                    }
                                ),
                                {"type": "null"},
                            ]
                        },
                    }
                ),
            },
        }
    ),
    "QuotaReading": _object(
        {
            "api": _string("The WeChat API path, e.g. `/cgi-bin/token`."),
            "daily_limit": {"type": "integer", "description": "Calls allowed a day."},
            "used": {"type": "integer", "description": "Calls WeChat counted today."},
            "remain": {"type": "integer", "description": "Calls left today."},
            "low": {
                "type": "boolean",
                "description": "Less than 10 % left: a `quota_low` event and a WARNING follow.",
            },
            "checked_at": _instant("When WeChat was asked."),
        }
    ),
    "RefreshEvent": _object(
        {
            "at": _instant("When it happened."),
            "appid": _string(),
            "trigger": _string(enum=[trigger.value for trigger in Trigger]),
            "outcome": _string(
                "`success`, `unchanged` or `error` for a call to WeChat; `dead`, "
                "`contested` and `quota_low` (trigger `quota`) are notes that cost no call.",
                enum=list(EVENT_OUTCOMES),
            ),
            "errcode": _nullable("integer"),
            "errmsg": _nullable("string"),
            "rid": _nullable("string"),
            "fingerprint": _nullable("string"),
            "latency_ms": {"type": "number", "minimum": 0},
        },
        closed=False,
    ),
    "Status": {
        **_object(
            {
                "now": _instant("The server's time."),
                "apps": {"type": "array", "items": _ref("AppStatus")},
                "events": {
                    "type": "array",
                    "items": _ref("RefreshEvent"),
                    "maxItems": 50,
                    "description": "The last 50 refresh events, newest first.",
                },
            },
            closed=False,
        ),
        "description": "Per-app token status and the recent refresh events; fingerprints, "
        "never tokens.",
    },
    "OpenAPIDocument": {
        "type": "object",
        "required": ["openapi", "info", "paths"],
        "properties": {
            "openapi": _string(pattern=r"^3\.1\.\d+$"),
            "info": {"type": "object"},
            "paths": {"type": "object"},
        },
        "additionalProperties": True,
    },
}

RESPONSES: Json = {
    "BadRequest": _error_response(
        "`bad_request`: a malformed request, malformed JSON, a missing or wrong-typed field "
        "(named in `message`), a route that does not fit the app's kind, a passthrough path "
        "that is not plain segments, or a body that was cut short."
    ),
    "Unauthorized": _error_response(
        "`unauthorized`: no key, an unknown one, or an `Authorization` header no key can hold "
        "(non-ASCII, control characters).",
        {
            "WWW-Authenticate": _header(
                '`Bearer realm="tokensvc"` on client routes, `Basic realm="tokensvc operators"` '
                "on operator routes (so browsers prompt for the admin key).",
                _string(),
                required=True,
            )
        },
    ),
    "Forbidden": _error_response(
        "`forbidden`: the key is not granted that app, a client key on an operator route, or "
        "a browser (Basic) operator action without `X-Requested-With: tokensvc` or from "
        "another site; `path_not_allowed`: the passthrough path is not in `[proxy] allow`."
    ),
    "NotFound": _error_response(
        "`unknown_app`: no app with that appid is configured; `not_found`: no such endpoint "
        "or message route."
    ),
    "MethodNotAllowed": _error_response(
        "`method_not_allowed`: the path exists, the method does not.",
        {"Allow": _header("The methods the path answers.", _string(), required=True)},
    ),
    "RequestTimeout": _error_response(
        "`request_timeout`: the request body was not received in time."
    ),
    "TooLarge": _error_response(
        "`payload_too_large`: the body is over the route's limit (64 KiB for token routes and "
        "logins, 1 MiB for sends and the passthrough)."
    ),
    "UpstreamUnavailable": _error_response(
        "`upstream_unavailable`: WeChat could not be reached or the connection broke after "
        "the request was sent (not resent); `upstream_bad_response`: WeChat answered an HTTP "
        "error or something that is not JSON."
    ),
    "TokenUnavailable": _error_response(
        "`token_unavailable`: no valid access_token, and none can be had now (failing app, "
        "quota pause, contested app). `errcode` says why. Nothing was sent to WeChat, so it is "
        "safe to retry after `Retry-After`.",
        _RETRY_AFTER,
    ),
    "RefreshFailed": _error_response(
        "`refresh_failed`: the refresh failed or may not call WeChat now (`errcode`: WeChat's "
        "last errcode, if any).",
        {
            "Retry-After": _header(
                "Seconds until the app's next planned refresh, when known.",
                {"type": "integer", "minimum": 1},
            )
        },
    ),
    "DatabaseUnavailable": _error_response(
        "`database_unavailable`: the status needs the database and it did not answer."
    ),
    "NoSubscriptionGrant": _error_response(
        "`no_subscription_grant`: a subscribe send of an app with `[apps.push] enforce_grants` "
        "and no grant left for (`touser`, `template_id`); WeChat was not called."
    ),
    "UpstreamTimeout": _error_response(
        "`upstream_timeout`: WeChat did not answer within `[wechat] timeout`; the call may or "
        "may not have taken effect and was not resent."
    ),
}

_SEGMENT = "[A-Za-z0-9_][A-Za-z0-9_.-]*"
"""One segment of a passthrough path (``tokensvc.config.is_safe_proxy_path``)."""

PARAMETERS: Json = {
    "appid": {
        "name": "appid",
        "in": "path",
        "required": True,
        "description": "The app's appid, as configured in `[[apps]]`.",
        "schema": _string(pattern="^[A-Za-z0-9_-]{1,64}$"),
    },
    "route": {
        "name": "route",
        "in": "path",
        "required": True,
        "description": "The send route: `template` (official accounts), `subscribe` and "
        "`wxopen-template` (mini programs), `custom` (both).",
        "schema": _string(enum=list(MESSAGE_ROUTES)),
    },
    "path": {
        "name": "path",
        "in": "path",
        "required": True,
        "description": "The WeChat API path without its leading slash, e.g. "
        "`cgi-bin/user/info`. Its slashes are part of the value (the route matches the rest "
        "of the URL) and are sent as they are: segments of letters, digits, `_ . -`, none "
        "empty and none starting with `.`, and no percent-encoding (400 otherwise). Only paths "
        "under `[proxy] allow` are forwarded (403 `path_not_allowed` otherwise); token "
        "endpoints, quota resets and `sns/` never are.",
        "schema": _string(pattern=f"^{_SEGMENT}(/{_SEGMENT})*$"),
        "examples": {
            "user_info": {"summary": "GET: a user's profile", "value": "cgi-bin/user/info"},
            "wxacode": {"summary": "POST: a mini program code image", "value": "wxa/getwxacode"},
        },
    },
}


# ---- operations -------------------------------------------------------------------------------


def _page_parameter(name: str, description: str, schema: Json) -> Json:
    """An optional query parameter of the status page (empty means "any")."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_TOKEN_OK = _ok("The app's current token.", _json(_ref("Token")), _NO_STORE)
_WECHAT_OK = _ok(
    "WeChat answered: its JSON, unchanged, whatever its errcode.",
    _json(_ref("WechatAnswer")),
    _RETRIED,
)
_PROXY_FAILURES = ("UpstreamUnavailable", "TokenUnavailable", "UpstreamTimeout")

MESSAGE_EXAMPLES: dict[str, tuple[str, Json]] = {
    "template": (
        "template: an official account's template message",
        {
            "touser": "OPENID",
            "template_id": "TEMPLATE_ID",
            "url": "https://example.com/order/1",
            "client_msg_id": "order-1-shipped",
            "data": {
                "first": {"value": "Your order shipped", "color": "#173177"},
                "keyword1": {"value": "A-1"},
            },
        },
    ),
    "subscribe": (
        "subscribe: a mini program's subscribe message",
        {
            "touser": "OPENID",
            "template_id": "TEMPLATE_ID",
            "page": "pages/index",
            "miniprogram_state": "formal",
            "lang": "zh_CN",
            "data": {"thing1": {"value": "已发货"}, "time2": {"value": "2026-11-21 10:00"}},
        },
    ),
    "custom": (
        "custom: a customer-service text message",
        {"touser": "OPENID", "msgtype": "text", "text": {"content": "Hello"}},
    ),
    "wxopen-template": (
        "wxopen-template: a legacy mini program template message",
        {
            "touser": "OPENID",
            "template_id": "TEMPLATE_ID",
            "form_id": "FORM_ID",
            "data": {"keyword1": {"value": "x"}},
        },
    ),
}
"""The README's examples, one per route."""


PATHS: Json = {
    "/v1/apps": {
        "get": _operation(
            "listApps",
            "The apps your key may use",
            "The apps the client key is granted.",
            "tokens",
            CLIENT,
            _responses(_ok("The apps.", _json(_ref("AppList")))),
        )
    },
    "/v1/apps/{appid}/token": {
        "get": _operation(
            "getToken",
            "The app's current access_token",
            "Served from memory. A token WeChat proved dead is never served: while its "
            "replacement is fetched the request waits (at most `[wechat] timeout` seconds).",
            "tokens",
            CLIENT,
            _responses(_TOKEN_OK, "TokenUnavailable"),
            parameters=[APPID],
        )
    },
    "/v1/apps/{appid}/token/refresh": {
        "post": _operation(
            "refreshToken",
            "Passive refresh: report a token WeChat rejected",
            "Call it when WeChat answered 40001, 40014 or 42001 to a token from tokensvc. A "
            "token that is no longer current gets the current one at once; a current one is "
            "checked with WeChat's side-effect-free probe first, and replaced only if WeChat "
            "rejects it.",
            "tokens",
            CLIENT,
            _responses(
                _ok(
                    "The current token, and whether it was refreshed for this report.",
                    _json(_ref("RefreshedToken")),
                    _NO_STORE,
                ),
                "TokenUnavailable",
            ),
            parameters=[APPID],
            body=_json_body(
                _ref("RefreshRequest"),
                "The token WeChat rejected.",
                {
                    "rejected": (
                        "WeChat answered 40001",
                        {"stale_token": "THE_TOKEN_WECHAT_REJECTED", "errcode": 40001},
                    )
                },
            ),
        )
    },
    "/v1/apps/{appid}/messages/{route}": {
        "post": _operation(
            "sendMessage",
            "Send a message with the app's token",
            "The body is WeChat's own body without `access_token`; it is validated first "
            "(400 names the field) and sent with the app's token. On 40001/40014/42001 the "
            "token is replaced and the call retried exactly once (`X-Tokensvc-Retried: 1`). A "
            "call whose outcome is unknown is never resent (502/504). `template` is for "
            "official accounts, `subscribe` and `wxopen-template` for mini programs, `custom` "
            "for both; the body must be the route's. Subscribe sends of an app with "
            "`[apps.push] enforce_grants = true` need a grant in the subscribe-grant ledger "
            "(409 `no_subscription_grant` otherwise, and WeChat is not called); a send WeChat "
            "accepts uses one, 43101 clears them.",
            "messages",
            CLIENT,
            _responses(_WECHAT_OK, *_PROXY_FAILURES, "NoSubscriptionGrant"),
            parameters=[APPID, ROUTE],
            body=_json_body(
                {
                    "anyOf": [
                        _ref("TemplateMessage"),
                        _ref("SubscribeMessage"),
                        _ref("CustomMessage"),
                        _ref("WxopenTemplateMessage"),
                    ]
                },
                "The message: the body of the route named in the path.",
                MESSAGE_EXAMPLES,
            ),
        )
    },
    "/v1/apps/{appid}/jscode2session": {
        "post": _operation(
            "jscode2session",
            "Mini program login",
            "Exchanges a `wx.login()` code for `openid`, `session_key` and `unionid` (or "
            "WeChat's errcode, e.g. 40029, 40163). Mini programs only. A js_code works once, "
            "so a call that may have reached WeChat is never resent.",
            "messages",
            CLIENT,
            _responses(_WECHAT_OK, *_PROXY_FAILURES),
            parameters=[APPID],
            body=_json_body(
                _ref("Jscode2sessionRequest"),
                "The login code.",
                {"login": ("A code from wx.login()", {"js_code": "JS_CODE"})},
            ),
        )
    },
    "/v1/apps/{appid}/wechat/{path}": {
        method: _operation(
            f"passthrough{method.capitalize()}",
            f"Allow-listed passthrough ({method.upper()})",
            f"Forwards `{method.upper()} /{{path}}` to WeChat with the app's token, if "
            "`[proxy] allow` lists the path. Any `access_token` in the query is dropped; the "
            "rest of the query (e.g. `openid`, `lang`: not listed here, any parameter passes)"
            + (" and the body pass" if method == "post" else " passes")
            + " unchanged. WeChat's JSON answer, or binary content such as a mini program code "
            "image, comes back as it is; an HTTP error or a text/HTML page from WeChat is a 502. "
            "Other methods answer 405.",
            "messages",
            CLIENT,
            _responses(
                _ok(
                    "WeChat answered: its JSON object unchanged, or binary content (media, a "
                    "mini program code image) with its own Content-Type. WeChat's HTTP errors "
                    "and text or HTML answers are 502 `upstream_bad_response`.",
                    {
                        "application/json": {"schema": _ref("WechatAnswer")},
                        "*/*": {"schema": {}},
                    },
                    _RETRIED,
                ),
                *_PROXY_FAILURES,
            ),
            parameters=[APPID, PATH],
            body=None
            if method == "get"
            else {
                "required": False,
                "description": "Passed to WeChat unchanged, with its Content-Type "
                "(application/json when none is given).",
                "content": {
                    "application/json": {"schema": {}},
                    "application/octet-stream": {"schema": {}},
                },
            },
        )
        for method in ("get", "post")
    },
    "/status": {
        "get": _operation(
            "statusPage",
            "The status page (HTML)",
            "One card per app, failing apps first, 100 a page: a bar of the token's lifetime "
            "(fetched, planned refresh, expiry, the previous token's overlap, now, the next "
            "attempt and why), the last 24 hours of refreshes and errors, token fingerprint, "
            "calls today, last error and the actions; then the recent refresh events, "
            "identical ones grouped. Drawn on the server (works without JavaScript), it "
            "updates itself. Browsers prompt for the admin key (Basic auth).",
            "operators",
            OPERATOR,
            _responses(
                _ok("The page.", {"text/html": {"schema": _string()}}, _NO_STORE),
                "DatabaseUnavailable",
            ),
            parameters=[
                _page_parameter(
                    "q",
                    "Only apps whose name or appid contains this (any case).",
                    _string(maxLength=MAX_QUERY),
                ),
                _page_parameter(
                    "state",
                    "Only apps in this state; `failing`: expired, misconfigured, contested "
                    "or retrying.",
                    _string(enum=list(STATE_FILTERS)),
                ),
                _page_parameter(
                    "app",
                    "Only the events of this appid.",
                    _string(pattern="^[A-Za-z0-9_-]{0,64}$"),
                ),
                _page_parameter(
                    "outcome",
                    "Only the events with this outcome.",
                    _string(enum=["", *EVENT_OUTCOMES]),
                ),
                _page_parameter(
                    "page",
                    "Which 100 apps (1-based); past the end, the last page.",
                    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                ),
            ],
        )
    },
    "/v1/status": {
        "get": _operation(
            "status",
            "The status as JSON",
            "Every app's status (in configuration order) and the last 50 refresh events; "
            "times RFC 3339 UTC.",
            "operators",
            OPERATOR,
            _responses(
                _ok("The status document.", _json(_ref("Status")), _NO_STORE),
                "DatabaseUnavailable",
            ),
        )
    },
    "/v1/apps/{appid}/token/rotate": {
        "post": _operation(
            "rotateToken",
            "Refresh now",
            "A normal-mode refresh through the one single-flight refresh path (trigger "
            "`operator`). Classic apps get a new token; a stable token only changes in its "
            "last 5 minutes. With Basic auth the request must carry `X-Requested-With: "
            "tokensvc` and a same-site `Origin`.",
            "operators",
            OPERATOR,
            _responses(_ok("The token's metadata.", _json(_ref("TokenAction"))), "RefreshFailed"),
            parameters=[APPID],
        )
    },
    "/v1/apps/{appid}/token/revoke": {
        "post": _operation(
            "revokeToken",
            "Revoke a leaked token (stable apps)",
            "WeChat's leak response: two force refreshes `[refresh] revoke_gap` seconds apart "
            "(at most 20 a day). Callers still holding the old token get 40001 until they "
            "fetch the new one. Classic apps answer 400 (use rotate). With Basic auth the "
            "request must carry `X-Requested-With: tokensvc` and a same-site `Origin`.",
            "operators",
            OPERATOR,
            _responses(
                _ok("The first new token's metadata.", _json(_ref("RevokeAction"))),
                "RefreshFailed",
            ),
            parameters=[APPID],
        )
    },
    "/metrics": {
        "get": _operation(
            "metrics",
            "Prometheus metrics",
            "Prometheus text exposition. Needs the admin key unless `[metrics] public = true`.",
            "operators",
            OPERATOR,
            _responses(_ok("The metrics.", {"text/plain": {"schema": _string()}})),
        )
    },
    "/healthz": {
        "get": _operation(
            "healthz",
            "Liveness",
            "200 while the process serves HTTP.",
            "health",
            PUBLIC,
            _responses(_ok("Alive.", _json(_ref("Health"))), auth=False),
        )
    },
    "/readyz": {
        "get": _operation(
            "readyz",
            "Readiness",
            "200 when the database answers and every app has a valid token; 503 naming what "
            "is missing. A contested app is listed but does not make the replica unready.",
            "health",
            PUBLIC,
            _responses(
                _ok("Ready.", _json(_ref("Readiness"))),
                auth=False,
                more={"503": _ok("Not ready: what is missing.", _json(_ref("Readiness")))},
            ),
        )
    },
    "/openapi.json": {
        "get": _operation(
            "openapi",
            "This document",
            "The OpenAPI 3.1 document of every route.",
            "health",
            PUBLIC,
            _responses(_ok("The document.", _json(_ref("OpenAPIDocument"))), auth=False),
        )
    },
}

# ---- the WeChat-shaped facade (tokensvc/web/facade.py) ---------------------------------------


def _query(name: str, description: str) -> Json:
    """A free-form query parameter: WeChat's routes answer a missing or wrong one with an
    errcode and HTTP 200, as WeChat does, so nothing here is a schema violation."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


_WECHAT_SHAPED = _ok(
    'WeChat\'s shape: the answer, or `{"errcode", "errmsg"}` for an error (HTTP 200).',
    _json(_ref("WechatAnswer")),
)
_WECHAT_UNKNOWN = {
    "502": _ok(
        "WeChat's answer was unusable (an HTTP error, or text/HTML where JSON was expected).",
        _json(_ref("Error")),
    ),
    "504": _ok(
        "The forwarded call's outcome is unknown (no answer in time, or the connection broke "
        'after sending); it was not resent: `{"errcode": -2, "errmsg"}`. Do not resend it '
        "blindly.",
        _json(_ref("WechatAnswer")),
    ),
}
_CREDENTIALS = [
    _query("grant_type", "`client_credential` (40002 otherwise)."),
    _query("appid", "The app's appid (41002 missing, 40013 not configured)."),
    _query(
        "secret",
        "A tokensvc client key granted the app, in place of the AppSecret (41004 "
        "missing; 40001 wrong or not granted, as WeChat answers a wrong AppSecret).",
    ),
]
_CODE_EXCHANGE = [
    _query("appid", "The app's appid."),
    _query("secret", "A tokensvc client key granted the app (40125 otherwise)."),
    _query("grant_type", "`authorization_code`."),
]
ROOTS = {
    "name": "root",
    "in": "path",
    "required": True,
    "description": "The first segment of a WeChat API path.",
    "schema": _string(enum=list(WECHAT_ROOTS)),
}
WECHAT_PATH = {
    "name": "path",
    "in": "path",
    "required": True,
    "description": "The rest of the WeChat API path (its slashes are part of the value). "
    "Checked as the passthrough's paths are: 40066 for `.`/`..`/empty segments or "
    "percent-encoding, 48001 outside `[proxy] allow`.",
    "schema": _string(),
}

PATHS |= {
    "/cgi-bin/token": {
        method: _operation(
            f"wechatToken{method.capitalize()}",
            "WeChat's token API, answered by tokensvc",
            "WeChat's `GET /cgi-bin/token` for SDKs: `{access_token, expires_in}` from "
            "tokensvc's token (`expires_in`: how long to keep it). Never reaches WeChat. "
            "POST answers 43001 (GET required).",
            "wechat",
            PUBLIC,
            _responses(_WECHAT_SHAPED, auth=False),
            parameters=_CREDENTIALS,
        )
        for method in ("get", "post")
    },
    "/cgi-bin/stable_token": {
        method: _operation(
            f"wechatStableToken{method.capitalize()}",
            "WeChat's stable token API, answered by tokensvc",
            "WeChat's `POST /cgi-bin/stable_token` for SDKs, body `{grant_type, appid, secret "
            "(a client key), force_refresh}`. `force_refresh: true` is a claim that the "
            "caller's token is bad, judged by the passive-refresh rules (probe; replaced only "
            "when proven dead), never a WeChat force refresh. GET answers 43002, a body that "
            "is not a JSON object 47001.",
            "wechat",
            PUBLIC,
            _responses(_WECHAT_SHAPED, auth=False),
            body=None
            if method == "get"
            else {
                "required": False,
                "content": {"application/json": {"schema": {}}},
                "description": "WeChat's body; any JSON (errors answer WeChat's errcodes).",
            },
        )
        for method in ("get", "post")
    },
    "/sns/jscode2session": {
        "get": _operation(
            "wechatJscode2session",
            "Mini program login with a client key",
            "WeChat's `GET /sns/jscode2session` with a client key as `secret`: tokensvc sends "
            "the AppSecret. WeChat's answer comes back as it is; a code is never resent.",
            "wechat",
            PUBLIC,
            _responses(_WECHAT_SHAPED, auth=False, more=_WECHAT_UNKNOWN),
            parameters=[*_CODE_EXCHANGE, _query("js_code", "The code from `wx.login()`.")],
        )
    },
    "/sns/oauth2/access_token": {
        "get": _operation(
            "wechatOauth2AccessToken",
            "Official account web login with a client key",
            "WeChat's `GET /sns/oauth2/access_token` with a client key as `secret`: tokensvc "
            "sends the AppSecret. WeChat's answer comes back as it is; a code is never resent.",
            "wechat",
            PUBLIC,
            _responses(_WECHAT_SHAPED, auth=False, more=_WECHAT_UNKNOWN),
            parameters=[*_CODE_EXCHANGE, _query("code", "The code from the redirect.")],
        )
    },
    "/sns/oauth2/refresh_token": {
        "get": _operation(
            "wechatOauth2RefreshToken",
            "Renew a web-login user token",
            "WeChat's `GET /sns/oauth2/refresh_token`, relayed as it came (it needs nothing of "
            "the app's); `appid` must be a configured app (40013 otherwise).",
            "wechat",
            PUBLIC,
            _responses(_WECHAT_SHAPED, auth=False, more=_WECHAT_UNKNOWN),
            parameters=[
                _query("appid", "The app's appid."),
                _query("grant_type", "`refresh_token`."),
                _query("refresh_token", "The user's refresh_token from web login."),
            ],
        )
    },
    **{
        api: {
            "get": _operation(
                f"wechatSns{api.rsplit('/', 1)[1].capitalize()}",
                f"WeChat's `{api}` with the user's web-login token",
                f"WeChat's `GET {api}`, relayed as it came (the user's own `access_token`; "
                "nothing of the app's is added; 41001 without one).",
                "wechat",
                PUBLIC,
                _responses(_WECHAT_SHAPED, auth=False, more=_WECHAT_UNKNOWN),
                parameters=[
                    _query("access_token", "The user's access_token from web login."),
                    _query("openid", "The user's openid."),
                    *(
                        [_query("lang", "`zh_CN`, `zh_TW` or `en`.")]
                        if api == "/sns/userinfo"
                        else []
                    ),
                ],
            )
        }
        for api in ("/sns/userinfo", "/sns/auth")
    },
    "/{root}/{path}": {
        method: _operation(
            f"wechatForward{method.capitalize()}",
            f"Any WeChat API with an issued access_token ({method.upper()})",
            "A WeChat API call as an SDK makes it, with `?access_token=T`: accepted only when "
            "T is a token tokensvc issued (current, or previous within the overlap window; "
            "41001 missing, 40001 otherwise, nothing forwarded), forwarded under `[proxy] "
            "allow` with the app's current token, retried once on 40001/40014/42001. WeChat's "
            "answer (JSON, media, images) comes back as it came.",
            "wechat",
            PUBLIC,
            _responses(
                _ok(
                    "WeChat's answer as it came, or tokensvc's errcode in WeChat's shape.",
                    {"application/json": {"schema": _ref("WechatAnswer")}, "*/*": {"schema": {}}},
                ),
                auth=False,
                more=_WECHAT_UNKNOWN,
            ),
            parameters=[ROOTS, WECHAT_PATH, _query("access_token", "A token tokensvc issued.")],
            body=None
            if method == "get"
            else {
                "required": False,
                "content": {"*/*": {"schema": {}}},
                "description": "Forwarded unchanged (at most 1 MiB).",
            },
        )
        for method in ("get", "post")
    },
}

_GRANT = _object(
    {
        "template_id": _string("The subscribe-message template."),
        "one_time_grants": {
            "type": "integer",
            "minimum": 0,
            "description": "One-time subscriptions accepted (subscribe_msg_popup_event) and "
            "not yet used by a send.",
        },
        "long_term_status": _nullable(
            "string",
            "`accept` or `reject` from subscribe_msg_change_event (the user's settings); null "
            "before any.",
        ),
        "last_status": _nullable(
            "string", "The last status seen: `accept`, `reject`, `ban`, `refused` (43101)..."
        ),
        "last_event": _nullable(
            "string",
            "What changed the row last: an event name, `send`, or `send_43101`.",
        ),
        "last_change_at": _instant("When the row last changed (UTC)."),
        "accepted_total": {"type": "integer", "description": "Accepts ever recorded."},
        "used_total": {"type": "integer", "description": "Sends that used a grant."},
    }
)
SCHEMAS["Subscriptions"] = {
    **_object(
        {
            "appid": _string(),
            "openid": _string(),
            "receiving_pushes": {
                "type": "boolean",
                "description": "The app has `[apps.push]` (the ledger is fed by its pushes).",
            },
            "enforce_grants": {
                "type": "boolean",
                "description": "Subscribe sends need a grant (`[apps.push] enforce_grants`).",
            },
            "templates": {"type": "array", "items": _GRANT},
        }
    ),
    "description": "One user's subscribe-grant ledger, per template.",
}
PATHS |= {
    "/v1/apps/{appid}/push/redeliver": {
        "post": _operation(
            "redeliverPushes",
            "Send failed push deliveries again",
            "The app's push deliveries marked `failed` (given up after 24 hours of retries) "
            "become pending again, due at once, with a new 24-hour retry window: for when a "
            "forward target is back after a long outage. With Basic auth the request must "
            "carry `X-Requested-With: tokensvc` and a same-site `Origin`.",
            "operators",
            OPERATOR,
            _responses(
                _ok(
                    "How many deliveries were queued again.",
                    _json(
                        _object(
                            {
                                "appid": _string(),
                                "requeued": {"type": "integer", "minimum": 0},
                            }
                        )
                    ),
                    _NO_STORE,
                ),
                "NotFound",
                "DatabaseUnavailable",
            ),
            parameters=[APPID],
        )
    },
    "/v1/apps/{appid}/subscriptions/{openid}": {
        "get": _operation(
            "getSubscriptions",
            "A user's subscribe grants",
            "What the user allowed each subscribe-message template of the app, as learnt from "
            "WeChat's push events (subscribe_msg_popup_event, subscribe_msg_change_event, "
            "subscribe_msg_sent_event) and the subscribe sends: one-time grants left, long-term "
            "status, last change. An empty `templates` list for a user never seen.",
            "messages",
            CLIENT,
            _responses(
                _ok("The ledger.", _json(_ref("Subscriptions")), _NO_STORE),
                "NotFound",
                "DatabaseUnavailable",
            ),
            parameters=[
                APPID,
                {
                    "name": "openid",
                    "in": "path",
                    "required": True,
                    "description": "The user's openid (400 for anything that cannot be one).",
                    "schema": _string(pattern="^[A-Za-z0-9_-]{1,128}$"),
                },
            ],
        )
    },
}

_PUSH_QUERY = [
    {
        "name": name,
        "in": "query",
        "required": True,
        "description": description,
        "schema": _string(),
    }
    for name, description in (
        ("signature", "sha1 of the push Token, `timestamp` and `nonce`, sorted and joined."),
        ("timestamp", "When WeChat signed the request (UTC epoch seconds); within 300 s of now."),
        ("nonce", "WeChat's random number."),
    )
]
RESPONSES["PushRefused"] = _error_response(
    "`bad_signature` (`signature`, or `msg_signature` over `Encrypt`, does not match the "
    "push Token), `stale_timestamp` (more than 300 s from now) or `wrong_appid` (the "
    "ciphertext was made for another app)."
)
_RESPONSES_STATUS["PushRefused"] = "403"
PATHS |= {
    "/wechat/push/{appid}": {
        "get": _operation(
            "checkPushUrl",
            "WeChat's push URL check",
            "WeChat's 服务器配置 check of the app's message-push URL: answers `echostr` as it "
            "came (text) when `signature` holds. Signed by WeChat with the app's push Token "
            "(`[apps.push]`), no tokensvc key. 404 for an app without `[apps.push]`. The query "
            "is never logged.",
            "push",
            PUBLIC,
            _responses(
                _ok("`echostr`, as sent.", {"text/plain": {"schema": _string()}}),
                "PushRefused",
                auth=False,
            ),
            parameters=[
                APPID,
                *_PUSH_QUERY,
                {
                    "name": "echostr",
                    "in": "query",
                    "required": True,
                    "description": "WeChat's random string to echo (letters, digits, `+/=_-`).",
                    "schema": _string(),
                },
            ],
        ),
        "post": _operation(
            "receivePush",
            "One WeChat push",
            "A message or event WeChat pushes to the app (消息推送). Checked (`signature`; in "
            "safe and compatible mode `msg_signature` over `Encrypt`), decrypted (AES-256-CBC, "
            "the app's EncodingAESKey), parsed (XML without entities, or JSON per `[apps.push] "
            "format`), and stored in the outbox before `success` is answered; WeChat's retries "
            "of a push (same `MsgId`, or `FromUserName` + `CreateTime` + `Event`) are answered "
            "`success` and stored once. The forward targets receive it as JSON, signed (see "
            "README, Message push). A refused push is a 4xx and nothing is stored: 400 "
            "`bad_request` (query), `bad_push` (body, ciphertext, padding), `mode_mismatch` "
            "(encrypted or not, unlike `[apps.push] mode`); 503 `database_unavailable` when it "
            "could not be stored (WeChat tries again).",
            "push",
            PUBLIC,
            _responses(
                _ok(
                    "Stored (or a retry of a push stored).",
                    {"text/plain": {"schema": _string(enum=["success"])}},
                ),
                "PushRefused",
                "DatabaseUnavailable",
                auth=False,
            ),
            parameters=[
                APPID,
                *_PUSH_QUERY,
                _query("encrypt_type", "`aes` for an encrypted push (safe or compatible mode)."),
                _query(
                    "msg_signature",
                    "With `encrypt_type=aes`: sha1 of the Token, `timestamp`, "
                    "`nonce` and the body's `Encrypt`, sorted and joined.",
                ),
                _query("openid", "The user's openid (not used: the body's `FromUserName` is)."),
            ],
            body={
                "required": True,
                "description": "WeChat's push as it sent it, at most 64 KiB: XML "
                "(`<xml><ToUserName/><FromUserName/><CreateTime/><MsgType/>...</xml>`, or "
                "`<xml><ToUserName/><Encrypt/></xml>` in safe mode) or JSON with the same fields.",
                "content": {
                    "text/xml": {"schema": _string()},
                    "application/json": {"schema": {"type": "object"}},
                },
            },
        ),
    },
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "tokensvc", "version": "0.1.0", "description": DESCRIPTION},
    "tags": [
        {"name": "tokens", "description": "Access tokens for business servers (client keys)."},
        {"name": "messages", "description": "Sends, logins and the passthrough (client keys)."},
        {"name": "operators", "description": "Status, metrics and token actions (admin key)."},
        {"name": "health", "description": "Liveness, readiness and this document (no auth)."},
        {"name": "wechat", "description": "WeChat's own API shapes, for existing SDKs."},
        {
            "name": "push",
            "description": "WeChat's message push URL of each app (signed by WeChat).",
        },
    ],
    "paths": PATHS,
    "components": {
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "`Authorization: Bearer <key>`: a client key on client routes, "
                "the admin key on operator routes.",
            },
            "basic": {
                "type": "http",
                "scheme": "basic",
                "description": "HTTP Basic with the admin key as the password and any user "
                "name (operator routes), so a browser prompts for it.",
            },
        },
        "parameters": PARAMETERS,
        "responses": RESPONSES,
        "schemas": SCHEMAS,
    },
}
"""The document; see README.md for the prose."""

routes = web.RouteTableDef()


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document (JSON)."""
    return web.json_response(SPEC)

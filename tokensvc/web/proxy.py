"""Send proxy and login routes: business servers reach WeChat through tokensvc.

- ``POST /v1/apps/{appid}/messages/{template|subscribe|custom|wxopen-template}``
- ``POST /v1/apps/{appid}/jscode2session``
- ``GET|POST /v1/apps/{appid}/wechat/{path}``: allow-listed passthrough

When WeChat answered, its answer is returned unchanged (JSON with ``errcode``/``errmsg``/
``msgid``, HTTP 200), with ``X-Tokensvc-Retried: 1`` if the token was replaced and the call
retried once. When WeChat's answer is unknown: 504 ``upstream_timeout`` or 502
``upstream_unavailable``, and nothing is resent.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from tokensvc.config import is_safe_proxy_path
from tokensvc.errors import (
    TokensvcError,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tokensvc.push.grants import subscribe_grant
from tokensvc.sender import JSCODE2SESSION_API, SendResult
from tokensvc.tokens.manager import TokenManager
from tokensvc.web.api import authorised_manager
from tokensvc.web.auth import CLIENT_NAME
from tokensvc.web.body import read_body, read_json_body, read_json_object, string_field
from tokensvc.web.errors import domain_error, json_error
from tokensvc.web.keys import CALLS, CLOCK, METRICS, SENDER, SETTINGS
from tokensvc.wechat.client import RawAnswer
from tokensvc.wechat.messages import MESSAGE_ROUTES, BodyError, route_for_kind_hint

MAX_PROXY_BODY = 1 << 20

routes = web.RouteTableDef()


FailureAnswer = Callable[[TokensvcError, str, float], web.HTTPException]
"""Maps a failed proxied call (error, WeChat API, now) to the HTTP answer."""


def _domain_failure(exc: TokensvcError, api: str, now: float) -> web.HTTPException:
    return domain_error(exc, now, api=api)


async def proxied(
    request: web.Request,
    appid: str,
    api: str,
    call: Callable[[], Awaitable[SendResult | RawAnswer]],
    *,
    failure: FailureAnswer = _domain_failure,
) -> SendResult:
    """Run one proxied call for ``appid`` (``-`` when no app is known), count it (app, client,
    API, errcode, latency), map failures with ``failure`` (by default
    :func:`~tokensvc.web.errors.domain_error`)."""
    metrics = request.app[METRICS]
    client = request.get(CLIENT_NAME, "-")
    started = time.monotonic()
    outcome = "error"
    try:
        result = await call()
        if isinstance(result, RawAnswer):
            result = SendResult(result, retried=False)
        errcode = result.answer.errcode()
        outcome = (
            str(errcode if errcode is not None else 0)
            if result.answer.status < 400
            else f"http_{result.answer.status}"
        )
        return result
    except TokensvcError as exc:
        outcome = failure_outcome(exc, api)
        raise failure(exc, api, request.app[CLOCK].now()) from None
    finally:
        if appid != "-":
            request.app[CALLS].note(appid, api)
        metrics.observe_proxy(appid, client, api, outcome, time.monotonic() - started)


def failure_outcome(exc: TokensvcError, api: str) -> str:
    """The ``errcode`` label of a proxied call that got no answer from WeChat."""
    if getattr(exc, "api", None) == api:
        if isinstance(exc, UpstreamTimeout):
            return "timeout"
        if isinstance(exc, UpstreamUnavailable):
            return "unavailable"
        if isinstance(exc, UpstreamBadResponse):
            return "bad_response"
    return "token_unavailable"


def _retried(result: SendResult) -> dict[str, str]:
    return {"X-Tokensvc-Retried": "1" if result.retried else "0"}


def _bad_answer(result: SendResult, api: str, what: str) -> web.HTTPException:
    return json_error(
        502, "upstream_bad_response", f"{api}: WeChat answered HTTP {result.answer.status} {what}"
    )


def _json_answer(result: SendResult, api: str) -> web.Response:
    """WeChat's JSON answer unchanged, HTTP 200; a non-JSON or HTTP-error answer is a 502."""
    if result.answer.status >= 400 or result.answer.json_object() is None:
        raise _bad_answer(result, api, "without a JSON object")
    return web.Response(
        body=result.answer.body, content_type="application/json", headers=_retried(result)
    )


_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml")


def passthrough_answer(result: SendResult, api: str) -> web.Response:
    """WeChat's answer to a passthrough call: a JSON object as JSON (HTTP 200), binary content
    (media, QR code images) as it came; an HTTP error, or text or HTML that is not a JSON
    object (an error page), is a 502 ``upstream_bad_response``."""
    answer = result.answer
    if answer.status >= 400:
        raise _bad_answer(result, api, "(an HTTP error)")
    if answer.json_object() is not None:
        return _json_answer(result, api)
    content_type = answer.content_type or "application/octet-stream"
    if not answer.body or content_type.startswith(_TEXT_TYPES):
        raise _bad_answer(result, api, f"with {content_type} that is not a JSON object")
    return web.Response(body=answer.body, content_type=content_type, headers=_retried(result))


@routes.post("/v1/apps/{appid}/messages/{route}")
async def send_message(request: web.Request) -> web.Response:
    """Validate a message body, then send it with the app's token (see the module docstring)."""
    manager = authorised_manager(request)
    route = MESSAGE_ROUTES.get(request.match_info["route"])
    if route is None:
        raise json_error(
            404,
            "not_found",
            f"no message route {request.match_info['route']}; "
            f"use one of {', '.join(MESSAGE_ROUTES)}",
        )
    if manager.app.kind not in route.kinds:
        raise json_error(400, "bad_request", route_for_kind_hint(route, manager.app.kind))
    received = await read_json_body(request, MAX_PROXY_BODY)
    body = received.object
    if "access_token" in body:
        raise json_error(
            400, "bad_request", "field access_token must not be sent: tokensvc adds it"
        )
    try:
        route.validate(body)
    except BodyError as exc:
        raise json_error(400, "bad_request", str(exc)) from None
    sender = request.app[SENDER]
    async with subscribe_grant(request.app, manager.appid, route.api, body) as grant:
        result = await proxied(
            request,
            manager.appid,
            route.api,
            # the bytes as received when they say what was validated, else the object encoded
            lambda: sender.send(
                manager,
                "POST",
                route.api,
                json_body=body if received.raw is None else None,
                data=received.raw,
                content_type="application/json",
            ),
        )
        await grant.settle(result.answer.errcode() if result.answer.status < 400 else None)
    return _json_answer(result, route.api)


@routes.post("/v1/apps/{appid}/jscode2session")
async def jscode2session(request: web.Request) -> web.Response:
    """Body ``{"js_code": "..."}`` → WeChat's ``{openid, session_key[, unionid]}`` or errcode.

    ``session_key`` goes back to the caller (it decrypts user data with it) and is never logged.
    """
    manager = authorised_manager(request)
    if manager.app.kind != "miniprogram":
        raise json_error(
            400,
            "bad_request",
            f"app {manager.appid} is not a mini program; jscode2session is for mini program logins",
        )
    body = await read_json_object(request, 64 * 1024)
    js_code = string_field(body, "js_code", max_length=256, hint="the code from wx.login()")
    sender = request.app[SENDER]
    result = await proxied(
        request,
        manager.appid,
        JSCODE2SESSION_API,
        lambda: sender.jscode2session(manager.app, js_code),
    )
    return _json_answer(result, JSCODE2SESSION_API)


@routes.route("*", "/v1/apps/{appid}/wechat/{path:.+}")
async def passthrough(request: web.Request) -> web.Response:
    """Forward ``GET|POST`` to ``{api_base}/{path}`` with the app's token, if ``[proxy] allow``
    lists the path. The query (minus any ``access_token``) and body pass unchanged."""
    if request.method not in ("GET", "POST"):
        raise json_error(
            405,
            "method_not_allowed",
            "the passthrough forwards GET and POST only",
            headers={"Allow": "GET, POST"},
        )
    manager = authorised_manager(request)
    path = _passthrough_path(request)
    if not request.app[SETTINGS].proxy.allows(path):
        raise json_error(
            403,
            "path_not_allowed",
            f"/{path} is not in [proxy] allow; "
            "token endpoints and quota resets are never forwarded",
        )
    api = "/" + path
    result = await forward_request(request, manager, api)
    return passthrough_answer(result, api)


async def forward_request(
    request: web.Request,
    manager: TokenManager,
    api: str,
    *,
    failure: FailureAnswer = _domain_failure,
) -> SendResult:
    """Send the request on to WeChat's ``api`` with the app's token, through :func:`proxied`:
    its method, its query minus any ``access_token``, and for POST its whole body (at most
    :data:`MAX_PROXY_BODY` bytes) with its ``Content-Type``."""
    params = {k: v for k, v in request.query.items() if k != "access_token"}
    data: bytes | None = None
    content_type: str | None = None
    if request.method == "POST":
        data = await read_body(request, MAX_PROXY_BODY)
        content_type = request.headers.get("Content-Type", "application/json")
    sender = request.app[SENDER]
    return await proxied(
        request,
        manager.appid,
        api,
        lambda: sender.send(
            manager, request.method, api, params=params, data=data, content_type=content_type
        ),
        failure=failure,
    )


def _passthrough_path(request: web.Request) -> str:
    """The WeChat path of a ``/v1/apps/{appid}/wechat/{path}`` request (see
    :func:`checked_wechat_path`)."""
    # the raw tail after "/v1/apps/{appid}/wechat/"
    parts = request.raw_path.partition("?")[0].split("/", 5)
    return checked_wechat_path(parts[5] if len(parts) == 6 else "")


def checked_wechat_path(raw: str) -> str:
    """A WeChat API path (``cgi-bin/user/info``) from the raw, still percent-encoded request
    path, checked once: the allow- and deny-lists then judge the very path that is forwarded.

    An encoded ``/`` (what OpenAPI clients send for a path parameter) is a ``/``. 400
    ``bad_request`` for ``.``/``..``/empty segments, any other percent-encoding (``%2e``:
    WeChat's API paths never need it) or any character outside letters, digits, ``_ . -``.
    """
    path = raw.replace("%2F", "/").replace("%2f", "/")
    if not is_safe_proxy_path(path):
        raise json_error(
            400,
            "bad_request",
            "the WeChat path must be plain segments of letters, digits, '_', '.', '-' "
            "(no '.' or '..' segments, no empty segments, no percent-encoding)",
        )
    return path

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

from tokensvc.clock import Clock
from tokensvc.config import is_safe_proxy_path
from tokensvc.errors import (
    RefreshDeferred,
    StoreUnavailable,
    TokensvcError,
    TokenUnavailable,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tokensvc.sender import JSCODE2SESSION_API, SendResult
from tokensvc.tokens.manager import TokenManager
from tokensvc.web.api import authorised_manager, deferred, unavailable
from tokensvc.web.auth import CLIENT_NAME
from tokensvc.web.errors import json_error, read_body, read_json_object
from tokensvc.web.keys import CLOCK, METRICS, SENDER, SETTINGS
from tokensvc.wechat.client import RawAnswer
from tokensvc.wechat.messages import MESSAGE_ROUTES, BodyError, route_for_kind_hint

MAX_PROXY_BODY = 1 << 20

routes = web.RouteTableDef()


def upstream_failure(exc: TokensvcError, api: str, clock: Clock) -> web.HTTPException:
    """Map a failed proxied call to its HTTP answer (never resent by us)."""
    if isinstance(exc, TokenUnavailable):
        return unavailable(exc, clock)
    if isinstance(exc, RefreshDeferred):
        # WeChat rejected the app's token and refused the call: nothing was done, retry later.
        return deferred(exc, clock)
    if isinstance(exc, UpstreamTimeout):
        return json_error(
            504,
            "upstream_timeout",
            f"WeChat did not answer {api} in time; the call may or may not have taken "
            "effect and was not resent (retry template sends with the same client_msg_id)",
        )
    if isinstance(exc, UpstreamUnavailable):
        detail = (
            "the connection broke after the request was sent; it was not resent"
            if exc.request_sent
            else "WeChat could not be reached"
        )
        return json_error(502, "upstream_unavailable", f"{api}: {detail}")
    if isinstance(exc, UpstreamBadResponse) and exc.api == api:
        return json_error(502, "upstream_bad_response", str(exc))
    if isinstance(exc, UpstreamError | StoreUnavailable):
        return json_error(
            503, "token_unavailable", f"the access_token could not be replaced: {exc}"
        )
    return json_error(502, "upstream_unavailable", str(exc))


async def _proxied(
    request: web.Request,
    manager: TokenManager,
    api: str,
    call: Callable[[], Awaitable[SendResult | RawAnswer]],
) -> SendResult:
    """Run one proxied call, count it (app, client, API, errcode, latency), map failures."""
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
    except UpstreamTimeout as exc:
        outcome = "timeout"
        raise upstream_failure(exc, api, request.app[CLOCK]) from None
    except UpstreamUnavailable as exc:
        outcome = "unavailable"
        raise upstream_failure(exc, api, request.app[CLOCK]) from None
    except TokensvcError as exc:
        outcome = (
            "token_unavailable" if not isinstance(exc, UpstreamBadResponse) else "bad_response"
        )
        raise upstream_failure(exc, api, request.app[CLOCK]) from None
    finally:
        metrics.proxy.labels(manager.appid, client, api, outcome).inc()
        metrics.proxy_duration.labels(manager.appid, api).observe(time.monotonic() - started)


def _json_answer(result: SendResult, api: str) -> web.Response:
    """WeChat's JSON answer unchanged, HTTP 200; a non-JSON or HTTP-error answer is a 502."""
    if result.answer.status >= 400 or result.answer.json_object() is None:
        raise json_error(
            502,
            "upstream_bad_response",
            f"{api}: WeChat answered HTTP {result.answer.status} without a JSON object",
        )
    return web.Response(
        body=result.answer.body,
        content_type="application/json",
        headers={"X-Tokensvc-Retried": "1" if result.retried else "0"},
    )


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
    body = await read_json_object(request, MAX_PROXY_BODY)
    if "access_token" in body:
        raise json_error(
            400, "bad_request", "field access_token must not be sent: tokensvc adds it"
        )
    try:
        route.validate(body)
    except BodyError as exc:
        raise json_error(400, "bad_request", str(exc)) from None
    sender = request.app[SENDER]
    result = await _proxied(
        request, manager, route.api, lambda: sender.send(manager, "POST", route.api, json_body=body)
    )
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
    js_code = body.get("js_code")
    if not isinstance(js_code, str) or not js_code or len(js_code) > 256:
        raise json_error(400, "bad_request", "field js_code is required: the code from wx.login()")
    sender = request.app[SENDER]
    result = await _proxied(
        request, manager, JSCODE2SESSION_API, lambda: sender.jscode2session(manager.app, js_code)
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
    path = request.match_info["path"]
    settings = request.app[SETTINGS]
    if not is_safe_proxy_path(path) or not settings.proxy.allows(path):
        raise json_error(
            403,
            "path_not_allowed",
            f"/{path} is not in [proxy] allow; "
            "token endpoints and quota resets are never forwarded",
        )
    api = "/" + path
    params = {k: v for k, v in request.query.items() if k != "access_token"}
    data: bytes | None = None
    content_type: str | None = None
    if request.method == "POST":
        data = await read_body(request, MAX_PROXY_BODY)
        content_type = request.headers.get("Content-Type", "application/json")
    sender = request.app[SENDER]
    result = await _proxied(
        request,
        manager,
        api,
        lambda: sender.send(
            manager, request.method, api, params=params, data=data, content_type=content_type
        ),
    )
    answer = result.answer
    headers = {"X-Tokensvc-Retried": "1" if result.retried else "0"}
    return web.Response(
        status=answer.status,
        body=answer.body,
        headers=headers,
        content_type=answer.content_type or "application/octet-stream",
    )

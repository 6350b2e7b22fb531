"""WeChat-shaped endpoints at tokensvc's root, so an SDK pointed at tokensvc works unchanged.

An SDK (wechatpy, WxJava, EasyWeChat, silenceper/wechat) whose WeChat host is set to tokensvc,
with a tokensvc client key where the AppSecret was:

- ``GET /cgi-bin/token?grant_type=client_credential&appid=&secret=<client key>`` and ``POST
  /cgi-bin/stable_token {"grant_type", "appid", "secret", "force_refresh"}`` answer
  ``{"access_token", "expires_in"}`` from tokensvc's token (``expires_in``: how long the caller
  may keep it). Nothing reaches WeChat's token APIs. ``force_refresh: true`` is a claim that the
  caller's token is bad: the passive-refresh rules judge it (probe; replaced only when proven
  dead), never a WeChat force refresh.
- ``/sns/jscode2session`` and ``/sns/oauth2/access_token`` with the client key as ``secret``:
  tokensvc substitutes the AppSecret; a code is never resent; ``session_key`` and the user's
  tokens are never logged.
- Web login's calls with the user's own tokens (``/sns/oauth2/refresh_token``,
  ``/sns/userinfo``, ``/sns/auth``) are relayed as they came: they need nothing of the app's.
- Every other call under a WeChat API root (``/cgi-bin/``, ``/wxa/``, ``/datacube/``...) with
  ``?access_token=T``: accepted only when ``T`` is a token tokensvc issued for an app (current,
  or previous within the overlap window); forwarded under ``[proxy] allow`` and the passthrough's
  path rules with the app's current token, retried once on 40001/40014/42001; WeChat's answer
  passes back as it came (JSON, media), under the passthrough's rules: an HTTP error or an
  HTML/text page is a 502.

Errors come in WeChat's shape, ``{"errcode", "errmsg"}`` with HTTP 200, with WeChat's codes
(https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/Get_access_token.html,
https://developers.weixin.qq.com/doc/offiaccount/Basic_Information/getStableAccessToken.html):
a wrong or ungranted key is a wrong AppSecret (40001 classic, 40125 stable and sns), 40013
unknown appid, 40002 bad ``grant_type``, 41002/41004 missing appid/secret, 41001 missing
access_token, 40001 a token tokensvc did not issue, 48001 a path outside ``[proxy] allow``, -1
"system error" when no valid token can be had now (nothing was sent: SDKs may retry). When a
forwarded call's outcome is unknown (timeout, connection broken after sending) the answer is HTTP
504 with errcode -2, so that SDKs raise instead of resending.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tokensvc.config import ClientConfig
from tokensvc.errors import TokensvcError, UpstreamTimeout, UpstreamUnavailable
from tokensvc.sender import JSCODE2SESSION_API, OAUTH2_ACCESS_TOKEN_API, USER_TOKEN_APIS
from tokensvc.tokens.manager import TokenManager
from tokensvc.tokens.values import ServedToken, Trigger
from tokensvc.web.api import count_passive
from tokensvc.web.auth import CLIENT_NAME, plausible_key
from tokensvc.web.body import read_body
from tokensvc.web.keys import AUTH, MANAGERS, METRICS, SENDER, SETTINGS
from tokensvc.web.proxy import (
    checked_wechat_path,
    forward_request,
    passthrough_answer,
    proxied,
)

MAX_TOKEN_BODY = 64 * 1024
SDK_CLIENT = "sdk"
"""The client label of calls authenticated by an issued access_token (no key is sent)."""

WECHAT_ROOTS = (
    "cgi-bin",
    "wxa",
    "wxaapi",
    "datacube",
    "customservice",
    "card",
    "semantic",
    "union",
    "shop",
    "product",
    "marketing",
    "scan",
    "merchant",
    "tcb",
    "wxopen",
    "channels",
)
"""First path segments of WeChat's APIs that tokensvc answers at its root."""

routes = web.RouteTableDef()


class WechatShapedError(Exception):
    """An answer in WeChat's error shape; raised inside this module, answered by its routes."""

    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(errmsg)
        self.errcode = errcode
        self.errmsg = errmsg

    def response(self) -> web.Response:
        """``{"errcode", "errmsg"}`` with HTTP 200, as WeChat answers its errors."""
        return web.json_response({"errcode": self.errcode, "errmsg": self.errmsg})


_WRONG_SECRET = {
    "classic": (40001, "invalid credential, access_token is invalid or not latest"),
    "stable": (40125, "invalid appsecret"),
}


def _required(appid: Any, secret: Any) -> tuple[str, str]:
    """``appid`` and ``secret`` as given; WeChat's 41002/41004 when one is missing."""
    if not isinstance(appid, str) or not appid:
        raise WechatShapedError(41002, "appid missing")
    if not isinstance(secret, str) or not secret:
        raise WechatShapedError(41004, "appsecret missing")
    return appid, secret


def _client_for(
    request: web.Request, appid: str, secret: str, wrong: tuple[int, str]
) -> TokenManager:
    """The manager of the configured app ``appid``, for the client whose key is ``secret``;
    sets the client name. Raises WeChat's 40013 (unknown appid) or ``wrong`` (wrong or
    ungranted key)."""
    manager = request.app[MANAGERS].get(appid)
    if manager is None:
        raise WechatShapedError(40013, "invalid appid")
    key = plausible_key(secret)
    client: ClientConfig | None = request.app[AUTH].client_for_key(key) if key else None
    if client is None or not client.may_use(appid):
        raise WechatShapedError(*wrong)
    request[CLIENT_NAME] = client.name
    return manager


def _credentials(request: web.Request, fields: dict[str, Any], api: str) -> TokenManager:
    """Check ``grant_type``/``appid``/``secret`` of a token request; the app's manager."""
    appid, secret = _required(fields.get("appid"), fields.get("secret"))
    if fields.get("grant_type") != "client_credential":
        raise WechatShapedError(40002, "invalid grant_type")
    return _client_for(request, appid, secret, _WRONG_SECRET[api])


def _token_json(token: ServedToken) -> web.Response:
    """WeChat's token answer ``{"access_token", "expires_in"}``, never cached."""
    return web.json_response(
        {"access_token": token.access_token, "expires_in": token.expires_in},
        headers={"Cache-Control": "no-store"},
    )


async def _token_answer(request: web.Request, manager: TokenManager) -> web.Response:
    try:
        token = await manager.current_or_wait(request.app[SETTINGS].wechat.timeout)
    except TokensvcError as exc:
        raise WechatShapedError(-1, f"system error: {exc}") from None
    request.app[METRICS].token_requests.labels(manager.appid, request[CLIENT_NAME]).inc()
    return _token_json(token)


def _answering(handler: Any) -> Any:
    """Turn :class:`WechatShapedError` into its answer (the WeChat routes' error shape)."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except WechatShapedError as exc:
            return exc.response()
        return response

    wrapped.__doc__ = handler.__doc__
    wrapped.__name__ = handler.__name__
    return wrapped


@routes.get("/cgi-bin/token")
@routes.post("/cgi-bin/token")
@_answering
async def classic_token(request: web.Request) -> web.Response:
    """WeChat's ``GET /cgi-bin/token``, answered from tokensvc's token (module docstring);
    POST answers 43001 (GET required)."""
    if request.method != "GET":
        raise WechatShapedError(43001, "require GET method")
    manager = _credentials(request, dict(request.query), "classic")
    return await _token_answer(request, manager)


@routes.get("/cgi-bin/stable_token")
@routes.post("/cgi-bin/stable_token")
@_answering
async def stable_token(request: web.Request) -> web.Response:
    """WeChat's ``POST /cgi-bin/stable_token``; ``force_refresh: true`` is a passive-refresh
    claim on the current token, never a WeChat force refresh (module docstring)."""
    if request.method != "POST":
        raise WechatShapedError(43002, "require POST method")
    raw = await read_body(request, MAX_TOKEN_BODY)
    try:
        fields = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise WechatShapedError(47001, "data format error") from None
    if not isinstance(fields, dict):
        raise WechatShapedError(47001, "data format error")
    manager = _credentials(request, fields, "stable")
    force = fields.get("force_refresh", False)
    if not isinstance(force, bool):
        raise WechatShapedError(47001, "data format error: force_refresh must be true or false")
    if force:
        served = manager.served()
        if served is not None:
            try:
                outcome = await manager.refresh_stale(served.access_token, trigger=Trigger.PASSIVE)
            except TokensvcError as exc:
                count_passive(request, manager.appid, "failed")
                raise WechatShapedError(-1, f"system error: {exc}") from None
            count_passive(request, manager.appid, outcome.reason, refreshed=outcome.refreshed)
            return _token_json(outcome.token)
    return await _token_answer(request, manager)


async def _exchange_secret(request: web.Request, api: str, code_field: str) -> web.Response:
    """An ``sns/`` API that takes the AppSecret: the client key in ``secret`` is replaced by it."""
    query = request.query
    appid, secret = _required(query.get("appid"), query.get("secret"))
    code = query.get(code_field)
    if not code or len(code) > 256:
        raise WechatShapedError(41008, "missing code")
    if query.get("grant_type", "authorization_code") != "authorization_code":
        raise WechatShapedError(40002, "invalid grant_type")
    manager = _client_for(request, appid, secret, (40125, "invalid appsecret"))
    sender = request.app[SENDER]
    result = await proxied(
        request,
        manager.appid,
        api,
        lambda: sender.exchange_code(manager.app, api, code_field, code),
        failure=_wechat_failure,
    )
    return passthrough_answer(result, api)


@routes.get("/sns/jscode2session")
@_answering
async def jscode2session(request: web.Request) -> web.Response:
    """Mini program login: ``?appid&secret=<client key>&js_code&grant_type=authorization_code``
    → WeChat's ``{openid, session_key[, unionid]}`` or its errcode."""
    return await _exchange_secret(request, JSCODE2SESSION_API, "js_code")


@routes.get("/sns/oauth2/access_token")
@_answering
async def oauth2_access_token(request: web.Request) -> web.Response:
    """Official account web login: ``?appid&secret=<client key>&code&grant_type=
    authorization_code`` → WeChat's ``{access_token, refresh_token, openid, scope, ...}``."""
    return await _exchange_secret(request, OAUTH2_ACCESS_TOKEN_API, "code")


async def user_token_api(request: web.Request) -> web.Response:
    """Web login's calls with the user's own tokens, relayed as they came: ``GET
    /sns/oauth2/refresh_token?appid&grant_type=refresh_token&refresh_token`` (``appid`` must be
    a configured app), ``/sns/userinfo?access_token&openid&lang`` and ``/sns/auth?access_token&
    openid``; only those parameters are sent on, nothing of the app's is added."""
    api = request.path
    params: dict[str, str] = {}
    for name in USER_TOKEN_APIS[api]:
        value = request.query.get(name)
        if value is not None:
            if len(value) > 512:
                raise WechatShapedError(40097, f"invalid args: {name} is too long")
            params[name] = value
    appid = "-"
    if api == "/sns/oauth2/refresh_token":
        appid = params.get("appid", "")
        if not appid:
            raise WechatShapedError(41002, "appid missing")
        if appid not in request.app[MANAGERS]:
            raise WechatShapedError(40013, "invalid appid")
    elif not params.get("access_token"):
        raise WechatShapedError(41001, "access_token missing")
    request[CLIENT_NAME] = SDK_CLIENT
    sender = request.app[SENDER]
    result = await proxied(
        request, appid, api, lambda: sender.relay(api, params), failure=_wechat_failure
    )
    return passthrough_answer(result, api)


UNKNOWN_OUTCOME_ERRCODE = -2
"""tokensvc's own errcode for a forwarded call whose outcome is unknown: not -1 (WeChat's busy
code, which WxJava resends on) nor a token errcode (which SDKs retry after a refetch)."""


def _wechat_failure(exc: TokensvcError, api: str, now: float) -> web.HTTPException:
    """A failed forwarded call in WeChat's shape: -1 with HTTP 200 when nothing was done (SDKs
    may retry); HTTP 504 with errcode :data:`UNKNOWN_OUTCOME_ERRCODE` when the outcome is unknown
    (timeout, connection broken after sending). Every SDK raises on that and none resends it:
    wechatpy, WxJava's Apache client and silenceper/wechat raise on the status, WxJava's OkHttp
    and Jodd clients raise on any errcode but -1, and Symfony's default retry (EasyWeChat)
    resends a 504 only for GET (tests/integration/test_sdk_requests.py)."""
    errcode, status = -1, 200
    if getattr(exc, "api", None) == api and (
        isinstance(exc, UpstreamTimeout)
        or (isinstance(exc, UpstreamUnavailable) and exc.request_sent)
    ):
        errcode, status = UNKNOWN_OUTCOME_ERRCODE, 504
        message = f"outcome unknown, not resent: {exc}"
    else:
        message = f"system error: {exc}"
    failure = web.HTTPException(
        text=json.dumps({"errcode": errcode, "errmsg": message}),
        content_type="application/json",
    )
    failure.set_status(status)
    return failure


def _issuer(request: web.Request) -> TokenManager:
    """The app whose issued token the request's ``access_token`` is (current, or previous within
    its overlap window); WeChat's 41001/40001. Found through the managers' shared
    :class:`~tokensvc.tokens.serving.IssuedTokens` index: O(1) in the number of apps."""
    token = request.query.get("access_token")
    if not token:
        raise WechatShapedError(41001, "access_token missing")
    managers = request.app[MANAGERS]
    index = next((m.issued_tokens for m in managers.values()), None)  # one, shared by all
    if index is not None:  # one look-up, whatever the number of apps
        issuer = index.issuer(token)
        manager = managers.get(issuer.appid) if issuer is not None else None
    else:
        manager = next((m for m in managers.values() if m.issued(token)), None)
    if manager is None:
        raise WechatShapedError(40001, "invalid credential, access_token is invalid or not latest")
    return manager


async def forward(request: web.Request) -> web.Response:
    """Any other WeChat API call with ``?access_token=T`` (module docstring)."""
    try:
        path = checked_wechat_path(request.raw_path.partition("?")[0].lstrip("/"))
    except web.HTTPException:
        raise WechatShapedError(40066, "invalid url") from None
    manager = _issuer(request)
    if not request.app[SETTINGS].proxy.allows(path):
        raise WechatShapedError(48001, f"api unauthorized: /{path} is not in tokensvc's allow-list")
    request[CLIENT_NAME] = SDK_CLIENT
    api = "/" + path
    result = await forward_request(request, manager, api, failure=_wechat_failure)
    return passthrough_answer(result, api)


def add_routes(app: web.Application) -> None:
    """Register the WeChat-shaped routes (after tokensvc's own, which take precedence)."""
    app.add_routes(routes)
    for api in USER_TOKEN_APIS:
        app.router.add_get(api, _answering(user_token_api))
    roots = "|".join(WECHAT_ROOTS)
    resource = app.router.add_resource(f"/{{root:(?:{roots})}}/{{path:.+}}")
    for method in ("GET", "POST"):  # others: 405 with Allow
        resource.add_route(method, _answering(forward))

"""``/v1`` token routes: get the current access_token, and the passive refresh.

Handlers parse, call one TokenManager method and map domain errors to HTTP answers.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from tokensvc.clock import rfc3339
from tokensvc.errors import (
    RefreshBlocked,
    RefreshRateLimited,
    StoreUnavailable,
    TokenUnavailable,
    UpstreamError,
    WechatAPIError,
)
from tokensvc.tokens.manager import TokenManager
from tokensvc.tokens.values import ServedToken, Trigger
from tokensvc.web.auth import CLIENT_NAME
from tokensvc.web.errors import json_error, read_json_object
from tokensvc.web.keys import AUTH, CLOCK, MANAGERS, METRICS, PASSIVE_TALLY
from tokensvc.wechat.errcodes import TOKEN_ERRCODES

MAX_REFRESH_BODY = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store"}

routes = web.RouteTableDef()


def configured_manager(request: web.Request) -> TokenManager:
    """The TokenManager of the path's ``{appid}``; 404 ``unknown_app`` if it is not configured."""
    appid = request.match_info["appid"]
    manager = request.app[MANAGERS].get(appid)
    if manager is None:
        raise json_error(404, "unknown_app", f"no app with appid {appid} is configured")
    return manager


def authorised_manager(request: web.Request) -> TokenManager:
    """The app's TokenManager for an authenticated client granted it (401/404/403 otherwise)."""
    request.app[AUTH].require_client(request, request.match_info["appid"])
    return configured_manager(request)


def token_body(token: ServedToken) -> dict[str, Any]:
    """``{"appid", "access_token", "expires_in", "expires_at", "version"}`` (RFC 3339 UTC)."""
    return {
        "appid": token.appid,
        "access_token": token.access_token,
        "expires_in": token.expires_in,
        "expires_at": rfc3339(token.expires_at),
        "version": token.version,
    }


def unavailable(exc: TokenUnavailable) -> web.HTTPException:
    """503 ``token_unavailable`` with the last errcode."""
    return json_error(503, "token_unavailable", str(exc), errcode=exc.errcode)


@routes.get("/v1/apps")
async def list_apps(request: web.Request) -> web.Response:
    """The apps this client may use: ``{"apps": [{"appid", "name", "kind", "token_api"}]}``."""
    client = request.app[AUTH].authenticate_client(request)
    apps = [
        {"appid": m.appid, "name": m.app.name, "kind": m.app.kind, "token_api": m.app.token_api}
        for m in request.app[MANAGERS].values()
        if client.may_use(m.appid)
    ]
    return web.json_response({"apps": apps})


@routes.get("/v1/apps/{appid}/token")
async def get_token(request: web.Request) -> web.Response:
    """200 with the current token (from memory); 503 ``token_unavailable`` when none is valid."""
    manager = authorised_manager(request)
    try:
        token = manager.current()
    except TokenUnavailable as exc:
        raise unavailable(exc) from None
    request.app[METRICS].token_requests.labels(manager.appid, request[CLIENT_NAME]).inc()
    return web.json_response(token_body(token), headers=_NO_STORE)


@routes.post("/v1/apps/{appid}/token/refresh")
async def refresh_token(request: web.Request) -> web.Response:
    """Passive refresh: body ``{"stale_token": str, "errcode": 40001|40014|42001 (optional)}``.

    200 with the token body plus ``"refreshed"``; 429 with ``Retry-After`` when the app was
    refreshed less than ``passive_min_interval`` ago; 503 when WeChat cannot give a token.
    """
    manager = authorised_manager(request)
    body = await read_json_object(request, MAX_REFRESH_BODY)
    stale = body.get("stale_token")
    if not isinstance(stale, str) or not stale:
        raise json_error(
            400, "bad_request", "field stale_token is required: the token WeChat rejected"
        )
    if len(stale) > 2048:
        raise json_error(400, "bad_request", "field stale_token is longer than 2048 characters")
    errcode = body.get("errcode")
    if errcode is not None:
        if isinstance(errcode, bool) or not isinstance(errcode, int):
            raise json_error(400, "bad_request", "field errcode must be an integer")
        if errcode not in TOKEN_ERRCODES:
            raise json_error(
                400,
                "bad_request",
                f"field errcode {errcode} is not a token error (40001, 40014, 42001); "
                "a refresh will not help",
            )

    def note(outcome: str, refreshed: bool = False) -> None:
        """Count the request for metrics and the status page's passive tally."""
        request.app[METRICS].passive.labels(manager.appid, outcome).inc()
        request.app[PASSIVE_TALLY].add(manager.appid, request[CLIENT_NAME], refreshed=refreshed)

    try:
        outcome = await manager.refresh_stale(stale, trigger=Trigger.PASSIVE)
    except RefreshRateLimited as exc:
        note("rate_limited")
        retry_after = max(1, math.ceil(exc.retry_after))
        raise json_error(
            429,
            "rate_limited",
            f"app {manager.appid} was refreshed moments ago; retry in {retry_after}s",
            headers={"Retry-After": str(retry_after)},
        ) from None
    except RefreshBlocked as exc:
        note("failed")
        retry_after = max(1, math.ceil(exc.until - request.app[CLOCK].now()))
        raise json_error(
            503,
            "token_unavailable",
            f"refreshing {manager.appid} is paused after errcode {exc.errcode}",
            errcode=exc.errcode,
            headers={"Retry-After": str(retry_after)},
        ) from None
    except TokenUnavailable as exc:
        note("failed")
        raise unavailable(exc) from None
    except (UpstreamError, StoreUnavailable) as exc:
        note("failed")
        errcode_out = exc.errcode if isinstance(exc, WechatAPIError) else None
        raise json_error(
            503,
            "token_unavailable",
            f"refresh of {manager.appid} failed: {exc}",
            errcode=errcode_out,
        ) from None
    note(outcome.reason, outcome.refreshed)
    return web.json_response(
        {**token_body(outcome.token), "refreshed": outcome.refreshed}, headers=_NO_STORE
    )

"""``/v1`` token routes: get the current access_token, and the passive refresh.

Handlers parse, call one TokenManager method and map domain errors to HTTP answers.

``GET /token`` is the call every internal service makes, so what it needs is prepared once
(:class:`TokenReads`): the encoded answer per token and second (``expires_in`` changes once a
second, the rest once per version), the metrics child and the access-log tally per (app,
client). The token itself is asked of the TokenManager on every request, so a token WeChat
proved dead is never served from a cache.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from tokensvc.clock import rfc3339
from tokensvc.config import ClientConfig
from tokensvc.errors import TokensvcError, TokenUnavailable
from tokensvc.metrics import CountChild, Metrics
from tokensvc.tokens.manager import TokenManager
from tokensvc.tokens.values import ServedToken, Trigger
from tokensvc.web.access_log import AccessSummary, CountedRead, ReadTally
from tokensvc.web.auth import CLIENT_NAME, Authenticator, unauthorized_client
from tokensvc.web.body import read_json_object, string_field
from tokensvc.web.errors import domain_error, json_error
from tokensvc.web.keys import AUTH, CLOCK, MANAGERS, METRICS, PASSIVE_TALLY, SETTINGS
from tokensvc.wechat.errcodes import TOKEN_ERRCODES

MAX_REFRESH_BODY = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store"}
_TOKEN_HEADERS = CIMultiDict({"Content-Type": "application/json", "Cache-Control": "no-store"})

routes = web.RouteTableDef()


class TokenRead:
    """What a token read of one granted (app, client) pair needs, bound once: the app's
    TokenManager, the ``tokensvc_token_requests`` child and the access summary's tally."""

    __slots__ = ("count", "manager", "tally")

    def __init__(self, manager: TokenManager, count: CountChild, tally: ReadTally) -> None:
        self.manager = manager
        self.count = count
        self.tally = tally


class TokenReads:
    """What ``GET /token`` prepares once instead of per request (see the module docstring)."""

    def __init__(self, metrics: Metrics, summary: AccessSummary, auth: Authenticator) -> None:
        self._metrics = metrics
        self._summary = summary
        self.auth = auth
        self.answers: dict[str, tuple[ServedToken, bytes]] = {}
        """Per appid: the last :class:`ServedToken` answered and its encoded body."""
        self.bound: dict[tuple[str, str], TokenRead] = {}
        """Per (appid, client name) that passed :meth:`bind`: a granted client, a known app."""

    def bind(self, request: web.Request, appid: str, client: ClientConfig) -> TokenRead:
        """The :class:`TokenRead` of ``client`` and ``appid``, made on its first read once the
        client is known to be granted the app (403 ``forbidden``) and the app configured (404
        ``unknown_app``); the configuration does not change while the server runs."""
        if not client.may_use(appid):
            raise json_error(403, "forbidden", f"client {client.name} is not granted app {appid}")
        manager = request.app[MANAGERS].get(appid)
        if manager is None:
            raise json_error(404, "unknown_app", f"no app with appid {appid} is configured")
        read = self.bound[(appid, client.name)] = TokenRead(
            manager,
            self._metrics.token_requests_of(appid, client.name),
            self._summary.tally(client.name, appid),
        )
        return read

    def answer_body(self, token: ServedToken) -> bytes:
        """:func:`token_body` as JSON bytes, encoded once per distinct :class:`ServedToken`
        (per app: a new version, or the next second's ``expires_in``)."""
        cached = self.answers.get(token.appid)
        if cached is not None and (cached[0] is token or cached[0] == token):
            return cached[1]
        body = json.dumps(token_body(token)).encode()
        self.answers[token.appid] = (token, body)
        return body


TOKEN_READS = web.AppKey("token_reads", TokenReads)


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


def count_passive(
    request: web.Request, appid: str, outcome: str, *, refreshed: bool = False
) -> None:
    """Count a passive-refresh claim (``outcome``: the refresh reason, or ``failed``) in the
    metrics and in the status page's per-client tally."""
    request.app[METRICS].passive.labels(appid, outcome).inc()
    request.app[PASSIVE_TALLY].add(appid, request[CLIENT_NAME], refreshed=refreshed)


@routes.get("/v1/apps/{appid}/token")
async def get_token(request: web.Request) -> web.Response:
    """200 with the current token (from memory); 503 ``token_unavailable`` when none is valid.

    A token WeChat proved dead is never served: while its replacement is under way the answer
    waits for it, at most ``[wechat] timeout`` seconds. A 200 is counted in the access log's
    summary, not written as a line of its own (:mod:`tokensvc.web.access_log`).
    """
    app = request.app
    reads = app[TOKEN_READS]
    client = reads.auth.bearer_client(request.headers.get("Authorization", ""))
    if client is None:
        raise unauthorized_client()
    # request[CLIENT_NAME] (the access line's client) is set only for answers that get a line
    appid = request.match_info["appid"]
    read = reads.bound.get((appid, client.name))
    if read is None:
        request[CLIENT_NAME] = client.name
        read = reads.bind(request, appid, client)  # 403, 404
    try:
        token = read.manager.current()
    except TokenUnavailable:
        request[CLIENT_NAME] = client.name
        try:
            token = await read.manager.current_or_wait(app[SETTINGS].wechat.timeout)
        except TokenUnavailable as exc:
            raise domain_error(exc, app[CLOCK].now()) from None
    read.count.value += 1
    cached = reads.answers.get(appid)  # TokenReads.answer_body, inline
    body = cached[1] if cached is not None and cached[0] is token else reads.answer_body(token)
    answer = CountedRead(body=body, headers=_TOKEN_HEADERS)
    answer.tally = read.tally
    return answer


OWN_ERRORS = (get_token,)
"""Handlers registered without :func:`~tokensvc.web.errors.answering_json`: they raise only
JSON answers and map domain errors themselves (saving a coroutine on every token read)."""


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


@routes.post("/v1/apps/{appid}/token/refresh")
async def refresh_token(request: web.Request) -> web.Response:
    """Passive refresh: body ``{"stale_token": str, "errcode": 40001|40014|42001 (optional)}``.

    200 with the token body plus ``"refreshed"`` and ``"verified"`` (False when WeChat's probe
    could not judge the claim); 503 ``token_unavailable`` with ``Retry-After`` when no valid
    token can be had now (failing app, quota pause, contested app, WeChat error).
    """
    manager = authorised_manager(request)
    body = await read_json_object(request, MAX_REFRESH_BODY)
    stale = string_field(body, "stale_token", max_length=2048, hint="the token WeChat rejected")
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

    try:
        outcome = await manager.refresh_stale(stale, trigger=Trigger.PASSIVE)
    except TokensvcError as exc:
        count_passive(request, manager.appid, "failed")
        raise domain_error(
            exc, request.app[CLOCK].now(), retry_at=manager.next_refresh_at()
        ) from None
    count_passive(request, manager.appid, outcome.reason, refreshed=outcome.refreshed)
    return web.json_response(
        {
            **token_body(outcome.token),
            "refreshed": outcome.refreshed,
            "verified": outcome.verified,
        },
        headers=_NO_STORE,
    )

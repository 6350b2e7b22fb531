"""The WeChat simulator: a real aiohttp server with WeChat's documented token semantics.

Used by ``tokensvc demo``, ``tokensvc fake-wechat`` and the tests. What it models (see the
access_token / stable_token doc pages; ``docs/wechat.md#how-the-simulator-differs-from-wechat``
says where it is simpler than WeChat):

- ``GET /cgi-bin/token``: every call issues a new token; the previous one of that chain stays
  valid for ``rotation_window`` seconds (or until it expires, if sooner).
- ``POST /cgi-bin/stable_token``: normal mode returns the same token until its last
  ``rotation_window`` seconds, then a new one (both valid meanwhile). Force mode issues a new
  token, keeps the previous one for the window and kills older ones at once; at most
  ``force_daily_limit`` a day and not within ``force_min_interval`` seconds of the last.
- The classic and stable chains are isolated: one never invalidates the other.
- APIs that take ``access_token`` answer 41001 (missing), 40001 (unknown, revoked or superseded)
  or 42001 (expired). Wrong appid: 40013; wrong secret: 40001 (classic), 40125 (stable).
  Daily quota per API and appid: 45009 on the token APIs; ``/cgi-bin/openapi/quota/get``
  reports today's count of each API it serves (token calls, accepted business calls).
- Logins: ``/sns/jscode2session`` and web login (``/sns/oauth2/access_token``,
  ``refresh_token``, ``/sns/userinfo``, ``/sns/auth``) with codes registered by the tests.
- Test controls: lifetimes, fault injection per API, revocation, call counters; also over HTTP
  under ``/_sim/`` for the demo.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tokensvc.clock import Clock, SystemClock
from tokensvc.logs import PathAccessLogger

log = logging.getLogger(__name__)

FAULTS = ("busy", "http500", "timeout", "malformed", "quota", "reset")
"""Injectable faults: errcode -1, HTTP 500, no answer, non-JSON body, errcode 45009, and a
connection closed after the request was read."""

_BEIJING_OFFSET = 8 * 3600


DEFAULT_DAILY_LIMIT = 2000
"""Calls a day of an API with no entry in :data:`DAILY_LIMITS` (WeChat's common default)."""
DAILY_LIMITS = {"/cgi-bin/stable_token": 500_000}
"""WeChat's daily limits that differ from the default (getStableAccessToken doc page)."""


@dataclass
class IssuedToken:
    """A token the simulator issued: its app, chain (classic/stable) and validity (epoch s)."""

    appid: str
    chain: str
    issued_at: float
    expires_at: float
    valid_until: float  # lowered when superseded or revoked


@dataclass(frozen=True)
class ReceivedCall:
    """A business API call the simulator accepted: app, API path, query (minus the token), body."""

    appid: str
    api: str
    query: dict[str, str]
    body: Any


PROBE_APIS = ("/cgi-bin/getcallbackip", "/cgi-bin/get_api_domain_ip")
"""Side-effect-free APIs that answer ``{"ip_list": [...]}`` for a good token."""

MESSAGE_APIS = (
    "/cgi-bin/message/template/send",
    "/cgi-bin/message/subscribe/send",
    "/cgi-bin/message/custom/send",
    "/cgi-bin/message/wxopen/template/send",
)
REFUSING_OPENID = "openid-refused"
"""Sending to this openid answers 43101 (user refused / did not subscribe)."""

FAKE_QR_CODE = b"\x89PNG\r\n\x1a\n" + b"tokensvc-simulator-qr-code" * 8
"""What ``/wxa/getwxacode`` answers (``image/png``)."""


@dataclass
class _Fault:
    name: str
    remaining: int | None  # None: until cleared


@dataclass
class FakeWechat:
    """State and behaviour of the simulated WeChat; :meth:`make_app` serves it over HTTP.

    Lifetimes in seconds. ``apps`` maps appid to AppSecret.
    """

    clock: Clock = field(default_factory=SystemClock)
    ttl: float = 7200.0
    rotation_window: float = 300.0
    daily_quota: int | None = None
    """Calls a day of every API, per appid; None: WeChat's limits (:data:`DAILY_LIMITS`)."""
    force_daily_limit: int = 20
    force_min_interval: float = 30.0
    hang_seconds: float = 60.0
    apps: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    current: dict[tuple[str, str], str] = field(default_factory=dict)
    calls: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    received: list[ReceivedCall] = field(default_factory=list)
    js_codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    oauth_codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    user_tokens: dict[str, dict[str, str]] = field(default_factory=dict)  # web login
    refresh_tokens: dict[str, dict[str, str]] = field(default_factory=dict)
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    _faults: dict[str, collections.deque[_Fault]] = field(default_factory=dict)
    _quota_used: collections.Counter[tuple[str, str, int]] = field(
        default_factory=collections.Counter
    )
    forces: dict[str, list[float]] = field(default_factory=dict)  # appid -> force_refresh times
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    # ---- controls used by tests and the demo -------------------------------------------------

    def add_app(self, appid: str, secret: str) -> None:
        """Register an app and its AppSecret."""
        self.apps[appid] = secret

    def inject(self, api: str, fault: str, times: int | None = 1) -> None:
        """Make the next ``times`` calls of ``api`` (``"/cgi-bin/token"``) fail with ``fault``.

        ``times=None`` keeps failing until :meth:`clear_faults`. ``fault`` is one of :data:`FAULTS`.
        """
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; expected one of {FAULTS}")
        self._faults.setdefault(api, collections.deque()).append(_Fault(fault, times))

    def clear_faults(self, api: str | None = None) -> None:
        """Remove injected faults for ``api``, or for every API."""
        if api is None:
            self._faults.clear()
        else:
            self._faults.pop(api, None)

    def revoke(self, appid: str) -> None:
        """Invalidate every token of ``appid`` at once (both chains), as after a leak."""
        now = self.clock.now()
        for token in self.tokens.values():
            if token.appid == appid:
                token.valid_until = min(token.valid_until, now)

    def check(self, access_token: str | None) -> int:
        """The errcode an API call with this token would get: 0, 41001, 40001 or 42001."""
        if not access_token:
            return 41001
        token = self.tokens.get(access_token)
        now = self.clock.now()
        if token is None:
            return 40001
        if now >= token.expires_at and token.valid_until >= token.expires_at:
            return 42001
        if now >= token.valid_until:
            return 40001
        return 0

    def is_valid(self, access_token: str) -> bool:
        """True when WeChat would accept ``access_token`` now."""
        return self.check(access_token) == 0

    def count(self, api: str, appid: str | None = None) -> int:
        """How many calls ``api`` received (for ``appid``, or in all)."""
        if appid is not None:
            return self.calls[(api, appid)]
        return sum(n for (a, _), n in self.calls.items() if a == api)

    def token_calls(self, appid: str | None = None) -> int:
        """Calls to both token endpoints (for ``appid``, or in all)."""
        return self.count("/cgi-bin/token", appid) + self.count("/cgi-bin/stable_token", appid)

    def add_js_code(
        self, appid: str, js_code: str, openid: str, session_key: str, unionid: str | None = None
    ) -> None:
        """Register a login code for ``/sns/jscode2session`` (it works once)."""
        answer = {"openid": openid, "session_key": session_key}
        if unionid is not None:
            answer["unionid"] = unionid
        self.js_codes[js_code] = {"appid": appid, "answer": answer, "used": False}

    def add_media(self, media_id: str, content: bytes, content_type: str) -> None:
        """Serve ``content`` at ``GET /cgi-bin/media/get?media_id=`` (temporary media)."""
        self.media[media_id] = (content, content_type)

    def add_oauth_code(self, appid: str, code: str, openid: str, user_token: str) -> None:
        """Register an official-account web login code for ``/sns/oauth2/access_token`` (it
        works once); the answer carries ``user_token`` as the user's ``access_token`` (good for
        ``/sns/userinfo`` and ``/sns/auth``) and ``refresh-<user_token>`` as its
        ``refresh_token`` (for ``/sns/oauth2/refresh_token``)."""
        answer = self._user_grant(appid, openid, user_token, f"refresh-{user_token}")
        self.oauth_codes[code] = {"appid": appid, "answer": answer, "used": False}

    def _user_grant(
        self, appid: str, openid: str, user_token: str, refresh_token: str
    ) -> dict[str, Any]:
        user = {"appid": appid, "openid": openid, "refresh_token": refresh_token}
        self.user_tokens[user_token] = user
        self.refresh_tokens[refresh_token] = user
        return {
            "access_token": user_token,
            "expires_in": 7200,
            "refresh_token": refresh_token,
            "openid": openid,
            "scope": "snsapi_userinfo",
        }

    def sent(self, api: str | None = None) -> list[ReceivedCall]:
        """Calls the business APIs accepted (token valid), in order; for ``api`` or all."""
        return [call for call in self.received if api is None or call.api == api]

    def release_hung_requests(self) -> None:
        """Let requests held by a ``timeout`` fault finish (used on shutdown)."""
        self._release.set()

    # ---- the HTTP app --------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The simulator as an aiohttp application."""
        app = web.Application()
        app.router.add_get("/cgi-bin/token", self._classic_token)
        app.router.add_post("/cgi-bin/stable_token", self._stable_token)
        for api in PROBE_APIS:
            app.router.add_get(api, self._business_api)
        for api in MESSAGE_APIS:
            app.router.add_post(api, self._business_api)
        app.router.add_get("/cgi-bin/user/info", self._business_api)
        app.router.add_get("/cgi-bin/media/get", self._business_api)
        app.router.add_post("/wxa/getwxacode", self._business_api)
        app.router.add_post("/cgi-bin/openapi/quota/get", self._quota_get)
        app.router.add_get("/sns/jscode2session", self._jscode2session)
        app.router.add_get("/sns/oauth2/access_token", self._oauth2_access_token)
        app.router.add_get("/sns/oauth2/refresh_token", self._oauth2_refresh_token)
        app.router.add_get("/sns/userinfo", self._sns_user_api)
        app.router.add_get("/sns/auth", self._sns_user_api)
        app.router.add_get("/_sim/stats", self._sim_stats)
        app.router.add_post("/_sim/revoke", self._sim_revoke)
        app.router.add_post("/_sim/faults", self._sim_fault)
        app.router.add_delete("/_sim/faults", self._sim_clear)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_shutdown(self, app: web.Application) -> None:
        self.release_hung_requests()

    def _rid(self) -> str:
        return f"{secrets.token_hex(4)}-{secrets.token_hex(4)}-{secrets.token_hex(4)}"

    def _error(self, errcode: int, errmsg: str) -> web.Response:
        return web.json_response({"errcode": errcode, "errmsg": f"{errmsg} rid: {self._rid()}"})

    async def _fault(self, api: str, request: web.Request) -> web.StreamResponse | None:
        queue = self._faults.get(api)
        if not queue:
            return None
        fault = queue[0]
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                queue.popleft()
        if fault.name == "busy":
            return self._error(-1, "system error")
        if fault.name == "quota":
            return self._error(45009, "reach max api daily quota limit")
        if fault.name == "http500":
            return web.Response(status=500, text="Internal Server Error")
        if fault.name == "malformed":
            return web.Response(text="<html>not json", content_type="text/html")
        if fault.name == "reset":
            await request.read()
            transport = request.transport
            if transport is not None:
                transport.abort()
            raise asyncio.CancelledError
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.hang_seconds):
                await self._release.wait()
        return self._error(-1, "system error")

    def _day(self) -> int:
        return self._day_of(self.clock.now())

    def _over_quota(self, api: str, appid: str) -> bool:
        key = (api, appid, self._day())
        self._quota_used[key] += 1
        return self._quota_used[key] > self.daily_limit(api)

    def daily_limit(self, api: str) -> int:
        """The daily limit of ``api`` per appid: ``daily_quota`` when set, else WeChat's."""
        if self.daily_quota is not None:
            return self.daily_quota
        return DAILY_LIMITS.get(api, DEFAULT_DAILY_LIMIT)

    def _issue(self, appid: str, chain: str) -> str:
        """Issue a new token on ``chain`` and make it the current one; returns its value."""
        now = self.clock.now()
        value = secrets.token_urlsafe(96)
        self.tokens[value] = IssuedToken(appid, chain, now, now + self.ttl, now + self.ttl)
        self.current[(appid, chain)] = value
        return value

    def _grant(self, value: str) -> web.Response:
        token = self.tokens[value]
        expires_in = max(1, round(token.expires_at - self.clock.now()))
        return web.json_response({"access_token": value, "expires_in": expires_in})

    def _supersede(self, appid: str, chain: str, *, kill_older: bool = False) -> None:
        """The current token of the chain stays valid only for the rotation window."""
        now = self.clock.now()
        previous = self.current.get((appid, chain))
        for value, token in self.tokens.items():
            if token.appid != appid or token.chain != chain:
                continue
            if value == previous:
                token.valid_until = min(token.valid_until, now + self.rotation_window)
            elif kill_older:
                token.valid_until = min(token.valid_until, now)

    async def _admit(self, api: str, request: web.Request) -> tuple[str, web.StreamResponse | None]:
        """For an API that takes ``access_token``: the token's appid, and the answer that
        refuses the call (an injected fault, 41001/40001/42001) or None."""
        token = request.query.get("access_token")
        appid = self.tokens[token].appid if token in self.tokens else ""
        refused = await self._enter(api, appid, request)
        if refused is None:
            errcode = self.check(token)
            if errcode:
                refused = self._error(errcode, _TOKEN_ERRMSG[errcode])
        return appid, refused

    async def _enter(self, api: str, appid: str, request: web.Request) -> web.StreamResponse | None:
        """Count the call; the answer of an injected fault, if one is due."""
        self.calls[(api, appid)] += 1
        return await self._fault(api, request)

    def _credential_error(
        self, api: str, params: Any, *, grant_type: str, wrong_secret: tuple[int, str]
    ) -> web.Response | None:
        """The error answer for bad grant_type, appid or AppSecret, or over quota; else None."""
        appid = str(params.get("appid", ""))
        if params.get("grant_type") != grant_type:
            return self._error(40002, "invalid grant_type")
        if not appid:
            return self._error(41002, "appid missing")
        if "secret" not in params:
            return self._error(41004, "appsecret missing")
        if appid not in self.apps:
            return self._error(40013, "invalid appid")
        if params["secret"] != self.apps[appid]:
            return self._error(*wrong_secret)
        if self._over_quota(api, appid):
            return self._error(45009, "reach max api daily quota limit")
        return None

    async def _classic_token(self, request: web.Request) -> web.StreamResponse:
        api = "/cgi-bin/token"
        appid = request.query.get("appid", "")
        wrong = (40001, "invalid credential, access_token is invalid or not latest")
        refused = await self._enter(api, appid, request) or self._credential_error(
            api, request.query, grant_type="client_credential", wrong_secret=wrong
        )
        if refused is not None:
            return refused
        self._supersede(appid, "classic")
        return self._grant(self._issue(appid, "classic"))

    async def _stable_token(self, request: web.Request) -> web.StreamResponse:
        api = "/cgi-bin/stable_token"
        body = await _json_or_none(request)
        if not isinstance(body, dict):
            self.calls[(api, "")] += 1
            return self._error(47001, "data format error")
        appid = str(body.get("appid", ""))
        refused = await self._enter(api, appid, request) or self._credential_error(
            api, body, grant_type="client_credential", wrong_secret=(40125, "invalid appsecret")
        )
        if refused is not None:
            return refused
        now = self.clock.now()
        current = self.current.get((appid, "stable"))
        if body.get("force_refresh") is True:
            forces = [t for t in self.forces.get(appid, []) if self._day_of(t) == self._day()]
            if len(forces) >= self.force_daily_limit:
                return self._error(45009, "reach max api daily quota limit")
            if current is not None and forces and now - forces[-1] < self.force_min_interval:
                return self._grant(current)
            self.forces[appid] = [*forces, now]
            self._supersede(appid, "stable", kill_older=True)
            return self._grant(self._issue(appid, "stable"))
        if current is not None:
            token = self.tokens[current]
            if self.check(current) == 0 and now < token.expires_at - self.rotation_window:
                return self._grant(current)
        return self._grant(self._issue(appid, "stable"))

    def quota_used(self, api: str, appid: str) -> int:
        """Calls of ``api`` by ``appid`` today (China time), as ``quota/get`` reports them."""
        return self._quota_used[(api, appid, self._day())]

    async def _quota_get(self, request: web.Request) -> web.StreamResponse:
        """``quota/get``: today's count of the token APIs (the calls it served, refused ones
        over the limit included) and of the business APIs it accepted; 76021 for a path it does
        not serve, 76022 for ``sns/``."""
        appid, refused = await self._admit("/cgi-bin/openapi/quota/get", request)
        if refused is not None:
            return refused
        body = await _json_or_none(request)
        path = body.get("cgi_path") if isinstance(body, dict) else None
        if not isinstance(path, str) or not path.startswith("/"):
            return self._error(76003, "invalid cgi_path")
        if path.startswith("/sns/"):
            return self._error(76022, "could not use this cgi_path,no permission")
        served = {resource.canonical for resource in request.app.router.resources()}
        if path not in served or path.startswith("/_sim/"):
            return self._error(76021, "cgi_path not found, please check")
        used = self.quota_used(path, appid)
        limit = self.daily_limit(path)
        quota = {"daily_limit": limit, "used": used, "remain": max(0, limit - used)}
        return web.json_response({"errcode": 0, "errmsg": "ok", "quota": quota})

    def _day_of(self, epoch: float) -> int:
        return int((epoch + _BEIJING_OFFSET) // 86400)

    async def _business_api(self, request: web.Request) -> web.StreamResponse:
        """Probes, message sends, user info, mini program codes: token checked, call recorded."""
        api = request.path
        appid, refused = await self._admit(api, request)
        if refused is not None:
            return refused
        self._quota_used[(api, appid, self._day())] += 1
        body: Any = None
        if request.method == "POST":
            try:
                body = await request.json()
            except (ValueError, UnicodeDecodeError):
                return self._error(47001, "data format error")
        if api in PROBE_APIS:
            return web.json_response({"ip_list": ["127.0.0.1"]})
        query = {k: v for k, v in request.query.items() if k != "access_token"}
        if isinstance(body, dict) and body.get("touser") == REFUSING_OPENID:
            return self._error(43101, "user refuse to accept the msg")
        self.received.append(ReceivedCall(appid, api, query, body))
        if api == "/cgi-bin/media/get":
            if query.get("media_id") not in self.media:
                return self._error(40007, "invalid media_id")
            content, content_type = self.media[query["media_id"]]
            return web.Response(body=content, content_type=content_type)
        if api == "/wxa/getwxacode":
            return web.Response(body=FAKE_QR_CODE, content_type="image/png")
        if api == "/cgi-bin/user/info":
            return web.json_response(
                {"subscribe": 1, "openid": query.get("openid", ""), "language": "zh_CN"}
            )
        answer: dict[str, Any] = {"errcode": 0, "errmsg": "ok"}
        if api != "/cgi-bin/message/custom/send":
            answer["msgid"] = len(self.received)
        return web.json_response(answer)

    async def _jscode2session(self, request: web.Request) -> web.StreamResponse:
        return await self._exchange_code(request, "/sns/jscode2session", "js_code", self.js_codes)

    async def _oauth2_access_token(self, request: web.Request) -> web.StreamResponse:
        return await self._exchange_code(
            request, "/sns/oauth2/access_token", "code", self.oauth_codes
        )

    async def _exchange_code(
        self, request: web.Request, api: str, code_field: str, codes: dict[str, dict[str, Any]]
    ) -> web.StreamResponse:
        query = request.query
        appid = query.get("appid", "")
        refused = await self._enter(api, appid, request) or self._credential_error(
            api, query, grant_type="authorization_code", wrong_secret=(40125, "invalid appsecret")
        )
        if refused is not None:
            return refused
        entry = codes.get(query.get(code_field, ""))
        if entry is None or entry["appid"] != appid:
            return self._error(40029, "invalid code")
        if entry["used"]:
            return self._error(40163, "code been used")
        entry["used"] = True
        return web.json_response(entry["answer"])

    async def _oauth2_refresh_token(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        appid = query.get("appid", "")
        refused = await self._enter("/sns/oauth2/refresh_token", appid, request)
        if refused is not None:
            return refused
        if query.get("grant_type") != "refresh_token":
            return self._error(40002, "invalid grant_type")
        if appid not in self.apps:
            return self._error(40013, "invalid appid")
        user = self.refresh_tokens.get(query.get("refresh_token", ""))
        if user is None or user["appid"] != appid:
            return self._error(40030, "invalid refresh_token")
        user_token = f"user-{secrets.token_hex(8)}"
        return web.json_response(
            self._user_grant(appid, user["openid"], user_token, user["refresh_token"])
        )

    async def _sns_user_api(self, request: web.Request) -> web.StreamResponse:
        """``/sns/userinfo`` and ``/sns/auth``: the user's own token and openid."""
        query = request.query
        refused = await self._enter(request.path, "", request)
        if refused is not None:
            return refused
        if not query.get("access_token"):
            return self._error(41001, "access_token missing")
        user = self.user_tokens.get(query["access_token"])
        if user is None:
            return self._error(40001, "invalid credential, access_token is invalid or not latest")
        if query.get("openid") != user["openid"]:
            return self._error(40003, "invalid openid")
        if request.path == "/sns/auth":
            return web.json_response({"errcode": 0, "errmsg": "ok"})
        return web.json_response(
            {
                "openid": user["openid"],
                "nickname": "simulated user",
                "sex": 0,
                "province": "",
                "city": "",
                "country": "",
                "headimgurl": "",
                "privilege": [],
            }
        )

    async def _sim_stats(self, request: web.Request) -> web.StreamResponse:
        stats: dict[str, dict[str, int]] = {}
        for (api, appid), n in sorted(self.calls.items()):
            stats.setdefault(api, {})[appid or "-"] = n
        return web.json_response({"calls": stats, "apps": sorted(self.apps)})

    async def _sim_revoke(self, request: web.Request) -> web.StreamResponse:
        body = await _json_object(request)
        appid = str(body.get("appid", ""))
        if appid not in self.apps:
            raise web.HTTPNotFound(
                text=json.dumps({"error": "unknown appid"}), content_type="application/json"
            )
        self.revoke(appid)
        return web.json_response({"revoked": appid})

    async def _sim_fault(self, request: web.Request) -> web.StreamResponse:
        body = await _json_object(request)
        times = body.get("times", 1)
        try:
            self.inject(
                str(body.get("api", "")),
                str(body.get("fault", "")),
                times if isinstance(times, int) else None,
            )
        except ValueError as exc:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": str(exc)}), content_type="application/json"
            ) from None
        return web.json_response({"ok": True})

    async def _sim_clear(self, request: web.Request) -> web.StreamResponse:
        self.clear_faults(request.query.get("api"))
        return web.json_response({"ok": True})


_TOKEN_ERRMSG = {
    40001: "invalid credential, access_token is invalid or not latest",
    41001: "access_token missing",
    42001: "access_token expired",
}


async def _json_or_none(request: web.Request) -> Any:
    """The request's JSON body, or None when it is not JSON."""
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError):
        return None


async def _json_object(request: web.Request) -> dict[str, Any]:
    body = await _json_or_none(request)
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text='{"error": "body must be a JSON object"}', content_type="application/json"
        )
    return body


@contextlib.asynccontextmanager
async def serve_fake(
    fake: FakeWechat, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Run ``fake`` on ``host:port`` (0: a free port) and yield its base URL."""
    runner = web.AppRunner(
        fake.make_app(),
        access_log_class=PathAccessLogger,
        access_log=logging.getLogger("tokensvc.fake.access"),
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        fake.release_hung_requests()
        await runner.cleanup()

"""A small Python client of tokensvc's token API, for services that use no WeChat SDK.

Install with ``pip install 'tokensvc[client]'`` (it runs on httpx). Two classes with the same
methods, :class:`TokensvcClient` (blocking) and :class:`AsyncTokensvcClient` (asyncio)::

    from tokensvc.client import TokensvcClient

    tokens = TokensvcClient("http://tokensvc.internal:8080", key=CLIENT_KEY)
    access_token = tokens.token("wx1111111111111111")        # cached until expires_in runs out

    # a WeChat call of your own: on 40001/40014/42001 the token is reported and the call runs
    # once more with the replacement
    answer = tokens.call_wechat("wx1111111111111111", lambda token: post_to_wechat(token, body))

What it does, per appid:

- ``GET /v1/apps/{appid}/token``, cached for the answer's ``expires_in`` seconds (tokensvc's safe
  caching time, counted from when the request was sent); concurrent callers of one client share
  one request.
- A token WeChat rejected (errcode 40001, 40014 or 42001) is reported with ``POST
  /v1/apps/{appid}/token/refresh``: tokensvc replaces it only when WeChat proves it dead, and
  hands back the current token either way. A rejected token is never served from the cache again.
- tokensvc's errors become typed exceptions (:class:`TokensvcError` and its subclasses), carrying
  the HTTP status, tokensvc's ``error`` code and ``message``; :class:`TokenUnavailable` adds the
  WeChat ``errcode`` and ``retry_after`` (seconds).

Neither the key nor any token appears in a ``repr`` or an exception message.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from tokensvc.secret import fingerprint

__all__ = [
    "REJECTED_ERRCODES",
    "AsyncTokensvcClient",
    "BadRequest",
    "Forbidden",
    "Token",
    "TokenUnavailable",
    "TokensvcClient",
    "TokensvcError",
    "TokensvcUnreachable",
    "Unauthorized",
    "UnknownApp",
]

REJECTED_ERRCODES = frozenset({40001, 40014, 42001})
"""WeChat's errcodes for a token it does not accept (invalid, malformed, expired): the ones a new
token fixes. Source: https://developers.weixin.qq.com/doc/oplatform/Return_codes/Return_code_descriptions_new.html"""

Clock = Callable[[], float]


class TokensvcError(Exception):
    """tokensvc answered with an error, or not in its documented shape.

    Attributes: ``status`` (HTTP status, ``None`` when there was no answer), ``error`` (tokensvc's
    error code, e.g. ``"forbidden"``) and ``message`` (tokensvc's sentence).
    """

    def __init__(self, status: int | None, error: str, message: str) -> None:
        super().__init__(f"tokensvc: {error}: {message}" + (f" (HTTP {status})" if status else ""))
        self.status = status
        self.error = error
        self.message = message


class BadRequest(TokensvcError):
    """400: tokensvc refused the request as malformed (a bug in the caller)."""


class Unauthorized(TokensvcError):
    """401: the client key is missing or unknown."""


class Forbidden(TokensvcError):
    """403: the client key is not granted this appid."""


class UnknownApp(TokensvcError):
    """404: tokensvc has no app with this appid."""


class TokenUnavailable(TokensvcError):
    """503: no valid token now (WeChat failing, a wrong AppSecret, a quota pause, a contested app).

    ``errcode`` is WeChat's errcode of the last failure (e.g. -1 busy, 40125 wrong AppSecret,
    45009 daily quota) or ``None``; ``retry_after`` the seconds until tokensvc's next attempt, or
    ``None``. Nothing was sent to WeChat on your behalf: it is safe to try again after that.
    """

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        *,
        errcode: int | None,
        retry_after: float | None,
    ) -> None:
        super().__init__(status, error, message)
        self.errcode = errcode
        self.retry_after = retry_after


class TokensvcUnreachable(TokensvcError):
    """tokensvc did not answer: connection refused or broken, or no answer within ``timeout``."""


_ERRORS_BY_STATUS: dict[int, type[TokensvcError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: UnknownApp,
}


@dataclass(frozen=True)
class Token:
    """One token answer of ``GET /v1/apps/{appid}/token``.

    ``access_token`` is the token; ``expires_in`` the seconds tokensvc said it may be kept;
    ``expires_at`` its real expiry (RFC 3339 UTC, as tokensvc sent it); ``version`` grows with
    every new token of the app; ``valid_until`` the client clock's reading (seconds,
    ``time.monotonic`` by default) until which it is served from the cache.
    """

    appid: str
    access_token: str = field(repr=False)
    expires_in: int
    expires_at: str
    version: int
    valid_until: float

    def __repr__(self) -> str:
        return (
            f"Token(appid={self.appid!r}, sha256:{fingerprint(self.access_token)}, "
            f"expires_in={self.expires_in}, version={self.version})"
        )


@dataclass
class _Request:
    method: str
    url: str
    json: dict[str, Any] | None = None


class _Core:
    """What both clients share: URLs, the cache and reading tokensvc's answers (no I/O)."""

    def __init__(self, base_url: str, key: str, clock: Clock) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("tokensvc: base_url must start with http:// or https://")
        if not key:
            raise ValueError("tokensvc: the client key is empty")
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        self.key_fingerprint = fingerprint(key)
        self.clock = clock
        self.cache: dict[str, Token] = {}

    def cached(self, appid: str) -> Token | None:
        token = self.cache.get(appid)
        if token is not None and self.clock() < token.valid_until:
            return token
        return None

    def token_request(self, appid: str) -> _Request:
        return _Request("GET", f"{self._app_url(appid)}/token")

    def refresh_request(self, appid: str, rejected: str, errcode: int) -> _Request:
        if errcode not in REJECTED_ERRCODES:
            raise ValueError(
                f"tokensvc: errcode {errcode} is not fixed by a new token "
                f"(report only {sorted(REJECTED_ERRCODES)})"
            )
        body = {"stale_token": rejected, "errcode": errcode}
        return _Request("POST", f"{self._app_url(appid)}/token/refresh", body)

    def forget(self, appid: str, rejected: str) -> Token | None:
        """Drop ``rejected`` from the cache; the cached token if it is another (newer) one."""
        token = self.cache.get(appid)
        if token is not None and token.access_token == rejected:
            del self.cache[appid]
            return None
        return self.cached(appid)

    def accept(self, appid: str, sent_at: float, response: httpx.Response) -> Token:
        """The token in a 200 answer (now cached), or the typed error for any other answer."""
        body = _json_object(response)
        if response.status_code != 200:
            raise _error(response, body)
        try:
            access_token = body["access_token"]
            expires_in = body["expires_in"]
            if not isinstance(access_token, str) or not access_token:
                raise TypeError
            if not isinstance(expires_in, int) or isinstance(expires_in, bool):
                raise TypeError
            token = Token(
                appid=appid,
                access_token=access_token,
                expires_in=expires_in,
                expires_at=str(body.get("expires_at", "")),
                version=int(body.get("version", 0)),
                valid_until=sent_at + max(expires_in, 0),
            )
        except (KeyError, TypeError, ValueError):
            raise TokensvcError(
                response.status_code, "bad_response", "the token answer lacks its fields"
            ) from None
        self.cache[appid] = token
        return token

    def _app_url(self, appid: str) -> str:
        if not appid:
            raise ValueError("tokensvc: appid is empty")
        return f"{self.base_url}/v1/apps/{quote(appid, safe='')}"

    def describe(self, kind: str) -> str:
        return f"{kind}({self.base_url!r}, key=sha256:{self.key_fingerprint})"


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        kind = response.headers.get("content-type", "no content type")
        raise TokensvcError(
            response.status_code, "bad_response", f"expected a JSON object, got {kind}"
        )
    return body


def _error(response: httpx.Response, body: Mapping[str, Any]) -> TokensvcError:
    status = response.status_code
    error = str(body.get("error", "http_error"))
    message = str(body.get("message", f"HTTP {status}"))
    if status == 503 and error == "token_unavailable":
        errcode = body.get("errcode")
        return TokenUnavailable(
            status,
            error,
            message,
            errcode=errcode if isinstance(errcode, int) else None,
            retry_after=_seconds(response.headers.get("Retry-After")),
        )
    return _ERRORS_BY_STATUS.get(status, TokensvcError)(status, error, message)


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _unreachable(exc: httpx.HTTPError) -> TokensvcUnreachable:
    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "unreachable"
    return TokensvcUnreachable(None, kind, f"no answer from tokensvc ({type(exc).__name__})")


def _rejected_errcode(answer: Any) -> int | None:
    errcode = answer.get("errcode") if isinstance(answer, Mapping) else None
    return errcode if errcode in REJECTED_ERRCODES else None


class TokensvcClient:
    """A blocking client (safe to share between threads).

    ``base_url`` is tokensvc's URL (``http://host:port``), ``key`` a client key granted the appids
    you use, ``timeout`` seconds per request. ``http`` lets you pass your own ``httpx.Client``
    (proxies, TLS); it is then yours to close. ``clock`` (seconds, monotonic) is for tests.
    Raises ``ValueError`` for an empty key or a URL that is not http(s).
    """

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout: float = 10.0,
        http: httpx.Client | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._core = _Core(base_url, key, clock)
        self._own_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def token(self, appid: str) -> str:
        """The app's ``access_token``: from the cache, else fetched (one request per app at once).

        Raises :class:`TokensvcError` (or a subclass) when tokensvc refuses or is unreachable.
        """
        return self.token_info(appid).access_token

    def token_info(self, appid: str) -> Token:
        """Like :meth:`token`, with ``expires_in``, ``expires_at`` and ``version``."""
        token = self._core.cached(appid)
        if token is not None:
            return token
        with self._lock(appid):
            token = self._core.cached(appid)
            if token is not None:
                return token
            return self._send(appid, self._core.token_request(appid))

    def report_rejected(self, appid: str, access_token: str, errcode: int = 40001) -> str:
        """Report a token WeChat rejected with ``errcode`` (40001, 40014 or 42001); the token to
        use now. If this client already holds a newer token it is returned without a request.

        Raises ``ValueError`` for any other errcode, :class:`TokenUnavailable` when tokensvc
        cannot replace the token now, and the other :class:`TokensvcError` subclasses.
        """
        request = self._core.refresh_request(appid, access_token, errcode)
        with self._lock(appid):
            newer = self._core.forget(appid, access_token)
            if newer is not None:
                return newer.access_token
            return self._send(appid, request).access_token

    def call_wechat(self, appid: str, call: Callable[[str], Any]) -> Any:
        """``call(access_token)`` (your WeChat request, returning WeChat's JSON as a dict); when
        its ``errcode`` is 40001, 40014 or 42001 the token is reported and ``call`` runs once more
        with the replacement. Returns ``call``'s last result; its exceptions pass through.

        Only for calls that WeChat refused because of the token (nothing was done): any other
        answer, error or not, is returned as it is, never repeated.
        """
        access_token = self.token(appid)
        answer = call(access_token)
        errcode = _rejected_errcode(answer)
        if errcode is None:
            return answer
        return call(self.report_rejected(appid, access_token, errcode))

    def close(self) -> None:
        """Close the HTTP connections (unless ``http`` was passed in)."""
        if self._own_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return self._core.describe("TokensvcClient")

    def _lock(self, appid: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(appid, threading.Lock())

    def _send(self, appid: str, request: _Request) -> Token:
        sent_at = self._core.clock()
        try:
            response = self._http.request(
                request.method, request.url, json=request.json, headers=self._core.headers
            )
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from None
        return self._core.accept(appid, sent_at, response)


class AsyncTokensvcClient:
    """The asyncio client: the methods of :class:`TokensvcClient`, awaited.

    Use it from one event loop. ``http`` takes your own ``httpx.AsyncClient``.
    """

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._core = _Core(base_url, key, clock)
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout)
        self._locks: dict[str, asyncio.Lock] = {}

    async def token(self, appid: str) -> str:
        """See :meth:`TokensvcClient.token`."""
        return (await self.token_info(appid)).access_token

    async def token_info(self, appid: str) -> Token:
        """See :meth:`TokensvcClient.token_info`."""
        token = self._core.cached(appid)
        if token is not None:
            return token
        async with self._lock(appid):
            token = self._core.cached(appid)
            if token is not None:
                return token
            return await self._send(appid, self._core.token_request(appid))

    async def report_rejected(self, appid: str, access_token: str, errcode: int = 40001) -> str:
        """See :meth:`TokensvcClient.report_rejected`."""
        request = self._core.refresh_request(appid, access_token, errcode)
        async with self._lock(appid):
            newer = self._core.forget(appid, access_token)
            if newer is not None:
                return newer.access_token
            return (await self._send(appid, request)).access_token

    async def call_wechat(self, appid: str, call: Callable[[str], Awaitable[Any]]) -> Any:
        """See :meth:`TokensvcClient.call_wechat`; ``call`` is a coroutine function."""
        access_token = await self.token(appid)
        answer = await call(access_token)
        errcode = _rejected_errcode(answer)
        if errcode is None:
            return answer
        return await call(await self.report_rejected(appid, access_token, errcode))

    async def aclose(self) -> None:
        """Close the HTTP connections (unless ``http`` was passed in)."""
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return self._core.describe("AsyncTokensvcClient")

    def _lock(self, appid: str) -> asyncio.Lock:
        return self._locks.setdefault(appid, asyncio.Lock())

    async def _send(self, appid: str, request: _Request) -> Token:
        sent_at = self._core.clock()
        try:
            response = await self._http.request(
                request.method, request.url, json=request.json, headers=self._core.headers
            )
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from None
        return self._core.accept(appid, sent_at, response)

"""JSON errors for every endpoint: ``{"error": "<code>", "message": "<sentence>"}``.

- :func:`json_error` builds one.
- :func:`domain_error` is the one mapping from tokensvc's exceptions (:mod:`tokensvc.errors`)
  to HTTP answers, for every route.
- :func:`json_errors` wraps route handlers so that aiohttp's own errors (413...) take that
  shape, any domain error a handler let through is mapped, and anything unexpected is a 500
  that names nothing: never a traceback, never an HTML page.
- :class:`Unmatched` answers the requests no route matched: 404, or 405 with ``Allow``.

There is no middleware: aiohttp runs a middleware chain for every request of every route,
which cost ``GET /token`` about a tenth of its time. Handlers that answer every error
themselves (``GET /token``) are registered as they are; a handler's unexpected exception is
then answered by the runner (:mod:`tokensvc.web.server`) with the same JSON 500.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

from aiohttp import web
from yarl import URL

from tokensvc.errors import (
    RefreshDeferred,
    StoreUnavailable,
    TokensvcError,
    TokenUnavailable,
    UpstreamBadResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
    WechatAPIError,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def json_error(
    status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> web.HTTPException:
    """An HTTP exception whose body is ``{"error": code, "message": message, **extra}``."""
    exc = web.HTTPException(
        text=json.dumps({"error": code, "message": message, **extra}, ensure_ascii=False),
        content_type="application/json",
        headers=headers,
    )
    exc.set_status(status)
    return exc


def retry_after(at: float | None, now: float) -> dict[str, str]:
    """A ``Retry-After`` header (whole seconds, at least 1) for the instant ``at``, if known."""
    if at is None or not math.isfinite(at):
        return {}
    return {"Retry-After": str(max(1, math.ceil(at - now)))}


_DEFERRAL_REASONS = {
    "quota_pause": "refreshing {appid} is paused after errcode {errcode}",
    "retry_schedule": "{appid} is failing; its next attempt is on its retry schedule",
    "contested": (
        "another system keeps killing {appid}'s tokens (contested); replacements back off"
    ),
}


def domain_error(
    exc: TokensvcError,
    now: float,
    *,
    api: str | None = None,
    code: str = "token_unavailable",
    retry_at: float | None = None,
) -> web.HTTPException:
    """The HTTP answer to a domain error, for every route.

    ``api``: the WeChat API a proxied call went to (None for token routes); its own timeout,
    broken connection or bad answer is a 504 ``upstream_timeout`` / 502
    ``upstream_unavailable`` / 502 ``upstream_bad_response`` (the call was not resent). Anything
    else means there is no valid token now: 503 ``code`` (``token_unavailable``, or
    ``refresh_failed`` for operator actions, ``database_unavailable`` for reads that need the
    database) with ``errcode`` (the last WeChat errcode, or null)
    and ``Retry-After`` (the next attempt: the error's own, else ``retry_at``).
    """
    if api is not None and getattr(exc, "api", None) == api:
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
        if isinstance(exc, UpstreamBadResponse):
            return json_error(502, "upstream_bad_response", str(exc))
    errcode: int | None = None
    if isinstance(exc, TokenUnavailable):
        message, errcode, retry_at = str(exc), exc.errcode, exc.retry_at
    elif isinstance(exc, RefreshDeferred):
        why = _DEFERRAL_REASONS.get(exc.reason, "{appid}: refreshing is deferred").format(
            appid=exc.appid, errcode=exc.errcode
        )
        message = f"no valid access_token for {exc.appid}: {why}"
        errcode, retry_at = exc.errcode, exc.until
    elif isinstance(exc, StoreUnavailable) and code == "database_unavailable":
        message = f"this needs the database, which did not answer: {exc}"
    else:
        if isinstance(exc, WechatAPIError):
            errcode = exc.errcode
        message = f"the access_token could not be replaced: {exc}"
    return json_error(503, code, message, errcode=errcode, headers=retry_after(retry_at, now))


def json_errors(
    routes: Iterable[web.AbstractRouteDef], *, own_errors: Collection[Handler] = ()
) -> list[web.AbstractRouteDef]:
    """``routes`` with every handler wrapped by :func:`answering_json`, except those in
    ``own_errors`` (they raise only JSON answers and map their domain errors themselves)."""
    wrapped: list[web.AbstractRouteDef] = []
    for route in routes:
        if isinstance(route, web.RouteDef) and route.handler not in own_errors:
            handler: Any = answering_json(route.handler)
            route = web.RouteDef(route.method, route.path, handler, route.kwargs)
        wrapped.append(route)
    return wrapped


def answering_json(handler: Handler) -> Handler:
    """``handler``, with every error it raises answered as JSON (see the module docstring)."""

    @functools.wraps(handler)
    async def answering(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type == "application/json":
                raise
            raise _as_json(request, exc) from None
        except TokensvcError as exc:
            raise domain_error(exc, time.time()) from None
        except Exception:
            log.exception("unexpected error in %s %s", request.method, request.path)
            raise json_error(500, "internal_error", "internal error; see the server log") from None

    return answering


class Unmatched(web.AbstractResource):
    """The last resource: answers every request no route matched, with a JSON 405 and
    ``Allow`` when the path exists under other methods, else a JSON 404. It holds no route
    (route listings, such as the OpenAPI check, do not see it)."""

    def __init__(self, router: web.UrlDispatcher) -> None:
        super().__init__()
        self._router = router
        self._route = web.ResourceRoute("*", self._answer, self)

    @property
    def canonical(self) -> str:
        """Indexed under ``/``: the router tries it after every more specific resource."""
        return "/"

    def url_for(self, **kwargs: str) -> URL:
        """No URL leads here on purpose."""
        raise RuntimeError("the unmatched-request resource has no URL")

    def add_prefix(self, prefix: str) -> None:
        """Not used under a prefix."""
        raise RuntimeError("the unmatched-request resource takes no prefix")

    def get_info(self) -> Any:
        """Nothing to describe."""
        return {}

    def raw_match(self, path: str) -> bool:
        """Never the resource of a path."""
        return False

    async def resolve(self, request: web.Request) -> tuple[web.UrlMappingMatchInfo, set[str]]:
        """Matches any request that reached it."""
        return web.UrlMappingMatchInfo({}, self._route), set()

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[web.AbstractRoute]:
        return iter(())

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        allowed: set[str] = set()
        for resource in self._router.resources():
            if resource is not self:
                _, methods = await resource.resolve(request)
                allowed |= methods
        if allowed:
            raise _as_json(request, web.HTTPMethodNotAllowed(request.method, allowed))
        raise _as_json(request, web.HTTPNotFound())


def _as_json(request: web.Request, exc: web.HTTPException) -> web.HTTPException:
    code = _CODES.get(exc.status, "error")
    message = exc.reason
    if exc.status == 404:
        message = f"no such endpoint: {request.method} {request.path}"
    elif exc.status == 405:
        allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
        message = f"{request.method} is not allowed on {request.path}; use {allowed}"
    elif exc.status == 413:
        message = "request body is too large"
    headers = {
        k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate", "Retry-After")
    }
    return json_error(exc.status, code, message, headers=headers)

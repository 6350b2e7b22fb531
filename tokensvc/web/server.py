"""Running the app: an :class:`aiohttp.web.AppRunner` whose answer to a malformed request is safe.

aiohttp answers a request it cannot parse (a control character in a header, a bad request
line) before any middleware runs: it logs the offending line at ERROR with a traceback and echoes
it in a ``text/plain`` 400 body. That line can hold a client key (``Authorization: Bearer
<key>\\x7f``). :class:`TokensvcRunner` replaces that answer: one WARNING line that names the kind
of error and the peer, never the bytes; the usual ``{"error", "message"}`` JSON body; the
connection closed.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from tokensvc.web.access_log import MALFORMED, AccessLogger

log = logging.getLogger(__name__)

_REASON_RE = re.compile(r"[A-Za-z][A-Za-z ,'-]{0,80}")


def malformed_reason(exc: BaseException | None) -> str:
    """What was wrong with a request aiohttp could not parse, without any of its bytes.

    aiohttp's messages read ``Invalid header value char:\\n\\n  b'Authorization: ...'``: only
    the leading words before the first colon are kept (``invalid header value char``).
    """
    if isinstance(exc, http_exceptions.LineTooLong):
        return "a request line or header is too long"
    if isinstance(exc, http_exceptions.BadHttpMethod):
        return "not an HTTP request"
    text = getattr(exc, "message", "") or ""
    match = _REASON_RE.match(str(text).strip())
    return match.group(0).strip().lower() if match else "malformed HTTP request"


class _SafeRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request that never reached the app (parse error) or broke it."""
        if status == HTTPStatus.INTERNAL_SERVER_ERROR:
            log.error("internal error outside any handler", exc_info=exc)
            body = {"error": "internal_error", "message": "internal error; see the server log"}
        elif status == HTTPStatus.GATEWAY_TIMEOUT:
            body = {"error": "timeout", "message": "the request took too long"}
        else:
            reason = malformed_reason(exc)
            log.warning("malformed request from %s: %s", request.remote, reason)
            body = {"error": "bad_request", "message": f"malformed HTTP request: {reason}"}
        response = web.Response(
            status=status, text=json.dumps(body), content_type="application/json"
        )
        response.force_close()
        response[MALFORMED] = True  # logged above: the access log skips it
        return response


class _SafeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _SafeRequestHandler(self, loop=self._loop, **self._kwargs)


KEEPALIVE_TIMEOUT = 15.0
"""Seconds a connection may sit without a complete request (idle between requests, or headers
that never finish) before it is closed. aiohttp's own default is an hour: enough idle sockets
would exhaust the process's file descriptors."""
LINGERING_TIME = 2.0
"""Seconds the server keeps reading an unread body after answering (408, 413) before closing."""


class TokensvcRunner(web.AppRunner):
    """An AppRunner whose connections answer malformed requests safely (module docstring) and
    are closed when no complete request arrives within :data:`KEEPALIVE_TIMEOUT`."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", KEEPALIVE_TIMEOUT)
        kwargs.setdefault("lingering_time", LINGERING_TIME)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp builds its own Server; only its protocol factory (__call__) changes.
        server.__class__ = _SafeServer
        return server


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    until: Callable[[], Awaitable[None]],
    on_listening: Callable[[], None] = lambda: None,
) -> None:
    """Serve ``app`` on ``host:port`` until ``until()`` returns, then stop it cleanly.

    Raises :class:`OSError` when the port cannot be bound, and whatever the app's start-up
    raises (:class:`~tokensvc.errors.TokensvcError`).
    """
    runner = TokensvcRunner(app, access_log_class=AccessLogger)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        on_listening()
        await until()
    finally:
        await runner.cleanup()

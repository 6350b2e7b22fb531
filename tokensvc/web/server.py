"""Running the app: an :class:`aiohttp.web.AppRunner` whose answer to a malformed request is safe.

aiohttp answers a request it cannot parse (a control character in a header, a bad request
line) before any middleware runs: it logs the offending line at ERROR with a traceback and echoes
it in a ``text/plain`` 400 body. That line can hold a client key (``Authorization: Bearer
<key>\\x7f``). :class:`TokensvcRunner` replaces that answer: one WARNING line that names the kind
of error and the peer, never the bytes; the usual ``{"error", "message"}`` JSON body; the
connection closed.

:func:`serve` binds the port before the app starts (:func:`bind_listeners`): a busy port is one
line naming ``server.port`` before any migration has run.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from tokensvc.errors import ConfigError
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


def bind_error(exc: OSError, host: str, port: int, *, port_key: str, host_key: str) -> ConfigError:
    """The :class:`ConfigError` for a failed bind of ``host:port``, naming the option the
    person can change (``server.port`` / ``server.host`` in the config, ``--port`` / ``--host``
    on the command line) and what to do."""
    if isinstance(exc, socket.gaierror):
        return ConfigError(
            host_key, f'cannot resolve "{host}" ({exc.strerror}): give an IP address'
        )
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            port_key,
            f"{port} is already in use on {host}: stop the other process or choose another port",
        )
    if exc.errno == errno.EACCES:
        return ConfigError(
            port_key,
            f"{port} on {host} needs privileges this process lacks (ports below 1024): choose "
            "a port above 1023, or grant CAP_NET_BIND_SERVICE",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(
            host_key,
            f"{host} is not an address of this machine: use 127.0.0.1, 0.0.0.0 (every "
            "interface) or one of its own addresses",
        )
    return ConfigError(port_key, f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def bind_listeners(
    host: str, port: int, *, port_key: str = "server.port", host_key: str = "server.host"
) -> list[socket.socket]:
    """Bind (not yet listen on) every address ``host`` resolves to, on ``port``, as aiohttp's
    ``TCPSite`` would (``SO_REUSEADDR``, IPv6 sockets IPv6-only), so a busy port is found before
    anything else starts. Raises :class:`ConfigError` (see :func:`bind_error`)."""
    try:
        infos = socket.getaddrinfo(
            host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise bind_error(exc, host, port, port_key=port_key, host_key=host_key) from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise bind_error(exc, host, port, port_key=port_key, host_key=host_key) from None
    return sockets


def freeze_startup_objects() -> None:
    """Collect once, then move every object still alive (the started app: configuration,
    routes, SQLAlchemy's and aiohttp's machinery, metrics; about 100,000 objects) into the
    garbage collector's permanent generation (:func:`gc.freeze`). They live as long as the
    process, and every full collection traversed them all: about 30 ms each, several times a
    second under a send load, which stalled every request under way (the send proxy's p99)."""
    gc.collect()
    gc.freeze()


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    until: Callable[[], Awaitable[None]],
    on_listening: Callable[[], None] = lambda: None,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` until ``until()`` returns, then stop it cleanly.

    The port is bound first (or ``sockets`` from :func:`bind_listeners` are used), before the
    app's start-up runs its migrations. Raises :class:`ConfigError` when the port cannot be
    bound, and whatever the app's start-up raises (:class:`~tokensvc.errors.TokensvcError`).
    """
    if sockets is None:
        sockets = bind_listeners(host, port)
    runner = TokensvcRunner(app, access_log_class=AccessLogger)
    try:
        await runner.setup()
        freeze_startup_objects()
        try:
            for sock in sockets:
                await web.SockSite(runner, sock).start()
            on_listening()
            await until()
        finally:
            await runner.cleanup()
    finally:
        for sock in sockets:
            sock.close()

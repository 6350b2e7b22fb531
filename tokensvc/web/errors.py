"""JSON errors for every endpoint: ``{"error": "<code>", "message": "<sentence>"}``.

The middleware turns aiohttp's own errors (404, 405, 413) and any unexpected exception into that
shape: never a traceback, never an HTML page.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
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


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every error a JSON body; log unexpected exceptions without exposing them."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = _CODES.get(exc.status, "error")
        message = exc.reason if exc.status != 413 else "request body is too large"
        if exc.status == 404:
            message = f"no such endpoint: {request.method} {request.path}"
        raise json_error(exc.status, code, message, headers=_passthrough_headers(exc)) from None
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        raise json_error(500, "internal_error", "internal error; see the server log") from None


def _passthrough_headers(exc: web.HTTPException) -> dict[str, str]:
    return {
        k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate", "Retry-After")
    }


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The request body, at most ``max_bytes`` long; 413 ``payload_too_large`` otherwise."""
    too_large = json_error(
        413, "payload_too_large", f"request body is larger than {max_bytes} bytes"
    )
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    raw = await request.content.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise too_large
    return raw


async def read_json_object(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object, at most ``max_bytes`` long.

    Raises 413 ``payload_too_large`` or 400 ``bad_request`` (empty, malformed, not an object).
    """
    raw = await read_body(request, max_bytes)
    if not raw.strip():
        raise json_error(400, "bad_request", "request body is empty; send a JSON object")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise json_error(400, "bad_request", "request body is not valid JSON") from None
    except RecursionError:
        raise json_error(400, "bad_request", "request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise json_error(400, "bad_request", "request body must be a JSON object")
    return body

"""Reading request bodies: whole or not at all, within a size limit and a time limit.

A body is read to its end (``Content-Length`` or chunked) before anything is done with it:

- past ``max_bytes``: 413 ``payload_too_large`` (at once when ``Content-Length`` says so);
- not received within ``[server] body_timeout`` seconds: 408 ``request_timeout``, connection
  closed;
- cut short (the client went away, a broken chunked encoding): 400 ``bad_request``.

So a partial body is never parsed or forwarded.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError

from tokensvc.web.errors import json_error
from tokensvc.web.keys import SETTINGS


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole request body, at most ``max_bytes`` long (see the module docstring)."""
    too_large = json_error(
        413, "payload_too_large", f"request body is larger than {max_bytes} bytes"
    )
    expected = request.content_length
    if expected is not None and expected > max_bytes:
        raise too_large
    timeout = request.app[SETTINGS].server.body_timeout
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > max_bytes:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        timed_out = json_error(
            408,
            "request_timeout",
            f"the request body did not arrive within {timeout:g} seconds",
            headers={"Connection": "close"},
        )
        timed_out.force_close()
        raise timed_out from None
    except (ConnectionError, ClientPayloadError, HttpProcessingError):
        raise json_error(400, "bad_request", "the request body was cut short") from None
    # aiohttp inflates a Content-Encoding (gzip) body: its length is not Content-Length then
    if expected is not None and size != expected and not request.headers.get("Content-Encoding"):
        raise json_error(400, "bad_request", "the request body was cut short")
    return b"".join(chunks)


async def read_json_object(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """The whole request body as a JSON object, at most ``max_bytes`` long.

    Raises what :func:`read_body` raises, and 400 ``bad_request`` (empty, not UTF-8, malformed,
    nested too deeply, not an object).
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


def string_field(body: dict[str, Any], name: str, *, max_length: int, hint: str) -> str:
    """The string ``body[name]``; 400 ``bad_request`` naming the field when it is missing
    (with ``hint``), not a string, empty, or longer than ``max_length`` characters."""
    value = body.get(name)
    if value is None:
        raise json_error(400, "bad_request", f"field {name} is required: {hint}")
    if not isinstance(value, str):
        raise json_error(400, "bad_request", f"field {name} must be a string")
    if not value:
        raise json_error(400, "bad_request", f"field {name} must not be empty")
    if len(value) > max_length:
        raise json_error(400, "bad_request", f"field {name} is longer than {max_length} characters")
    return value

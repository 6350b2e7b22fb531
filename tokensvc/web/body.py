"""Reading request bodies: whole or not at all, within a size limit and a time limit.

A body is read to its end (``Content-Length`` or chunked) before anything is done with it:

- past ``max_bytes``: 413 ``payload_too_large`` (at once when ``Content-Length`` says so);
- not received within ``[server] body_timeout`` seconds: 408 ``request_timeout``, connection
  closed;
- cut short (the client went away, a broken chunked encoding), or a ``Content-Encoding``
  (gzip, deflate) that does not decode: 400 ``bad_request``.

So a partial body is never parsed or forwarded.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from tokensvc.web.errors import json_error
from tokensvc.web.keys import SETTINGS


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole request body, at most ``max_bytes`` long (see the module docstring)."""
    expected = request.content_length
    if expected is not None and expected > max_bytes:
        raise _too_large(max_bytes)
    content = request.content
    try:
        if content.is_eof():  # all of it arrived already (a small body comes with its headers)
            body = content.read_nowait()
            if len(body) > max_bytes:
                raise _too_large(max_bytes)
        else:
            body = await _receive(request, max_bytes)
    except (ConnectionError, ClientPayloadError, HttpProcessingError):
        raise json_error(400, "bad_request", "the request body was cut short") from None
    except RequestPayloadError:  # e.g. a gzip/deflate body that does not inflate
        undecodable = json_error(
            400,
            "bad_request",
            "the request body does not decode as its Content-Encoding says",
            headers={"Connection": "close"},
        )
        undecodable.force_close()
        request.content.feed_eof()  # else aiohttp drains the rest, meets the error again, and
        raise undecodable from None  # logs it as an unhandled exception
    # aiohttp inflates a Content-Encoding (gzip) body: its length is not Content-Length then
    if (
        expected is not None
        and len(body) != expected
        and not request.headers.get("Content-Encoding")
    ):
        raise json_error(400, "bad_request", "the request body was cut short")
    return body


async def _receive(request: web.Request, max_bytes: int) -> bytes:
    """The rest of a body still under way, within ``[server] body_timeout`` seconds (408 and
    the connection closed when it does not come) and ``max_bytes`` (413 at once past it)."""
    timeout = request.app[SETTINGS].server.body_timeout
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(max_bytes)
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
    return b"".join(chunks)


def _too_large(max_bytes: int) -> web.HTTPException:
    """413 ``payload_too_large`` (built only when raised: every body read would pay for it)."""
    return json_error(413, "payload_too_large", f"request body is larger than {max_bytes} bytes")


@dataclass(frozen=True)
class JsonBody:
    """A request body read by :func:`read_json_body`: the JSON ``object``, and ``raw``, the bytes
    as received when they say exactly what ``object`` says (UTF-8, no name twice in an object),
    so they can be forwarded without encoding ``object`` again; else None."""

    object: dict[str, Any]
    raw: bytes | None


class _DuplicateName(ValueError):
    """A JSON object names a member twice: its parsed value keeps only the last one."""


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateName
    return result


_STRICT_DECODER = json.JSONDecoder(object_pairs_hook=_unique_names)
"""Parses UTF-8 text whose objects name each member once (what the bytes mean is then exactly
the parsed object); anything else takes :func:`json_object_of`'s general path."""


def json_object_of(raw: bytes) -> JsonBody:
    """``raw`` as a JSON object, and whether the bytes can stand for it (see :class:`JsonBody`).

    Raises 400 ``bad_request`` (empty, not UTF-8, malformed, nested too deeply, not an object).
    """
    try:
        parsed = _STRICT_DECODER.decode(raw.decode())
    except (ValueError, UnicodeDecodeError, RecursionError):
        pass  # a duplicate name, another encoding (json.loads detects UTF-16/32), or an error
    else:
        if isinstance(parsed, dict):
            return JsonBody(parsed, raw)
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
    return JsonBody(body, None)


async def read_json_body(request: web.Request, max_bytes: int) -> JsonBody:
    """The whole request body (at most ``max_bytes`` long) as a JSON object, with its bytes when
    they can be forwarded as they came (:class:`JsonBody`). Raises what :func:`read_body` and
    :func:`json_object_of` raise."""
    return json_object_of(await read_body(request, max_bytes))


async def read_json_object(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """The whole request body as a JSON object, at most ``max_bytes`` long.

    Raises what :func:`read_body` raises, and 400 ``bad_request`` (empty, not UTF-8, malformed,
    nested too deeply, not an object).
    """
    return json_object_of(await read_body(request, max_bytes)).object


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

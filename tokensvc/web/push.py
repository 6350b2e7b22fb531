"""WeChat's message push URL of each app: ``/wechat/push/{appid}`` (no tokensvc key: WeChat
signs each request with the app's push Token instead).

- ``GET``: WeChat's URL check (服务器配置 → 提交): the ``echostr`` as it came, as text, when
  ``signature`` holds; 403 otherwise.
- ``POST``: one push. Checked, decrypted and parsed by :mod:`tokensvc.push.receive`, then
  handed to the outbox (``OUTBOX.accept``), which stores it (or recognises WeChat's retry of
  it) in one transaction; only then ``success`` (text). A refused push is a JSON 4xx and
  nothing is stored or forwarded; a database failure a 503, so that WeChat tries again.

Unknown appid, or an app without ``[apps.push]``: 404. The access log shows the path (the
appid) and never the query (``signature``, ``echostr``...); refusals are logged with their
code only. Pages: https://developers.weixin.qq.com/doc/oplatform/developers/dev/push/encryption.md
(docs/wechat.md#message-push).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from tokensvc.errors import StoreUnavailable
from tokensvc.push.receive import MAX_PUSH_BYTES, PushRefused, dedupe_key, open_push, verify_url
from tokensvc.settings import PushConfig
from tokensvc.web.body import read_body
from tokensvc.web.errors import json_error
from tokensvc.web.keys import CLOCK, METRICS, OUTBOX, SETTINGS

log = logging.getLogger(__name__)

ACCEPT_TIMEOUT = 4.0
"""Seconds the outbox may take to store a push before the answer is a 503 (WeChat gives up
waiting after 5 s and tries again). The store is not cancelled: it goes on in the background,
and if it commits, WeChat's retry is recognised as a duplicate."""

_STORING: set[asyncio.Task[str | None]] = set()
"""Stores under way (held until done: one may outlive its request)."""


def _late_failure(task: asyncio.Task[str | None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a push stored too late failed as well: %s", task.exception())


_TEXT_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}


def _push_config(request: web.Request) -> tuple[str, PushConfig]:
    appid = request.match_info["appid"]
    app = request.app[SETTINGS].app(appid)
    if app is None or app.push is None:
        raise json_error(
            404, "not_found", "no app with this appid receives pushes here ([apps.push])"
        )
    return appid, app.push


def _refused(request: web.Request, appid: str, exc: PushRefused) -> web.HTTPException:
    request.app[METRICS].observe_push(appid, "refused")
    log.info("push to %s refused: %s", appid, exc.code)
    return json_error(exc.status, exc.code, exc.message)


async def check_url(request: web.Request) -> web.Response:
    """``GET /wechat/push/{appid}?signature&timestamp&nonce&echostr``: ``echostr`` (text) when
    the signature holds and the timestamp is within 300 s; 403 ``bad_signature`` /
    ``stale_timestamp``, 400 ``bad_request``, 404."""
    appid, push = _push_config(request)
    try:
        echostr = verify_url(push, request.query, request.app[CLOCK].now())
    except PushRefused as exc:
        log.info("push URL check for %s refused: %s", appid, exc.code)
        raise json_error(exc.status, exc.code, exc.message) from None
    log.info("push URL check for %s passed", appid)
    return web.Response(text=echostr, content_type="text/plain", headers=_TEXT_HEADERS)


async def receive_push(request: web.Request) -> web.Response:
    """``POST /wechat/push/{appid}?signature&timestamp&nonce[&encrypt_type&msg_signature]``:
    ``success`` (text) once the push is stored, or recognised as a retry of one stored; JSON
    4xx when refused (see :class:`~tokensvc.push.receive.PushRefused`), 413 past
    :data:`~tokensvc.push.receive.MAX_PUSH_BYTES`, 503 ``database_unavailable``."""
    appid, push = _push_config(request)
    metrics = request.app[METRICS]
    try:
        body = await read_body(request, MAX_PUSH_BYTES)
    except web.HTTPException:
        metrics.observe_push(appid, "refused")
        raise
    try:
        message = open_push(push, appid, request.query, body, request.app[CLOCK].now())
    except PushRefused as exc:
        raise _refused(request, appid, exc) from None
    store = asyncio.ensure_future(request.app[OUTBOX].accept(appid, message, dedupe_key(message)))
    _STORING.add(store)
    store.add_done_callback(_STORING.discard)
    try:
        async with asyncio.timeout(ACCEPT_TIMEOUT):
            event_id = await asyncio.shield(store)
    except (StoreUnavailable, TimeoutError) as exc:
        if not store.done():
            store.add_done_callback(_late_failure)
        metrics.observe_push(appid, "error")
        log.warning("push to %s not stored (WeChat will retry): %s", appid, exc or "timed out")
        raise json_error(
            503,
            "database_unavailable",
            "the push could not be stored; WeChat tries again",
            headers={"Retry-After": "1"},
        ) from None
    metrics.observe_push(appid, "accepted" if event_id is not None else "duplicate")
    return web.Response(text="success", content_type="text/plain", headers=_TEXT_HEADERS)


routes = [
    web.get("/wechat/push/{appid}", check_url, allow_head=False),
    web.post("/wechat/push/{appid}", receive_push),
]

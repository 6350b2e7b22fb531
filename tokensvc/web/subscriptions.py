"""``GET /v1/apps/{appid}/subscriptions/{openid}``: the subscribe-grant ledger of one user.

The ledger is kept from WeChat's push events and the subscribe sends
(:mod:`tokensvc.push.grants`); a client granted the app reads it with its Bearer key.
"""

from __future__ import annotations

import re

from aiohttp import web

from tokensvc.errors import StoreUnavailable
from tokensvc.web.api import authorised_manager
from tokensvc.web.errors import domain_error, json_error
from tokensvc.web.keys import CLOCK, GRANTS

routes = web.RouteTableDef()

_OPENID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""WeChat openids are 28 characters of letters, digits, ``_`` and ``-`` (matched whole:
``fullmatch``, as ``$`` would let a trailing newline through)."""


@routes.get("/v1/apps/{appid}/subscriptions/{openid}")
async def get_subscriptions(request: web.Request) -> web.Response:
    """200 ``{"appid", "openid", "receiving_pushes": bool, "enforce_grants": bool,
    "templates": [{"template_id", "one_time_grants", "long_term_status", "last_status",
    "last_event", "last_change_at", "accepted_total", "used_total"}]}`` (an empty list for a
    user the ledger has not seen). 400 ``bad_request`` for an openid that cannot be one;
    401/403/404 as for every ``/v1/apps/{appid}`` route; 503 ``database_unavailable`` when the
    database does not answer."""
    manager = authorised_manager(request)
    openid = request.match_info["openid"]
    if not _OPENID_RE.fullmatch(openid):
        raise json_error(
            400,
            "bad_request",
            "openid must be 1-128 letters, digits, '_' or '-' (WeChat's openids are 28)",
        )
    try:
        templates = await request.app[GRANTS].lookup(manager.appid, openid)
    except StoreUnavailable as exc:
        raise domain_error(exc, request.app[CLOCK].now(), code="database_unavailable") from None
    push = manager.app.push
    return web.json_response(
        {
            "appid": manager.appid,
            "openid": openid,
            "receiving_pushes": push is not None,
            "enforce_grants": push is not None and push.enforce_grants,
            "templates": templates,
        },
        headers={"Cache-Control": "no-store"},
    )

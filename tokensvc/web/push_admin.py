"""``POST /v1/apps/{appid}/push/redeliver``: an operator sends the app's failed push deliveries
again (those given up after 24 h of retries), once the forward target is back."""

from __future__ import annotations

from aiohttp import web

from tokensvc.errors import StoreUnavailable
from tokensvc.web.api import configured_manager
from tokensvc.web.errors import domain_error
from tokensvc.web.keys import AUTH, CLOCK, OUTBOX

routes = web.RouteTableDef()


@routes.post("/v1/apps/{appid}/push/redeliver")
async def redeliver(request: web.Request) -> web.Response:
    """Admin key. 200 ``{"appid", "requeued": n}``: the app's ``failed`` deliveries are
    pending again, due at once, with a new 24-hour retry window
    (:meth:`tokensvc.push.outbox.Outbox.redeliver_failed`). 401/403 as for every operator
    route, 404 ``unknown_app``, 503 ``database_unavailable``."""
    request.app[AUTH].require_admin(request)
    manager = configured_manager(request)
    try:
        requeued = await request.app[OUTBOX].redeliver_failed(manager.appid)
    except StoreUnavailable as exc:
        raise domain_error(exc, request.app[CLOCK].now(), code="database_unavailable") from None
    return web.json_response(
        {"appid": manager.appid, "requeued": requeued}, headers={"Cache-Control": "no-store"}
    )

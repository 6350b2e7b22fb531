"""Liveness and readiness, for load balancers and orchestrators. No auth, no secrets, no tokens."""

from __future__ import annotations

import asyncio

from aiohttp import web

from tokensvc.errors import StoreUnavailable
from tokensvc.web.keys import MANAGERS, STORE

READY_DB_TIMEOUT = 2.0
"""Seconds ``/readyz`` waits for the database before calling it unavailable."""

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness: 200 ``{"status": "ok"}`` while the process serves HTTP."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 when the database answers and every app has a valid token.

    Otherwise 503 ``{"status": "not_ready", "database": "ok"|"unavailable",
    "apps_without_token": [appid, ...], "contested": [appid, ...]}``: a replica that lost its
    database still serves the tokens it holds, but a load balancer should prefer the others.
    A contested app (another system keeps killing its tokens) is listed but does not make the
    replica unready: every replica suffers it alike, and taking them out would help no one.
    """
    database_ok = True
    try:
        async with asyncio.timeout(READY_DB_TIMEOUT):
            await request.app[STORE].ping()
    except (StoreUnavailable, TimeoutError):
        database_ok = False
    managers = request.app[MANAGERS]
    contested = sorted(appid for appid, manager in managers.items() if manager.contested())
    missing = sorted(
        appid
        for appid, manager in managers.items()
        if manager.served() is None and appid not in contested
    )
    body = {
        "status": "ready" if database_ok and not missing else "not_ready",
        "database": "ok" if database_ok else "unavailable",
        "apps_without_token": missing,
        "contested": contested,
    }
    return web.json_response(body, status=200 if body["status"] == "ready" else 503)

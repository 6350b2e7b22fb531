"""The OpenAPI 3.1 document of every route, served at ``GET /openapi.json`` (no auth)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "tokensvc", "version": "0.1.0"},
    "paths": {},
}
"""The document; see README.md for the prose."""

routes = web.RouteTableDef()


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document (JSON)."""
    return web.json_response(SPEC)

"""Operator endpoints: the ``/status`` page, ``/v1/status`` JSON, token actions, ``/metrics``.

All need the admin key (Bearer, or the HTTP Basic password so a browser prompts), except
``/metrics`` with ``[metrics] public = true``. Nothing here shows a token or a secret: tokens
appear as fingerprints (first 8 hex of their SHA-256).
"""

from __future__ import annotations

import secrets

import jinja2
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from tokensvc.clock import rfc3339
from tokensvc.config import fingerprint
from tokensvc.errors import StoreUnavailable, TokensvcError
from tokensvc.status import build_status
from tokensvc.tokens.manager import TokenManager
from tokensvc.tokens.values import RefreshOutcome, Trigger
from tokensvc.web.api import configured_manager, token_body
from tokensvc.web.errors import domain_error, json_error
from tokensvc.web.keys import AUTH, CLOCK, EVENTS, MANAGERS, METRICS, PASSIVE_TALLY, SETTINGS

routes = web.RouteTableDef()

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("tokensvc.web", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)


async def _status_document(request: web.Request) -> dict[str, object]:
    app = request.app
    try:
        return await build_status(app[MANAGERS], app[EVENTS], app[PASSIVE_TALLY], app[CLOCK])
    except StoreUnavailable as exc:
        raise domain_error(exc, app[CLOCK].now(), code="database_unavailable") from None


@routes.get("/status")
async def status_page(request: web.Request) -> web.Response:
    """The status page (HTML): one row per app, the last 50 refresh events, live updates."""
    request.app[AUTH].require_admin(request)
    document = await _status_document(request)
    nonce = secrets.token_urlsafe(16)
    html = _templates.get_template("status.html").render(status=document, nonce=nonce)
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return web.Response(
        text=html,
        content_type="text/html",
        headers={
            "Content-Security-Policy": csp,
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


@routes.get("/v1/status")
async def status_json(request: web.Request) -> web.Response:
    """The status document as JSON (see :func:`tokensvc.status.build_status`)."""
    request.app[AUTH].require_admin(request)
    return web.json_response(await _status_document(request), headers={"Cache-Control": "no-store"})


def _admin_manager(request: web.Request) -> TokenManager:
    request.app[AUTH].require_admin(request)
    return configured_manager(request)


def _action_failed(manager: TokenManager, exc: TokensvcError, now: float) -> web.HTTPException:
    return domain_error(exc, now, code="refresh_failed", retry_at=manager.next_refresh_at())


def _action_answer(outcome: RefreshOutcome, **extra: object) -> web.Response:
    """The token's metadata after an action: fingerprint, never the token."""
    body = {k: v for k, v in token_body(outcome.token).items() if k != "access_token"}
    return web.json_response(
        {
            **body,
            "fingerprint": fingerprint(outcome.token.access_token),
            "refreshed": outcome.refreshed,
            "reason": outcome.reason,
            **extra,
        }
    )


@routes.post("/v1/apps/{appid}/token/rotate")
async def rotate(request: web.Request) -> web.Response:
    """ "Refresh now": a normal-mode refresh through the one refresh path (trigger operator).

    Classic apps get a new token; stable apps get whatever normal mode gives (the same token
    outside its last 5 minutes, per WeChat). Answers the token metadata (fingerprint, never the
    token) and ``refreshed``.
    """
    manager = _admin_manager(request)
    try:
        outcome = await manager.refresh(Trigger.OPERATOR)
    except TokensvcError as exc:
        raise _action_failed(manager, exc, request.app[CLOCK].now()) from None
    return _action_answer(outcome)


@routes.post("/v1/apps/{appid}/token/revoke")
async def revoke(request: web.Request) -> web.Response:
    """ "Revoke a leaked token" (stable apps): two force refreshes ``revoke_gap`` seconds apart.

    Force refreshes are limited to 20 a day; callers holding the old token will see 40001 and
    must come back through the passive refresh. Answers at once with the first new token's
    metadata and ``second_force_at``.
    """
    manager = _admin_manager(request)
    if manager.app.token_api != "stable":
        raise json_error(
            400,
            "bad_request",
            f"app {manager.appid} uses the classic token API: "
            "use rotate (a classic refresh already replaces the token within 5 minutes)",
        )
    try:
        outcome = await manager.revoke_leaked(request.app[SETTINGS].refresh.revoke_gap)
    except TokensvcError as exc:
        raise _action_failed(manager, exc, request.app[CLOCK].now()) from None
    return _action_answer(outcome, second_force_at=rfc3339(manager.revoke_second_at))


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition; admin key needed unless ``[metrics] public = true``."""
    if not request.app[SETTINGS].metrics.public:
        request.app[AUTH].require_admin(request)
    response = web.Response(body=request.app[METRICS].render())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response

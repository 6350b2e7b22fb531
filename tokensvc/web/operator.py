"""Operator endpoints: the ``/status`` page, ``/v1/status`` JSON, token actions, ``/metrics``.

All need the admin key (Bearer, or the HTTP Basic password so a browser prompts), except
``/metrics`` with ``[metrics] public = true``. Nothing here shows a token or a secret: tokens
appear as fingerprints (first 8 hex of their SHA-256).

The page is drawn on the server (HTML and inline SVG, positions computed here), so it works
without JavaScript and under a strict Content-Security-Policy; its one nonce'd script only
counts down, asks before an action, and swaps in a freshly drawn page every few seconds.
"""

from __future__ import annotations

import dataclasses
import math
import re
import secrets
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from tokensvc.clock import rfc3339
from tokensvc.errors import StoreUnavailable, TokensvcError
from tokensvc.secret import fingerprint
from tokensvc.status_report import FAILING_FIRST, AppStatus, build_status, collect_apps
from tokensvc.store.events import EVENT_OUTCOMES
from tokensvc.tokens.manager import TokenManager
from tokensvc.tokens.values import RefreshOutcome, TokenState, Trigger
from tokensvc.web.api import configured_manager, token_body
from tokensvc.web.errors import domain_error, json_error
from tokensvc.web.keys import (
    AUTH,
    CALLS,
    CLOCK,
    EVENTS,
    MANAGERS,
    METRICS,
    OUTBOX,
    PASSIVE_TALLY,
    QUOTA,
    SETTINGS,
)
from tokensvc.web.status_view import (
    STRIP_SLOT_SECONDS,
    Card,
    EventGroup,
    Formatter,
    confirm_texts,
    day_strip,
    group_events,
    lifetime_bar,
    next_reason,
    strip_start,
)

routes = web.RouteTableDef()

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("tokensvc.web", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

PAGE_SIZE = 100
"""Apps per page of ``/status`` (failing apps first; the search box narrows them)."""
EVENT_GROUPS = 50
"""Lines of grouped events the page shows..."""
EVENTS_READ = 2000
"""...out of at most this many newest events (matching the filters)."""

STATE_FILTERS = ("", "failing", *(state.value for state in TokenState))
"""Values of the page's ``state`` parameter: all apps, the failing ones, or one state."""
MAX_QUERY = 100
"""Longest search text (characters)."""
MAX_PAGE = 100_000
_APPID_FILTER = re.compile(r"[A-Za-z0-9_-]{0,64}")


@dataclass(frozen=True)
class PageQuery:
    """The page's query parameters: ``q`` (apps whose name or appid contains it, any case),
    ``state`` (see :data:`STATE_FILTERS`), ``app`` and ``outcome`` (events of that appid, with
    that outcome), ``page`` (1-based). Empty strings mean "any"."""

    q: str = ""
    state: str = ""
    app: str = ""
    outcome: str = ""
    page: int = 1

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> PageQuery:
        """Read and check the parameters; raises a 400 ``bad_request`` naming the bad one."""
        q = query.get("q", "")
        state = query.get("state", "")
        app = query.get("app", "")
        outcome = query.get("outcome", "")
        page = query.get("page", "1")
        if len(q) > MAX_QUERY:
            raise json_error(400, "bad_request", f"q: at most {MAX_QUERY} characters")
        if state not in STATE_FILTERS:
            raise json_error(
                400, "bad_request", "state: one of " + ", ".join(STATE_FILTERS[1:]) + " or empty"
            )
        if not _APPID_FILTER.fullmatch(app):
            raise json_error(400, "bad_request", "app: an appid (letters, digits, _ and -)")
        if outcome and outcome not in EVENT_OUTCOMES:
            raise json_error(
                400, "bad_request", "outcome: one of " + ", ".join(EVENT_OUTCOMES) + " or empty"
            )
        digits = page.isascii() and page.isdigit() and len(page) <= len(str(MAX_PAGE))
        if not digits or not 1 <= int(page) <= MAX_PAGE:
            raise json_error(400, "bad_request", f"page: a whole number from 1 to {MAX_PAGE}")
        return cls(q=q.strip(), state=state, app=app, outcome=outcome, page=int(page))

    def matches(self, app: AppStatus) -> bool:
        """True when ``app`` passes the search text and the state filter."""
        if self.state == "failing" and not app.failing:
            return False
        if self.state not in ("", "failing") and app.state.value != self.state:
            return False
        needle = self.q.casefold()
        return needle in app.appid.casefold() or needle in app.name.casefold()

    def url(self, **changes: Any) -> str:
        """``/status`` with these parameters (empty ones and page 1 left out)."""
        values = dataclasses.asdict(dataclasses.replace(self, **changes))
        kept = {k: v for k, v in values.items() if v and not (k == "page" and v == 1)}
        return "/status" + ("?" + urlencode(kept) if kept else "")


async def _status_page(request: web.Request, query: PageQuery) -> dict[str, Any]:
    app = request.app
    settings = app[SETTINGS]
    events = app[EVENTS]
    now = app[CLOCK].now()
    try:
        apps = await collect_apps(
            app[MANAGERS],
            events,
            app[PASSIVE_TALLY],
            now,
            app.get(QUOTA),
            app.get(CALLS),
            app.get(OUTBOX),
        )
        counts = Counter(a.state for a in apps)
        matching = sorted(
            (a for a in apps if query.matches(a)),
            key=lambda a: (FAILING_FIRST.index(a.state), a.name.casefold(), a.appid),
        )
        pages = max(1, math.ceil(len(matching) / PAGE_SIZE))
        page = min(query.page, pages)
        shown = matching[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        start = strip_start(now)
        slots = await events.slot_counts([a.appid for a in shown], int(start), STRIP_SLOT_SECONDS)
        latest = await events.latest(
            EVENTS_READ, appid=query.app or None, outcome=query.outcome or None
        )
    except StoreUnavailable as exc:
        raise domain_error(exc, now, code="database_unavailable") from None
    cards = []
    for a in shown:
        rotate, revoke = confirm_texts(
            a,
            rotation_window=settings.wechat.rotation_window,
            revoke_gap=settings.refresh.revoke_gap,
        )
        cards.append(
            Card(
                app=a,
                bar=lifetime_bar(a, now),
                strip=day_strip(slots.get(a.appid, {}), start),
                confirm_rotate=rotate,
                confirm_revoke=revoke if a.token_api == "stable" and a.has_token else None,
            )
        )
    groups: list[EventGroup] = group_events(latest)[:EVENT_GROUPS]
    return {
        "now": now,
        "query": query,
        "total": len(apps),
        "counts": [(state.value, counts[state]) for state in FAILING_FIRST if counts[state]],
        "failing": sum(1 for a in apps if a.failing),
        "matching": len(matching),
        "page": page,
        "pages": pages,
        "first": (page - 1) * PAGE_SIZE + 1,
        "cards": cards,
        "groups": groups,
        "events_read": len(latest),
        "events_limit": EVENTS_READ,
        "names": {a.appid: a.name for a in apps},
        "next_reason": next_reason,
        "fmt": Formatter(now),
        "outcomes": EVENT_OUTCOMES,
        "state_filters": STATE_FILTERS,
    }


@routes.get("/status")
async def status_page(request: web.Request) -> web.Response:
    """The status page (HTML): one lifetime bar and a 24-hour strip per app (failing apps
    first, 100 a page), grouped recent events; ``q``, ``state``, ``app``, ``outcome`` and
    ``page`` query parameters (see :class:`PageQuery`); updates itself every few seconds."""
    request.app[AUTH].require_admin(request)
    query = PageQuery.parse(request.query)
    view = await _status_page(request, query)
    nonce = secrets.token_urlsafe(16)
    html = _templates.get_template("status.html").render(nonce=nonce, **view)
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
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
    """The status document as JSON (see :func:`tokensvc.status_report.build_status`)."""
    request.app[AUTH].require_admin(request)
    app = request.app
    try:
        document = await build_status(
            app[MANAGERS],
            app[EVENTS],
            app[PASSIVE_TALLY],
            app[CLOCK],
            app.get(QUOTA),
            app.get(CALLS),
            app.get(OUTBOX),
        )
    except StoreUnavailable as exc:
        raise domain_error(exc, app[CLOCK].now(), code="database_unavailable") from None
    return web.json_response(document, headers={"Cache-Control": "no-store"})


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
    outside its last ``rotation_window``, per WeChat). Answers the token metadata (fingerprint,
    never the token) and ``refreshed``.
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
            "use rotate (a classic refresh already replaces the token within the rotation "
            "window)",
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

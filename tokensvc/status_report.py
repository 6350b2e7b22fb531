"""What operators see: per-app status and recent events, as one JSON-ready document (the page
draws it with :mod:`tokensvc.web.status_view`).

Used by ``GET /v1/status`` and the ``/status`` page. Holds fingerprints, never tokens. All
instants are UTC epoch seconds until they are rendered (RFC 3339 in JSON).
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tokensvc.clock import Clock, rfc3339
from tokensvc.push.outbox import Outbox
from tokensvc.quota import QuotaReading, QuotaWatcher
from tokensvc.secret import fingerprint
from tokensvc.store.calls import CallCounter
from tokensvc.store.events import EventLog
from tokensvc.tokens import timing
from tokensvc.tokens.manager import TokenManager
from tokensvc.tokens.record import ErrorInfo
from tokensvc.tokens.values import RefreshAttempt, TokenState

DAILY_LIMITS = {"classic": 2000, "stable": 500_000}
"""WeChat's daily call quota of each token API (access_token and getStableAccessToken docs)."""


CONTESTED_NOTICE = (
    "Another system fetches this app's token with its AppSecret: find it and remove the "
    "AppSecret there."
)
"""What the status page says of a ``contested`` app."""

FAILING_FIRST = (
    TokenState.EXPIRED,
    TokenState.MISCONFIGURED,
    TokenState.CONTESTED,
    TokenState.RETRYING,
    TokenState.REFRESHING,
    TokenState.FRESH,
)
"""States from the most to the least urgent: the order of apps on the status page."""

FAILING_STATES = frozenset(FAILING_FIRST[:4])
"""States an operator must look at (callers get no token, or the next refresh is failing)."""


class PassiveTally:
    """Passive-refresh requests today (China Standard Time day), per app and client, and how
    many of them were real (ended in a refresh). In memory: per process, reset at midnight."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._day = self._today()
        self._counts: collections.Counter[tuple[str, str, bool]] = collections.Counter()

    def _today(self) -> float:
        return timing.next_quota_reset(self._clock.now())

    def add(self, appid: str, client: str, refreshed: bool) -> None:
        """Count one passive-refresh request."""
        day = self._today()
        if day != self._day:
            self._day, self._counts = day, collections.Counter()
        self._counts[(appid, client, refreshed)] += 1

    def today(self, appid: str) -> dict[str, dict[str, int]]:
        """``{client: {"requests": n, "refreshed": m}}`` for ``appid`` today."""
        if self._today() != self._day:
            return {}
        out: dict[str, dict[str, int]] = {}
        for (app, client, refreshed), n in self._counts.items():
            if app != appid:
                continue
            entry = out.setdefault(client, {"requests": 0, "refreshed": 0})
            entry["requests"] += n
            if refreshed:
                entry["refreshed"] += n
        return out


@dataclass(frozen=True)
class AppStatus:
    """One app as operators see it (instants UTC epoch seconds, None when unknown).

    ``next_refresh_at`` is when the scheduler will really call WeChat next, never before
    ``now`` (an attempt that is due or under way is ``now``); ``next_refresh_reason`` says why
    then (see :meth:`TokenServing.next_attempt`). ``planned_refresh_at`` is the refresh the
    current token's schedule plans, whatever happens meanwhile; ``rejected_at`` when WeChat
    proved the current token dead (it is never served again). ``last_error`` is kept after a
    success (``error_current`` is False then). ``has_token``: a token was
    fetched (it may have expired or been rejected since); ``served``: callers get it now.
    ``quota``: WeChat's latest ``quota/get`` readings (token API first; empty until the first
    round, about 30 s after start); ``forwarded_today``: ``{api: calls}`` tokensvc (every replica)
    forwarded today (China time), most first. ``push``: the app's message-push figures
    (:meth:`tokensvc.push.outbox.Outbox.stats`), None without ``[apps.push]``.
    """

    appid: str
    name: str
    kind: str
    token_api: str
    state: TokenState
    notice: str | None
    fingerprint: str | None
    version: int
    fetched_at: float | None
    expires_at: float | None
    rejected_at: float | None
    planned_refresh_at: float | None
    next_refresh_at: float
    next_refresh_reason: str
    previous_valid_until: float | None
    last_error: ErrorInfo | None
    error_current: bool
    failures: int
    upstream_calls_today: int
    daily_limit: int
    passive_today: dict[str, dict[str, int]]
    revoke_second_at: float | None
    has_token: bool
    served: bool
    quota: tuple[QuotaReading, ...] = ()
    forwarded_today: Mapping[str, int] = dataclasses.field(default_factory=dict)
    push: Mapping[str, Any] | None = None

    @property
    def failing(self) -> bool:
        """True when the app needs an operator's eyes (see :data:`FAILING_STATES`)."""
        return self.state in FAILING_STATES

    def to_json(self) -> dict[str, Any]:
        """The ``AppStatus`` object of ``/v1/status`` (times RFC 3339 UTC)."""
        error = self.last_error
        return {
            "appid": self.appid,
            "name": self.name,
            "kind": self.kind,
            "token_api": self.token_api,
            "state": self.state.value,
            "notice": self.notice,
            "fingerprint": self.fingerprint,
            "version": self.version,
            "fetched_at": rfc3339(self.fetched_at),
            "expires_at": rfc3339(self.expires_at),
            "rejected_at": rfc3339(self.rejected_at),
            "planned_refresh_at": rfc3339(self.planned_refresh_at),
            "next_refresh_at": rfc3339(self.next_refresh_at),
            "next_refresh_reason": self.next_refresh_reason,
            "previous_valid_until": rfc3339(self.previous_valid_until),
            "last_error": None
            if error is None
            else {
                "errcode": error.errcode,
                "errmsg": error.errmsg,
                "rid": error.rid,
                "at": rfc3339(error.at),
            },
            "failures": self.failures,
            "upstream_calls_today": self.upstream_calls_today,
            "daily_limit": self.daily_limit,
            "passive_today": self.passive_today,
            "revoke_second_at": rfc3339(self.revoke_second_at),
            "quota": [reading.as_json() for reading in self.quota],
            "forwarded_today": dict(self.forwarded_today),
            "push": None if self.push is None else dict(self.push),
        }


def app_status(
    manager: TokenManager,
    *,
    now: float,
    calls_today: int,
    tally: PassiveTally,
    quota: QuotaWatcher | None = None,
    forwarded: Mapping[str, int] | None = None,
    push: Mapping[str, Any] | None = None,
) -> AppStatus:
    """The :class:`AppStatus` of one app, from memory (no I/O)."""
    record = manager.record
    readings = tuple(quota.readings(manager.appid)) if quota is not None else ()
    notice = CONTESTED_NOTICE if manager.contested() else quota_notice(readings)
    token = record.access_token
    next_at, reason = manager.next_attempt()
    planned = manager.planned_refresh_at() if token else None
    return AppStatus(
        appid=manager.appid,
        name=manager.app.name,
        kind=manager.app.kind,
        token_api=manager.app.token_api,
        state=manager.state(),
        notice=notice,
        fingerprint=fingerprint(token) if token else None,
        version=record.version,
        fetched_at=record.fetched_at,
        expires_at=record.expires_at,
        rejected_at=record.dead_at,
        planned_refresh_at=planned if planned is not None and math.isfinite(planned) else None,
        next_refresh_at=max(now, next_at),
        next_refresh_reason=reason,
        previous_valid_until=record.previous_valid_until
        if record.previous_valid_until and record.previous_valid_until > now
        else None,
        last_error=record.last_error,
        error_current=record.has_current_error(),
        failures=record.failures,
        upstream_calls_today=calls_today,
        daily_limit=DAILY_LIMITS[manager.app.token_api],
        passive_today=tally.today(manager.appid),
        revoke_second_at=manager.revoke_second_at,
        has_token=token is not None,
        served=manager.served() is not None,
        quota=readings,
        forwarded_today=forwarded or {},
        push=push,
    )


def quota_notice(readings: Iterable[QuotaReading]) -> str | None:
    """What the page says of an app whose WeChat quota is low (None when none is)."""
    low = [r for r in readings if r.low]
    if not low:
        return None
    spent = "; ".join(f"{r.api}: {r.remain:,} of {r.daily_limit:,} calls left" for r in low)
    return (
        f"WeChat quota low ({spent}). At 0 WeChat answers 45009 until midnight China time: "
        "find what spends it (events, forwarded calls below), or reset it once with "
        "clear_quota (docs/wechat.md#quota-tools)."
    )


async def collect_apps(
    managers: Mapping[str, TokenManager],
    events: EventLog,
    tally: PassiveTally,
    now: float,
    quota: QuotaWatcher | None = None,
    calls: CallCounter | None = None,
    outbox: Outbox | None = None,
) -> list[AppStatus]:
    """Every app's :class:`AppStatus`, in configuration order; two database queries (the calls
    to WeChat's token API today, China time, and the calls forwarded today). Raises
    :class:`StoreUnavailable`."""
    day_start = timing.next_quota_reset(now) - 86400
    calls_today = await events.count_since(day_start)
    forwarded = await calls.today() if calls is not None else {}
    receiving = [appid for appid, m in managers.items() if m.app.push is not None]
    pushes = await outbox.stats_many(receiving) if outbox is not None and receiving else {}
    return [
        app_status(
            manager,
            now=now,
            calls_today=calls_today.get(appid, 0),
            tally=tally,
            quota=quota,
            forwarded=forwarded.get(appid),
            push=pushes.get(appid),
        )
        for appid, manager in managers.items()
    ]


def event_json(event: RefreshAttempt) -> dict[str, Any]:
    """The ``RefreshEvent`` object of ``/v1/status``."""
    return {
        "at": rfc3339(event.at),
        "appid": event.appid,
        "trigger": event.trigger.value,
        "outcome": event.outcome,
        "errcode": event.errcode,
        "errmsg": event.errmsg,
        "rid": event.rid,
        "fingerprint": event.fingerprint,
        "latency_ms": round(event.latency * 1000, 1),
    }


async def build_status(
    managers: Mapping[str, TokenManager],
    events: EventLog,
    tally: PassiveTally,
    clock: Clock,
    quota: QuotaWatcher | None = None,
    calls: CallCounter | None = None,
    outbox: Outbox | None = None,
) -> dict[str, Any]:
    """The status document.

    ``{"now", "apps": [{"appid", "name", "kind", "token_api", "state", "notice", "fingerprint",
    "version", "fetched_at", "expires_at", "rejected_at", "planned_refresh_at", "next_refresh_at",
    "next_refresh_reason", "previous_valid_until", "last_error", "failures",
    "upstream_calls_today", "daily_limit", "passive_today", "revoke_second_at", "quota": [{"api",
    "daily_limit", "used", "remain", "low", "checked_at"}], "forwarded_today": {api: calls},
    "push": null or {"received_24h", "last_received_at", "backlog", "oldest_pending_at",
    "failed", "targets": [...]} (:meth:`tokensvc.push.outbox.Outbox.stats`)}],
    "events":
    [{"at", "appid", "trigger", "outcome", "errcode", "errmsg", "rid", "fingerprint",
    "latency_ms"}]}``; times RFC 3339 UTC, ``last_error`` null or ``{errcode, errmsg, rid, at}``
    (the last failed attempt, kept after a success). See
    :class:`AppStatus` for ``next_refresh_at``. Raises :class:`StoreUnavailable` when the
    events cannot be read.
    """
    now = clock.now()
    apps = await collect_apps(managers, events, tally, now, quota, calls, outbox)
    recent = [event_json(event) for event in await events.latest(50)]
    return {"now": rfc3339(now), "apps": [app.to_json() for app in apps], "events": recent}
